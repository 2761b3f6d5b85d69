"""Shared fixtures: the public data folder when present, and the small committed fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from frontier_dag.data import shared_data_dir

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture
def shared() -> Path:
    root = shared_data_dir()
    if root is None:
        pytest.skip("no ../shared/data (set FRONTIER_DAG_DATA); the committed fixtures cover the readers")
    return root


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    """A fresh, private model cache for the test."""
    monkeypatch.setenv("FRONTIER_DAG_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "predictors"
