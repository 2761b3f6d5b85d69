"""The dependencies the simulator records: every iteration, transfer and closed-loop send
names what it waited for, and that event ends exactly when the wait does."""

from __future__ import annotations

import numpy as np
import pytest

from frontier_dag.sim.assembly import assemble
from frontier_dag.sim.iteration_log import Cause, Node
from frontier_dag.sim.run import simulate
from tests.conftest import TINY_DENSE, FakeCostModel, make_config

FAST = FakeCostModel(constant={"gemm": 20.0, "attention": 10.0, "p2p": 5.0, "all": 2.0},
                     per_unit={"gemm": 0.05, "attention": 0.02, "p2p": 1e-6})


def lengths(n, prompt, output, **more):
    return {"num_requests": n, "prompt_tokens": {"kind": "uniform", "low": prompt // 2, "high": prompt},
            "output_tokens": {"kind": "uniform", "low": output // 2, "high": output}, **more}


@pytest.fixture(scope="module")
def pd_under_pressure():
    """PD whose decode pool preempts (requests go back to prefill) and whose prefill pool
    waits for decode blocks (backpressure)."""
    cfg = make_config(TINY_DENSE, {"prefill": {"role": "prefill", "gpus": 1, "kv_capacity_tokens": 3000},
                                   "decode": {"role": "decode", "gpus": 1, "kv_capacity_tokens": 2500}}, "pd",
                      workload=lengths(80, 600, 120, arrival={"kind": "poisson", "rate_per_s": 300.0}), seed=2)
    return simulate(assemble(cfg, cost_model=FAST))


def ends(it, rows):
    rows = np.asarray(rows)
    return it["start_s"].to_numpy()[rows] + it["duration_us"].to_numpy()[rows] * 1e-6


def test_every_iteration_names_what_it_waited_for(pd_under_pressure):
    result = pd_under_pressure
    it, rq = result.iterations, result.requests
    kind, after = it["waited_for_kind"].to_numpy(), it["waited_for"].to_numpy()
    start, cause = it["start_s"].to_numpy(), it["cause"].to_numpy()
    assert result.summary["preemptions"] > 0 and (cause == Cause.REQUEUE).any()
    assert (kind != Node.NONE).all()
    on_it = np.flatnonzero(kind == Node.ITERATION)
    np.testing.assert_allclose(ends(it, after[on_it]), start[on_it], rtol=1e-12)
    # the replica's previous iteration, but for requests queued again after a decode preemption
    same = (it["pool"].to_numpy()[after[on_it]] == it["pool"].to_numpy()[on_it]) & \
        (it["replica"].to_numpy()[after[on_it]] == it["replica"].to_numpy()[on_it])
    assert (same | (cause[on_it] == Cause.REQUEUE)).all() and not same.all()
    arrivals = np.flatnonzero(kind == Node.ARRIVAL)
    np.testing.assert_array_equal(start[arrivals], rq["arrival_s"].to_numpy()[after[arrivals]])
    # a KV arrival, or the memory its departure freed: the request's last transfer, or an
    # earlier one of a request handed off again after a preemption
    transfers = np.flatnonzero(kind == Node.TRANSFER)
    last = np.isclose(start[transfers], rq["transfer_end_s"].to_numpy()[after[transfers]], rtol=1e-12, atol=0)
    assert last.any() and (rq["preemptions"].to_numpy()[after[transfers][~last]] > 0).all()


def test_every_request_names_the_iterations_of_its_milestones(pd_under_pressure):
    it, rq = pd_under_pressure.iterations, pd_under_pressure.requests
    start = it["start_s"].to_numpy()
    np.testing.assert_array_equal(start[rq["first_scheduled_iteration"]], rq["first_scheduled_s"])
    np.testing.assert_allclose(ends(it, rq["first_token_iteration"]), rq["first_token_s"], rtol=1e-12)
    np.testing.assert_allclose(ends(it, rq["finish_iteration"]), rq["finish_s"], rtol=1e-12)
    np.testing.assert_array_equal(start[rq["decode_admitted_iteration"]], rq["decode_admitted_s"])
    handed_again = rq["handoff_iteration"] != rq["first_token_iteration"]  # after a preemption in decode
    assert handed_again.any() and (rq["preemptions"][handed_again] > 0).all()
    assert (ends(it, rq["handoff_iteration"]) <= rq["transfer_start_s"] + 1e-12).all()
    waited = rq["transfer_waited_for_kind"].to_numpy()
    assert (waited != Node.NONE).any()  # backpressure: some transfers waited for decode blocks
    freed = rq.index[waited == Node.ITERATION]
    np.testing.assert_allclose(ends(it, rq["transfer_waited_for"][freed]), rq["transfer_start_s"][freed], rtol=1e-12)
    assert (rq.loc[waited == Node.NONE, "transfer_wait_s"] == 0).all()


def test_a_closed_loop_records_whose_finish_sent_each_request():
    cfg = make_config(TINY_DENSE, {"main": {"role": "colocated", "gpus": 1}}, "colocated",
                      workload=lengths(30, 200, 20, clients=3, think_time_s=0.002))
    rq = simulate(assemble(cfg, cost_model=FAST)).requests
    follows = rq["follows_request"].to_numpy()
    assert (follows[:3] == -1).all() and (follows[3:] >= 0).all()
    assert sorted(follows[3:]) == sorted(set(follows[3:]))  # each finish sends one request
    np.testing.assert_allclose(rq["arrival_s"][3:], rq["finish_s"].to_numpy()[follows[3:]] + 0.002, rtol=1e-12)
