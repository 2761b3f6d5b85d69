"""Configs: model architectures, hardware, and the run configuration (pydantic, YAML)."""

from frontier_dag.config.hardware import HardwareConfig, load_hardware
from frontier_dag.config.model import ModelConfig, load_model
from frontier_dag.config.run import (
    Deployment,
    Origin,
    PoolConfig,
    RunConfig,
    load_run_config,
    resolve,
)

__all__ = [
    "Deployment", "HardwareConfig", "ModelConfig", "Origin", "PoolConfig", "RunConfig",
    "load_hardware", "load_model", "load_run_config", "resolve",
]
