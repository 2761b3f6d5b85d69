"""The cost-model protocol that every source of operator times implements."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from frontier_dag.config.hardware import HardwareConfig
from frontier_dag.cost.roofline import roofline_us

Query = Mapping[str, Sequence[Any]]


@dataclass
class Prediction:
    """Times of a batch of queries of one family, in microseconds.

    ``std_us`` is the spread of the kernel time (for jitter sampling);
    ``out_of_range`` marks rows outside the data the model was fitted on;
    ``source`` says what produced the numbers (``rf``, ``roofline``, ...).
    """

    latency_us: np.ndarray
    std_us: np.ndarray | None = None
    out_of_range: np.ndarray | None = None
    source: str = "roofline"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.latency_us = np.asarray(self.latency_us, dtype=float)
        n = len(self.latency_us)
        if self.std_us is None:
            self.std_us = np.zeros(n)
        if self.out_of_range is None:
            self.out_of_range = np.zeros(n, dtype=bool)


@runtime_checkable
class CostModel(Protocol):
    """Prices a batch of queries of one operator family (columns: ``QUERY_COLUMNS``)."""

    name: str

    def predict(self, family: str, query: Query) -> Prediction: ...


class RooflineCostModel:
    """FLOPs and bytes against the GPU's peaks; never out of range, always a lower bound."""

    name = "roofline"

    def __init__(self, hardware: HardwareConfig):
        self.hardware = hardware

    def predict(self, family: str, query: Query) -> Prediction:
        return Prediction(roofline_us(family, query, self.hardware), source="roofline")


class PerGpuCostModel:
    """The cost models of a deployment whose pools run on different GPUs. It prices as the
    deployment's own GPU's model; ``for_gpu(name)`` is the model of another GPU, which
    ``StageCoster`` uses for the templates of ops on that GPU (``Template.gpu``)."""

    def __init__(self, default: CostModel, others: dict[str, CostModel]):
        self.default, self.others = default, dict(others)
        self.name = getattr(default, "name", "per-gpu")

    @property
    def measured_families(self) -> frozenset[str]:
        return frozenset(getattr(self.default, "measured_families", ()))

    def predict(self, family: str, query: Query, **options) -> Prediction:
        return self.default.predict(family, query, **options)  # options as the default model takes them (memo)

    def __getattr__(self, name: str):  # the default model's optional methods (ragged_pricer, ...)
        return getattr(self.__dict__["default"], name)

    def for_gpu(self, gpu: str | None) -> CostModel:
        if gpu is None:
            return self.default
        try:
            return self.others[gpu]
        except KeyError:
            raise KeyError(f"no cost model for GPU {gpu!r} (have {', '.join(sorted(self.others))})") from None


def model_for_gpu(cost_model: CostModel, gpu: str | None) -> CostModel:
    """The model that prices ops on ``gpu`` (None: the deployment's GPU). A model without
    ``for_gpu`` prices every GPU: one a caller chose for the whole deployment."""
    for_gpu = getattr(cost_model, "for_gpu", None)
    return cost_model if gpu is None or for_gpu is None else for_gpu(gpu)
