"""The two-batch-overlap example (examples/pd_ep_moe_tbo.yaml: pd_ep_moe with micro_batches,
traced by workflows/two_batch_overlap.py on a side stream): its overlap never beats the
work the decode pool's GPUs must do, whatever the micro-batches and the SMs its
all-to-alls hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from frontier_dag.analysis.iteration import analyze_iteration, representative_loads
from frontier_dag.sim.assembly import assemble

TBO = Path(__file__).resolve().parent.parent / "examples" / "pd_ep_moe_tbo.yaml"


#: the example's 32 decode GPUs (all-to-alls over the network), and one node of 8 (over
#: NVLink, where the all-to-alls are short and compute dominates: without the contention
#: pass, expert GEMMs ran beside the other micro-batch's attention and the iteration came
#: out shorter than the compute the GPUs must do, 30.7 ms against 37.6 ms at 256 sequences)
LAYOUTS = {"example": [], "one_node": ["cluster.pools.decode.gpus=8", "cluster.pools.decode.ep=8"]}


def decode_iteration(micro_batches: int, sms: int | None, batch_size: int = 4096, layout=()):
    overrides = ["predictor.source=roofline", f"workflow.params.micro_batches={micro_batches}", *layout]
    if sms is not None:
        overrides.append(f"cluster.comm_sms.deepep_ll={sms}")
    assembly = assemble(TBO, overrides=overrides)
    graph, deployment = assembly.graph, assembly.deployment
    loads = representative_loads(graph, deployment, batch_size=batch_size)
    return graph, analyze_iteration(graph, deployment, assembly.cost_model, loads)


def work_per_gpu(graph, report) -> dict[int, float]:
    """Per GPU of the decode pool, the time it must compute: every compute op of the main
    and side streams, its own EP rank's experts, and the SM share of the all-to-alls that
    overlap compute."""
    ranks = [r.rank for r in graph.resources.values() if r.rank is not None and r.pool == "decode"]
    work = dict.fromkeys(ranks, 0.0)
    for v, node in enumerate(report.compiled.nodes.tolist()):
        a = graph.graph.nodes[node]
        if a["stage"] != "decode" or not (a["kind"] == "compute" or "share_of" in a):
            continue
        rank = graph.resources[a["resource"]].rank
        for r in ranks if rank is None else [rank]:
            work[r] += float(report.duration_us[v])
    return work


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("micro_batches", [1, 2])
@pytest.mark.parametrize("sms", [None, 32, 0], ids=["launch_grid", "32_sms", "free"])
def test_overlap_never_beats_the_conserved_work(micro_batches, sms, layout):
    graph, report = decode_iteration(micro_batches, sms, batch_size=256 if layout == "one_node" else 4096,
                                     layout=LAYOUTS[layout])
    work = work_per_gpu(graph, report)
    assert len(work) == (8 if layout == "one_node" else 32)
    assert report.stage_times_us["decode"] >= max(work.values()) * (1 - 1e-9)
    shares = [a for _, a in graph.graph.nodes(data=True) if "share_of" in a]
    # with two micro-batches the dispatches and combines overlap compute (and its shared
    # experts); with one, the iteration is the plain one, all-to-alls on the compute stream
    assert bool(shares) == (sms != 0 and micro_batches == 2)


def test_the_overlap_is_on_the_communication_stream():
    graph, report = decode_iteration(2, 32)
    one = decode_iteration(1, 32)[1]
    comm = {a["op"] for _, a in graph.graph.nodes(data=True) if a["resource"] == "decode.comm"}
    assert comm == {"dispatch", "combine", "ep_barrier"}
    # a large batch: hiding the all-to-alls behind the other micro-batch pays (roofline prices)
    assert report.stage_times_us["decode"] < one.stage_times_us["decode"]
    assert graph.warnings == []


def test_ep_moe_overlaps_too():
    """The co-located ep_moe takes the same micro_batches: its all-to-alls move to the
    communication stream, and with 1 the iteration is the plain one."""
    example = TBO.parent / "ep_moe_qwen3_235b.yaml"
    times = {}
    for m in (1, 2):
        assembly = assemble(example, overrides=["predictor.source=roofline", f"workflow.params.micro_batches={m}"])
        graph = assembly.graph
        comm = {a["op"] for _, a in graph.graph.nodes(data=True) if a["resource"] == "colocated.comm"}
        assert comm == ({"dispatch", "combine", "ep_barrier"} if m == 2 else set())
        loads = representative_loads(graph, assembly.deployment, batch_size=2048)
        times[m] = analyze_iteration(graph, assembly.deployment, assembly.cost_model, loads).stage_times_us
    plain = assemble(example, overrides=["predictor.source=roofline"])
    loads = representative_loads(plain.graph, plain.deployment, batch_size=2048)
    assert analyze_iteration(plain.graph, plain.deployment, plain.cost_model, loads).stage_times_us == times[1]
    assert times[2]["colocated"] > 0
