"""Tracing: run a workflow's Python once against a deployment to get its EventGraph."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from frontier_dag.config.run import Deployment, Origin, RunConfig, check_weights_fit, resolve
from frontier_dag.dsl.builder import Builder
from frontier_dag.dsl.entry import resolve_entry
from frontier_dag.dsl.registry import WorkflowDef, get_workflow
from frontier_dag.errors import ConfigError, FrontierDagError, WorkflowError
from frontier_dag.ir.contention import DEFAULT_COMM_SMS, SmShare, add_contention, deepep_ll_sms
from frontier_dag.ir.graph import EventGraph
from frontier_dag.ir.overlap import serial_micro_batches


def trace(workflow: WorkflowDef, deployment: Deployment, params: dict[str, Any] | None = None, *,
          micro_batches: int | None = None) -> EventGraph:
    """Trace ``workflow`` for ``deployment`` with ``params`` (validated against its Params),
    then apply the passes every consumer relies on: GPU contention between streams
    (``frontier_dag.ir.contention``) and the check that micro-batches can overlap
    (``frontier_dag.ir.overlap``, into ``graph.warnings``). ``micro_batches`` forces every
    stage's count (the overlap report's m = 1)."""
    resolved = workflow.resolve_params(params)
    builder = Builder(deployment, workflow.name, resolved, micro_batches)
    try:
        workflow.fn(builder, **resolved)
    except FrontierDagError:
        raise
    except Exception as exc:  # a bug in a workflow: point at its line, keep the cause
        where = _failing_line(exc, workflow.source)
        raise WorkflowError(f"{where}: workflow {workflow.name} failed while tracing: {type(exc).__name__}: {exc}") from exc
    graph = add_contention(builder.finish(), sm_shares(deployment))
    graph.entry = resolve_entry(graph, deployment)
    graph.warnings.extend(serial_micro_batches(graph))
    groups = graph.weight_groups()
    for name, pool in deployment.pools.items():
        if pool.role in ("attention", "ffn"):  # the others were checked with all the model's weights
            check_weights_fit(deployment, name, groups.get(pool.role, {}))
    return graph


def sm_shares(deployment: Deployment) -> SmShare:
    """The share of a pool's SMs that a communication kernel of each implementation holds:
    ``cluster.comm_sms`` (default ``DEFAULT_COMM_SMS``; DeepEP's low-latency kernels: their
    launch grid for the model's experts) over the SMs of the pool's GPU."""
    given = deployment.config.cluster.comm_sms
    names = {pool.role: name for name, pool in deployment.pools.items()}

    def share(role: str, impl: str) -> float:
        gpu = deployment.pool_hardware[names[role]].gpu
        sms = given.get(impl, DEFAULT_COMM_SMS.get(impl))
        if sms is None and impl == "deepep_ll" and deployment.model.moe is not None:
            sms = deepep_ll_sms(deployment.model.moe.num_experts, gpu.sm_count)
        if sms is None:
            raise ConfigError(f"{deployment.origin.name}: cluster.comm_sms: no SM count for communication "
                              f"implementation {impl!r}, which overlaps compute on pool {names[role]}; set "
                              f"cluster.comm_sms.{impl} to the SMs its kernels hold")
        return min(1.0, sms / gpu.sm_count)

    return share


def _failing_line(exc: Exception, source: str) -> str:
    """file:line of the innermost frame of workflow code (the workflow's file or a helper
    it calls, not the engine nor a library it called into)."""
    import traceback

    engine = Path(__file__).resolve().parent.parent
    workflows = engine / "workflows"

    def authored(filename: str) -> bool:
        path = Path(filename).resolve()
        if filename == source or path.is_relative_to(workflows):
            return True
        library = "site-packages" in path.parts or path.is_relative_to(Path(sys.base_prefix).resolve())
        return not library and not path.is_relative_to(engine) and not filename.startswith("<")

    frames = [f for f in traceback.extract_tb(exc.__traceback__)[1:] if authored(f.filename)]
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else source or "<workflow>"


def trace_config(config: RunConfig, origin: Origin | None = None, deployment: Deployment | None = None, *,
                 micro_batches: int | None = None) -> tuple[Deployment, EventGraph]:
    """Resolve a run config (unless ``deployment`` is given) and trace its workflow.

    ``workflow.path`` is relative to ``origin.base_dir`` (the config file's folder). Errors
    in the ``workflow`` section (unknown name, unknown or invalid parameter) name
    ``origin.name``."""
    deployment = deployment or resolve(config, origin or Origin())
    origin = deployment.origin
    path = config.workflow.path
    if path is not None:
        path = origin.path(path)
    try:
        wf = get_workflow(config.workflow.name, path)
        return deployment, trace(wf, deployment, config.workflow.params, micro_batches=micro_batches)
    except ConfigError as exc:
        if str(exc).startswith("workflow."):
            raise ConfigError(f"{origin.name}: {exc}") from None
        raise
