"""Pipeline parallelism in the simulation: closed forms of a pipeline (one micro-batch
takes the sum of its stages plus the transfers; n in flight take (n + pp - 1) stage
times; a saturated PP2 replica gives one stage's throughput at twice its latency), and
every workflow composing with a pipelined pool."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from frontier_dag.analysis.iteration import analyze_iteration
from frontier_dag.sim.assembly import assemble
from frontier_dag.sim.events import EventQueue
from frontier_dag.sim.pipeline import Pipeline
from frontier_dag.sim.run import simulate
from tests.conftest import TINY_DENSE, TINY_MOE, FakeCostModel, make_config
from tests.sim.test_simulator import check_invariants, workload

FOUR_LAYERS = {**TINY_DENSE, "name": "tiny-dense-4", "num_layers": 4}
TRANSFER_US = 7.0
#: every GEMM 100 µs whatever the batch, a pipeline hop 7 µs, the rest free
CONSTANT = FakeCostModel(constant={"gemm": 100.0, "p2p": TRANSFER_US})


def colocated(pp: int, tp: int = 1, **extra):
    pool = {"role": "colocated", "gpus": pp * tp, "tp": tp, "pp": pp}
    return make_config(FOUR_LAYERS, {"main": pool}, "colocated", **extra)


def one_request(pp: int) -> float:
    """The duration of the only iteration of a one-token request."""
    cfg = colocated(pp, workload=workload(1, prompt=1, output=1))
    result = simulate(assemble(cfg, cost_model=CONSTANT))
    (duration,) = result.iterations["duration_us"].to_numpy()
    return float(duration)


@pytest.mark.parametrize("pp", [2, 4])
def test_one_micro_batch_takes_its_stages_in_turn_plus_the_transfers(pp):
    # the stages hold the layers of the whole model between them: pp stages of one batch
    # take what one GPU holding every layer takes, plus pp - 1 hops
    assert one_request(pp) == pytest.approx(one_request(1) + (pp - 1) * TRANSFER_US)


class _Prices:
    def __init__(self, pp: int):
        self.pp = pp


@pytest.mark.parametrize("pp, n", [(2, 1), (2, 5), (4, 3), (4, 8)])
def test_n_micro_batches_in_flight_take_n_plus_pp_minus_one_stage_times(pp, n):
    events = EventQueue()
    pipeline = Pipeline(_Prices(pp), events)
    s, x = 50.0, 3.0
    ends = [pipeline.run([s] * pp, [0.0] + [x] * (pp - 1))[0] for _ in range(n)]  # all enter at t = 0
    # batch j leaves the first stage at (j + 1) s and every later stage right behind it
    assert ends == pytest.approx([(j + pp) * s + (pp - 1) * x for j in range(n)])
    assert ends[-1] == pytest.approx((n + pp - 1) * s + (pp - 1) * x)
    assert pipeline.busy_s == pytest.approx([n * s * 1e-6] * pp)


def test_a_waiting_batch_counts_its_wait_and_a_slow_stage_sets_the_pace():
    events = EventQueue()
    pipeline = Pipeline(_Prices(2), events)
    assert pipeline.run([10.0, 40.0], [0.0, 0.0]) == pytest.approx((50.0, 0.0))
    # the second batch waits 10 µs for stage 0, leaves it at 20 µs and waits 30 µs for stage 1
    assert pipeline.run([10.0, 40.0], [0.0, 0.0]) == pytest.approx((90.0, 40.0))


def test_a_saturated_pp2_replica_gives_one_stages_throughput_at_twice_its_latency():
    clients = 8
    wl = {"clients": clients, "num_requests": 64, "prompt_tokens": {"kind": "fixed", "value": 1},
          "output_tokens": {"kind": "fixed", "value": 200}, "warmup_requests": 8}
    cfg = colocated(2, workload=wl, scheduler={"max_num_seqs": clients})
    assembly = assemble(cfg, cost_model=CONSTANT)
    stages = analyze_iteration(assembly.graph, assembly.deployment, CONSTANT).pipeline["colocated"]
    slowest = stages.period_us
    assert len(stages.stages_us) == 2 and stages.slowest_stage == 1  # the last stage also runs the LM head
    result = simulate(assembly)
    s = result.summary
    check_invariants(result)
    # two lanes of clients / 2 sequences share the slowest stage: each waits for the other's
    tpot_us = s["tpot_ms"]["p50"] * 1e3
    assert tpot_us == pytest.approx(2 * slowest, rel=0.02)
    # one lane's batch leaves the pipeline per slowest-stage time: a stage's throughput
    tokens_per_us = s["steady"]["output_tokens_per_s"] * 1e-6
    assert tokens_per_us == pytest.approx((clients / 2) / slowest, rel=0.03)
    # the stages stay busy; the slowest is named and the other idles for the difference
    pipe = s["pipeline"]["main"]
    assert pipe["slowest_stage"] == 1
    assert pipe["stage_busy"][1] > 0.95
    assert pipe["bubbles"][0] == pytest.approx(pipe["stage_busy"][1] - pipe["stage_busy"][0])
    assert s["utilization"]["main"] == pytest.approx(np.mean(pipe["stage_busy"]))
    # waiting for the busy stage shows as waits_and_bubbles in the lanes' iterations
    assert result.iterations["waits_and_bubbles_us"].sum() > 0
    assert set(s["predictor_prices_by"]) == {"main.pp[0]", "main.pp[1]", "main.pp[1].link"}


def test_lanes_share_a_replicas_kv_and_sequences():
    cfg = colocated(2, workload=workload(40, prompt=32, output=8), scheduler={"max_num_seqs": 6})
    assembly = assemble(cfg, cost_model=CONSTANT)
    result = simulate(assembly)
    check_invariants(result)
    assert sorted(result.iterations["replica"].unique()) == [0, 1]  # replica 0's two lanes
    assert result.iterations["num_seqs"].max() <= 3


FAST = FakeCostModel(constant={"gemm": 20.0, "attention": 10.0, "p2p": 5.0, "moe": 10.0, "all": 2.0},
                     per_unit={"gemm": 0.05, "attention": 0.02, "moe": 0.05, "p2p": 1e-6})


@pytest.mark.parametrize("pools, workflow, model", [
    ({"main": {"role": "colocated", "gpus": 4, "tp": 2, "pp": 2}}, "colocated", FOUR_LAYERS),
    ({"prefill": {"role": "prefill", "gpus": 4, "tp": 2, "pp": 2}, "decode": {"role": "decode", "gpus": 1}},
     "pd", FOUR_LAYERS),
    ({"prefill": {"role": "prefill", "gpus": 2, "pp": 2}, "decode": {"role": "decode", "gpus": 2, "pp": 2}},
     "pd", FOUR_LAYERS),
    ({"main": {"role": "colocated", "gpus": 4, "ep": 2, "pp": 2}}, "ep_moe", TINY_MOE),
    ({"prefill": {"role": "prefill", "gpus": 2, "pp": 2}, "decode": {"role": "decode", "gpus": 4, "ep": 2, "pp": 2}},
     "pd_ep_moe", TINY_MOE),
])
def test_every_workflow_runs_with_a_pipelined_pool(pools, workflow, model):
    params = {"kv_transfer": "per_layer"} if workflow == "pd" and pools["decode"].get("pp") else {}
    cfg = make_config(model, pools, workflow, params, workload=workload(30, prompt=40, output=6))
    result = simulate(assemble(cfg, cost_model=FAST))
    check_invariants(result)
    assert result.summary["num_completed"] == 30
    assert set(result.summary["pipeline"]) == {name for name, p in pools.items() if p.get("pp", 1) > 1}


def test_af_pools_refuse_pipeline_parallelism():
    from frontier_dag.errors import ConfigError

    pools = {"attention": {"role": "attention", "gpus": 2, "pp": 2}, "ffn": {"role": "ffn", "gpus": 2}}
    with pytest.raises(ConfigError, match="pipeline parallelism splits a whole model's layers"):
        make_config(FOUR_LAYERS, pools, "af_pingpong")


def test_the_commands_name_the_slowest_stage_and_the_bubbles(tmp_path):
    import yaml
    from click.testing import CliRunner

    from frontier_dag.cli.main import cli

    data = {"model": FOUR_LAYERS, "hardware": "h100_sxm", "predictor": {"source": "roofline"},
            "cluster": {"pools": {"main": {"role": "colocated", "gpus": 4, "tp": 2, "pp": 2}}},
            "workflow": {"name": "colocated"}, "workload": workload(30, prompt=64, output=8)}
    config = tmp_path / "pp.yaml"
    config.write_text(yaml.safe_dump(data))
    runner = CliRunner()
    out = runner.invoke(cli, ["critical-path", str(config)], catch_exceptions=False).output
    assert "pipeline stages: pp[0]" in out and "slowest pp[1]" in out and "bubbles pp[0]" in out
    report = json.loads(runner.invoke(cli, ["critical-path", str(config), "--json"], catch_exceptions=False).output)
    stages = report["pipeline"]["colocated"]
    assert stages["period_us"] == max(stages["stages_us"]) and len(stages["links_us"]) == 2
    run = tmp_path / "run"
    simulated = runner.invoke(cli, ["simulate", str(config), "--out", str(run), "--no-progress"], catch_exceptions=False)
    assert simulated.exit_code == 0 and "pipeline stages busy pp[0]" in simulated.output
    path = runner.invoke(cli, ["critical-path", str(run)], catch_exceptions=False).output
    assert "pipeline of pool main: slowest stage pp[" in path
    result = runner.invoke(cli, ["render", str(run), "--bottlenecks", "--out", str(tmp_path / "b.dot")],
                           catch_exceptions=False)
    assert result.exit_code == 0 and "rebuilt iteration" not in result.output  # a lane's waits are not its DAG's
    dot = (tmp_path / "b.dot").read_text()
    assert "pipeline of 2 stages: slowest pp[" in dot and "waits_and_bubbles" in dot


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 20), prompt=st.integers(1, 300), output=st.integers(1, 30), rate=st.floats(1, 500),
       seqs=st.integers(1, 8), tokens=st.integers(16, 512), policy=st.sampled_from(["vllm", "sglang"]),
       pp=st.sampled_from([2, 4]), layout=st.sampled_from(["colocated", "pd"]), spare=st.integers(16, 2000),
       seed=st.integers(0, 3))
def test_invariants_hold_with_pipelined_pools(n, prompt, output, rate, seqs, tokens, policy, pp, layout, spare, seed):
    per_lane = prompt + output + spare  # one request always fits a lane: the run must complete
    sched = {"policy": policy, "max_num_seqs": seqs, "max_num_batched_tokens": tokens}
    pool = {"gpus": pp, "pp": pp, "kv_capacity_tokens": per_lane * pp}
    if layout == "colocated":
        pools = {"main": {"role": "colocated", **pool}}
    else:
        pools = {"prefill": {"role": "prefill", **pool}, "decode": {"role": "decode", **pool}}
    cfg = make_config(FOUR_LAYERS, pools, layout, workload=workload(n, prompt, output, rate), scheduler=sched,
                      seed=seed)
    result = simulate(assemble(cfg, cost_model=FAST))
    check_invariants(result)
    assert result.summary["num_completed"] == n


def test_a_prompt_larger_than_a_lanes_kv_is_a_deadlock_that_says_so():
    from frontier_dag.errors import DeadlockError

    cfg = make_config(FOUR_LAYERS, {"main": {"role": "colocated", "gpus": 2, "pp": 2, "kv_capacity_tokens": 1500}},
                      "colocated", workload=workload(2, prompt=1000, output=10))
    with pytest.raises(DeadlockError, match="one of 2 lanes, each with 1/2 of its replica's KV"):
        simulate(assemble(cfg, cost_model=FAST))
