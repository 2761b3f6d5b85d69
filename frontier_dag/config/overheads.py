"""An engine's time outside the GPU kernels: the ``engine_overheads`` key of a run config.

Four named quantities, each a physical place where a serving engine spends time that no
kernel table holds (docs/validation.md, "Engine overheads"):

* ``request_us``: from the client's request to the engine's scheduler queue (HTTP
  frontend, router, tokenization, request intake), once per request;
* ``handoff_us``: disaggregated serving only, from the KV's arrival at the decode server
  to the request joining its batch (bootstrap, transfer-queue polling, the decode server's
  intake); the client's first token comes from the decode server after it;
* ``step_us`` and ``step_per_sequence_us``: host time of one iteration during which the
  GPU waits, ``step_us + step_per_sequence_us x sequences in the batch`` (scheduling,
  input preparation, sampling, detokenization and output streaming).

A run config gives them inline, or names a file that ``frontier-dag calibrate`` wrote
(an ``OverheadsFile``: one entry per engine, and per engine version where it was fitted
so) with the entry for the run's engine (``scheduler.policy``) or a named one:

    engine_overheads: {request_us: 120000, step_us: 400, step_per_sequence_us: 15}
    engine_overheads: engine.yaml                       # the entry of scheduler.policy
    engine_overheads: {file: engine.yaml, engine: vllm 0.12.0}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, NonNegativeFloat

from frontier_dag.config.loading import Strict, read_yaml, validate
from frontier_dag.errors import ConfigError

#: The parameters, in the order the calibration fits them.
PARAMETERS = ("request_us", "handoff_us", "step_us", "step_per_sequence_us")


class EngineOverheads(Strict):
    """One engine's overhead model (module docstring); zeros change nothing."""

    request_us: NonNegativeFloat = Field(
        0.0, description="per request, from the client to the engine's scheduler queue (frontend, router, intake)")
    handoff_us: NonNegativeFloat = Field(
        0.0, description="disaggregated serving: from the KV's arrival at the decode server to the request joining "
                         "its batch (bootstrap, transfer-queue polling, decode intake)")
    step_us: NonNegativeFloat = Field(0.0, description="host time of every iteration (the GPU waits)")
    step_per_sequence_us: NonNegativeFloat = Field(
        0.0, description="host time of an iteration per sequence in its batch")

    def step_host_us(self, sequences: int) -> float:
        """Host time of one iteration of ``sequences`` sequences."""
        return self.step_us + self.step_per_sequence_us * sequences

    def values(self) -> tuple[float, ...]:
        return tuple(getattr(self, p) for p in PARAMETERS)


class OverheadsRef(Strict):
    """A named entry of an overheads file."""

    file: str = Field(description="a file that frontier-dag calibrate wrote")
    engine: str | None = Field(None, description="its entry to use (default: the run's scheduler.policy)")


class OverheadsFile(Strict):
    """What ``frontier-dag calibrate`` writes: an overhead model per engine (``vllm``) or
    engine version (``vllm 0.12.0``), and how it was fitted (for the reader; not used)."""

    engines: dict[str, EngineOverheads]
    fitted: dict[str, Any] = Field({}, description="how each entry was fitted: rows, command, errors")

    def entry(self, engine: str, version: str | None = None) -> EngineOverheads | None:
        """The model of ``engine`` at ``version``: its own entry if the file has one, else the
        engine's; None when the file has neither."""
        if version and f"{engine} {version}" in self.engines:
            return self.engines[f"{engine} {version}"]
        return self.engines.get(engine)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def read_overheads_file(path: str | Path) -> OverheadsFile:
    """An overheads file, validated (errors name the file and the key)."""
    return validate(OverheadsFile, read_yaml(path), str(path))


def resolve_overheads(value: EngineOverheads | OverheadsRef | str | None, engine: str, path_of,
                      key: str = "engine_overheads") -> EngineOverheads | None:
    """The overhead model a run config's ``engine_overheads`` means: inline values as they
    are, a file's entry for ``engine`` (or the entry the reference names). ``path_of`` turns
    the text of a path into a Path (relative to the config)."""
    if value is None or isinstance(value, EngineOverheads):
        return value
    ref = OverheadsRef(file=value) if isinstance(value, str) else value
    path = path_of(ref.file)
    if not Path(path).is_file():
        raise ConfigError(f"{key}: {ref.file}: no such file (write one with frontier-dag calibrate, or give the "
                          "values inline: docs/configuration.md)")
    name = ref.engine or engine
    found = read_overheads_file(path).engines.get(name)
    if found is None:
        have = ", ".join(sorted(read_overheads_file(path).engines)) or "none"
        raise ConfigError(f"{key}: {ref.file} has no entry for engine {name!r} (it has: {have}); name one with "
                          f"engine_overheads: {{file: {ref.file}, engine: ...}}")
    return found
