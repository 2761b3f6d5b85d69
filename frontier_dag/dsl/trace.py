"""Tracing: run a workflow's Python once against a deployment to get its EventGraph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from frontier_dag.config.run import Deployment, RunConfig, resolve
from frontier_dag.dsl.builder import Builder
from frontier_dag.dsl.registry import WorkflowDef, get_workflow
from frontier_dag.errors import ConfigError, FrontierDagError, WorkflowError
from frontier_dag.ir.graph import EventGraph


def trace(workflow: WorkflowDef, deployment: Deployment, params: dict[str, Any] | None = None) -> EventGraph:
    """Trace ``workflow`` for ``deployment`` with ``params`` (validated against its Params)."""
    resolved = workflow.resolve_params(params)
    builder = Builder(deployment, workflow.name, resolved)
    try:
        workflow.fn(builder, **resolved)
    except FrontierDagError:
        raise
    except Exception as exc:  # a bug in a workflow: point at its line, keep the cause
        import traceback

        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == workflow.source]
        where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else workflow.source
        raise WorkflowError(f"{where}: workflow {workflow.name} failed while tracing: {type(exc).__name__}: {exc}") from exc
    return builder.finish()


def trace_config(config: RunConfig, deployment: Deployment | None = None) -> tuple[Deployment, EventGraph]:
    """Resolve a run config and trace its workflow.

    ``workflow.path`` is relative to the config file's folder. Errors in the ``workflow``
    section (unknown name, unknown or invalid parameter) name the config file."""
    deployment = deployment or resolve(config)
    path = config.workflow.path
    if path is not None and config._base_dir is not None and not Path(path).is_absolute():
        path = config._base_dir / path
    try:
        wf = get_workflow(config.workflow.name, path)
        return deployment, trace(wf, deployment, config.workflow.params)
    except ConfigError as exc:
        if str(exc).startswith("workflow."):
            raise ConfigError(f"{config._source}: {exc}") from None
        raise
