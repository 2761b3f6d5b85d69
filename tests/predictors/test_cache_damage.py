"""A damaged predictor cache: an altered entry fails its checksum and is fitted again (said
once); a NaN that reached a model anyway stops the simulation naming the op; a cache that
cannot be written fails before the fit; jitter on tables without spread is a warning."""

from __future__ import annotations

import os
import shutil
import warnings

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from frontier_dag.cli.main import cli
from frontier_dag.config import load_hardware
from frontier_dag.config.run import PredictorConfig
from frontier_dag.errors import FrontierDagWarning, PredictorError
from frontier_dag.predictors import cache
from frontier_dag.predictors.fitted_set import cache_key_for, fitted_set
from frontier_dag.predictors.fitting import DEFAULT_SETTINGS
from frontier_dag.predictors.registry import fitted_cost_model
from frontier_dag.predictors.sources import open_source
from tests.conftest import TINY_DENSE


@pytest.fixture
def profiles(fixtures, tmp_path):
    target = tmp_path / "profiles"
    shutil.copytree(fixtures / "tiny_profile", target)
    return target


def test_an_altered_entry_is_refitted_with_one_warning(profiles, cache_dir):
    source = open_source("profile-dir", path=profiles)
    first, _ = fitted_set(source)
    entry = cache_dir / f"{cache_key_for(source, DEFAULT_SETTINGS)}.pkl"
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: a float of a fitted model, say
    entry.write_bytes(bytes(data))
    with pytest.warns(FrontierDagWarning, match=r"predictor cache entry .* is damaged \(its checksum does not match"):
        again, cached = fitted_set(source)
    assert not cached and set(again.models) == set(first.models)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the entry written over it is sound: no second warning
        _, cached = fitted_set(source)
    assert cached


def test_a_truncated_or_foreign_entry_is_refitted(profiles, cache_dir):
    source = open_source("profile-dir", path=profiles)
    fitted_set(source)
    entry = cache_dir / f"{cache_key_for(source, DEFAULT_SETTINGS)}.pkl"
    for damage in (entry.read_bytes()[:100], b"not a cache entry"):
        entry.write_bytes(damage)
        with pytest.warns(FrontierDagWarning, match="is damaged"):
            assert not fitted_set(source)[1]


def test_a_nan_in_a_cached_model_fails_the_run_naming_the_op(profiles, cache_dir, tmp_path):
    """Stored with a sound checksum (written by this version, from a NaN that came from
    anywhere): the price guard still refuses it, and the run exits 2 instead of reporting
    '0 of 100 requests'."""
    source = open_source("profile-dir", path=profiles)
    fitted, _ = fitted_set(source)
    fitted.models["gemm"].calibration[:] = np.nan
    cache.store(cache_key_for(source, DEFAULT_SETTINGS), fitted)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "model": TINY_DENSE, "hardware": "h200_sxm", "cluster": {"pools": {"main": {"role": "colocated", "gpus": 1}}},
        "predictor": {"source": str(profiles)},
        "workload": {"arrival": {"kind": "poisson", "rate_per_s": 10}, "num_requests": 100},
    }))
    result = CliRunner().invoke(cli, ["simulate", str(config), "--out", str(tmp_path / "run"), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert "priced gemm at nan µs" in result.output and "op L0." in result.output
    assert not (tmp_path / "run").exists()


def test_a_nan_in_a_cached_model_fails_a_sweep_point(profiles, cache_dir):
    """Not a point recorded ok with a summary of nothing."""
    from frontier_dag.sweep.worker import run_point

    source = open_source("profile-dir", path=profiles)
    fitted, _ = fitted_set(source)
    fitted.models["gemm"].calibration[:] = np.nan
    cache.store(cache_key_for(source, DEFAULT_SETTINGS), fitted)
    config = {"model": TINY_DENSE, "hardware": "h200_sxm", "predictor": {"source": str(profiles)},
              "cluster": {"pools": {"main": {"role": "colocated", "gpus": 1}}},
              "workload": {"arrival": {"kind": "poisson", "rate_per_s": 10}, "num_requests": 20}}
    result = run_point({"point_id": "p", "config": config, "source": "s.yaml: point p", "base_dir": None,
                        "early_stop": None})
    assert result["status"] == "failed" and result["summary"] is None
    assert "CostModelError" in result["reason"] and "priced gemm at nan" in result["reason"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_cache_fails_before_the_fit(profiles, tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    monkeypatch.setenv("FRONTIER_DAG_CACHE", str(locked))
    with pytest.raises(PredictorError, match="cannot be written"):
        fitted_set(open_source("profile-dir", path=profiles))


def test_an_unwritable_cache_fails_before_the_fit_anywhere(profiles, tmp_path, monkeypatch):
    """The same where permissions do not stop this process: a file where the folder should be."""
    blocker = tmp_path / "cache-file"
    blocker.write_text("")
    monkeypatch.setenv("FRONTIER_DAG_CACHE", str(blocker))
    fits = []
    monkeypatch.setattr("frontier_dag.predictors.fitted_set.fit_profiles", lambda *a, **k: fits.append(1))
    with pytest.raises(PredictorError, match=f"predictor cache {blocker}/predictors cannot be written"):
        fitted_set(open_source("profile-dir", path=profiles))
    assert not fits
    result = CliRunner().invoke(cli, ["predictors", "fit", "--source", "profile-dir", "--path", str(profiles),
                                      "--refit"])
    assert result.exit_code == 2 and "cannot be written" in result.output and not fits


def test_jitter_without_spread_is_a_warning(profiles, cache_dir):
    with pytest.warns(FrontierDagWarning, match=r"predictor.jitter: true has no effect on all_reduce, attention_decode: "):
        fitted_cost_model(PredictorConfig(source=str(profiles), jitter=True), load_hardware("h200_sxm"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fitted_cost_model(PredictorConfig(source=str(profiles)), load_hardware("h200_sxm"))


def test_an_entry_maps_its_arrays_and_a_settled_one_is_hashed_once(profiles, cache_dir, monkeypatch):
    """The models' arrays come back mapped from the file, equal to the stored ones; once a
    settled entry's checksum held it is not hashed again, until the file changes."""
    source = open_source("profile-dir", path=profiles)
    first, _ = fitted_set(source)
    monkeypatch.setattr(cache, "SETTLED_S", 0.0)
    loaded, cached = fitted_set(source)
    assert cached and set(loaded.models) == set(first.models)
    for family, model in loaded.models.items():
        nodes = model.forest.nodes
        assert np.array_equal(nodes, first.models[family].forest.nodes) and not nodes.flags.owndata
        assert nodes.ctypes.data % cache.ALIGN == 0
    key = cache_key_for(source, DEFAULT_SETTINGS)
    entry = cache_dir / f"{key}.pkl"
    assert entry.with_suffix(".ok").is_file()
    hashed = []
    sha256 = cache.hashlib.sha256
    monkeypatch.setattr(cache.hashlib, "sha256", lambda *a: hashed.append(1) or sha256(*a))
    assert cache.load(key) is not None and not hashed
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0xFF
    entry.write_bytes(bytes(data))
    os.utime(entry, ns=(entry.stat().st_atime_ns, entry.stat().st_mtime_ns + 1))  # whatever the clock's grain
    with pytest.warns(FrontierDagWarning, match="its checksum does not match"):
        assert cache.load(key) is None
    assert hashed
