"""The on-disk cache of fitted models.

A fitted set is stored under a key that hashes everything it depends on: the
contents of every profile file, the hardware description (SM count and peaks enter
the features), the fit settings, and the source code of the predictors and of the
cost contracts (features, readers and the roofline define what a model means), less
the modules that only use fitted models (``RUNTIME_MODULES``). Any change to one of
them is a different key, so a stale model is never reused; old entries are simply
left behind. Each entry carries a checksum: a damaged one is fitted again, with a warning.

Location: ``$FRONTIER_DAG_CACHE`` or ``~/.cache/frontier-dag``, under ``predictors/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
import warnings
from functools import cache
from pathlib import Path
from typing import Any

from frontier_dag.errors import FrontierDagWarning, PredictorError

ENV_VAR = "FRONTIER_DAG_CACHE"
#: source files whose meaning a fitted model depends on, besides this package
CONTRACT_MODULES = ("frontier_dag.cost.queries", "frontier_dag.cost.roofline")
#: modules of this package that only use fitted models (prediction, evaluation): editing
#: them changes no stored model, so they are left out of the key
RUNTIME_MODULES = frozenset({"model.py", "registry.py", "evaluation.py"})


def cache_dir() -> Path:
    root = Path(os.environ.get(ENV_VAR) or Path.home() / ".cache" / "frontier-dag")
    return root.expanduser() / "predictors"


@cache
def code_version() -> str:
    """sha256 over the predictors' and the cost contracts' source files."""
    import importlib

    package = Path(__file__).parent
    files = sorted(f for f in package.glob("*.py") if f.name not in RUNTIME_MODULES)
    files += [Path(importlib.import_module(m).__file__) for m in CONTRACT_MODULES]
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def cache_key(data_hash: str, parts: dict[str, Any]) -> str:
    """A key over the data's hash, the code version and ``parts`` (settings, hardware, ...)."""
    payload = json.dumps({"data": data_hash, "code": code_version(), **parts}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


#: Every entry starts with this and the sha256 of the pickle that follows it.
MAGIC = b"frontier-dag predictors 1\n"


def load(key: str) -> Any | None:
    """The entry stored under ``key``, or None when there is none. A damaged entry (its
    checksum does not match: a truncated or altered file) is not loaded: a warning says so
    once, and the caller fits again and stores a sound one over it."""
    path = cache_dir() / f"{key}.pkl"
    if not path.is_file():
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        return _damaged(path, f"cannot be read: {exc}")
    head = len(MAGIC) + 32
    if not data.startswith(MAGIC) or len(data) < head:
        return _damaged(path, "it is not an entry this version wrote")
    if hashlib.sha256(data[head:]).digest() != data[len(MAGIC):head]:
        return _damaged(path, "its checksum does not match: the file was truncated or altered")
    try:
        return pickle.loads(data[head:])
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError) as exc:
        return _damaged(path, f"it cannot be unpickled ({type(exc).__name__}: {exc})")


def _damaged(path: Path, why: str) -> None:
    warnings.warn(f"predictor cache entry {path} is damaged ({why}); fitting the predictors again",
                  FrontierDagWarning, stacklevel=3)
    return None


def check_writable() -> Path:
    """The cache directory, created; a PredictorError before anything is fitted when it
    cannot be written (a fit of minutes would otherwise be lost)."""
    directory = cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=directory, suffix=".tmp")
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise PredictorError(f"the predictor cache {directory} cannot be written ({exc.strerror or exc}); set "
                             f"{ENV_VAR} to a writable folder") from None
    return directory


def store(key: str, value: Any) -> Path:
    """Write atomically (a temporary file renamed), so a concurrent reader never sees half a
    file, with a checksum that ``load`` verifies."""
    directory = check_writable()
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    handle, temporary = tempfile.mkstemp(dir=directory, suffix=".tmp")
    with os.fdopen(handle, "wb") as out:
        out.write(MAGIC + hashlib.sha256(data).digest() + data)
    target = directory / f"{key}.pkl"
    os.replace(temporary, target)
    return target
