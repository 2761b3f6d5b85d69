"""One registry of cost-model sources, looked up by the ``predictor.source`` config key.

A plugin registers a factory ``(PredictorConfig, HardwareConfig) -> CostModel``:

    from frontier_dag.cost.registry import register_cost_model
    register_cost_model("my-source", lambda cfg, hw: MyCostModel(hw))

The fitted predictors (``aiconfigurator``, ``frontier-csv``, ``vidur-csv`` and profile
directories) live in a higher layer, ``frontier_dag.predictors``, which this module must
not import: whoever assembles a run (see ``frontier_dag.predictors.registry.cost_model_for``) registers
their factory with ``register_fitted_cost_model`` first.
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
_FITTED: list[Factory] = []  # at most one: the fitted predictors' factory, once registered

#: Sources priced by predictors fitted to profiles (besides a directory of profiles).
FITTED_SOURCES = ("aiconfigurator", "frontier-csv", "vidur-csv")


def register_cost_model(name: str, factory: Factory) -> None:
    _FACTORIES[name] = factory


def register_fitted_cost_model(factory: Factory) -> None:
    """Install the factory that serves ``FITTED_SOURCES`` and profile directories."""
    _FITTED[:] = [factory]


def needs_fitted(cfg: PredictorConfig) -> bool:
    """Whether ``cfg.source`` is served by the fitted predictors rather than a registered factory."""
    return cfg.source not in _FACTORIES and (cfg.source in FITTED_SOURCES or Path(cfg.source).is_dir())


def make_cost_model(cfg: PredictorConfig, hardware: HardwareConfig) -> CostModel:
    """The cost model that ``predictor.source`` names: ``roofline``, a registered plugin, or
    (once registered) the fitted predictors for ``aiconfigurator`` (the installed package's
    kernel tables for the hardware), the public CSV profile sets, or a profile directory."""
    if cfg.source in _FACTORIES:
        return _FACTORIES[cfg.source](cfg, hardware)
    if needs_fitted(cfg):
        if not _FITTED:
            raise ConfigError(f"predictor.source: {cfg.source!r} needs the fitted predictors "
                              "(frontier_dag.predictors), which are not loaded; use predictor.source=roofline, "
                              "or build the cost model with frontier_dag.predictors.registry.cost_model_for")
        return _FITTED[0](cfg, hardware)
    known = ", ".join(sorted({*_FACTORIES, *FITTED_SOURCES}))
    raise ConfigError(f"predictor.source: unknown source {cfg.source!r}; use one of {known} or a profile directory")
