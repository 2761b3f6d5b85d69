"""An iteration's attribution from the templates on its critical path only: the same
categories, and the same decisions to recompute the gradient, as over every template."""

from __future__ import annotations

import numpy as np
import pytest

from frontier_dag.sim.predictor import CATEGORIES, ExecutionPredictor
from tests.conftest import make_config
from tests.sim.test_simulator import TINY_MOE, WIDE_MOE, assemble, simulate, workload


def _dense_timed(self, costs, loads):
    """The attribution over every template (the path before the support was kept)."""
    total = self.compiled.iteration_time_one(costs)
    host = self.overhead_us + self.per_sequence_us * sum(load.summary.seqs for load in loads)
    if not self.attribute:
        return self._per_step(total + host)
    weighted = None if self._grad is None else self._grad * costs
    if weighted is None or float(weighted.sum()) < total - 1e-9 * max(total, 1.0):
        self._grad = self.compiled.program.gradient(costs)[1]
        weighted = self._grad * costs
    cats = np.bincount(self._category, weights=weighted, minlength=len(CATEGORIES))
    cats[-1] = host
    if self.steps_per_iteration != 1.0:
        cats /= self.steps_per_iteration
    self.last_categories = tuple(cats.tolist())
    return self._per_step(total + host)


@pytest.mark.parametrize(("model", "pools", "workflow", "params"), [
    (TINY_MOE, {"attention": {"role": "attention", "gpus": 2}, "ffn": {"role": "ffn", "gpus": 4, "ep": 4}},
     "af_ep_moe", {"micro_batches": 2, "routing": {"kind": "power_law", "alpha": 1.2}}),
    (WIDE_MOE, {"prefill": {"role": "prefill", "gpus": 4, "ep": 4}, "decode": {"role": "decode", "gpus": 8, "ep": 8}},
     "pd_ep_moe", {"routing": {"kind": "power_law", "alpha": 1.2, "redundant_experts": 8}}),
    (WIDE_MOE, {"attention": {"role": "attention", "gpus": 2}, "ffn": {"role": "ffn", "gpus": 8, "ep": 8}},
     "af_ep_moe", {"micro_batches": 3, "routing": {"kind": "uniform"}}),
])
def test_the_path_attribution_is_the_dense_one(monkeypatch, model, pools, workflow, params):
    """The same iterations and requests as the attribution over every template, whether the
    previous iteration's gradient serves (often in a ping-pong grid) or not (a routed
    decode's slowest ranks change from step to step)."""
    cfg = make_config(model, pools, workflow, params, workload=workload(30, prompt=40, output=50, rate=40.0),
                      scheduler={"policy": "sglang", "max_num_seqs": 64}, seed=2)
    stale = ExecutionPredictor._stale
    answers = []

    def recording(self, weighted, costs, total):
        answers.append(stale(self, weighted, costs, total))
        return answers[-1]

    monkeypatch.setattr(ExecutionPredictor, "_stale", recording)
    kept = simulate(assemble(cfg))
    assert answers.count(True) > 10
    if model is TINY_MOE:
        assert answers.count(False) > 10  # the previous gradient served
    monkeypatch.setattr(ExecutionPredictor, "_timed", _dense_timed)
    dense = simulate(assemble(cfg))
    pd_testing = pytest.importorskip("pandas.testing")
    pd_testing.assert_frame_equal(kept.iterations, dense.iterations)
    pd_testing.assert_frame_equal(kept.requests, dense.requests)


def test_a_path_sum_at_the_bound_is_decided_by_the_dense_sum():
    """Where the path's sum lies within rounding of the bound, the sum over every template
    decides (its order of additions is not the path's)."""
    rng = np.random.default_rng(4)
    predictor = ExecutionPredictor.__new__(ExecutionPredictor)
    agree = 0
    for _ in range(2000):
        grad = np.where(rng.random(400) < 0.3, rng.integers(1, 4, 400), 0).astype(float)
        costs = rng.random(400) * 10 ** rng.uniform(-3, 3, 400)
        predictor._grad = grad
        predictor._support = np.flatnonzero(grad)
        predictor._support_grad = grad[predictor._support]
        predictor._support_grad_nonnegative = True
        dense = float((grad * costs).sum())
        # a total whose bound, total (1 - 1e-9), falls a few ulps either side of the dense sum
        total = dense / (1 - 1e-9) * (1 + rng.integers(-4, 5) * 2.2e-16)
        expected = dense < total - 1e-9 * max(total, 1.0)
        weighted = predictor._support_grad * costs[predictor._support]
        assert predictor._stale(weighted, costs, total) == expected
        agree += 1
    assert agree == 2000
