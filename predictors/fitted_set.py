"""Every family's model for one source of profiles, fitted or loaded from the cache, with
its held-out accuracy.

The accuracy a fit reports is an estimate: a forest of ``ESTIMATE_TREES`` trees (the
settings otherwise unchanged) fitted on the same features of a random 80% of each
family's rows and scored on the rest (``fitting.fit_family``), which adds about a
sixth to the fitting time. It is pessimistic for the full forest; ``frontier-dag
predictors evaluate`` scores the full forest on a random or a grouped split.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from frontier_dag.config.hardware import HardwareConfig, load_hardware
from frontier_dag.errors import PredictorError

from . import cache
from .fitting import DEFAULT_SETTINGS, FamilyModel, FitSettings, fit_family
from .schema import ProfileSet
from .sources import Source


@dataclass
class FittedSet:
    """Fitted models of the families a source measured on one GPU system."""

    hardware: str
    description: str
    data_hash: str
    settings: FitSettings
    models: dict[str, FamilyModel]
    fit_seconds: dict[str, float] = field(default_factory=dict)
    accuracy: dict[str, dict] = field(default_factory=dict)

    @property
    def hardware_config(self) -> HardwareConfig:
        return load_hardware(self.hardware)


ESTIMATE_TREES = 4


def fit_profiles(profiles: ProfileSet, settings: FitSettings = DEFAULT_SETTINGS, families=None,
                 n_jobs: int = 2) -> FittedSet:
    """Fit one model per family of ``profiles`` (or of ``families`` among them), and
    estimate each one's held-out accuracy."""
    hw = load_hardware(profiles.hardware)
    chosen = sorted(profiles.tables) if families is None else [f for f in families if f in profiles.tables]
    models, seconds = {}, {}
    for family in chosen:
        started = time.perf_counter()
        models[family] = fit_family(family, profiles.tables[family], hw, settings, n_jobs=n_jobs,
                                    estimate_trees=ESTIMATE_TREES)
        seconds[family] = time.perf_counter() - started
    accuracy = {f: m.info["accuracy"] for f, m in models.items() if "accuracy" in m.info}
    return FittedSet(hw.name, profiles.description, profiles.data_hash(), settings, models, seconds, accuracy)


def cache_key_for(source: Source, settings: FitSettings) -> str:
    hw = load_hardware(source.hardware)
    return cache.cache_key(source.data_hash(), {"settings": settings.key(), "hardware": hw.model_dump(mode="json"),
                                                "source": source.kind})


def fitted_set(source: Source, settings: FitSettings = DEFAULT_SETTINGS, use_cache: bool = True,
               n_jobs: int = 2) -> tuple[FittedSet, bool]:
    """The fitted set of ``source`` and whether it came from the cache (fitted and stored otherwise)."""
    key = cache_key_for(source, settings)
    if use_cache:
        found = cache.load(key)
        if isinstance(found, FittedSet):
            return found, True
        cache.check_writable()  # before a fit that could not be stored
    profiles = source.read()
    if not profiles.tables:
        raise PredictorError(f"{source.description}: no profile rows to fit")
    fitted = fit_profiles(profiles, settings, n_jobs=n_jobs)
    if use_cache:
        cache.store(key, fitted)
    return fitted, False
