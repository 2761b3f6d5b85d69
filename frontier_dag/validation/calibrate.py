"""An engine's overheads (``config/overheads.py``) fitted to measured rows by simulating them.

The parameters are the four of ``EngineOverheads``: a per-request constant, a
prefill-to-decode handoff (fitted only where the rows include disaggregated ones) and the
host time of a step, a constant plus a term per sequence in the batch. They are fitted
per engine (``vllm``) or, with ``by="version"``, per engine version (``vllm 0.12.0``), on
all of its rows at once: no term belongs to one row, model or concurrency.

The fit minimises the rows' relative errors of mean TTFT and TPOT (a soft-L1 loss, so
that a few rows far off do not pull the parameters) by damped Gauss-Newton steps
(Levenberg-Marquardt) whose Jacobian comes from simulating every row again with one
parameter moved by its step (``STEPS``): each evaluation is the simulation itself, so the
parameters are those under which the simulator, as it runs, reproduces the rows best,
including what the overheads do to batching and queueing. After the first step the
Jacobian is carried forward by Broyden's update from each step taken (one simulation of
the rows per step instead of one per parameter and one more), and measured again only when
a step fails. A parameter stays at zero or above.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from frontier_dag.config.overheads import PARAMETERS, EngineOverheads, OverheadsFile
from frontier_dag.errors import ConfigError
from frontier_dag.validation.convert import BENCHMARK_ROUNDS, ROUNDS
from frontier_dag.validation.runner import run_jobs
from frontier_dag.validation.silicon import SiliconRow

#: How far each parameter is moved to see what it does (µs): a change that moves the rows'
#: times well above the simulation's rounding, and the unit the damping is measured in. A
#: request's intake overlaps the step the engine is running when it arrives, so an intake
#: shorter than that step changes no TTFT: the per-request moves are longer than a decode step.
STEPS = {"request_us": 20000.0, "handoff_us": 20000.0, "step_us": 200.0, "step_per_sequence_us": 5.0}
#: Relative error at which the soft-L1 loss turns from squares to absolute values.
LOSS_SCALE = 0.25
#: Rows that failed at a parameter set count this relative error (it keeps the fit away).
FAILED_ERROR = 1.0
#: A per-request constant or handoff beyond this (µs) is no frontend's or KV handoff's time:
#: the fit is covering for something else (kernel prices, clients) on the rows it saw.
IMPLAUSIBLE_US = 1_000_000.0


def engine_key(row: SiliconRow, by: str) -> str:
    """The overheads file's entry a row belongs to: its engine, or its engine and version."""
    if by == "version" and row.backend_version:
        return f"{row.backend} {row.backend_version}"
    return row.backend


@dataclass
class Fit:
    """One entry's fit: its parameters, the rows it was fitted on and their errors before
    (no overheads) and after, and how many times the rows were simulated."""

    key: str
    overheads: EngineOverheads
    rows: int
    before: dict
    after: dict
    evaluations: int
    free: tuple[str, ...]
    history: list[dict] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        """Why this entry may not carry to rows it was not fitted on (none where it may)."""
        out = []
        if self.rows < len(self.free):
            out.append(f"{self.key}: {len(self.free)} parameters fitted on {self.rows} row(s): the fit can match "
                       "them without telling the parameters apart; fit on more rows (a larger --per-partition)")
        for name in ("request_us", "handoff_us"):
            value = getattr(self.overheads, name)
            if name in self.free and value > IMPLAUSIBLE_US:
                out.append(f"{self.key}: {name} {value / 1e6:.1f} s is no engine's {name[:-3]} time; the rows' "
                           "error is elsewhere (kernel prices, clients) and the entry will not carry to other rows")
        return out

    def summary(self) -> dict:
        out = {"rows": self.rows, "parameters_fitted": list(self.free), "evaluations": self.evaluations,
               "before": self.before, "after": self.after}
        if self.warnings:
            out["warnings"] = self.warnings
        return out


def _errors(records: list[dict], rows: Sequence[SiliconRow]) -> np.ndarray:
    """Per row, the relative errors of TTFT and TPOT (simulated / measured - 1), flattened."""
    out = np.empty(2 * len(rows))
    for i, (rec, row) in enumerate(zip(records, rows, strict=True)):
        for j, (sim, measured) in enumerate(((rec["sim_ttft_ms"], row.ttft_ms), (rec["sim_tpot_ms"], row.tpot_ms))):
            ok = rec["status"] == "ok" and sim is not None and np.isfinite(sim)
            out[2 * i + j] = sim / measured - 1.0 if ok else FAILED_ERROR
    return out


def _mapes(errors: np.ndarray) -> dict:
    return {"ttft_mape": float(np.abs(errors[0::2]).mean()), "tpot_mape": float(np.abs(errors[1::2]).mean())}


def _loss(errors: np.ndarray) -> float:
    z = (errors / LOSS_SCALE) ** 2
    return float((2.0 * (np.sqrt(1.0 + z) - 1.0)).sum())


def fit_overheads(rows: Sequence[SiliconRow], key: str = "", *, workers: int = 2, rounds: int = ROUNDS,
                  benchmark_rounds: int = BENCHMARK_ROUNDS, phase: str = "burst", iterations: int = 8,
                  progress: Callable[[str], None] | None = None) -> Fit:
    """Fit one overhead model to ``rows`` (module docstring), from zeros; ``iterations``: the
    most Gauss-Newton steps; ``phase``: how the clients start (``runner.PHASES``): a file is
    used with the phase it was fitted with. Rows that do not simulate without overheads (no concurrency, a
    model without tables) cannot inform the fit and are left out."""
    rows = list(rows)
    run = dict(workers=workers, rounds=rounds, benchmark_rounds=benchmark_rounds, phase=phase)
    usable = [(row, rec) for row, rec in zip(rows, run_jobs([(row, None) for row in rows], **run), strict=True)
              if rec["status"] == "ok" and rec["sim_ttft_ms"] is not None and rec["sim_tpot_ms"] is not None]
    if not usable:
        raise ConfigError(f"calibrate {key}: none of its rows can be simulated (frontier-dag validate silicon "
                          "says why)")
    rows, plain = [row for row, _ in usable], [rec for _, rec in usable]
    free = tuple(p for p in PARAMETERS if p != "handoff_us" or any(r.mode == "disagg" for r in rows))
    scale = np.array([STEPS[p] for p in free])
    evaluations = 1

    def simulate(points: list[np.ndarray]) -> list[np.ndarray]:
        nonlocal evaluations
        evaluations += len(points)
        jobs = [(row, _overheads(z * scale, free)) for z in points for row in rows]
        records = run_jobs(jobs, **run)
        n = len(rows)
        return [_errors(records[k * n:(k + 1) * n], rows) for k in range(len(points))]

    z = np.zeros(len(free))
    before = errors = _errors(plain, rows)
    damping = 1e-3
    jac, fresh = None, False
    history = [{"overheads": _overheads(z, free).model_dump(), **_mapes(errors), "loss": _loss(errors)}]
    for step in range(iterations):
        if jac is None:  # forward differences: each free parameter moved by its step, all rows simulated again
            moved = simulate([z + np.eye(len(free))[j] for j in range(len(free))])
            jac, fresh = np.stack([m - errors for m in moved], axis=1), True
        # soft-L1 as iteratively reweighted least squares
        weight = 1.0 / np.sqrt(np.sqrt(1.0 + (errors / LOSS_SCALE) ** 2))
        jw, ew = jac * weight[:, None], errors * weight
        normal, gradient = jw.T @ jw, jw.T @ ew
        moved_by = 0.0
        for _ in range(4):  # raise the damping until a step lowers the loss
            lhs = normal + damping * np.diag(np.maximum(np.diag(normal), 1e-9))
            trial = np.maximum(z - np.linalg.solve(lhs, gradient), 0.0)
            if np.abs(trial - z).max() < 1e-3:
                break
            trial_errors = simulate([trial])[0]
            if _loss(trial_errors) < _loss(errors):
                moved_by = float(np.abs(trial - z).max())
                # Broyden's update: the step just taken tells how the errors move along it, so
                # the next step needs no new differences (a failed step gets fresh ones)
                dz = trial - z
                jac = jac + np.outer(trial_errors - errors - jac @ dz, dz) / float(dz @ dz)
                z, errors, fresh = trial, trial_errors, False
                damping = max(damping / 3.0, 1e-6)
                break
            damping *= 10.0
        history.append({"overheads": _overheads(z * scale, free).model_dump(), **_mapes(errors),
                        "loss": _loss(errors)})
        if progress:
            progress(f"{key}: step {step + 1}: {_describe(_overheads(z * scale, free))}; TTFT MAPE "
                     f"{history[-1]['ttft_mape']:.1%}, TPOT MAPE {history[-1]['tpot_mape']:.1%}")
        if moved_by < 0.02:  # no step lowered the loss, or the last one hardly moved
            if fresh:
                break
            jac = None  # the updated slopes may have led astray: measure them again
    return Fit(key, _overheads(z * scale, free), len(rows), _mapes(before), _mapes(errors), evaluations, free,
               history)


def _overheads(values: np.ndarray, free: Sequence[str]) -> EngineOverheads:
    return EngineOverheads(**{p: round(float(v), 3) for p, v in zip(free, values, strict=True)})


def _describe(o: EngineOverheads) -> str:
    return ", ".join(f"{p} {getattr(o, p):.1f}" for p in PARAMETERS)


def calibrate(rows: Sequence[SiliconRow], *, by: str = "engine", command: str = "",
              progress: Callable[[str], None] | None = None, **options) -> tuple[OverheadsFile, list[Fit]]:
    """An overheads file with one entry per engine (or engine version, ``by="version"``) of
    ``rows``, each fitted on its rows (``fit_overheads``; ``options`` go to it). Rows that
    cannot be simulated (no concurrency, a model without tables) are left out of the fit."""
    if by not in ("engine", "version"):
        raise ConfigError(f"calibrate: --by {by!r} is neither engine nor version")
    groups: dict[str, list[SiliconRow]] = {}
    for row in rows:
        groups.setdefault(engine_key(row, by), []).append(row)
    fits = []
    for key, group in sorted(groups.items()):
        try:
            fits.append(fit_overheads(group, key, progress=progress, **options))
        except ConfigError as exc:
            if progress:
                progress(f"{exc}; no entry")
    if not fits:
        raise ConfigError("calibrate: none of the rows can be simulated (see frontier-dag validate silicon for "
                          "the reasons)")
    fitted = {fit.key: fit.summary() for fit in fits}
    if command:
        fitted = {"command": command, **fitted}
    return OverheadsFile(engines={fit.key: fit.overheads for fit in fits}, fitted=fitted), fits
