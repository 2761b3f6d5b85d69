"""Loading pydantic configs from YAML with errors that name the file and the key.

``--set key.path=value`` overrides are applied to the raw mapping before
validation, so an override is checked exactly like a key written in the file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from frontier_dag.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class Strict(BaseModel):
    """Base of every config model: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def _at_most(limit: int, value: int) -> int:
    if value > limit:
        raise ValueError(f"{value:,} is above the limit of {limit:,} (a typo? the limits are in docs/configuration.md)")
    return value


def positive_at_most(limit: int) -> Any:
    """A positive integer type that refuses values above ``limit``, far above any real
    deployment: a size with a typo's magnitude is an error before anything is built."""
    return Annotated[int, Field(gt=0), AfterValidator(partial(_at_most, limit))]


def load_yaml(text: str) -> Any:
    """The data of a YAML document (a preset file, a run config), parsed by libyaml where
    PyYAML has it: the same data as ``yaml.safe_load``, in a tenth of the time."""
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 - a safe loader


def dump_yaml(data: Any) -> str:
    """``yaml.safe_dump(data, sort_keys=False)``, emitted by libyaml where PyYAML has it (the
    same text, in a fraction of the time)."""
    return yaml.dump(data, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, or raise ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        data = load_yaml(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into its key path and a YAML-parsed value.

    >>> parse_override("cluster.pools.decode.kv_capacity_tokens=4096")
    (['cluster', 'pools', 'decode', 'kv_capacity_tokens'], 4096)
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected key.path=value, for example --set seed=3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return [part for part in key.strip().split(".")], value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str | tuple[str, Any]]) -> dict[str, Any]:
    """Return a copy of ``data`` with each override set (creating mappings as needed): a
    ``key.path=value`` string as on the command line (the value parsed as YAML), or a
    ``(key.path, value)`` pair whose value is taken as it is (the Python API's ``set=``)."""
    import copy

    data = copy.deepcopy(data)
    for item in overrides:
        if isinstance(item, str):
            text = item
            path, value = parse_override(item)
        else:
            key, value = item
            text = f"{key}={value!r}"
            path = str(key).split(".")
        node: Any = data
        for depth, part in enumerate(path[:-1]):
            child = node.get(part) if isinstance(node, dict) else None
            if child is None or isinstance(child, str):
                # A preset given by name ("model: llama-2-7b") cannot take a nested key.
                if isinstance(child, str):
                    where = ".".join(path[: depth + 1])
                    raise ConfigError(
                        f"--set {text}: {where} is the name {child!r}, not a mapping; "
                        f"set {where} to a mapping or to another name instead"
                    )
                child = {}
                node[part] = child
            node = child
        if not isinstance(node, dict):
            raise ConfigError(f"--set {text}: {'.'.join(path[:-1])} is not a mapping")
        node[path[-1]] = value
    return data


def format_validation_error(exc: ValidationError, source: str, overrides: Iterable[str] = ()) -> str:
    """Turn a pydantic error into lines of ``source: key.path: message``; an error at a key
    that a ``--set`` override wrote (or under it, or above it) names the ``--set`` instead."""
    written = [(parse_override(item)[0], item) if isinstance(item, str) else
               (str(item[0]).split("."), f"{item[0]}={item[1]!r}") for item in overrides]
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        where = _blame([str(p) for p in err["loc"]], written, source)
        msg = err["msg"].removeprefix("Value error, ")  # our validators' own words suffice
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling; see docs/configuration.md for the keys)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        lines.append(f"{where}: {loc}: {msg}")
    return "\n".join(lines)


def _blame(loc: list[str], written: list[tuple[list[str], str]], source: str) -> str:
    """``--set TEXT (on SOURCE)`` for the last override whose key path and ``loc`` share
    their first keys up to the shorter one; else ``source``."""
    for path, text in reversed(written):
        n = min(len(path), len(loc))
        if n and path[:n] == loc[:n]:
            return f"--set {text} (on {source})"
    return source


def validate(cls: type[M], data: Mapping[str, Any], source: str, overrides: Iterable[str] = ()) -> M:
    """Validate ``data`` as ``cls`` or raise ConfigError naming ``source`` (or the
    ``--set`` override that wrote the key) and each bad key."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, overrides)) from None
