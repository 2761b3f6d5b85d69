"""The sweep file: a base config, axes, derived keys, constraints and early stopping.

    name: qwen3-30b-h200
    base: base.yaml                    # a run config file (relative to this file) or a mapping
    axes:
      budget: [16, 32]                 # a variable: usable in expressions
      workload.clients: {from: 16, to: 128, factor: 2}   # a config key path
      strategy:                        # named alternatives over whole sub-configs
        choices:
          colocated: {cluster.pools: {main: {role: colocated, gpus: "=budget", ep: 8}},
                      workflow: {name: ep_moe}}
          pd:
            set: {cluster.pools: {prefill: {role: prefill, gpus: "=prefill_gpus"},
                                  decode: {role: decode, gpus: "=budget - prefill_gpus"}},
                  workflow: {name: pd}}
            constraints: ["prefill_gpus < budget"]
      prefill_gpus: [8, 16]
    set: {workload.num_requests: "=max(200, 4 * workload.clients)"}
    constraints: ["total_gpus <= 64"]
    early_stop: {requests: 100, margin: 1.5}

An axis named by a config key path (its first part is a config section: ``model``,
``cluster``, ``workload``, ...) sets that key; any other name is a variable. Values are
a list, ``{from, to, step}`` (arithmetic, ``to`` included), ``{from, to, factor}``
(geometric) or ``{choices: {label: {key.path: value, ...}}}``. See docs/sweeps.md.
"""

from __future__ import annotations

import difflib
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, PositiveFloat, model_validator

from frontier_dag.config.loading import Strict, apply_overrides, read_yaml, validate
from frontier_dag.errors import ConfigError
from frontier_dag.sweep.expr import CONFIG_ROOTS

Percentile = Literal["mean", "p50", "p90", "p99"]
#: A grid larger than this is refused before expanding (a typo in a range, most likely);
#: ranges are counted arithmetically, so a huge one is refused before it is built.
MAX_GRID = 1_000_000


class EarlyStopConfig(Strict):
    """Simulate the config's warm-up requests and the next ``requests`` (a count, or a
    fraction of the measured requests) first, and stop the point there when their
    ``percentile`` TTFT exceeds ``margin`` x the SLA; otherwise run it in full."""

    requests: PositiveFloat = Field(200, description="measured requests of the probe: a count, or a fraction in (0, 1)")
    margin: float = Field(1.5, ge=1.0, description="stop when TTFT > margin x slo.ttft_ms")
    percentile: Percentile = "p90"

    def slice_size(self, num_requests: int, warmup_requests: int = 0) -> int:
        """Requests the probe simulates: the warm-up ones and the first measured ones."""
        measured = num_requests - warmup_requests
        n = math.ceil(self.requests * measured) if self.requests < 1 else int(self.requests)
        return warmup_requests + max(1, min(n, measured))


class SweepFile(Strict):
    name: str | None = None
    base: str | dict[str, Any]
    axes: dict[str, Any] = {}
    set_: dict[str, Any] = Field({}, alias="set")
    constraints: list[str] = []
    early_stop: EarlyStopConfig | None = None
    strategy: str | None = Field(None, description="the axis whose values name strategies (default: the first choices axis)")

    model_config = Strict.model_config | {"populate_by_name": True}

    @model_validator(mode="after")
    def _strategy_is_an_axis(self) -> SweepFile:
        if self.strategy is not None and self.strategy not in self.axes:
            raise ValueError(f"strategy: {self.strategy!r} is not one of the axes ({', '.join(self.axes)})")
        return self


@dataclass
class Choice:
    """One named alternative of a choices axis: keys to set and constraints that apply when chosen."""

    set: dict[str, Any]
    constraints: list[str] = field(default_factory=list)


@dataclass
class Axis:
    name: str
    kind: Literal["key", "variable", "choice"]
    values: list[Any]
    choices: dict[str, Choice] = field(default_factory=dict)


@dataclass
class Sweep:
    """A loaded sweep: the base config (overrides applied) and its parsed axes."""

    name: str
    source: str
    base: dict[str, Any]
    base_dir: Path | None
    axes: list[Axis]
    set: dict[str, Any]
    constraints: list[str]
    early_stop: EarlyStopConfig | None
    strategy: str | None
    file: SweepFile = None  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        """The sweep as a file with the base inlined (what a sweep directory records)."""
        data = self.file.model_dump(mode="json", by_alias=True, exclude_none=True)
        data["base"] = self.base
        data["name"] = self.name
        data["strategy"] = self.strategy
        return data


def is_key_path(name: str) -> bool:
    return name.split(".")[0] in CONFIG_ROOTS


def check_key_path(path: str, where: str) -> None:
    """Refuse a config key path that no config has (a misspelt axis or ``set`` key would
    otherwise make every point invalid), naming the closest key. Below a free-form mapping
    (``workflow.params``, a pool's name) any key is accepted."""
    from frontier_dag.config.hardware import HardwareConfig
    from frontier_dag.config.model import ModelConfig
    from frontier_dag.config.run import RunConfig

    named = {("model",): ModelConfig, ("hardware",): HardwareConfig}  # a preset name, or a mapping of these
    annotation: Any = RunConfig
    parts = path.split(".")
    for depth, part in enumerate(parts):
        done = tuple(parts[:depth])
        models = [named[done]] if done in named else _models_in(annotation)
        field = next((m.model_fields[part] for m in models if part in m.model_fields), None)
        if field is not None:
            annotation = field.annotation
            continue
        value = None if done in named else _mapping_value(annotation)
        if value is not None:
            annotation = value
            continue
        here = ".".join(done) or "the config"
        if not models:
            if annotation is Any:
                return
            raise ConfigError(f"{where}: {here} is a single value; it has no key {part!r}")
        keys = sorted({k for m in models for k in m.model_fields})
        close = difflib.get_close_matches(part, keys, 1)
        hint = f"did you mean {'.'.join((*done, close[0]))}?" if close else f"its keys: {', '.join(keys)}"
        raise ConfigError(f"{where}: {here} has no key {part!r} ({hint})")


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _mapping_value(annotation: Any) -> Any:
    """The value type of a ``dict[str, X]`` in ``annotation`` (None when there is none)."""
    if typing.get_origin(annotation) is dict:
        return typing.get_args(annotation)[1]
    for arg in typing.get_args(annotation):
        found = _mapping_value(arg)
        if found is not None:
            return found
    return None


def load_sweep(path: str | Path, overrides: tuple[str, ...] | list[str] = ()) -> Sweep:
    """Read a sweep file; ``overrides`` (``key.path=value``) apply to its base config."""
    path = Path(path)
    return sweep_from_dict(read_yaml(path), overrides, source=str(path), base_dir=path.parent)


def sweep_from_dict(data: dict[str, Any], overrides=(), source: str = "sweep",
                    base_dir: Path | None = None) -> Sweep:
    spec = validate(SweepFile, data, source)
    if isinstance(spec.base, str):
        base_path = Path(spec.base)
        if not base_path.is_absolute() and base_dir is not None:
            base_path = base_dir / base_path
        base, config_dir = read_yaml(base_path), base_path.parent
    else:
        base, config_dir = spec.base, base_dir
    base = apply_overrides(base, overrides)
    axes = [parse_axis(name, values, f"{source}: axes.{name}") for name, values in spec.axes.items()]
    for key in spec.set_:
        if not is_key_path(key):
            raise ConfigError(f"{source}: set.{key}: not a config key path (it must start with one of "
                              f"{', '.join(sorted(CONFIG_ROOTS))})")
        check_key_path(key, f"{source}: set.{key}")
    strategy = spec.strategy or next((a.name for a in axes if a.kind == "choice"), None)
    name = spec.name or Path(source).stem
    return Sweep(name=name, source=source, base=base, base_dir=config_dir, axes=axes, set=dict(spec.set_),
                 constraints=list(spec.constraints), early_stop=spec.early_stop, strategy=strategy, file=spec)


def parse_axis(name: str, spec: Any, where: str) -> Axis:
    key = is_key_path(name)
    if not key and not name.isidentifier():
        raise ConfigError(f"{where}: an axis is a config key path (starting with one of "
                          f"{', '.join(sorted(CONFIG_ROOTS))}) or a variable name (an identifier)")
    if isinstance(spec, dict) and "choices" in spec:
        if key:
            raise ConfigError(f"{where}: a choices axis names its alternatives; give it a variable name "
                              "such as 'strategy', not a config key")
        if set(spec) != {"choices"} or not isinstance(spec["choices"], dict) or not spec["choices"]:
            raise ConfigError(f"{where}: expected {{choices: {{label: {{key.path: value, ...}}, ...}}}}")
        choices = {str(label): parse_choice(body, f"{where}.choices.{label}") for label, body in spec["choices"].items()}
        return Axis(name, "choice", list(choices), choices)
    if key:
        check_key_path(name, where)
    values = axis_values(spec, where)
    return Axis(name, "key" if key else "variable", values)


def parse_choice(body: Any, where: str) -> Choice:
    if body is None:
        return Choice({})
    if not isinstance(body, dict):
        raise ConfigError(f"{where}: expected a mapping of config key paths to values")
    if set(body) <= {"set", "constraints"}:
        settings, constraints = body.get("set") or {}, body.get("constraints") or []
    else:
        settings, constraints = body, []
    for k in settings:
        if not is_key_path(str(k)):
            raise ConfigError(f"{where}.{k}: not a config key path (it must start with one of "
                              f"{', '.join(sorted(CONFIG_ROOTS))}); put constraints under 'constraints' and "
                              "the keys under 'set'")
        check_key_path(str(k), f"{where}.{k}")
    if not isinstance(constraints, list) or not all(isinstance(c, str) for c in constraints):
        raise ConfigError(f"{where}.constraints: expected a list of expressions")
    return Choice(dict(settings), list(constraints))


def axis_values(spec: Any, where: str) -> list[Any]:
    """An axis's values: a list, one value, ``{values: [...]}``, ``{from, to, step}`` or ``{from, to, factor}``."""
    if isinstance(spec, list):
        if not spec:
            raise ConfigError(f"{where}: the axis has no values")
        return list(spec)
    if not isinstance(spec, dict):
        return [spec]
    if set(spec) == {"values"} and isinstance(spec["values"], list) and spec["values"]:
        return list(spec["values"])
    keys = set(spec)
    if "from" in keys and "to" in keys and keys <= {"from", "to", "step", "factor"} and not {"step", "factor"} <= keys:
        lo, hi = spec["from"], spec["to"]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in (lo, hi)):
            raise ConfigError(f"{where}: from and to must be finite numbers")
        if "factor" in spec:
            factor = spec["factor"]
            if not isinstance(factor, int | float) or isinstance(factor, bool) or not factor > 1 or not lo > 0:
                raise ConfigError(f"{where}: a geometric range needs factor > 1 and from > 0")
            if hi >= lo:
                _count_at_most(math.floor(math.log(hi / lo) / math.log(factor) + 1e-9) + 1, where)
            out, v = [], lo
            while v <= hi * (1 + 1e-12):
                out.append(v)
                v = v * factor
        else:
            step = spec.get("step", 1)
            if not isinstance(step, int | float) or isinstance(step, bool) or not step > 0:
                raise ConfigError(f"{where}: step must be a positive number")
            count = int(math.floor((hi - lo) / step + 1e-9)) + 1
            _count_at_most(count, where)
            out = [lo + i * step for i in range(count)]
        if all(isinstance(v, int) for v in (lo, hi, spec.get("step", 1), spec.get("factor", 2))):
            out = [int(v) for v in out]
        else:
            out = [round(float(v), 12) for v in out]
        if not out:
            raise ConfigError(f"{where}: the range from {lo} to {hi} is empty")
        return out
    raise ConfigError(f"{where}: expected a list of values, {{from, to, step}}, {{from, to, factor}}, "
                      "or {choices: {label: {key.path: value}}}")


def _count_at_most(count: float, where: str) -> None:
    """Refuse a range of more than MAX_GRID values before building it."""
    if count > MAX_GRID:
        raise ConfigError(f"{where}: the range has {count:,} values (more than {MAX_GRID:,}, the limit of a whole "
                          "sweep); a typo? widen the step or the factor, or narrow from and to")
