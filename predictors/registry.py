"""The entry point of ``frontier_dag.cost.registry``: a run's fitted cost model."""

from __future__ import annotations

import warnings

from frontier_dag.config.hardware import HardwareConfig
from frontier_dag.config.run import PredictorConfig
from frontier_dag.cost.protocol import CostModel
from frontier_dag.cost.registry import make_cost_model, register_fitted_cost_model
from frontier_dag.errors import FrontierDagWarning

from .fitted_set import fitted_set
from .model import FittedCostModel
from .sources import source_for_config


def fitted_cost_model(cfg: PredictorConfig, hw: HardwareConfig) -> FittedCostModel:
    """The cost model ``cfg`` names, fitted on first use and loaded from the cache after.

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
    """The cost model ``cfg`` names, roofline and plugins included: the entry point for
    whoever assembles a run (simulator, command line). Registers the fitted predictors
    with ``frontier_dag.cost.registry``, which may not import this package itself."""
    register_fitted_cost_model(fitted_cost_model)
    return make_cost_model(cfg, hardware)
