"""Cost models by source name: ``predictor.source`` in a run config.

The roofline and the fitted predictors are built in; a plugin adds a source with

    from frontier_dag.predictors.registry import register_cost_model
    register_cost_model("my-source", lambda cfg, hw: MyCostModel(hw))

and a config then says ``predictor: {source: my-source}``. A run's cost models are
built by the assembly (``frontier_dag.sim.assembly.assemble``), which calls
``cost_model_for`` once per GPU of the deployment and keeps them for the process.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

from frontier_dag.config.hardware import HardwareConfig
from frontier_dag.config.run import PredictorConfig
from frontier_dag.cost.protocol import CostModel, RooflineCostModel
from frontier_dag.errors import ConfigError, FrontierDagWarning

from .fitted_set import fitted_set
from .model import FittedCostModel
from .sources import source_for_config

Factory = Callable[[PredictorConfig, HardwareConfig], CostModel]

#: Sources priced by predictors fitted to profiles (besides a directory of profiles).
FITTED_SOURCES = ("aiconfigurator", "frontier-csv", "vidur-csv")
_PLUGINS: dict[str, Factory] = {"roofline": lambda cfg, hw: RooflineCostModel(hw)}


def register_cost_model(name: str, factory: Factory) -> None:
    """Serve ``predictor.source: name`` with ``factory(predictor_config, hardware)``."""
    _PLUGINS[name] = factory


def needs_fitting(cfg: PredictorConfig) -> bool:
    """Whether ``cfg.source`` is served by predictors fitted to profiles (fitted on first use,
    then loaded from the disk cache) rather than by the roofline or a plugin."""
    return cfg.source not in _PLUGINS and (cfg.source in FITTED_SOURCES or Path(cfg.source).is_dir())


def fitted_cost_model(cfg: PredictorConfig, hw: HardwareConfig) -> FittedCostModel:
    """The fitted cost model ``cfg`` names, fitted on first use and loaded from the cache after.

    ``cfg.source``: ``aiconfigurator`` (tables of ``cfg.system``, default the hardware's
    aiconfigurator system, for ``cfg.backend``), ``frontier-csv`` / ``vidur-csv`` (the
    CSVs under ``cfg.path``), or a profile directory. Predictions are for the GPU the
    profiles were measured on; ``cfg.jitter`` samples kernel times from their spread.
    """
    fitted, _ = fitted_set(source_for_config(cfg, hw))
    if cfg.jitter:
        flat = sorted(f for f, m in fitted.models.items() if not m.has_spread)
        if flat:
            warnings.warn(f"predictor.jitter: true has no effect on {', '.join(flat)}: {fitted.description} has no "
                          "measured spread for them (aiconfigurator's kernel tables hold one median per shape), so "
                          "they are priced at the median; profiles with repeated measurements (frontier-dag "
                          "profile) have a spread to sample", FrontierDagWarning, stacklevel=2)
    return FittedCostModel(fitted, jitter=cfg.jitter)


def cost_model_for(cfg: PredictorConfig, hardware: HardwareConfig) -> CostModel:
    """The cost model ``cfg.source`` names for ``hardware``: ``roofline``, a registered plugin,
    or the fitted predictors (``FITTED_SOURCES`` or a profile directory)."""
    if cfg.source in _PLUGINS:
        return _PLUGINS[cfg.source](cfg, hardware)
    if needs_fitting(cfg):
        return fitted_cost_model(cfg, hardware)
    known = ", ".join(sorted({*_PLUGINS, *FITTED_SOURCES}))
    raise ConfigError(f"predictor.source: unknown source {cfg.source!r}; use one of {known} or a profile directory")
