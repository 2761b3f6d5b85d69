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

import contextlib
import hashlib
import json
import mmap
import os
import pickle
import struct
import tempfile
import time
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


#: Every entry starts with this, then the header: the sha256 of what follows it, and the
#: lengths of the pickle and of each of its out-of-band buffers (little-endian uint64s).
MAGIC = b"frontier-dag predictors 2\n"
#: Buffers (the models' arrays) start at multiples of this many bytes.
ALIGN = 64
#: An entry whose checksum held is not hashed again while its size, modification time and
#: inode are those recorded beside it (``<key>.ok``), and it was at least this many seconds
#: old when checked: a timestamp that coarse cannot hide a later edit.
SETTLED_S = 2.0


def load(key: str) -> Any | None:
    """The entry stored under ``key``, or None when there is none. A damaged entry (its
    checksum does not match: a truncated or altered file) is not loaded: a warning says so
    once, and the caller fits again and stores a sound one over it.

    The models' arrays are not read but mapped (copy on write): a process pages in only
    the tree nodes its predictions walk, in place of unpickling the whole set (hundreds of MB)."""
    path = cache_dir() / f"{key}.pkl"
    if not path.is_file():
        return None
    try:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY) if size else b""
    except (OSError, ValueError) as exc:
        return _damaged(path, f"cannot be read: {exc}")
    if size and hasattr(mmap, "MADV_RANDOM"):  # a walk jumps between trees: read no pages around a node
        data.madvise(mmap.MADV_RANDOM)
    view = memoryview(data)
    head = _header(view)
    if head is None:
        return _damaged(path, "it is not an entry this version wrote")
    digest, pickled, buffers = head
    if not _verified(path, view, digest):
        return _damaged(path, "its checksum does not match: the file was truncated or altered")
    try:
        return pickle.loads(pickled, buffers=buffers)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError) as exc:
        return _damaged(path, f"it cannot be unpickled ({type(exc).__name__}: {exc})")


def _header(view: memoryview) -> tuple[bytes, memoryview, list[memoryview]] | None:
    """(checksum, pickle, buffers) of an entry, or None where the file is not one of this
    version's (another magic, or lengths that do not fit its size)."""
    start = len(MAGIC) + 32
    if len(view) < start + 16 or bytes(view[: len(MAGIC)]) != MAGIC:
        return None
    digest = bytes(view[len(MAGIC): start])
    pickle_length, count = struct.unpack_from("<QQ", view, start)
    position = start + 16 + 8 * count
    if position > len(view):
        return None
    lengths = struct.unpack_from(f"<{count}Q", view, start + 16)
    pickled = view[position: position + pickle_length]
    position += pickle_length
    buffers = []
    for length in lengths:
        position += -position % ALIGN
        buffers.append(view[position: position + length])
        position += length
    if position != len(view):
        return None
    return digest, pickled, buffers


def _verified(path: Path, view: memoryview, digest: bytes) -> bool:
    """Whether the entry's contents match ``digest``: hashed from the file (not through the
    map, which would keep every page resident), unless a settled entry was checked before."""
    stamp, info = path.with_suffix(".ok"), path.stat()
    identity = f"{info.st_size} {info.st_mtime_ns} {info.st_ino}"
    try:
        if stamp.read_text() == identity:
            return True
    except OSError:
        pass
    hasher = hashlib.sha256()
    with path.open("rb") as handle:
        handle.seek(len(MAGIC) + 32)
        while chunk := handle.read(1 << 22):
            hasher.update(chunk)
        _drop_cached_pages(handle)
    if hasher.digest() != digest:
        return False
    if time.time() - info.st_mtime >= SETTLED_S:
        with contextlib.suppress(OSError):
            _write_atomic(stamp, identity.encode())
    return True


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
    file, with a checksum that ``load`` verifies. The arrays of ``value`` are written raw,
    aligned, after the pickle (pickle protocol 5's out-of-band buffers), for ``load`` to map."""
    directory = check_writable()
    buffers: list[pickle.PickleBuffer] = []
    pickled = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    raws = [b.raw() for b in buffers]
    parts = [struct.pack(f"<QQ{len(raws)}Q", len(pickled), len(raws), *(r.nbytes for r in raws)), pickled]
    position = len(MAGIC) + 32 + sum(len(p) for p in parts)
    for raw in raws:
        parts.append(bytes(-position % ALIGN))
        position += len(parts[-1]) + raw.nbytes
        parts.append(raw)
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(part)
    target = directory / f"{key}.pkl"
    _write_atomic(target, MAGIC, hasher.digest(), *parts, drop_pages=True)
    return target


def _write_atomic(path: Path, *parts, drop_pages: bool = False) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(handle, "wb") as out:
        for part in parts:
            out.write(part)
        if drop_pages:
            out.flush()
            os.fsync(out.fileno())  # written back, so that its pages can be dropped
            _drop_cached_pages(out)
    os.replace(temporary, path)


def _drop_cached_pages(handle) -> None:
    """Drop a file's pages from the page cache once it has been written or hashed. Read or
    written in one pass, they are held in large folios, and a process that maps the file
    then maps a whole folio (up to megabytes) at each first touch: a 10-request run mapped
    104 MB of h200_sxm's forests that way, 12 MB when its faults read single pages."""
    with contextlib.suppress(AttributeError, OSError):  # posix_fadvise: POSIX only
        os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
