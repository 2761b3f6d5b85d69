"""Numba kernels that load without numba: compiled ahead of time, once per machine.

Importing numba and loading even a cached kernel costs about a second and 100 MB per
process, more than a short simulation takes. A module therefore declares its kernels
with a ``Kernels`` object instead of ``numba.njit``:

    kernel = Kernels(__name__, exports={"predict_rows": "f8[:, ::1](i8, f8[:], ...)"})

    @kernel
    def predict_rows(kind, a, ...):
        ...

A kernel is a plain Python function until it is first called. Then an exported kernel
runs from an extension module that numba's ahead-of-time compiler (``numba.pycc``)
built from the same functions, which imports in a millisecond and without numba; it is
built on the first call on a machine (a C compiler is needed; about ten seconds) and
kept beside the module's bytecode (``__pycache__``, or the cache folder of
``$FRONTIER_DAG_CACHE`` where that is read-only), keyed by the module's source, so an
edited module is built again. Every other kernel, and every kernel where the build
fails or ``FRONTIER_DAG_AOT=0``, runs under numba's just-in-time compiler, as
``numba.njit(cache=True, **options)`` would run it: then all kernels of the module are
compiled together (the calls between them need numba's own dispatchers). Both paths
compile the same functions with the same options; the numbers are the same bit for bit
(``tests/test_aot.py``).
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import inspect
import os
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Set to 0 to run every kernel under numba's JIT (no ahead-of-time build).
ENV_VAR = "FRONTIER_DAG_AOT"
#: Part of the key of every built module: raise it when the way modules are built changes.
BUILD_VERSION = "1"


class Kernel:
    """A numba kernel, compiled (or loaded) on its first call."""

    __slots__ = ("fn", "owner", "name", "_call")

    def __init__(self, fn: Callable, owner: Kernels):
        self.fn, self.owner, self.name = fn, owner, fn.__name__
        self._call: Callable | None = None

    def __call__(self, *args):
        call = self._call
        if call is None:
            call = self._call = self.owner.resolve(self.name)
        return call(*args)

    @property
    def py_func(self) -> Callable:
        return self.fn

    @property
    def jit(self):
        """The numba dispatcher of this kernel (compiling the module's kernels for numba)."""
        return self.owner.jitted()[self.name]

    def __repr__(self) -> str:
        return f"<kernel {self.owner.module}.{self.name}>"


class Kernels:
    """The numba kernels of one module, ``options`` as ``numba.njit`` takes them
    (``cache=True`` is implied), and the signatures of those to compile ahead of time."""

    def __init__(self, module: str, exports: dict[str, str] | None = None, **options: Any):
        self.module, self.exports, self.options = module, dict(exports or {}), {"cache": True, **options}
        self.kernels: dict[str, Kernel] = {}
        self._jitted: dict[str, Any] | None = None
        self._aot: Any = None  # the built module; False where it cannot be had

    def __call__(self, fn: Callable) -> Kernel:
        kernel = self.kernels[fn.__name__] = Kernel(fn, self)
        return kernel

    # -- the two ways to run -------------------------------------------------------------------
    def resolve(self, name: str) -> Callable:
        """What a call of kernel ``name`` runs: the built module's function, or numba's dispatcher."""
        if name in self.exports and os.environ.get(ENV_VAR, "1") != "0":
            built = self.built()
            if built is not None:
                return getattr(built, name)
        return self.jitted()[name]

    def jitted(self) -> dict[str, Any]:
        """Every kernel as a numba dispatcher, installed in the module's namespace, where the
        kernels look each other up when numba compiles them."""
        if self._jitted is None:
            import numba

            namespace = vars(sys.modules[self.module])
            self._jitted = {name: numba.njit(**self.options)(k.fn) for name, k in self.kernels.items()}
            namespace.update(self._jitted)
        return self._jitted

    def built(self):
        """The ahead-of-time module: loaded, or built now; None where it cannot be built (the
        reason is kept beside it, so that later processes do not try again)."""
        if self._aot is None:
            path = self.path()
            failed = path.with_suffix(".failed")
            self._aot = _load(path) or False
            if not self._aot and not failed.exists():
                try:
                    self._build(path)
                    self._aot = _load(path) or False
                except Exception as exc:  # no compiler, no headers: numba's JIT serves instead
                    _write(failed, f"{type(exc).__name__}: {exc}\n".encode())
        return self._aot or None

    # -- building ------------------------------------------------------------------------------
    def key(self) -> str:
        """A hash of everything the built module depends on: the kernels' source file, the
        exported signatures, numpy and Python."""
        import numpy

        digest = hashlib.sha256(Path(sys.modules[self.module].__file__).read_bytes())
        digest.update(repr((sorted(self.exports.items()), sorted(self.options.items()), numpy.__version__,
                            sys.version, BUILD_VERSION)).encode())
        return digest.hexdigest()[:16]

    def path(self) -> Path:
        """Where the built module is kept."""
        source = Path(sys.modules[self.module].__file__)
        name = f"{source.stem}_aot_{self.key()}"
        suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
        folder = source.parent / "__pycache__"
        try:
            folder.mkdir(exist_ok=True)
            writable = os.access(folder, os.W_OK)
        except OSError:
            writable = False
        if not writable:
            root = Path(os.environ.get("FRONTIER_DAG_CACHE") or Path.home() / ".cache" / "frontier-dag").expanduser()
            folder = root / "kernels"
            folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{name}{suffix}"

    def _build(self, path: Path) -> None:
        """Compile the exported kernels into ``path`` with numba's ahead-of-time compiler. Each
        is exported through a wrapper that calls its dispatcher, so that the kernel itself is
        compiled with its own options, as under the JIT."""
        jitted = self.jitted()
        module_name = path.name[: -len(importlib.machinery.EXTENSION_SUFFIXES[0])]
        with warnings.catch_warnings(), tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            warnings.simplefilter("ignore")  # numba.pycc and distutils announce their deprecation
            from numba.pycc import CC

            cc = CC(module_name)
            cc.output_dir = tmp
            cc.verbose = False
            for name, signature in self.exports.items():
                cc.export(name, signature)(_wrapper(name, self.kernels[name].fn, jitted[name]))
            cc.compile()
            built = next(Path(tmp).glob(f"{module_name}*"))
            os.replace(built, path)


def _wrapper(name: str, fn: Callable, dispatcher) -> Callable:
    """A function of ``fn``'s parameters that calls ``dispatcher`` with them."""
    params = ", ".join(inspect.signature(fn).parameters)
    namespace = {"_kernel": dispatcher}
    exec(f"def {name}({params}):\n    return _kernel({params})\n", namespace)  # noqa: S102
    return namespace[name]


def _load(path: Path):
    """The extension module at ``path``, or None (absent, or built against another numpy)."""
    if not path.is_file():
        return None
    name = path.name[: -len(importlib.machinery.EXTENSION_SUFFIXES[0])]
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except ImportError:
        return None
    return module


def _write(path: Path, data: bytes) -> None:
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except OSError:
        pass
