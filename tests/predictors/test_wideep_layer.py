"""A wide-EP decode MoE layer of DeepSeek-V3 as a whole (issue 14, item 2): the experts,
DeepEP dispatch and DeepEP combine that the ``pd_ep_moe`` workflow prices for a decode
batch, against aiconfigurator-core's own rows for that batch on H200 with SGLang, which
the predictors were fitted without.

Held out: every row of the wide-EP decode MoE table at the token counts below (all EP
sizes, all routings) and every DeepEP low-latency row of the per-rank token counts below.
The routing is the table's (uniform), so the comparison is of prices, not of routing draws.
DeepEP was measured on 1 to 8 nodes (EP 8 to 64): at EP 128 and 256 the experts alone are
compared.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from frontier_dag.analysis.iteration import representative_loads
from frontier_dag.config.hardware import load_hardware
from frontier_dag.config.model import load_model
from frontier_dag.config.run import load_run_config
from frontier_dag.cost.batch import stage_env
from frontier_dag.cost.coster import StageCoster
from frontier_dag.cost.queries import QUERY_COLUMNS
from frontier_dag.dsl import trace_config
from frontier_dag.ir.compile import CompiledStage
from frontier_dag.predictors.aiconfigurator import (
    find_table,
    package_data_root,
    wideep_deepep_plan,
    wideep_moe_rows,
    wideep_uniform_tokens,
)
from frontier_dag.predictors.fitted_set import FittedSet
from frontier_dag.predictors.fitting import DEFAULT_SETTINGS, fit_family
from frontier_dag.predictors.model import FittedCostModel
from frontier_dag.predictors.schema import normalize_profile

pytest.importorskip("aiconfigurator_core")

SYSTEM = "h200_sxm"
#: (sequences per replica, EP): 64 to 16,384 sequences per replica, 8 to 128 per rank
POINTS = [(64, 8), (256, 8), (256, 16), (1024, 16), (1024, 32), (1024, 64), (4096, 64), (4096, 128),
          (16384, 128), (16384, 256)]
HELD_TOKENS = {64, 256, 1024, 4096, 16384}  # the MoE table's num_tokens (whole batch)
HELD_PER_RANK = {8, 16, 32, 64}  # DeepEP's num_token (tokens each rank sends)
TOLERANCE = 0.15


def _table(family: str, frame: pd.DataFrame) -> pd.DataFrame:
    return normalize_profile(family, frame[[*QUERY_COLUMNS[family], "latency_us", "latency_std_us", "repeats",
                                            "source"]], family)


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    base = package_data_root() / SYSTEM
    moe = _table("moe_wideep_decode", wideep_moe_rows(find_table(base, "moe", "sglang",
                                                                 "wideep_generation_moe_perf.parquet"), prefill=False))
    deepep = pd.concat([reader(path) for path, reader, _ in
                        wideep_deepep_plan(base, "sglang", "wideep_deepep_ll_perf.parquet", low_latency=True)])
    out = {"moe_wideep_decode": moe}
    for family, part in deepep.groupby("family"):
        out[family] = _table(family, part.reset_index(drop=True))
    return out


@pytest.fixture(scope="module")
def held_out_model(tables) -> FittedCostModel:
    hw = load_hardware(SYSTEM)
    models = {}
    for family, table in tables.items():
        held = table["num_tokens"].isin(HELD_TOKENS if family == "moe_wideep_decode" else HELD_PER_RANK)
        assert held.any() and not held.all()
        models[family] = fit_family(family, table[~held].reset_index(drop=True), hw)
    return FittedCostModel(FittedSet(hw.name, "wide-EP tables less the held-out rows", "-", DEFAULT_SETTINGS, models))


def _measured(tables, seqs: int, ep: int) -> dict[str, float]:
    moe = tables["moe_wideep_decode"]
    row = moe[(moe["num_tokens"] == seqs) & (moe["ep"] == ep) & moe["source"].str.endswith(":uniform")]
    out = {"experts": float(row["latency_us"].iloc[0])}
    for family in ("deepep_dispatch", "deepep_combine"):
        t = tables[family]
        hit = t[(t["num_tokens"] == seqs // ep) & (t["group_size"] == ep) & (t["hidden"] == 7168) & (t["topk"] == 8)
                & (t["num_experts"] == 256)]
        if len(hit):
            out[family] = float(hit["latency_us"].mean())
    return out


def _priced(model: FittedCostModel, seqs: int, ep: int) -> dict[str, float]:
    """The experts (slowest rank), dispatch and combine of the first MoE layer of the decode
    stage, priced by the pipeline the simulator runs."""
    config = load_run_config("examples/pd_ep_moe_deepseek_v3.yaml",
                             (f"hardware={SYSTEM}", f"cluster.pools.decode.gpus={ep}", f"cluster.pools.decode.ep={ep}",
                              "workflow.params.routing.kind=uniform", "workflow.params.routing.redundant_experts=0"))
    # the first MoE layer is the one compared: a slice of the model (its 3 dense layers and one
    # MoE layer, every shape as in the full model) traces in a fraction of the time
    sliced = {**load_model("deepseek-v3").model_dump(), "num_layers": 4}
    deployment, graph = trace_config(config.model_copy(update={"model": sliced}))
    loads = representative_loads(graph, deployment, batch_size=seqs, context=2100)["decode"]
    moe = deployment.model.moe
    uniform = wideep_uniform_tokens(seqs, moe.num_experts, moe.top_k, ep, prefill=False)
    loads[0].expert_loads = np.broadcast_to(uniform, (*loads[0].expert_loads.shape[:2], len(uniform)))
    compiled = CompiledStage(graph, "decode")
    env, batches = stage_env("decode", loads)
    costs = StageCoster(graph, compiled, model).costs(env, batches)
    prices: dict[str, list[float]] = {}
    layers = []
    for slot, template in enumerate(compiled.templates.tolist()):
        t = graph.templates[template]
        if t.family == "moe_wideep_decode":  # one template per (layer, rank)
            layers.append(t.routing[1])
            prices.setdefault(f"experts{t.routing[1]}", []).append(costs[slot])
        elif t.family in ("deepep_dispatch", "deepep_combine"):  # one template for every layer
            prices.setdefault(t.family, []).append(costs[slot])
    out = {name: max(values) for name, values in prices.items() if not name.startswith("experts")}
    out["experts"] = max(prices[f"experts{min(layers)}"])
    return out


@pytest.mark.parametrize(("seqs", "ep"), POINTS)
def test_decode_moe_layer_matches_held_out_rows(tables, held_out_model, seqs, ep):
    measured = _measured(tables, seqs, ep)
    priced = _priced(held_out_model, seqs, ep)
    parts = [p for p in ("experts", "deepep_dispatch", "deepep_combine") if p in measured]
    assert ep > 64 or len(parts) == 3, f"no DeepEP row at {seqs // ep} tokens per rank, EP {ep}"
    want, got = sum(measured[p] for p in parts), sum(priced[p] for p in parts)
    print(f"{seqs:6d} seqs EP {ep:3d}: priced {got:7.1f} us, measured {want:7.1f} us ({got / want - 1:+.1%}) "
          f"{ {p: round(priced[p], 1) for p in parts} } vs { {p: round(measured[p], 1) for p in parts} }")
    assert abs(got - want) / want <= TOLERANCE, (seqs, ep, priced, measured)
