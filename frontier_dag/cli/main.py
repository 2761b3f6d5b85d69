"""The ``frontier-dag`` command line.

Subcommands live in their own modules and are imported only when used, so that
``frontier-dag --help`` and quick commands start fast.
"""

from __future__ import annotations

import importlib
import sys
import warnings

import click

from frontier_dag.errors import FrontierDagError, FrontierDagWarning

# name -> "module:attribute" of a click command or group
COMMANDS: dict[str, str] = {
    "workflows": "frontier_dag.cli.graph_commands:workflows",
    "render": "frontier_dag.cli.graph_commands:render",
    "critical-path": "frontier_dag.cli.graph_commands:critical_path",
    "simulate": "frontier_dag.cli.simulate:simulate",
    "trace": "frontier_dag.cli.trace:trace",
    "predictors": "frontier_dag.cli.predictors:predictors",
    "validate": "frontier_dag.cli.validate:validate",
    "calibrate": "frontier_dag.cli.calibrate:calibrate",
    "profile": "frontier_dag.cli.profile:profile",
    "sweep": "frontier_dag.cli.sweep:sweep",
    "pareto": "frontier_dag.cli.sweep:pareto",
    "report": "frontier_dag.cli.report:report",
    "systems": "frontier_dag.cli.catalog:systems",
    "models": "frontier_dag.cli.catalog:models",
}


class LazyGroup(click.Group):
    def _available(self) -> dict[str, str]:
        found = {}
        for name, target in COMMANDS.items():
            module = target.split(":")[0]
            if importlib.util.find_spec(module) is not None:
                found[name] = target
        return found

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self._available())

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = self._available().get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)

    def invoke(self, ctx: click.Context):
        warnings.showwarning = _show_warning
        try:
            return super().invoke(ctx)
        except FrontierDagError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(2)


def _show_warning(message, category, filename, lineno, file=None, line=None, _default=warnings.showwarning):
    """Our warnings as ``warning: ...`` lines; anything else as Python prints it."""
    if issubclass(category, FrontierDagWarning):
        click.secho(f"warning: {message}", fg="yellow", err=True)
    else:
        _default(message, category, filename, lineno, file, line)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="frontier-dag")
def cli() -> None:
    """Simulate LLM inference deployments as event-dependency DAGs weighted by operator
    predictors fitted to real GPU kernel profiles."""


if __name__ == "__main__":
    cli()
