"""aiconfigurator's own estimate of silicon rows: the peer beside the simulation.

``validate silicon --baseline aiconfigurator`` asks aiconfigurator's estimator
(``aiconfigurator.cli.api.cli_estimate``, the per-row entry point of its repository's
``tools/accuracy_regression_testing/predict_silicon_sample.py``) for the TTFT and TPOT of
each row that is simulated, and keeps its answer beside the simulation's. The optional
``baseline`` extra installs it (``pip install 'frontier-dag[baseline]'``).

Both tools get the same configuration: the row as ``silicon.read_rows`` cleans it (its
parallelism and worker counts), with three choices that aiconfigurator needs and the rows
do not settle (docs/validation.md, "The peer on the same rows"):

* **Data version**: its ``current`` data slot for the row's engine (``DATA_VERSION``),
  the kernel tables the simulation's predictors are fitted to as well. aiconfigurator
  0.12.0 refuses the rows' own engine versions as old-style queries, and it ships no
  tables for most of them.
* **Model**: a model id whose ``config.json`` would come from the Hugging Face hub is
  mapped to the architecturally identical config bundled with aiconfigurator-core
  (``BUNDLED_MODELS``).
* **Batch sizes of disaggregated rows** that do not record them: ``prefill_batch_size`` 1
  and ``decode_batch_size`` = concurrency / (decode workers x attention DP), the rule that
  every disaggregated row recording them follows (43 of 43 on h100_sxm and h200_sxm).

A row aiconfigurator cannot take, or whose estimate raises, is kept with ``aic_status``
``unsupported`` or ``failed`` and the reason: never dropped.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import re
from collections.abc import Callable, Iterable
from importlib import metadata

from frontier_dag.errors import FrontierDagError
from frontier_dag.validation.compare import Estimate
from frontier_dag.validation.silicon import SiliconRow, Worker

#: The names ``--baseline`` accepts.
BASELINES = ("aiconfigurator",)
#: The version the figures in docs/validation.md were measured with (the ``baseline`` extra's pin).
VERSION = "0.12.0"
#: aiconfigurator's data slot for every row (see the module docstring).
DATA_VERSION = "current"
#: Model ids of the rows whose config aiconfigurator would fetch from the Hugging Face hub ->
#: the bundled config of the same architecture (aiconfigurator-core's ``model_configs``).
#: The Instruct and FP8 checkpoints differ from the base model in weights only; the FP8
#: precision comes from the row's quant columns. ``zai-org`` is the hub's current name
#: of the ``zhipuai`` organisation.
BUNDLED_MODELS = {
    "meta-llama/Llama-3.1-8B-Instruct": "meta-llama/Meta-Llama-3.1-8B",
    "nvidia/Llama-3.1-8B-Instruct-FP8": "meta-llama/Meta-Llama-3.1-8B",
    "meta-llama/Llama-3.1-70B": "meta-llama/Meta-Llama-3.1-70B",
    "zhipuai/GLM-5": "zai-org/GLM-5",
}
#: aiconfigurator's columns as an estimate beside the simulation's (``compare``).
AICONFIGURATOR = Estimate("aiconfigurator", "aic", "aic_status", "aic_reason", "aic_ttft_ape", "aic_tpot_ape")
#: Where an installed package lives (in aiconfigurator's messages): shortened to the package's name.
_SITE_PATH = re.compile(r"\S*[/\\](aiconfigurator_core[/\\])")
INSTALL = f"pip install 'frontier-dag[baseline]' (or pip install aiconfigurator=={VERSION})"


class BaselineUnavailable(FrontierDagError):
    """The baseline's package is not installed."""


class NotEstimable(Exception):
    """A row aiconfigurator cannot be asked about; the message says why."""


def require(name: str) -> str:
    """Check that baseline ``name`` can run; its installed version."""
    if name not in BASELINES:
        raise BaselineUnavailable(f"--baseline {name}: unknown (known: {', '.join(BASELINES)})")
    try:
        import aiconfigurator.cli.api  # noqa: F401
    except ImportError as exc:
        raise BaselineUnavailable(f"--baseline aiconfigurator needs the aiconfigurator package, which is not "
                                  f"installed ({exc}): {INSTALL}") from None
    return metadata.version("aiconfigurator")


def describe(version: str, rows: Iterable[SiliconRow]) -> dict:
    """The baseline as the JSON report names it: its version, data slot, and the bundled
    model configs that stood in for the rows' models."""
    paths = {row.model_path for row in rows}
    return {"name": "aiconfigurator", "version": version, "data_version": DATA_VERSION,
            "models": {path: config for path, config in BUNDLED_MODELS.items() if path in paths}}


def _parallel(prefix: str, w: Worker, moe: bool) -> dict:
    out = {f"{prefix}tp_size": w.tp, f"{prefix}attention_dp_size": w.dp}
    if w.pp > 1:  # aiconfigurator's estimate takes (prefill_, decode_)pp_size, 1 by default
        out[f"{prefix}pp_size"] = w.pp
    if moe:  # a dense model's MoE columns mean nothing (silicon.py); aiconfigurator wants none
        out.update({f"{prefix}moe_tp_size": w.moe_tp, f"{prefix}moe_ep_size": w.moe_ep})
    return out


def estimate_args(row: SiliconRow, moe: bool) -> tuple[dict, list[str]]:
    """The keyword arguments of ``cli_estimate`` for ``row`` (``moe``: the model has experts),
    and notes on what was assumed; NotEstimable if aiconfigurator cannot be asked."""
    notes = []
    model = BUNDLED_MODELS.get(row.model_path, row.model_path)
    if model != row.model_path:
        notes.append(f"model config of {model} (bundled)")
    args = {"model_path": model, "system_name": row.system, "mode": row.mode, "backend_name": row.backend,
            "backend_version": DATA_VERSION, "isl": row.isl, "osl": row.osl,
            "gemm_quant_mode": row.gemm_quant or None, "moe_quant_mode": row.moe_quant or None}
    if row.mode == "agg":
        if row.agg.batch_size is None:
            raise NotEstimable("the row has no batch_size, which aiconfigurator's aggregated estimate needs")
        args.update(_parallel("", row.agg, moe), batch_size=row.agg.batch_size)
        return args, notes
    p, d = row.prefill, row.decode
    prefill_batch, decode_batch = p.batch_size, d.batch_size
    if prefill_batch is None or decode_batch is None:
        if row.concurrency is None:
            raise NotEstimable("the row records neither its batch sizes nor its concurrency, from which "
                               "aiconfigurator's disaggregated estimate would take them")
        prefill_batch = prefill_batch or 1
        decode_batch = decode_batch or math.ceil(row.concurrency / (d.workers * d.dp))
        notes.append(f"batch sizes from the concurrency: prefill {prefill_batch}, decode {decode_batch}")
    args.update(_parallel("prefill_", p, moe))
    args.update(_parallel("decode_", d, moe), prefill_batch_size=prefill_batch, decode_batch_size=decode_batch,
                prefill_num_workers=p.workers, decode_num_workers=d.workers)
    return args, notes


@contextlib.contextmanager
def _quiet():
    """aiconfigurator prints its progress to stdout and logs warnings per table it loads."""
    loggers = [logging.getLogger(name) for name in ("aiconfigurator", "aiconfigurator_core")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _ape(predicted: float, measured: float) -> float:
    return abs(predicted - measured) / measured if measured > 0 and math.isfinite(predicted) else math.nan


def _is_refusal(exc: Exception) -> bool:
    """aiconfigurator says it cannot estimate the row (no data, no fit in memory, an
    unknown model), as opposed to failing on it: its own exception types, and the
    ValueError and RuntimeError families it raises for these outcomes."""
    return (isinstance(exc, ValueError | NotImplementedError | RuntimeError)
            or type(exc).__module__.startswith("aiconfigurator"))


def estimate_row(row: SiliconRow, moe: bool, cache: dict | None = None) -> dict:
    """aiconfigurator's TTFT and TPOT (ms) for ``row`` and their errors against the measured
    ones, as the record fields ``aic_*`` (docs/validation.md lists them); ``cache`` shares
    estimates between identical configurations (the sample repeats some)."""
    from aiconfigurator.cli.api import cli_estimate

    out = {"aic_ttft_ms": math.nan, "aic_tpot_ms": math.nan, "aic_ttft_ape": math.nan, "aic_tpot_ape": math.nan,
           "aic_status": "ok", "aic_reason": "", "aic_notes": "",
           "aic_model": BUNDLED_MODELS.get(row.model_path, row.model_path)}
    try:
        args, notes = estimate_args(row, moe)
    except NotEstimable as exc:
        out.update(aic_status="unsupported", aic_reason=str(exc))
        return out
    out["aic_notes"] = "; ".join(notes)
    key = tuple(sorted(args.items()))
    result = cache.get(key) if cache is not None else None
    if result is None:
        try:
            with _quiet():
                estimate = cli_estimate(**args)
            result = (float(estimate.ttft), float(estimate.tpot))
        except Exception as exc:  # aiconfigurator's refusal or failure: the row stays, with the reason
            result = exc
        if cache is not None:
            cache[key] = result
    if isinstance(result, Exception):
        first_line = str(result).strip().splitlines()[0] if str(result).strip() else ""
        first_line = _SITE_PATH.sub(r"\1", first_line)
        status = "unsupported" if _is_refusal(result) else "failed"
        out.update(aic_status=status, aic_reason=f"{type(result).__name__}: {first_line}")
        return out
    ttft, tpot = result
    out.update(aic_ttft_ms=ttft, aic_tpot_ms=tpot, aic_ttft_ape=_ape(ttft, row.ttft_ms),
               aic_tpot_ape=_ape(tpot, row.tpot_ms))
    return out


def estimate_rows(rows: Iterable[SiliconRow], is_moe: Callable[[str], bool],
                  progress: Callable[[dict], None] | None = None) -> dict[int, dict]:
    """aiconfigurator's estimate of every row, by the row's index (``SiliconRow.index``)."""
    cache: dict = {}
    out = {}
    for row in rows:
        out[row.index] = estimate_row(row, is_moe(row.model_path), cache)
        if progress:
            progress(out[row.index])
    return out
