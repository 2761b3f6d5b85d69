"""The files a run reads besides its config, and their copies in the run directory.

A config may name three files: ``workflow.path`` (a Python file of workflows),
``model`` (a Hugging Face config.json) and ``workload.trace.path`` (a request trace).
``read_inputs`` reads them when a run starts and keeps their sha256; the summary records
the hashes under ``inputs`` (so does each record of a sweep). A run directory keeps a copy of the workflow file and of the
model's config.json under ``RUN/inputs/`` and its config.yaml names the copies, so the
analysis of a run rebuilds its iterations from the files that were simulated, wherever the
directory is moved and whatever becomes of the originals. The trace is not copied: the
analysis never reads it (requests.parquet holds every request's arrival and lengths as
simulated), and a trace may be gigabytes; its hash is recorded, and config.yaml names it by
an absolute path (a relative one would be taken from the run directory).

    RUN/inputs/workflow/my_strategy.py
    RUN/inputs/model/my-llama/config.json    # the folder keeps the model's name
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from frontier_dag.config.run import Origin, RunConfig
from frontier_dag.data import ENV_VAR, expand_data_path
from frontier_dag.errors import ConfigError

#: The folder of the copies inside a run directory.
INPUTS_DIR = "inputs"
#: The summary's key for the input files: kind -> {given, sha256, copy}.
SUMMARY_KEY = "inputs"


@dataclass(frozen=True)
class InputFile:
    """A file the run read: its kind (``workflow``, ``model`` or ``trace``), the path as the
    config gave it, its sha256, and, for a file the run directory keeps, its content and
    where the copy goes (relative to the run directory)."""

    kind: str
    given: str
    path: Path  # where it was read
    sha256: str
    content: bytes | None = None
    copy: str | None = None

    def record(self, in_run_dir: bool = False) -> dict[str, Any]:
        """What a summary records: the path given and the sha256, and in a run directory where
        the copy is (None: not copied)."""
        out = {"given": self.given, "sha256": self.sha256}
        return {**out, "copy": self.copy} if in_run_dir else out


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_file(config: RunConfig, origin: Origin) -> Path | None:
    """The config.json the config's ``model`` names, or None for a preset, a Hugging Face id
    or a mapping (the rule ``load_model`` follows)."""
    if not isinstance(config.model, str):
        return None
    path = origin.path(config.model)
    return path if config.model.endswith(".json") or path.is_file() else None


def read_inputs(config: RunConfig, origin: Origin) -> tuple[InputFile, ...]:
    """The files ``config`` reads (relative paths from ``origin.base_dir``): the workflow file
    and the model's config.json with their content, the trace with its hash only."""
    found = []
    if config.workflow.path is not None:
        path = origin.path(config.workflow.path)
        content = _read(path, "workflow.path")
        found.append(InputFile("workflow", config.workflow.path, path, _sha(content), content,
                               str(PurePosixPath(INPUTS_DIR, "workflow", _safe(path.name, "workflow.py")))))
    path = model_file(config, origin)
    if path is not None:
        content = _read(path, "model")
        folder = _safe(path.parent.name or path.stem, "model")  # load_model names the model after it
        found.append(InputFile("model", str(config.model), path, _sha(content), content,
                               str(PurePosixPath(INPUTS_DIR, "model", folder, _safe(path.name, "config.json")))))
    trace = config.workload.trace
    if trace is not None:
        path = expand_data_path(trace.path, origin.base_dir)
        if path.is_file():  # a missing trace fails the run with the workload's own message
            found.append(InputFile("trace", trace.path, path, sha256_of(path)))
    return tuple(found)


def changed(config: RunConfig, origin: Origin, records: dict[str, Any]) -> list[str]:
    """The workflow and model files ``config`` names whose content is no longer what a run
    recorded (``records``: its summary's ``inputs``): what analysing the run from them would
    get wrong."""
    now = {"workflow": origin.path(config.workflow.path) if config.workflow.path is not None else None,
           "model": model_file(config, origin)}
    out = []
    for kind, path in now.items():
        record = records.get(kind)
        if path is None or not isinstance(record, dict):
            continue
        found = sha256_of(path) if path.is_file() else None
        if found != record.get("sha256"):
            out.append(f"{path} ({kind}) {'changed' if found else 'is gone'} since the run read it")
    return out


def recorded(inputs: tuple[InputFile, ...], in_run_dir: bool = False) -> dict[str, dict[str, Any]]:
    """What a summary records of the input files: kind -> ``{given, sha256}`` (and ``copy``
    in a run directory)."""
    return {f.kind: f.record(in_run_dir) for f in inputs}


def in_run_dir(config: RunConfig, inputs: tuple[InputFile, ...]) -> RunConfig:
    """``config`` as a run directory's config.yaml holds it: the workflow file and the model
    named by their copies, a relative trace path made absolute."""
    update: dict[str, Any] = {}
    for f in inputs:
        if f.kind == "workflow":
            update["workflow"] = config.workflow.model_copy(update={"path": f.copy})
        elif f.kind == "model":
            update["model"] = f.copy
        elif f.kind == "trace" and not _anchored(f.given):
            trace = config.workload.trace.model_copy(update={"path": str(f.path.resolve())})
            update["workload"] = config.workload.model_copy(update={"trace": trace})
    return config.model_copy(update=update)


def write_copies(directory: Path, inputs: tuple[InputFile, ...]) -> None:
    for f in inputs:
        if f.copy is not None:
            target = directory / f.copy
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(f.content)


def _anchored(text: str) -> bool:
    """A path that means the same file from any folder: absolute, or in the data folder."""
    return Path(text).expanduser().is_absolute() or ENV_VAR in text


def _safe(name: str, fallback: str) -> str:
    return name if name not in ("", ".", "..") else fallback


def _read(path: Path, key: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path} ({exc.strerror or exc})") from None


def _sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()
