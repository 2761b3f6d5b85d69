"""Rebuilding a recorded iteration: its prefilling sequences come from requests.parquet,
so a rebuilt iteration prices as the simulated one did, and one that does not is said."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import frontier_dag as fd
from frontier_dag.analysis import rebuild
from frontier_dag.analysis.rebuild import (
    TOLERANCE,
    check_rebuilt,
    prefill_sequences,
    rebuild_iteration,
)
from frontier_dag.cost.protocol import Prediction
from frontier_dag.errors import FrontierDagWarning
from tests.conftest import TINY_DENSE, FakeCostModel


def config(policy: str, pools: dict, workflow: str, **scheduler) -> dict:
    return {"model": TINY_DENSE, "hardware": "h100_sxm", "cluster": {"pools": pools}, "workflow": {"name": workflow},
            "predictor": {"source": "roofline"}, "scheduler": {"policy": policy, **scheduler},
            "workload": {"arrival": {"kind": "poisson", "rate_per_s": 30}, "num_requests": 40,
                         "prompt_tokens": {"kind": "lognormal", "mean": 1500, "cv": 1.0, "high": 8000},
                         "output_tokens": {"kind": "fixed", "value": 16}}}


CHUNKED = config("vllm", {"main": {"role": "colocated", "gpus": 1}}, "colocated", max_num_batched_tokens=512)
WHOLE = config("sglang", {"prefill": {"role": "prefill", "gpus": 1}, "decode": {"role": "decode", "gpus": 1}}, "pd",
               chunked_prefill=False, max_num_batched_tokens=8192)


class QuadraticAttention(FakeCostModel):
    """Attention that costs what causal attention computes, sum of q x (ctx + q) over the
    sequences (a thousandth of a µs each), so a batch's split into sequences shows in its
    time; other ops 2 µs."""

    def __init__(self):
        super().__init__(constant={"": 2.0})

    def predict(self, family, query):
        if not family.startswith(("attention", "mla")):
            return super().predict(family, query)
        times = [1e-3 * float(np.sum(np.asarray(q) * (np.asarray(c) + np.asarray(q))))
                 for q, c in zip(query["q_lens"], query["ctx_lens"], strict=True)]
        return Prediction(np.array(times), source="fake")


PRICES = QuadraticAttention()


@pytest.fixture(scope="module", params=["chunked", "whole"])
def run(request):
    return fd.simulate(CHUNKED if request.param == "chunked" else WHOLE, cost_model=PRICES).analysis().run


def prefill_rows(run) -> np.ndarray:
    rows = np.flatnonzero(run.iterations["prefill_tokens"].to_numpy() > 0)
    return rows[:: max(1, len(rows) // 30)]


def test_prefilling_sequences_are_found_and_rebuild_exactly(run):
    """Whole prompts, and the first, middle and last chunks of long ones (512-token
    budget, prompts up to 8,000 tokens) add up to the logged totals, and the rebuilt
    iteration takes the recorded time."""
    rows = prefill_rows(run)
    assert len(rows) >= 10
    for row in rows:
        q, ctx = prefill_sequences(run, int(row))
        it = run.iterations.iloc[row]
        assert len(q) == it["num_seqs"] - it["decode_seqs"] and q.sum() == it["prefill_tokens"]
        assert rebuild_iteration(run, int(row), PRICES).difference == pytest.approx(0.0, abs=1e-9)


def test_without_the_requests_the_even_split_is_only_close(run, monkeypatch):
    rows = prefill_rows(run)
    monkeypatch.setattr(rebuild, "prefill_sequences", lambda run, row: None)
    differences = np.array([rebuild_iteration(run, int(row), PRICES).difference for row in rows])
    assert np.abs(differences).max() > 0.02  # so the exact rebuild above is the requests' doing


def test_decode_iterations_rebuild_close_and_unwarned(run):
    checks = check_rebuilt(run, PRICES)
    assert {c["pool"] for c in checks} == set(run.pools)
    assert all(abs(c["difference"]) < 0.01 and c["warning"] is None for c in checks)


def test_a_rebuilt_iteration_beyond_the_tolerance_is_a_warning_with_both_times(fake_cost_model):
    """A run simulated with other prices than its config names: rebuilt by the config's
    predictor, its iterations are far from their records, and each rebuild says so."""
    fake = fake_cost_model(constant={"gemm": 50.0})
    run = fd.simulate(CHUNKED, cost_model=fake).analysis().run
    row = int(prefill_rows(run)[0])
    with pytest.warns(FrontierDagWarning, match="the rebuilt iteration of main\\[0\\]") as caught:
        rebuilt = rebuild_iteration(run, row)
    assert abs(rebuilt.difference) > TOLERANCE
    (warning,) = [str(w.message) for w in caught]
    assert rebuilt.check()["warning"] == warning
    assert f"takes {rebuilt.rebuilt_us / 1e3:,.2f} ms where the run recorded {rebuilt.recorded_us / 1e3:,.2f} ms" \
        in warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # priced by a cost model passed in: nothing to compare
        assert rebuild_iteration(run, row, fake).difference == pytest.approx(0.0, abs=1e-9)
