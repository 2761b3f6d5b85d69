"""The on-disk cache of fitted models.

A fitted set is stored under a key that hashes everything it depends on: the
contents of every profile file, the hardware description (SM count and peaks enter
the features), the fit settings, and the source code of the predictors and of the
cost contracts (features, readers and the roofline define what a model means), less
the modules that only use fitted models (``RUNTIME_MODULES``). Any change to one of
them is a different key, so a stale model is never reused; old entries are simply
left behind.

Location: ``$FRONTIER_DAG_CACHE`` or ``~/.cache/frontier-dag``, under ``predictors/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

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


def load(key: str) -> Any | None:
    path = cache_dir() / f"{key}.pkl"
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as handle:
            return pickle.load(handle)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
        return None  # a truncated or outdated entry is refitted


def store(key: str, value: Any) -> Path:
    """Write atomically (a temporary file renamed), so a concurrent reader never sees half a file."""
    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, suffix=".tmp")
    with os.fdopen(handle, "wb") as out:
        pickle.dump(value, out, protocol=pickle.HIGHEST_PROTOCOL)
    target = directory / f"{key}.pkl"
    os.replace(temporary, target)
    return target
