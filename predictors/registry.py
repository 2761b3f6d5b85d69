"""The entry point of ``frontier_dag.cost.registry``: a run's fitted cost model."""

from __future__ import annotations

from frontier_dag.config.hardware import HardwareConfig
from frontier_dag.config.run import PredictorConfig

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
    return FittedCostModel(fitted, jitter=cfg.jitter)
