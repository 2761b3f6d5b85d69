"""The one place that builds what every command needs from a run config.

    config ──resolve──► Deployment ──trace──► EventGraph
       └── predictor ──────────────────────► a CostModel per GPU of the deployment

``assemble(config, origin)`` returns the three together as an ``Assembly``;
``simulate``, the iteration and run analyses, sweeps and validation all start from
one. Within a process the cost models are kept (loading fitted predictors takes a
fraction of a second, and their memo of prices carries over from run to run), and so
are traced graphs, keyed on everything a trace reads (the model, hardware, cluster and
workflow sections, and the workflow file's contents).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from frontier_dag.config.hardware import HardwareConfig
from frontier_dag.config.run import (
    Deployment,
    Origin,
    PredictorConfig,
    RunConfig,
    load_run_config,
    resolve,
)
from frontier_dag.cost.protocol import CostModel, PerGpuCostModel
from frontier_dag.errors import ConfigError
from frontier_dag.ir.graph import EventGraph

#: Graphs kept per process (a traced DeepSeek-V3 EP graph holds tens of thousands of nodes).
GRAPH_CACHE_SIZE = 16


@dataclass(frozen=True)
class Assembly:
    """A run config made ready to evaluate: resolved, traced, with its cost model."""

    deployment: Deployment
    graph: EventGraph
    cost_model: CostModel

    @property
    def config(self) -> RunConfig:
        return self.deployment.config

    @property
    def origin(self) -> Origin:
        return self.deployment.origin


def assemble(config: RunConfig | Deployment | str | Path, origin: Origin | None = None, *, overrides=(),
             cost_model: CostModel | None = None) -> Assembly:
    """Resolve ``config``, trace its workflow and build its cost model.

    ``config`` is a ``RunConfig`` (its relative paths taken from ``origin.base_dir``), a
    ``Deployment`` already resolved, or the path of a config YAML (then ``origin`` defaults
    to the file, and ``overrides`` are ``key.path=value`` strings applied to it).
    ``cost_model`` replaces the one ``predictor`` names (tests price with closed forms this
    way)."""
    if isinstance(config, Deployment):
        deployment = config
    else:
        if not isinstance(config, RunConfig):
            path = Path(config)
            config = load_run_config(path, overrides)
            origin = origin or Origin.of_file(path)
        elif overrides:
            raise TypeError("overrides apply to a config file; change a RunConfig with model_copy instead")
        deployment = resolve(config, origin or Origin())
    graph = _traced(deployment)
    return Assembly(deployment, graph, cost_model or deployment_cost_model(deployment))


def deployment_cost_model(deployment: Deployment) -> CostModel:
    """The cost model of every GPU the deployment's pools run on: the ``predictor`` section
    for the deployment's own GPU, and for a pool on another GPU its own ``predictor`` (default:
    the top-level one with that GPU's own kernel tables). Pools on one GPU share its model, so
    they must agree on it. A GPU that its predictor cannot price is an error naming the pool,
    never another GPU's times."""
    config, origin = deployment.config, deployment.origin
    chosen: dict[str, tuple[str, PredictorConfig]] = {}  # GPU -> (first pool on it, its predictor)
    for name, pool in deployment.pools.items():
        hw = deployment.pool_hardware[name]
        if pool.predictor is not None:
            predictor = pool.predictor
        elif hw.name == deployment.hardware.name:
            predictor = config.predictor
        else:  # predictor.system names the tables of the deployment's GPU, not of this one
            predictor = config.predictor.model_copy(update={"system": None})
        first = chosen.setdefault(hw.name, (name, predictor))
        if first[1] != predictor:
            raise ConfigError(f"{origin.name}: cluster.pools.{name}.predictor: pools {first[0]} and {name} both run on "
                              f"{hw.name} but ask for different predictors; ops on one GPU are priced one way: give "
                              "them the same predictor")
    models = {}
    for gpu, (name, predictor) in chosen.items():
        hw = deployment.pool_hardware[name]
        try:
            models[gpu] = cached_cost_model(predictor, hw)
        except ConfigError as exc:
            if gpu == deployment.hardware.name and deployment.pools[name].predictor is None:
                raise
            raise ConfigError(f"{origin.name}: cluster.pools.{name} runs on {gpu}: {exc}. To price this pool by the "
                              f"roofline instead, set cluster.pools.{name}.predictor: {{source: roofline}}") from None
        if gpu != deployment.hardware.name:
            _check_measured_on(models[gpu], hw, f"{origin.name}: cluster.pools.{name}")
    if list(models) == [deployment.hardware.name]:
        return models[deployment.hardware.name]
    # ops on the deployment's GPU carry no GPU name (Template.gpu); with no pool on it, it prices nothing
    default = models.get(deployment.hardware.name) or next(iter(models.values()))
    return PerGpuCostModel(default, {gpu: m for gpu, m in models.items() if gpu != deployment.hardware.name})


def _check_measured_on(model: CostModel, hardware: HardwareConfig, where: str) -> None:
    """A model fitted to profiles measured on one GPU prices that GPU only."""
    fitted = getattr(model, "fitted", None)
    measured = getattr(fitted, "hardware", None)
    if measured is not None and measured not in (hardware.name, hardware.aiconfigurator_system):
        raise ConfigError(f"{where} runs on {hardware.name} but its predictor's profiles were measured on {measured}; "
                          f"give the pool a predictor for {hardware.name} (cluster.pools.<name>.predictor), for example "
                          "{source: aiconfigurator} or {source: roofline}")


_COST_MODELS: dict[tuple[str, str], CostModel] = {}
_GRAPHS: dict[str, EventGraph] = {}


def cached_cost_model(predictor: PredictorConfig, hardware: HardwareConfig) -> CostModel:
    """The cost model ``predictor`` names for ``hardware``, built once per process. A model
    that samples kernel times (``jitter``) is built afresh, so each run draws the same times."""
    from frontier_dag.predictors.registry import cost_model_for

    if predictor.jitter:
        return cost_model_for(predictor, hardware)
    key = (predictor.model_dump_json(), hardware.model_dump_json())
    if key not in _COST_MODELS:
        _COST_MODELS[key] = cost_model_for(predictor, hardware)
    return _COST_MODELS[key]


def _traced(deployment: Deployment) -> EventGraph:
    from frontier_dag.dsl import trace_config

    key = _trace_key(deployment)
    graph = _GRAPHS.get(key)
    if graph is None:
        _, graph = trace_config(deployment.config, deployment.origin, deployment)
        if len(_GRAPHS) >= GRAPH_CACHE_SIZE:
            _GRAPHS.pop(next(iter(_GRAPHS)))
        _GRAPHS[key] = graph
    return graph


def _trace_key(deployment: Deployment) -> str:
    """What a trace reads: the resolved model and GPUs, the cluster and workflow sections, and
    a workflow file's contents (a notebook may edit the file between runs)."""
    config, origin = deployment.config, deployment.origin
    parts = config.model_dump(mode="json", include={"cluster", "workflow"})
    parts["model"] = deployment.model.model_dump(mode="json")
    parts["hardware"] = deployment.hardware.model_dump(mode="json")
    parts["pool_hardware"] = {name: hw.model_dump(mode="json") for name, hw in deployment.pool_hardware.items()}
    parts["origin"] = str(origin.base_dir)
    if config.workflow.path is not None:
        path = origin.path(config.workflow.path)
        parts["workflow_file"] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    return json.dumps(parts, sort_keys=True, default=str)
