"""Cost models by ``predictor.source``: the roofline, plugins, and a clear error otherwise."""

from __future__ import annotations

import pytest

from frontier_dag.config.hardware import load_hardware
from frontier_dag.config.run import PredictorConfig
from frontier_dag.cost.protocol import RooflineCostModel
from frontier_dag.errors import ConfigError
from frontier_dag.predictors.registry import cost_model_for, needs_fitting, register_cost_model

H100 = load_hardware("h100_sxm")


def test_roofline_plugins_and_unknown_sources():
    assert isinstance(cost_model_for(PredictorConfig(source="roofline"), H100), RooflineCostModel)
    register_cost_model("test-constant", lambda cfg, hw: RooflineCostModel(hw))
    assert isinstance(cost_model_for(PredictorConfig(source="test-constant"), H100), RooflineCostModel)
    assert not needs_fitting(PredictorConfig(source="test-constant"))
    assert needs_fitting(PredictorConfig(source="aiconfigurator"))
    with pytest.raises(ConfigError, match="unknown source 'nonsense'"):
        cost_model_for(PredictorConfig(source="nonsense"), H100)
