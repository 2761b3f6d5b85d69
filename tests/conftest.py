"""Fixtures shared across the test tree: tiny model architectures, deployments built from
dicts, and a fake cost model whose times follow closed forms."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from frontier_dag.config.run import Deployment, RunConfig, run_config_from_dict
from frontier_dag.cost.protocol import Prediction
from frontier_dag.cost.queries import DEEPEP_FAMILIES, FAMILIES, MOE_FAMILIES
from frontier_dag.cost.roofline import deepep_bytes
from frontier_dag.ir.graph import EventGraph

#: Small architectures: two layers keep golden dumps readable and tests fast.
TINY_DENSE: dict[str, Any] = {
    "name": "tiny-dense", "num_layers": 2, "hidden_size": 256, "num_heads": 8, "num_kv_heads": 2,
    "head_dim": 32, "intermediate_size": 512, "vocab_size": 1000,
}
#: Layer 0 dense, layer 1 MoE with a shared expert.
TINY_MOE: dict[str, Any] = {
    **TINY_DENSE, "name": "tiny-moe",
    "moe": {"num_experts": 8, "top_k": 2, "expert_intermediate_size": 128, "num_shared_experts": 1,
            "first_dense_layers": 1},
}
#: DeepSeek-V3's shape in miniature: MLA attention, low-rank queries, MoE after a dense layer.
TINY_MLA: dict[str, Any] = {
    **TINY_MOE, "name": "tiny-mla", "num_kv_heads": 8, "head_dim": 48,
    "mla": {"q_lora_rank": 64, "kv_lora_rank": 32, "qk_nope_head_dim": 32, "qk_rope_head_dim": 16,
            "v_head_dim": 32},
}


def make_config(model: Any, pools: Mapping[str, Mapping[str, Any]], workflow: str,
                params: Mapping[str, Any] | None = None, **extra: Any) -> RunConfig:
    """A RunConfig priced by the roofline (tests never need the fitted predictors)."""
    data: dict[str, Any] = {
        "model": model, "hardware": "h100_sxm", "cluster": {"pools": dict(pools)},
        "workflow": {"name": workflow, "params": dict(params or {})}, "predictor": {"source": "roofline"},
    }
    data.update(extra)
    return run_config_from_dict(data, source="test-config")


def traced(model: Any, pools: Mapping[str, Mapping[str, Any]], workflow: str,
           params: Mapping[str, Any] | None = None, **extra: Any) -> tuple[Deployment, EventGraph]:
    """Resolve and trace a config built by ``make_config``."""
    from frontier_dag.dsl import trace_config

    return trace_config(make_config(model, pools, workflow, params, **extra))


def _units(family: str, query: Mapping[str, Sequence[Any]], row: int, bytes_per_unit: float) -> float:
    """The work of one query row in the unit a FakeCostModel charges per: tokens for
    compute (sequences' new tokens for attention, routed tokens for experts), and
    ``bytes / bytes_per_unit`` for data movement."""
    if family == "gemm":
        return float(query["m"][row])
    if family == "elementwise":
        return float(query["num_tokens"][row])
    if family in MOE_FAMILIES:
        return float(np.sum(query["expert_tokens"][row]))
    if family in DEEPEP_FAMILIES:
        return float(deepep_bytes(family, {c: [query[c][row]] for c in ("num_tokens", "topk", "hidden")})[0]) \
            / bytes_per_unit
    if family.startswith(("attention", "mla")):
        return float(np.sum(query["q_lens"][row]))
    return float(query["bytes"][row]) / bytes_per_unit


class FakeCostModel:
    """Times that follow closed forms: ``constant[f] + per_unit[f] * units`` µs for a row of
    family ``f``. A key ``attention`` (or ``mla``) covers every family starting with it."""

    name = "fake"

    def __init__(self, constant: Mapping[str, float] | None = None, per_unit: Mapping[str, float] | None = None,
                 bytes_per_unit: float = 1.0, measured_families: Sequence[str] = FAMILIES):
        # families it prices as measured: without attention_mixed, the coster splits mixed batches
        self.measured_families = frozenset(measured_families)
        self.constant = dict(constant or {})
        self.per_unit = dict(per_unit or {})
        self.bytes_per_unit = bytes_per_unit
        self.calls: list[tuple[str, int]] = []

    def _lookup(self, table: Mapping[str, float], family: str) -> float:
        if family in table:
            return table[family]
        return next((v for k, v in table.items() if family.startswith(k)), 0.0)

    def predict(self, family: str, query: Mapping[str, Sequence[Any]]) -> Prediction:
        rows = len(next(iter(query.values())))
        self.calls.append((family, rows))
        base, rate = self._lookup(self.constant, family), self._lookup(self.per_unit, family)
        if not rate:
            return Prediction(np.full(rows, base), source="fake")
        if family in ("gemm", "elementwise") or "bytes" in query:
            column = {"gemm": "m", "elementwise": "num_tokens"}.get(family, "bytes")
            units = np.asarray(query[column], dtype=float) / (self.bytes_per_unit if column == "bytes" else 1.0)
            return Prediction(base + rate * units, source="fake")
        times = [base + rate * _units(family, query, i, self.bytes_per_unit) for i in range(rows)]
        return Prediction(np.array(times, dtype=float), source="fake")


@pytest.fixture
def fake_cost_model() -> Callable[..., FakeCostModel]:
    return FakeCostModel


@pytest.fixture
def tiny() -> dict[str, dict[str, Any]]:
    """The tiny architectures by name: dense, moe, mla."""
    return {"dense": TINY_DENSE, "moe": TINY_MOE, "mla": TINY_MLA}


@pytest.fixture
def trace_dict() -> Callable[..., tuple[Deployment, EventGraph]]:
    """``trace_dict(model, pools, workflow, params)`` -> (deployment, graph)."""
    return traced


@pytest.fixture
def config_dict() -> Callable[..., RunConfig]:
    """``config_dict(model, pools, workflow, params, **extra)`` -> RunConfig."""
    return make_config
