"""The workflow registry: ``@workflow`` registers a strategy under a name.

Built-in workflows register when ``frontier_dag.workflows`` is imported; a user's
own file registers when a config names it with ``workflow.path``. A file's workflows
belong to that file: two files (a workflow and its copy in a run directory, or two
versions of it) may define the same name, and the config's path says which it means.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frontier_dag.errors import ConfigError, WorkflowError


@dataclass(frozen=True)
class Param:
    """A workflow parameter: its type, default, help text and bounds."""

    type: type
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None

    def coerce(self, key: str, value: Any, workflow: str) -> Any:
        where = f"workflow.params.{key}"
        if self.type is bool and not isinstance(value, bool):
            raise ConfigError(f"{where}: {workflow} expects true or false, got {value!r}")
        if self.type in (int, float) and isinstance(value, str | bool):
            raise ConfigError(f"{where}: {workflow} expects a number, got {value!r}")
        try:
            out = self.type(value) if self.type in (int, float, str) else value
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {workflow} expects {self.type.__name__}, got {value!r}") from None
        if self.type is int and out != value:
            raise ConfigError(f"{where}: {workflow} expects a whole number, got {value!r}")
        if self.type is dict and not isinstance(out, dict):
            raise ConfigError(f"{where}: {workflow} expects a mapping, got {value!r}")
        if self.choices is not None and out not in self.choices:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, self.choices))}")
        if self.minimum is not None and out < self.minimum:
            raise ConfigError(f"{where}: {value!r} is below the minimum {self.minimum}")
        if self.maximum is not None and out > self.maximum:
            raise ConfigError(f"{where}: {value!r} is above the maximum {self.maximum}")
        return out


@dataclass(frozen=True)
class WorkflowDef:
    name: str
    description: str
    fn: Callable[..., None]
    params: dict[str, Param] = field(default_factory=dict)
    source: str = ""

    def resolve_params(self, given: dict[str, Any] | None) -> dict[str, Any]:
        """Defaults overlaid with ``given``; unknown keys and bad values are ConfigErrors."""
        given = dict(given or {})
        unknown = sorted(set(given) - set(self.params))
        if unknown:
            takes = ", ".join(sorted(self.params)) or "no parameters"
            raise ConfigError(f"workflow.params.{unknown[0]}: unknown parameter of workflow {self.name!r}; it takes {takes}")
        out = {}
        for key, spec in self.params.items():
            out[key] = spec.coerce(key, given[key], self.name) if key in given else spec.default
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "params": {k: {"type": p.type.__name__, "default": p.default, "help": p.help} for k, p in self.params.items()},
        }


_REGISTRY: dict[str, WorkflowDef] = {}
#: The workflows of each user file imported, by module name.
_FILES: dict[str, dict[str, WorkflowDef]] = {}
#: Where ``@workflow`` registers while a user's file is being imported.
_loading: dict[str, WorkflowDef] | None = None


def workflow(name: str, description: str, params: dict[str, Param] | None = None):
    """Register ``fn(g, **params)`` as the workflow ``name``.

    ``fn`` receives the tracer ``g`` (a ``frontier_dag.dsl.Builder``) and the resolved
    parameters as keyword arguments.
    """

    def register(fn: Callable[..., None]) -> Callable[..., None]:
        source = inspect.getsourcefile(fn) or ""
        if _loading is not None:
            _loading[name] = WorkflowDef(name, description, fn, dict(params or {}), source)
            return fn
        if name in _REGISTRY and _REGISTRY[name].source != source:
            raise WorkflowError(f"{source}: workflow {name!r} is already defined in {_REGISTRY[name].source}")
        _REGISTRY[name] = WorkflowDef(name, description, fn, dict(params or {}), source)
        return fn

    return register


#: The package whose import registers the built-in workflows. It is a layer above the DSL
#: (its files use the DSL), so it is found by name, like a user's ``workflow.path`` file,
#: rather than imported as a dependency.
BUILTIN_WORKFLOWS = "frontier_dag.workflows"


def _load_builtins() -> None:
    importlib.import_module(BUILTIN_WORKFLOWS)


def list_workflows() -> list[WorkflowDef]:
    _load_builtins()
    return sorted(_REGISTRY.values(), key=lambda w: w.name)


def module_name(path: str | Path, content: bytes) -> str:
    """The module a workflow file is imported as: a hash of where it is and what it holds,
    the same in every process. The copy in a run directory is a module of its own (its
    functions' file:line name the copy), and an edited file is imported afresh."""
    digest = hashlib.sha256(str(Path(path).resolve()).encode() + b"\0" + content).hexdigest()[:16]
    return f"frontier_dag_user_workflow_{digest}"


def load_workflow_file(path: str | Path) -> list[str]:
    """Import a Python file that defines workflows (once per content); return the names it
    defines."""
    return sorted(_file_workflows(Path(path)))


def _file_workflows(path: Path) -> dict[str, WorkflowDef]:
    global _loading
    try:
        content = path.read_bytes()
    except OSError:
        raise ConfigError(f"workflow.path: no such file {path}") from None
    name = module_name(path, content)
    if name in _FILES:
        return _FILES[name]
    _load_builtins()  # first, so that only the file's own workflows register as its
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    found: dict[str, WorkflowDef] = {}
    outer, _loading = _loading, found
    try:
        spec.loader.exec_module(module)
    except WorkflowError:
        del sys.modules[name]
        raise
    except Exception as exc:  # a user's file: report where it broke, not our traceback
        del sys.modules[name]
        raise WorkflowError(f"{path}: importing the workflow file failed: {type(exc).__name__}: {exc}") from exc
    finally:
        _loading = outer
    _FILES[name] = found
    return found


def get_workflow(name: str, path: str | Path | None = None) -> WorkflowDef:
    """The workflow ``name``: defined in the file ``path`` when given, else a built-in."""
    own = _file_workflows(Path(path)) if path is not None else {}
    if name in own:
        return own[name]
    _load_builtins()
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        defines = f"; {path} defines {', '.join(sorted(own)) or 'none'}" if path is not None else ""
        raise ConfigError(f"workflow.name: unknown workflow {name!r}; built-in workflows are {known}{defines} "
                          "(or set workflow.path to a file that defines it)")
    return _REGISTRY[name]
