"""One registry of cost-model sources, looked up by the ``predictor.source`` config key.

A plugin registers a factory ``(PredictorConfig, HardwareConfig) -> CostModel``:

    from frontier_dag.cost.registry import register_cost_model
    register_cost_model("my-source", lambda cfg, hw: MyCostModel(hw))
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from frontier_dag.config.hardware import HardwareConfig
from frontier_dag.config.run import PredictorConfig
from frontier_dag.cost.protocol import CostModel, RooflineCostModel
from frontier_dag.errors import ConfigError

Factory = Callable[[PredictorConfig, HardwareConfig], CostModel]
_FACTORIES: dict[str, Factory] = {"roofline": lambda cfg, hw: RooflineCostModel(hw)}


def register_cost_model(name: str, factory: Factory) -> None:
    _FACTORIES[name] = factory


def _fitted(cfg: PredictorConfig, hw: HardwareConfig) -> CostModel:
    # Imported here: fitting pulls in scikit-learn, which a roofline run does not need.
    from frontier_dag.predictors.registry import fitted_cost_model

    return fitted_cost_model(cfg, hw)


def make_cost_model(cfg: PredictorConfig, hardware: HardwareConfig) -> CostModel:
    """The cost model that ``predictor.source`` names: ``roofline``, ``aiconfigurator``
    (the installed package's kernel tables for the hardware), a registered plugin, or a
    directory of profiles in our schema."""
    if cfg.source in _FACTORIES:
        return _FACTORIES[cfg.source](cfg, hardware)
    if cfg.source == "aiconfigurator" or Path(cfg.source).is_dir() or cfg.source in {"frontier-csv", "vidur-csv"}:
        return _fitted(cfg, hardware)
    known = ", ".join(sorted({*_FACTORIES, "aiconfigurator"}))
    raise ConfigError(f"predictor.source: unknown source {cfg.source!r}; use one of {known} or a profile directory")
