"""Every price and every op size is checked where prices are produced: a NaN, infinite or
negative time (a damaged predictor) and a negative size (a workflow whose Sym went below
zero) are errors that name the op, never an iteration that takes no time."""

from __future__ import annotations

import numpy as np
import pytest

from frontier_dag.config.run import resolve
from frontier_dag.cost.batch import MicroBatchLoad, stage_env
from frontier_dag.cost.coster import StageCoster
from frontier_dag.dsl import WorkflowDef, trace
from frontier_dag.errors import CostModelError
from frontier_dag.ir.compile import CompiledStage
from frontier_dag.sim.assembly import assemble
from frontier_dag.sim.run import simulate
from tests.conftest import FakeCostModel, make_config

NAN = float("nan")


def batch(decodes=4, chunk=32):
    q = np.concatenate([np.ones(decodes, dtype=np.int64), [chunk]])
    ctx = np.concatenate([np.full(decodes, 100, dtype=np.int64), [0]])
    return [MicroBatchLoad(q, ctx)]


def price(graph, stage, model, loads):
    return StageCoster(graph, CompiledStage(graph, stage), model).costs(*stage_env(stage, loads))


@pytest.mark.parametrize(("family", "value", "op"), [
    ("gemm", NAN, "gemm at nan"),
    ("elementwise", -3.0, "elementwise at -3.0"),
    ("all_reduce", np.inf, "all_reduce at inf"),
    ("attention", NAN, "attention_mixed at nan"),
])
def test_a_bad_price_names_the_op(trace_dict, tiny, family, value, op):
    _, graph = trace_dict(tiny["dense"], {"m": {"role": "colocated", "gpus": 2, "tp": 2}}, "colocated")
    model = FakeCostModel(constant={"gemm": 1.0, "elementwise": 1.0, "all_reduce": 1.0, "attention": 1.0, family: value})
    with pytest.raises(CostModelError, match=rf"workflows/.*\.py:\d+ .*: op \S+ on colocated.*priced {op} µs"):
        price(graph, "colocated", model, batch())


def test_a_bad_expert_price_names_the_op(trace_dict, tiny):
    _, graph = trace_dict(tiny["moe"], {"m": {"role": "colocated", "gpus": 2, "ep": 2}}, "ep_moe")
    model = FakeCostModel(constant={"gemm": 1.0, "elementwise": 1.0, "moe": NAN, "attention": 1.0, "all_to_all": 1.0,
                                    "all_reduce": 1.0})
    loads = batch()
    loads[0].expert_loads = np.ones((2, 2, 4), dtype=np.int64)
    with pytest.raises(CostModelError, match=r"op \S+ on colocated.*priced moe_wideep_prefill at nan"):
        price(graph, "colocated", model, loads)


def shrinking(g):
    decode = g.stream("decode")
    with g.stage("decode", pools=["decode"]) as st:
        g.gemm("shrunk_proj", decode, m=st.mb.tokens - 1000, n=8, k=8)


def test_a_negative_size_is_an_error_not_a_free_op(config_dict, tiny):
    deployment = resolve(config_dict(tiny["dense"], {"p": {"role": "prefill", "gpus": 1},
                                                     "d": {"role": "decode", "gpus": 1}}, "pd"))
    graph = trace(WorkflowDef("shrinking", "test", shrinking), deployment)
    with pytest.raises(CostModelError, match=r"test_price_guards\.py:\d+: op mb0.shrunk_proj on decode: gemm size m = "
                                             r"-995 \(.*tokens - 1000\); an op's sizes must be >= 0"):
        price(graph, "decode", FakeCostModel(constant={"gemm": 1.0}), batch(decodes=4, chunk=1))


def test_a_nan_price_stops_the_simulation(tiny):
    """Not '0 of 100 requests' and a zero exit: the run fails, naming the op."""
    config = make_config(tiny["dense"], {"main": {"role": "colocated", "gpus": 1}}, "colocated",
                         workload={"arrival": {"kind": "poisson", "rate_per_s": 10}, "num_requests": 100})
    with pytest.raises(CostModelError, match="priced gemm at nan"):
        simulate(assemble(config, cost_model=FakeCostModel(constant={"gemm": NAN, "elementwise": 1.0, "attention": 1.0})))
