"""The cluster simulator end to end: invariants, closed forms, PD backpressure, deadlock,
EP skew, reproducibility, and configs rejected before anything runs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from frontier_dag.errors import ConfigError, DeadlockError, SimulationError
from frontier_dag.sim.assembly import assemble
from frontier_dag.sim.run import check_run_dir, simulate, write_run
from tests.conftest import TINY_DENSE, TINY_MOE, FakeCostModel, make_config

FAST = FakeCostModel(constant={"gemm": 20.0, "attention": 10.0, "p2p": 5.0, "moe": 10.0, "all": 2.0},
                     per_unit={"gemm": 0.05, "attention": 0.02, "moe": 0.05, "p2p": 1e-6})


def colocated(**extra):
    return make_config(TINY_DENSE, {"main": {"role": "colocated", "gpus": 1}}, "colocated", **extra)


def pd(decode_kv=None, prefill_kv=None, **extra):
    pools = {"prefill": {"role": "prefill", "gpus": 1}, "decode": {"role": "decode", "gpus": 1}}
    if decode_kv:
        pools["decode"]["kv_capacity_tokens"] = decode_kv
    if prefill_kv:
        pools["prefill"]["kv_capacity_tokens"] = prefill_kv
    return make_config(TINY_DENSE, pools, "pd", **extra)


def workload(n, prompt=64, output=8, rate=50.0, **more):
    return {"arrival": {"kind": "poisson", "rate_per_s": rate}, "num_requests": n,
            "prompt_tokens": {"kind": "fixed", "value": prompt}, "output_tokens": {"kind": "fixed", "value": output}, **more}


def check_invariants(result) -> None:
    req, it = result.requests, result.iterations
    assert np.isfinite(req["finish_s"]).all(), "every request completes"
    assert (req["first_token_s"] >= req["arrival_s"]).all()
    assert (req["finish_s"] >= req["first_token_s"]).all()
    assert (req["first_scheduled_s"] >= req["arrival_s"]).all()
    assert (it["kv_usage"] <= 1.0 + 1e-6).all() and (it["kv_usage"] >= 0).all()
    assert (it["duration_us"] > 0).all()
    for _, rows in it.groupby(["pool", "replica"], observed=True):
        start = rows["start_s"].to_numpy()
        end = start + rows["duration_us"].to_numpy() * 1e-6
        assert (np.diff(start) >= 0).all(), "time never runs backwards"
        assert (start[1:] >= end[:-1] - 1e-12).all(), "a replica's iterations never overlap"
    # tokens are conserved: the iterations computed exactly the requests' prompt tokens (plus
    # recomputed ones after preemption, minus prefix-cache hits) and one token per decode step
    recomputed = result.summary["preemptions"] > 0 or result.summary["prefix_cached_tokens"] > 0
    if not recomputed:
        assert it["prefill_tokens"].sum() == req["prompt_tokens"].sum()
        assert it["decode_seqs"].sum() == (req["output_tokens"] - 1).sum()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 25), prompt=st.integers(1, 300), output=st.integers(1, 40), rate=st.floats(1, 500),
       seqs=st.integers(1, 8), tokens=st.integers(16, 512), chunked=st.booleans(),
       policy=st.sampled_from(["vllm", "sglang"]), layout=st.sampled_from(["colocated", "pd", "hybrid"]),
       spare=st.integers(16, 2000), seed=st.integers(0, 3))
# found by this test: SGLang admitted a chunked prefill on its first chunk, its next chunk
# preempted it, and prefill-first re-admitted it forever while the decodes held the memory
@example(n=11, prompt=254, output=3, rate=153.38, seqs=5, tokens=51, chunked=True, policy="sglang",
         layout="colocated", spare=389, seed=0)
@example(n=13, prompt=222, output=26, rate=83.21, seqs=6, tokens=240, chunked=True, policy="sglang",
         layout="colocated", spare=260, seed=3)
# found by this test: the decode pool of a mixed strategy admitted a new prompt into the seat
# that a transfer it had accepted was promised; the arrived KV found no seat, the prompt no memory
@example(n=5, prompt=1, output=17, rate=7.0, seqs=1, tokens=16, chunked=False, policy="vllm", layout="hybrid",
         spare=16, seed=0)
def test_invariants_on_generated_workloads(n, prompt, output, rate, seqs, tokens, chunked, policy, layout, spare, seed):
    capacity = prompt + output + spare  # one request always fits: the run must complete
    # without chunked prefill a prompt must fit one step's budget (a config vLLM refuses otherwise)
    sched = {"policy": policy, "max_num_seqs": seqs, "max_num_batched_tokens": tokens if chunked else max(tokens, prompt),
             "chunked_prefill": chunked}
    wl = workload(n, prompt, output, rate)
    if layout == "colocated":
        cfg = make_config(TINY_DENSE, {"main": {"role": "colocated", "gpus": 1, "kv_capacity_tokens": capacity}},
                          "colocated", workload=wl, scheduler=sched, seed=seed)
    elif layout == "pd":
        cfg = pd(decode_kv=capacity, prefill_kv=capacity, workload=wl, scheduler=sched, seed=seed)
    else:  # the decode pool prefills every other request itself and takes the others' KV
        pools = {"prefill": {"role": "prefill", "gpus": 1, "kv_capacity_tokens": capacity},
                 "decode": {"role": "decode", "gpus": 1, "kv_capacity_tokens": capacity}}
        cfg = make_config(TINY_DENSE, pools, "hybrid_pd", workload=wl, scheduler=sched, seed=seed,
                          cluster={"pools": pools, "entry": {"rule": "round_robin"}})
    result = simulate(assemble(cfg, cost_model=FAST))
    check_invariants(result)
    assert result.summary["num_completed"] == n


def test_one_replica_with_a_fixed_iteration_time_is_an_md1_queue():
    # one-token prompts and outputs, one sequence per iteration: each request is one
    # iteration of fixed length D, served FCFS: an M/D/1 queue
    cost = FakeCostModel(constant={"gemm": 100.0})
    rate = 600.0
    cfg = colocated(workload=workload(20_000, prompt=1, output=1, rate=rate), scheduler={"max_num_seqs": 1})
    result = simulate(assemble(cfg, cost_model=cost))
    durations = result.iterations["duration_us"].to_numpy()
    assert np.allclose(durations, durations[0])
    service = durations[0] * 1e-6
    rho = rate * service
    assert 0.3 < rho < 0.9
    expected = service + rho * service / (2 * (1 - rho))  # Pollaczek-Khinchine, deterministic service
    measured = result.requests["e2e_ms"].mean() * 1e-3
    assert measured == pytest.approx(expected, rel=0.05)


def test_littles_law_holds_on_the_summary_of_a_closed_loop():
    clients = 6
    cfg = colocated(workload={"clients": clients, "num_requests": 600, "prompt_tokens": {"kind": "fixed", "value": 100},
                              "output_tokens": {"kind": "fixed", "value": 20}, "warmup_requests": 60})
    s = simulate(assemble(cfg, cost_model=FAST)).summary
    # N = X * R: throughput (requests/s) times the mean time in the system is the client count
    assert s["requests_per_s"] * s["e2e_ms"]["mean"] * 1e-3 == pytest.approx(clients, rel=0.05)


def test_closed_loop_ramp_spreads_the_first_requests_and_is_reproducible():
    load = {"clients": 8, "num_requests": 16, "prompt_tokens": {"kind": "fixed", "value": 100},
            "output_tokens": {"kind": "fixed", "value": 20}}
    burst = simulate(assemble(colocated(workload=load), cost_model=FAST)).requests
    assert (burst["arrival_s"].to_numpy()[:8] == 0).all()
    runs = [simulate(assemble(colocated(workload={**load, "ramp_s": 0.5}), cost_model=FAST)).requests for _ in range(2)]
    first = runs[0]["arrival_s"].to_numpy()[:8]
    assert first.min() >= 0 and first.max() <= 0.5 and len(set(first.tolist())) == 8
    assert np.array_equal(runs[0]["arrival_s"].to_numpy(), runs[1]["arrival_s"].to_numpy())


def test_a_random_turnaround_delays_each_next_request_by_its_own_draw():
    load = {"clients": 4, "num_requests": 400, "prompt_tokens": {"kind": "fixed", "value": 100},
            "output_tokens": {"kind": "fixed", "value": 5}}
    plain = simulate(assemble(colocated(workload=load), cost_model=FAST)).requests
    runs = [simulate(assemble(colocated(workload={**load, "turnaround_s": 0.02}), cost_model=FAST)).requests
            for _ in range(2)]
    req = runs[0]
    sent_by = req["follows_request"].to_numpy()
    assert (sent_by[:4] == -1).all() and (req["arrival_s"].to_numpy()[:4] == 0).all()
    gaps = req["arrival_s"].to_numpy()[4:] - req["finish_s"].to_numpy()[sent_by[4:]]
    assert gaps.min() >= 0 and len(set(np.round(gaps, 12))) == len(gaps)  # one draw per request
    assert gaps.mean() == pytest.approx(0.02, rel=0.15) and gaps.std() == pytest.approx(0.02, rel=0.2)  # exponential
    assert np.array_equal(runs[0]["arrival_s"].to_numpy(), runs[1]["arrival_s"].to_numpy())
    sent = plain["follows_request"].to_numpy()[4:]
    assert np.array_equal(plain["arrival_s"].to_numpy()[4:], plain["finish_s"].to_numpy()[sent])  # 0: none


def test_clients_in_step_part_when_their_reused_prompts_hit_the_prefix_cache():
    """Identical closed-loop clients started at once stay in step: every round their prompts
    arrive together and queue behind each other's prefills. With a reused dataset of prompts
    and the prefix cache on (workload.prompt_pool), a prompt sent again prefills only its
    last, uncached block, so from the second pass on a round no longer queues."""
    load = {"clients": 8, "num_requests": 32, "prompt_tokens": {"kind": "fixed", "value": 1000},
            "output_tokens": {"kind": "fixed", "value": 20}}

    def rounds(workload, cache=True):
        cfg = colocated(workload=workload, scheduler={"prefix_caching": cache, "max_num_batched_tokens": 2048})
        req = simulate(assemble(cfg, cost_model=FAST)).requests
        return req["ttft_ms"].to_numpy().reshape(4, 8), req["cached_tokens"].to_numpy().reshape(4, 8)

    plain, plain_cached = rounds(load)
    pooled, cached = rounds({**load, "prompt_pool": {"size": 8}})
    assert (plain_cached == 0).all() and (cached[0] == 0).all()
    assert (cached[1:] == 992).all()  # every full block of 16 but the last token's
    np.testing.assert_allclose(pooled[0], plain[0])  # the cold round is the same
    # in step: every later round repeats the same queue (two prompts a step)
    np.testing.assert_allclose(plain[2:], plain[1:-1])
    assert plain[1:].max() > 2.5 * plain[1:].min()
    assert pooled[1:].max() < plain[1:].min(axis=1).max() and pooled[1:].mean() < plain[1:].mean() / 3
    uncached, none = rounds({**load, "prompt_pool": {"size": 8}}, cache=False)
    assert (none == 0).all()
    np.testing.assert_allclose(uncached, plain)  # the pool alone changes nothing


def test_pd_with_too_little_decode_memory_waits_stalls_and_still_completes():
    cfg = pd(decode_kv=3000, prefill_kv=4000, workload=workload(120, prompt=1000, output=60, rate=200.0))
    result = simulate(assemble(cfg, cost_model=FAST))
    check_invariants(result)
    s = result.summary
    assert s["kv_transfer_wait_s"]["prefill"] > 0
    assert s["backpressure_stall_s"]["prefill"] > 0
    assert (result.requests["transfer_wait_s"] > 0).any()


def test_a_configuration_that_cannot_progress_is_a_deadlock_naming_the_pool():
    cfg = pd(decode_kv=500, workload=workload(5, prompt=1000, output=10))
    with pytest.raises(DeadlockError, match="pool decode") as err:
        simulate(assemble(cfg, cost_model=FAST))
    assert "kv_capacity_tokens" in str(err.value)


def test_preemption_by_recompute_when_kv_runs_out():
    cfg = make_config(TINY_DENSE, {"main": {"role": "colocated", "gpus": 1, "kv_capacity_tokens": 700}}, "colocated",
                      workload=workload(40, prompt=200, output=150, rate=500.0))
    result = simulate(assemble(cfg, cost_model=FAST))
    check_invariants(result)
    assert result.summary["preemptions"] > 0


@pytest.mark.parametrize("policy", ["vllm", "sglang"])
def test_reserving_the_outputs_at_admission_avoids_preemption(policy):
    # the workload of the test above: with the whole outputs reserved (TensorRT-LLM's
    # guaranteed-no-evict) nothing is preempted; with part of them reserved (SGLang's
    # new_token_ratio) fewer are, and fewer prompts run at once
    def run(reserve):
        cfg = make_config(TINY_DENSE, {"main": {"role": "colocated", "gpus": 1, "kv_capacity_tokens": 700}},
                          "colocated", workload=workload(40, prompt=200, output=150, rate=500.0),
                          scheduler={"policy": policy, "reserve_output": reserve})
        result = simulate(assemble(cfg, cost_model=FAST))
        check_invariants(result)
        assert result.summary["num_completed"] == 40
        return result

    none, part, whole = run(0.0), run(0.7), run(1.0)
    assert whole.summary["preemptions"] == 0
    assert none.summary["preemptions"] > part.summary["preemptions"]
    # at most floor(700 / (200 + 150)) = 2 requests hold KV at once when their outputs are reserved
    assert whole.iterations["num_seqs"].max() <= 2 < none.iterations["num_seqs"].max()


def test_pd_decode_pool_takes_kv_transfers_with_the_output_reservation():
    # 40 requests of 200 + 150 tokens into a decode pool of 800 KV tokens: one that takes
    # every transfer whose prompt fits preempts when the outputs grow; one that keeps the
    # outputs of what it holds free (TensorRT-LLM's guaranteed-no-evict generation server)
    # or a fixed number of tokens per request held (SGLang's decode server) never does
    def run(**sched):
        result = simulate(assemble(pd(decode_kv=800, workload=workload(40, prompt=200, output=150, rate=500.0),
                             scheduler=sched), cost_model=FAST))
        check_invariants(result)
        assert result.summary["num_completed"] == 40
        it = result.iterations
        return result.summary["preemptions"], it[it["pool"] == "decode"]["num_seqs"].max()

    preempted, most = run()
    assert preempted > 0 and most >= 3
    preempted, most = run(reserve_output=1.0)
    assert preempted == 0 and most == 2  # 2 x (200 + 150) tokens fit in 800, 3 do not
    preempted, most = run(policy="sglang", reserve_output=0.7, decode_reserve_tokens=100)
    assert preempted == 0 and most <= 2  # a third needs 199 + 3 x 100 tokens free beside two running


def test_sglang_reserved_output_share_decays_and_admits_more():
    # SGLang's new_token_ratio: 0.7 of every running request's remaining output reserved at
    # first, falling per decode step (here to 0.1 over 20 steps): more prompts are admitted
    # at once, and with less reserved some must be retracted when the outputs grow
    def run(**decay):
        cfg = make_config(TINY_DENSE, {"main": {"role": "colocated", "gpus": 1, "kv_capacity_tokens": 1400}},
                          "colocated", workload=workload(60, prompt=200, output=150, rate=500.0),
                          scheduler={"policy": "sglang", "reserve_output": 0.7, **decay})
        result = simulate(assemble(cfg, cost_model=FAST))
        check_invariants(result)
        return result.summary["preemptions"], result.iterations["num_seqs"].max()

    constant, decaying = run(), run(reserve_output_min=0.1, reserve_output_decay_steps=20)
    assert constant[0] == 0 < decaying[0]
    assert constant[1] < decaying[1]


def test_sglang_never_mixes_prefill_and_decode_in_one_iteration():
    result = simulate(assemble(colocated(workload=workload(60, prompt=300, output=30, rate=200.0), scheduler={"policy": "sglang"}), cost_model=FAST))
    it = result.iterations
    assert not ((it["prefill_tokens"] > 0) & (it["decode_seqs"] > 0)).any()
    mixed = simulate(assemble(colocated(workload=workload(60, prompt=300, output=30, rate=200.0)), cost_model=FAST)).iterations
    assert ((mixed["prefill_tokens"] > 0) & (mixed["decode_seqs"] > 0)).any()


def test_sglang_max_prefill_tokens_lets_further_prompts_join_only_whole():
    # 8 prompts of 300 tokens arrive at once. Without a limit a prefill batch takes 1000
    # tokens (three prompts and a chunk of a fourth); with max_prefill_tokens = 700 the first
    # prompt is taken and a further one only whole and within what is left (two per batch)
    def prefill_batches(**limit):
        cfg = colocated(workload={"clients": 8, "num_requests": 8, "prompt_tokens": {"kind": "fixed", "value": 300},
                                  "output_tokens": {"kind": "fixed", "value": 4}},
                        scheduler={"policy": "sglang", "max_num_batched_tokens": 1000, **limit})
        result = simulate(assemble(cfg, cost_model=FAST))
        check_invariants(result)
        it = result.iterations
        return it.loc[it["prefill_tokens"] > 0, "prefill_tokens"].tolist()

    assert prefill_batches()[:2] == [300, 1000]  # the first arrival alone, then three and a chunk
    assert set(prefill_batches(max_prefill_tokens=700)) == {300, 600}


def test_chunked_prefill_respects_the_token_budget():
    sched = {"max_num_batched_tokens": 128}
    it = simulate(assemble(colocated(workload=workload(30, prompt=1000, output=5), scheduler=sched), cost_model=FAST)).iterations
    assert (it["prefill_tokens"] + it["decode_seqs"] <= 128).all()
    whole = simulate(assemble(colocated(workload=workload(30, prompt=1000, output=5),
                                        scheduler={"max_num_batched_tokens": 2048, "chunked_prefill": False}),
                              cost_model=FAST)).iterations
    assert (whole["prefill_tokens"] % 1000 == 0).all() and whole["prefill_tokens"].max() == 2000
    # a prompt that cannot be prefilled in one step is refused, as vLLM refuses the configuration
    with pytest.raises(ConfigError, match="chunked_prefill is false.*max_num_batched_tokens=128 is below the longest "
                                          "prompt \\(1,000 tokens\\).*at least 1,000"):
        simulate(assemble(colocated(workload=workload(30, prompt=1000, output=5),
                                    scheduler={**sched, "chunked_prefill": False}), cost_model=FAST))


def test_ep_skew_raises_iteration_times():
    pools = {"main": {"role": "colocated", "gpus": 4, "ep": 4}}
    cost = FakeCostModel(constant={"gemm": 5.0}, per_unit={"moe": 1.0})
    times = {}
    for kind in ("uniform", "power_law"):
        cfg = make_config(TINY_MOE, pools, "ep_moe", {"routing": {"kind": kind, "alpha": 1.5}},
                          workload=workload(40, prompt=200, output=20, rate=100.0))
        times[kind] = simulate(assemble(cfg, cost_model=cost)).iterations["duration_us"].mean()
    assert times["power_law"] > 1.1 * times["uniform"]


def test_one_seed_gives_identical_outputs_twice():
    cfg = pd(workload=workload(50, prompt=120, output=20, rate=80.0), seed=7)
    a, b = simulate(assemble(cfg, cost_model=FAST)), simulate(assemble(cfg, cost_model=FAST))
    assert a.requests.equals(b.requests)
    assert a.iterations.equals(b.iterations)
    other = simulate(assemble(pd(workload=workload(50, prompt=120, output=20, rate=80.0), seed=8), cost_model=FAST))
    assert not a.requests["arrival_s"].equals(other.requests["arrival_s"])


@pytest.mark.parametrize(("change", "message"), [
    ({"workload": {"arrival": {"kind": "poisson", "rate_per_s": -1}}}, "rate_per_s"),
    ({"cluster": {"pools": {"main": {"role": "colocated", "gpus": 0}}}}, "gpus"),
    ({"cluster": {"pools": {"main": {"role": "colocated", "gpus": 3, "tp": 3}}}}, "tp=3 does not divide"),
    ({"model": "llama-3.1-70b", "cluster": {"pools": {"main": {"role": "colocated", "gpus": 1}}}}, "GiB of weights"),
])
def test_bad_configs_fail_before_simulating(change, message):
    from frontier_dag.config.run import run_config_from_dict

    data = {"model": TINY_DENSE, "hardware": "h100_sxm", "predictor": {"source": "roofline"},
            "cluster": {"pools": {"main": {"role": "colocated", "gpus": 1}}}, "workflow": {"name": "colocated"}}
    data.update(change)
    with pytest.raises(ConfigError, match=message):
        simulate(assemble(run_config_from_dict(data), cost_model=FAST))


def test_run_directory_is_never_overwritten_silently(tmp_path):
    result = simulate(assemble(colocated(workload=workload(5)), cost_model=FAST))
    write_run(result, tmp_path / "run")
    with pytest.raises(SimulationError, match="already holds a run"):
        write_run(result, tmp_path / "run")
    write_run(result, tmp_path / "run", overwrite=True)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(SimulationError, match="not a run's"):
        check_run_dir(tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"


def test_decode_stretches_give_what_one_step_at_a_time_gives(monkeypatch):
    """Decode steps planned and priced up to 64 at once (cut when anything touches the
    replica) time every iteration as planning them one by one does."""
    from frontier_dag.sim import replica

    cfg = colocated(workload=workload(40, prompt=50, output=60, rate=30.0), seed=1)
    lengths = []
    launch = replica.ReplicaWorker._launch_stretch

    def recording(self, *args):
        launched = launch(self, *args)
        if launched:
            lengths.append(len(self._stretch.durations))
        return launched

    monkeypatch.setattr(replica.ReplicaWorker, "_launch_stretch", recording)
    planned = simulate(assemble(cfg, cost_model=FAST))
    assert max(lengths) > 8  # stretches of many steps were planned
    monkeypatch.setattr(replica, "STRETCH_STEPS", 1)
    single = simulate(assemble(cfg, cost_model=FAST))
    assert planned.summary["iterations"] == single.summary["iterations"]
    for column in ("first_token_s", "finish_s"):
        np.testing.assert_allclose(planned.requests[column], single.requests[column], rtol=1e-9)
    np.testing.assert_allclose(planned.iterations["duration_us"], single.iterations["duration_us"], rtol=1e-12)


#: Many layers x experts: the router draws Poisson and normal counts rather than a multinomial.
WIDE_MOE = {**TINY_MOE, "name": "wide-moe", "num_layers": 10,
            "moe": {**TINY_MOE["moe"], "num_experts": 256, "top_k": 8}}


@pytest.mark.parametrize(("model", "pools", "workflow", "params"), [
    (TINY_MOE, {"attention": {"role": "attention", "gpus": 2}, "ffn": {"role": "ffn", "gpus": 4, "ep": 4}},
     "af_ep_moe", {"micro_batches": 2, "routing": {"kind": "power_law", "alpha": 1.2}}),
    (WIDE_MOE, {"attention": {"role": "attention", "gpus": 2}, "ffn": {"role": "ffn", "gpus": 8, "ep": 8}},
     "af_ep_moe", {"micro_batches": 3, "routing": {"kind": "uniform"}}),
    (WIDE_MOE, {"prefill": {"role": "prefill", "gpus": 4, "ep": 4}, "decode": {"role": "decode", "gpus": 8, "ep": 8}},
     "pd_ep_moe", {"routing": {"kind": "power_law", "alpha": 1.2, "redundant_experts": 8}}),
])
def test_routed_decode_stretches_give_what_one_step_at_a_time_gives(monkeypatch, model, pools, workflow, params):
    """A stretch of a routed or micro-batched stage draws its routing at once and prices its
    experts in one call: the same numbers, iteration by iteration, as step by step."""
    from frontier_dag.sim.predictor import ExecutionPredictor

    cfg = make_config(model, pools, workflow, params, workload=workload(30, prompt=40, output=50, rate=40.0),
                      scheduler={"policy": "sglang", "max_num_seqs": 64}, seed=2)
    general = ExecutionPredictor._general_steps
    stretches = []

    def recording(self, *args):
        priced = general(self, *args)
        stretches.append(len(priced[0]))
        return priced

    monkeypatch.setattr(ExecutionPredictor, "_general_steps", recording)
    planned = simulate(assemble(cfg))
    assert max(stretches) > 4  # stretches of several steps went through the routed path
    monkeypatch.setattr(ExecutionPredictor, "_general_steps", lambda self, *args: None)
    single = simulate(assemble(cfg))
    pd_testing = pytest.importorskip("pandas.testing")
    pd_testing.assert_frame_equal(planned.iterations, single.iterations)
    pd_testing.assert_frame_equal(planned.requests, single.requests)
