"""The summary's operator-price counts: every price an iteration used (memo hits included),
per source, and those outside the profiled range per pool and operator family."""

from __future__ import annotations

import numpy as np
import pytest

from frontier_dag.cost.protocol import Prediction
from frontier_dag.dsl import trace_config
from frontier_dag.sim.assembly import assemble
from frontier_dag.sim.run import simulate
from tests.conftest import TINY_DENSE, TINY_MOE, FakeCostModel, make_config


class TwoSources(FakeCostModel):
    """GEMMs 'measured', everything else 'estimated'; attention over more than 150 cached
    tokens outside the measured range."""

    def predict(self, family, query):
        pred = super().predict(family, query)
        flagged = np.zeros(len(pred.latency_us), dtype=bool)
        if family.startswith("attention"):
            flagged = np.array([max(ctx, default=0) > 150 for ctx in query["ctx_lens"]])
        return Prediction(pred.latency_us, source="measured" if family == "gemm" else "estimated",
                          out_of_range=flagged)


COSTS = {"constant": {"gemm": 20.0, "attention": 10.0, "moe": 10.0, "all": 2.0},
         "per_unit": {"gemm": 0.05, "attention": 0.02, "moe": 0.05}}
#: Every request at once: no arrival cuts a planned stretch of decode steps short, so every
#: iteration priced is an iteration run.
WORKLOAD = {"clients": 40, "num_requests": 40,
            "prompt_tokens": {"kind": "fixed", "value": 100}, "output_tokens": {"kind": "fixed", "value": 120}}


@pytest.mark.parametrize(("model", "pools", "workflow"), [
    (TINY_DENSE, {"main": {"role": "colocated", "gpus": 1}}, "colocated"),  # memoised sums, decode stretches
    (TINY_MOE, {"main": {"role": "colocated", "gpus": 4, "ep": 4}}, "ep_moe"),  # the DAG path and the experts
])
def test_every_price_used_is_counted_once(model, pools, workflow):
    cfg = make_config(model, pools, workflow, workload=WORKLOAD)
    s = simulate(assemble(cfg, cost_model=TwoSources(**COSTS))).summary
    _, graph = trace_config(cfg)
    # a price per template: repeated layers share their templates (EP ranks' experts do not)
    families = [graph.templates[t].family for t in sorted({a["template"] for _, a in graph.graph.nodes(data=True)})]
    priced = [f for f in families if f != "sync"]
    used = s["predictor_prices_by"]["main"]
    # closed form: each iteration uses one price of every template of its DAG
    assert sum(used.values()) == s["iterations"] * len(priced)
    assert used["gemm"] == s["iterations"] * priced.count("gemm")
    assert s["predictor_sources"] == {"estimated": s["iterations"] * (len(priced) - priced.count("gemm")),
                                      "measured": s["iterations"] * priced.count("gemm")}


def test_out_of_range_prices_are_counted_per_pool_and_operator():
    cfg = make_config(TINY_DENSE, {"main": {"role": "colocated", "gpus": 1}}, "colocated", workload=WORKLOAD)
    s = simulate(assemble(cfg, cost_model=TwoSources(**COSTS))).summary
    by = s["predictor_out_of_range_by"]["main"]
    assert set(by) == {"attention_decode"} and by["attention_decode"] > 0
    assert s["predictor_out_of_range"] == sum(by.values())
    # decodes run past 150 cached tokens for their last ~70 of 120 tokens: most, not all, attention prices
    assert 0.3 < by["attention_decode"] / s["predictor_prices_by"]["main"]["attention_decode"] < 1


def test_pd_counts_each_pool_and_the_transfer_stage_apart():
    cfg = make_config(TINY_DENSE, {"prefill": {"role": "prefill", "gpus": 1}, "decode": {"role": "decode", "gpus": 1}},
                      "pd", workload=WORKLOAD)
    s = simulate(assemble(cfg, cost_model=TwoSources(**COSTS))).summary
    assert set(s["predictor_prices_by"]) == {"prefill", "decode", "kv_transfer"}
    assert s["predictor_prices_by"]["kv_transfer"] == {"p2p": 40}  # one per request
    assert set(s["predictor_out_of_range_by"]["decode"]) == {"attention_decode"}
    assert "attention_decode" not in s["predictor_out_of_range_by"]["prefill"]
