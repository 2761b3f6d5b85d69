"""Kernels compiled ahead of time (frontier_dag.aot) give numba's JIT's numbers bit for bit,
load without numba, and fall back to the JIT where they cannot be built."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from frontier_dag import aot
from frontier_dag.config import load_hardware
from frontier_dag.ir import kernels
from frontier_dag.predictors import features
from frontier_dag.predictors.features import HardwareTables
from frontier_dag.predictors.fitted_set import fit_profiles
from frontier_dag.predictors.fitting import CompiledFamily, FitSettings, table_query
from frontier_dag.predictors.schema import read_profile_dir

FIXTURE = Path(__file__).parent / "predictors" / "fixtures" / "tiny_profile"


def built(owner: aot.Kernels):
    module = owner.built()
    if module is None:
        failed = owner.path().with_suffix(".failed")
        pytest.skip(f"no ahead-of-time build here: {failed.read_text() if failed.exists() else 'disabled'}")
    return module


def random_csr(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    preds = [sorted(rng.choice(v, size=min(v, int(rng.integers(0, 4))), replace=False)) if v else [] for v in range(n)]
    ptr = np.zeros(n + 1, dtype=np.int64)
    ptr[1:] = np.cumsum([len(p) for p in preds])
    return ptr, np.array([u for p in preds for u in p], dtype=np.int64)


def test_residual_kernels_ahead_of_time_equal_the_jit_bit_for_bit():
    module, jit = built(kernels.kernel), kernels.kernel.jitted()
    rng = np.random.default_rng(0)
    for n in (1, 2, 17, 300):
        ptr, idx = random_csr(rng, n)
        weights = rng.random(n) * 100
        sinks = np.unique(rng.integers(0, n, size=3))
        finish = module.residual_finish(weights, ptr, idx)
        assert np.array_equal(finish, jit["residual_finish"](weights, ptr, idx))
        assert module.residual_longest(weights, ptr, idx, sinks) == jit["residual_longest"](weights, ptr, idx,
                                                                                                 sinks)
        assert np.array_equal(module.residual_path(finish, ptr, idx, sinks),
                              jit["residual_path"](finish, ptr, idx, sinks))


def test_predict_rows_ahead_of_time_equals_the_jit_bit_for_bit():
    module = built(features.kernel)
    profiles = read_profile_dir(FIXTURE)
    fitted = fit_profiles(profiles, FitSettings(n_estimators=4), n_jobs=1)
    tables = HardwareTables(load_hardware(fitted.hardware))
    for family, model in fitted.models.items():
        compiled = CompiledFamily(model, tables)
        table = profiles.tables[family]
        args = (*compiled.featurizer.inputs(table_query(family, table), len(table)), *compiled.model)
        ahead, jit = module.predict_rows(*args), features.kernel.jitted()["predict_rows"](*args)
        assert np.array_equal(ahead, jit, equal_nan=True), family


def test_a_process_runs_the_built_kernels_without_importing_numba():
    built(kernels.kernel)
    code = ("import sys, numpy as np\nfrom frontier_dag.ir import kernels\n"
            "w = np.array([1.0, 2.0, 3.0]); ptr = np.array([0, 0, 1, 3]); idx = np.array([0, 0, 1])\n"
            "assert kernels.residual_longest(w, ptr, idx, np.array([2])) == 6.0\n"
            "assert 'numba' not in sys.modules, 'numba was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_without_a_build_the_kernels_run_under_the_jit(monkeypatch):
    monkeypatch.setenv(aot.ENV_VAR, "0")
    owner = kernels.kernel
    assert owner.resolve("residual_finish") is owner.jitted()["residual_finish"]


def test_a_failed_build_is_remembered_and_the_jit_serves(tmp_path, monkeypatch):
    owner = kernels.kernel
    monkeypatch.setattr(owner, "_aot", None)  # not loaded yet
    monkeypatch.setattr(owner, "path", lambda: tmp_path / "kernels_aot_x.so")

    def fail(path):
        raise RuntimeError("no compiler")

    monkeypatch.setattr(owner, "_build", fail)
    assert owner.built() is None
    assert "no compiler" in (tmp_path / "kernels_aot_x.failed").read_text()
    assert owner.resolve("residual_finish") is owner.jitted()["residual_finish"]
