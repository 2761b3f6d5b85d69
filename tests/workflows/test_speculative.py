"""Multi-token prediction (pd_ep_moe's ``mtp``): the verification and draft work in the
decode DAG, and the accepted tokens per iteration in TPOT and throughput."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import frontier_dag as fd
from frontier_dag.analysis.rebuild import rebuild_iteration
from frontier_dag.analysis.run_data import load_run
from frontier_dag.errors import ConfigError, FrontierDagWarning
from frontier_dag.sim.predictor import ExecutionPredictor, stage_router
from frontier_dag.workflows.speculative import Speculation

CONFIG = {
    "model": "qwen3-30b-a3b", "hardware": "h200_sxm",
    "cluster": {"pools": {"prefill": {"role": "prefill", "gpus": 2, "ep": 2},
                          "decode": {"role": "decode", "gpus": 4, "ep": 4}}},
    "workflow": {"name": "pd_ep_moe", "params": {"routing": {"kind": "uniform"}}},
    "workload": {"arrival": {"kind": "poisson", "rate_per_s": 50},
                 "prompt_tokens": {"kind": "fixed", "value": 512}, "output_tokens": {"kind": "fixed", "value": 64},
                 "num_requests": 60},
    "scheduler": {"policy": "sglang", "max_num_seqs": 64},
    "predictor": {"source": "roofline"},
    "seed": 0,
}


def mtp(draft_tokens: int, acceptance) -> dict:
    return {"workflow.params.mtp": {"draft_tokens": draft_tokens, "acceptance": acceptance}}


@pytest.mark.parametrize(("value", "queries", "tokens"), [
    ({"draft_tokens": 1, "acceptance": 0.8}, 2, 1.8),
    ({"draft_tokens": 3, "acceptance": [0.9, 0.5, 0.5]}, 4, 1 + 0.9 + 0.45 + 0.225),
    ({"draft_tokens": 2, "acceptance": 0}, 3, 1.0),
])
def test_accepted_tokens_per_step(value, queries, tokens):
    spec = Speculation.parse(value)
    assert spec.queries_per_seq == queries
    assert spec.tokens_per_step == pytest.approx(tokens)


@pytest.mark.parametrize(("value", "message"), [
    ({"draft_tokens": 2}, "mtp.acceptance: MTP with 2 draft tokens needs their acceptance rate"),
    ({"draft_tokens": 2, "acceptance": [0.8]}, "a list of 2 rates in [0, 1]"),
    ({"draft_tokens": 1, "acceptance": 1.5}, "one rate in [0, 1]"),
    ({"draft_tokens": -1}, "mtp.draft_tokens: a whole number >= 0"),
    ({"drafts": 1}, "mtp.drafts: unknown key"),
])
def test_bad_mtp_params(value, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Speculation.parse(value)
    assert Speculation.parse({}) is None and Speculation.parse({"draft_tokens": 0}) is None


def decode_us(overrides: dict) -> tuple[float, list[str]]:
    report = fd.critical_path(CONFIG, {**overrides}, batch_size=64, context=1024)
    path = [step["op"] for step in report["critical_path"]]
    return report["stage_times_us"]["decode"], path


def test_the_iteration_verifies_and_drafts():
    plain, _ = decode_us({})
    one, path = decode_us(mtp(1, 0.8))
    two, _ = decode_us(mtp(2, 0.8))
    assert {"mtp_eh_proj", "mtp_embedding"} <= set(path)  # the draft runs after the verification
    assert plain < one < two  # more tokens verified, more drafts run
    built = fd.assemble(CONFIG, mtp(2, [0.8, 0.5]))
    graph = built.graph
    stage = graph.stages["decode"]
    assert (stage.queries_per_seq, stage.tokens_per_step) == (3, pytest.approx(2.2))
    # the verification attends with 3 queries a sequence (folded into the heads), the drafts with 1
    heads = sorted({dict(graph.templates[a["template"]].fields)["num_heads"] for _, a in graph.graph.nodes(data=True)
                    if a["stage"] == "decode" and a["op"] == "attention"})
    assert heads == [32, 96]  # qwen3-30b-a3b: 32 heads, tp 1
    assert stage_router(graph, built.deployment, "decode", 0).queries_per_seq == 3  # every verified token is routed


def test_a_step_is_one_accepted_tokens_share_of_the_iteration():
    """The simulator steps one token at a time: with 1.8 tokens emitted per iteration, a
    step takes the iteration's time (and attribution) over 1.8, iteration overhead included."""
    built = fd.assemble(CONFIG, mtp(1, 0.8))
    times = {}
    for emitted in (1.0, 1.8):
        built.graph.stages["decode"].tokens_per_step = emitted
        predictor = ExecutionPredictor(built.graph, "decode", built.deployment, built.cost_model, seed=3,
                                       overhead_us=100.0)
        times[emitted] = predictor.time_us(np.ones(48, dtype=np.int64), np.full(48, 700, dtype=np.int64))
        assert sum(predictor.last_categories) == pytest.approx(times[emitted])
    assert times[1.8] == pytest.approx(times[1.0] / 1.8)


def test_tpot_counts_the_accepted_tokens():
    """Same DAG, acceptance 1 against 0: every iteration emits 2 tokens instead of 1, so TPOT
    falls by about half (a little more: shorter steps keep fewer sequences in the batch)."""
    runs = {a: fd.simulate(CONFIG, mtp(1, a)).summary for a in (0.0, 1.0)}
    none = fd.simulate(CONFIG).summary
    ratio = runs[1.0]["tpot_ms"]["p50"] / runs[0.0]["tpot_ms"]["p50"]
    assert 0.35 < ratio < 0.55
    assert runs[0.0]["tpot_ms"]["p50"] > none["tpot_ms"]["p50"]  # verifying and drafting for nothing costs
    assert runs[1.0]["tpot_ms"]["p50"] < none["tpot_ms"]["p50"]  # all accepted: faster than without MTP
    assert runs[1.0]["num_completed"] == none["num_completed"] == 60


def test_a_run_rebuilds_its_iterations_whole(tmp_path):
    """The run-level views rebuild a logged decode step as the whole iteration it is a share
    of: priced alike, no warning that the DAG differs from the run."""
    run = fd.simulate(CONFIG, {**mtp(2, [0.8, 0.6]), "workload.num_requests": 20}, out=tmp_path / "run")
    data = load_run(tmp_path / "run")
    decode = data.iterations.index[data.iterations["pool"] == "decode"][-1]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FrontierDagWarning)
        rebuilt = rebuild_iteration(data, int(decode))
    assert abs(rebuilt.difference) < 0.1
    assert run.summary["num_completed"] == 20
