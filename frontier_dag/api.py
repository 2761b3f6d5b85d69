"""The Python API: what the command line does, for notebooks and scripts.

    import frontier_dag as fd

    run = fd.simulate("examples/pd_llama3_70b.yaml", set={"workload.num_requests": 500})
    run.summary["ttft_ms"]["p50"], run.requests, run.iterations   # dict, DataFrames
    run.critical_path()                                           # what bounded the run
    fd.critical_path("examples/af_pingpong_llama3_70b.yaml", set={"workflow.params.micro_batches": 3})
    fd.render("examples/pd_llama3_70b.yaml", "pd.svg")
    fd.sweep("examples/sweeps/qwen3_30b_h200.yaml", "runs/sweep")

Every function takes a config as a YAML path, a ``RunConfig`` or a mapping, and
``set``: overrides as a mapping ``{"key.path": value}`` (values taken as they are) or as
``"key.path=value"`` strings (as ``--set`` on the command line). Each command of the
``frontier-dag`` CLI is a thin layer over the function of the same name here, so both
give the same numbers; errors are ``FrontierDagError`` subclasses with the message the
CLI prints.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from frontier_dag.config.run import (
    Deployment,
    Origin,
    RunConfig,
    load_run_config,
    run_config_from_dict,
)
from frontier_dag.cost.protocol import CostModel
from frontier_dag.sim.assembly import Assembly
from frontier_dag.sim.assembly import assemble as _assemble
from frontier_dag.sim.run import RunResult

if TYPE_CHECKING:
    import pandas as pd

ConfigLike = str | Path | RunConfig | Mapping[str, Any]
Overrides = Mapping[str, Any] | Iterable[str] | None


def _overrides(set: Overrides) -> list:
    if set is None:
        return []
    if isinstance(set, Mapping):
        return list(set.items())
    if isinstance(set, str):
        return [set]
    return list(set)


def assemble(config: ConfigLike, set: Overrides = None, *, cost_model: CostModel | None = None) -> Assembly:
    """A config resolved, traced and priced: ``(deployment, graph, cost_model)`` (see
    ``frontier_dag.sim.assembly``). A mapping or ``RunConfig`` takes its relative paths from
    the working directory."""
    overrides = _overrides(set)
    if isinstance(config, str | Path):
        path = Path(config)
        return _assemble(load_run_config(path, overrides), Origin.of_file(path), cost_model=cost_model)
    if isinstance(config, RunConfig):
        if overrides:
            config = run_config_from_dict(config.model_dump(mode="json", exclude_none=True), overrides)
        return _assemble(config, Origin(), cost_model=cost_model)
    if isinstance(config, Mapping):
        return _assemble(run_config_from_dict(dict(config), overrides), Origin(), cost_model=cost_model)
    raise TypeError(f"config: expected a YAML path, a RunConfig or a mapping, got {type(config).__name__}")


@dataclass
class Run:
    """A finished simulation: its ``summary`` (the dict summary.json holds), ``requests`` (one
    row per request) and ``iterations`` (one row per iteration), the resolved ``config``,
    and the ``directory`` it was written to (None until ``save``)."""

    result: RunResult
    directory: Path | None = None
    _analysis: Any = field(default=None, repr=False)

    @property
    def summary(self) -> dict[str, Any]:
        return self.result.summary

    @property
    def requests(self) -> pd.DataFrame:
        return self.result.requests

    @property
    def iterations(self) -> pd.DataFrame:
        return self.result.iterations

    @property
    def config(self) -> RunConfig:
        return self.result.config

    @property
    def deployment(self) -> Deployment:
        return self.result.deployment

    def save(self, out: str | Path, overwrite: bool = False) -> Path:
        """Write the run directory (summary.json, requests.parquet, iterations.parquet,
        config.yaml), as ``frontier-dag simulate --out`` does."""
        from frontier_dag.sim.run import write_run

        write_run(self.result, Path(out), overwrite=overwrite)
        self.directory = Path(out)
        return self.directory

    def analysis(self):
        """The run organised for its run-level views (``frontier_dag.analysis.run_report``)."""
        if self._analysis is None:
            from frontier_dag.analysis.run_data import run_data
            from frontier_dag.analysis.run_report import RunAnalysis

            r = self.result
            data = run_data(r.config, r.deployment.origin, r.summary, r.requests.copy(), r.iterations.copy(),
                            self.directory)
            self._analysis = RunAnalysis(data)
        return self._analysis

    def critical_path(self, request: int | None = None, what_if: float = 2.0) -> dict[str, Any]:
        """What bounded the run (or request ``request``): the report ``frontier-dag critical-path
        RUN_DIR --json`` prints (path, attribution by category and pool, tails, what-ifs)."""
        from frontier_dag.analysis.run_report import run_report

        return run_report(self.analysis(), request, what_if)

    def render_bottlenecks(self, out: str | Path) -> Path:
        """Draw the run's bottleneck view (.svg, .png or .dot); the file written."""
        from frontier_dag.render.bottlenecks import render_bottlenecks

        return _written(Path(out), render_bottlenecks(self.analysis().run, Path(out)))


def simulate(config: ConfigLike, set: Overrides = None, *, out: str | Path | None = None, overwrite: bool = False,
             progress: bool = False, attribute: bool = True, cost_model: CostModel | None = None) -> Run:
    """Simulate ``config``'s workload to the last request; with ``out``, also write the run
    directory (refused, before simulating, where ``out`` holds anything but a run, or a run
    without ``overwrite``). ``attribute=False`` skips the per-iteration attribution the
    run-level critical path needs (a little faster)."""
    from frontier_dag.sim.run import check_run_dir
    from frontier_dag.sim.run import simulate as run_simulation

    if out is not None:
        check_run_dir(Path(out), overwrite)
    run = Run(run_simulation(assemble(config, set, cost_model=cost_model), progress=progress, attribute=attribute))
    _warn(run.summary["warnings"].splitlines())
    if out is not None:
        run.save(out, overwrite=overwrite)
    return run


def load_run(run_dir: str | Path) -> Run:
    """A run written by ``simulate(..., out=)`` or ``frontier-dag simulate``, read back."""
    from frontier_dag.analysis.run_data import load_run as read_run
    from frontier_dag.analysis.run_report import RunAnalysis
    from frontier_dag.config.run import resolve

    data = read_run(run_dir)
    result = RunResult(resolve(data.config, data.origin), data.requests, data.iterations, data.summary)
    return Run(result, Path(run_dir), RunAnalysis(data))


def critical_path(target: ConfigLike | Run, set: Overrides = None, *, request: int | None = None,
                  what_if: float = 2.0, batch_size: int | None = None, context: int | None = None
                  ) -> dict[str, Any]:
    """The critical path of one iteration of a config (priced for a representative batch:
    ``batch_size`` sequences, ``context`` cached tokens each), or of a finished run (a
    ``Run`` or a run directory; ``request`` and ``what_if`` apply there). The dict is what
    ``frontier-dag critical-path --json`` prints."""
    if isinstance(target, Run):
        return target.critical_path(request, what_if)
    if isinstance(target, str | Path) and Path(target).is_dir():
        return load_run(target).critical_path(request, what_if)
    _, _, report = iteration(target, set, batch_size=batch_size, context=context, overlap=True)
    return report.to_json()


def iteration(config: ConfigLike, set: Overrides = None, *, batch_size: int | None = None,
              context: int | None = None, cost_model: CostModel | None = None, overlap: bool = False):
    """``(deployment, graph, report)``: one iteration of ``config`` for a representative batch,
    its critical path, slack and attribution (``frontier_dag.analysis.iteration``); with
    ``overlap``, each stage's overlap report too (``report.overlap``)."""
    from frontier_dag.analysis.iteration import analyze_iteration, representative_loads

    built = assemble(config, set, cost_model=cost_model)
    loads = representative_loads(built.graph, built.deployment, batch_size, context)
    return built.deployment, built.graph, analyze_iteration(built.graph, built.deployment, built.cost_model, loads,
                                                            overlap=overlap)


def render(target: ConfigLike | Run, out: str | Path, set: Overrides = None, *, layers: int = 2, ranks: int = 4,
           batch_size: int | None = None, context: int | None = None) -> Path:
    """Draw one iteration of a config with its critical path highlighted, or, for a finished run
    (a ``Run`` or a run directory), the run's bottleneck view. ``out`` ends in .svg, .png or
    .dot; returns the file written (the .dot where Graphviz's ``dot`` is missing)."""
    out = Path(out)
    if isinstance(target, Run):
        return target.render_bottlenecks(out)
    if isinstance(target, str | Path) and Path(target).is_dir():
        return load_run(target).render_bottlenecks(out)
    from frontier_dag.render.graphviz import iteration_dot, write

    deployment, graph, report = iteration(target, set, batch_size=batch_size, context=context)
    return _written(out, write(iteration_dot(graph, deployment, report, layers=layers, ranks=ranks), out))


def _warn(notes: Iterable[str]) -> None:
    """What a result should not be read without, as FrontierDagWarnings (the CLI prints them
    as ``warning: ...`` lines; a notebook shows them)."""
    import warnings

    from frontier_dag.errors import FrontierDagWarning

    for note in notes:
        warnings.warn(FrontierDagWarning(note), stacklevel=3)


def _written(out: Path, notes: list[str]) -> Path:
    """The file a drawing went to: ``out``, or its .dot when Graphviz could not render it."""
    import warnings

    for note in notes:
        warnings.warn(note, stacklevel=3)
    return out.with_suffix(".dot") if notes else out


def trace(run: Run | str | Path, out: str | Path, *, detail: bool = True) -> Path:
    """Write a Chrome/Perfetto trace of a finished run; the file written."""
    from frontier_dag.render.trace import build_trace, write_trace

    run = run if isinstance(run, Run) else load_run(run)
    write_trace(build_trace(run.analysis().run, detail=detail), Path(out))
    return Path(out)


@dataclass
class SweepResult:
    """A finished sweep: its ``report`` (points run, pruned, failed) and ``results`` (one row
    per point, results.parquet)."""

    report: Any
    directory: Path

    @property
    def results(self) -> pd.DataFrame:
        from frontier_dag.sweep import load_results

        return load_results(self.directory)


def sweep(spec: str | Path | Mapping[str, Any], out: str | Path, set: Overrides = None, *,
          workers: int | None = None, backend: str = "local", resume: bool = False, progress: bool = False,
          **options) -> SweepResult:
    """Simulate every point of a sweep (a sweep file, or its contents as a mapping whose
    relative paths are taken from the working directory; see docs/sweeps.md) into the
    directory ``out``; ``set`` applies to its base config; ``options`` as ``run_sweep`` takes
    them (``retry_failed``, ``dry_run``, ``address``)."""
    from frontier_dag.sweep import load_sweep, run_sweep, sweep_from_dict

    if isinstance(spec, Mapping):
        spec = sweep_from_dict(dict(spec), _overrides(set), source="sweep", base_dir=Path.cwd())
    else:
        spec = load_sweep(spec, _overrides(set))
    report = run_sweep(spec, Path(out), backend=backend, workers=workers, resume=resume, progress=progress, **options)
    return SweepResult(report, Path(out))
