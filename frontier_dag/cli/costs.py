"""The cost model of a run, assembled where every layer may be imported.

``frontier_dag.cost`` cannot import the fitted predictors (a higher layer), so the
command line registers them here before asking the cost registry for a model.
"""

from __future__ import annotations

from frontier_dag.config.hardware import HardwareConfig
from frontier_dag.config.run import PredictorConfig
from frontier_dag.cost.protocol import CostModel
from frontier_dag.cost.registry import make_cost_model, needs_fitted, register_fitted_cost_model
from frontier_dag.errors import ConfigError

PREDICTORS_REGISTRY = "frontier_dag.predictors.registry"


def cost_model_for(cfg: PredictorConfig, hardware: HardwareConfig) -> CostModel:
    """``make_cost_model`` with the fitted predictors registered when ``cfg`` needs them.
    Imported only then: fitting pulls in scikit-learn, which a roofline run does not need."""
    if needs_fitted(cfg):
        try:
            from frontier_dag.predictors.registry import fitted_cost_model
        except ModuleNotFoundError as exc:
            if exc.name != PREDICTORS_REGISTRY:
                raise
            raise ConfigError(f"predictor.source: {cfg.source!r} needs the fitted predictors, which this "
                              "installation lacks; use predictor.source=roofline") from None
        register_fitted_cost_model(fitted_cost_model)
    return make_cost_model(cfg, hardware)
