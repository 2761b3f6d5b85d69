"""The measured serving runs shipped with aiconfigurator-core (``systems/silicon_sample.csv``).

One row is one benchmark point: a model served by one engine (vLLM, SGLang or
TensorRT-LLM) on one GPU system, aggregated (prefill and decode in the same workers)
or disaggregated (prefill workers hand KV to decode workers), a closed-loop client
at a fixed concurrency with fixed input and output lengths, and the measured mean
TTFT and TPOT. ``read_rows`` turns each CSV row into a ``SiliconRow`` with its
parallelism made consistent; what was cleaned is said in ``SiliconRow.notes``.

Cleaning rules (each is a fact about the export, not a fit to the measurements):

* The concurrency is the benchmark's ``silicon_concurrency`` (in the source column).
  Rows without it (15 of the h100/h200 rows) are not simulated: their ``batch_size``
  columns are aiconfigurator's own batch estimate, not the client count (for example
  448 concurrent 4000-token prompts on eight one-GPU prefill workers could not give the
  measured 8.7 ms TPOT and 368 ms TTFT).
* Some exports multiplied the attention TP (or DP) and the MoE TP by the EP size: the
  row's id says ``tp8_ep8`` while its columns say tp 64 (or dp 64) and moe_tp 8 x
  moe_ep 8. When the id's ``tp<T>_ep<E>`` disagrees with the columns by exactly the
  factor E, the worker has T GPUs, EP E, and the attention keeps its TP or DP form.
* For a MoE model the worker's GPUs are the larger of attention TP x DP and MoE TP x
  EP (a column left at 1 means "not split"), and the attention TP fills the GPUs the
  DP does not; dense models ignore the MoE columns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from frontier_dag.errors import ConfigError

#: Columns every silicon CSV must have.
REQUIRED = ("id", "backend", "model_path", "system", "mode", "isl", "osl", "silicon_ttft_ms", "silicon_tpot_ms")


@dataclass(frozen=True)
class Worker:
    """One engine instance: ``pp`` pipeline stages, each of ``tp`` x ``dp`` GPUs for attention
    and ``moe_tp`` x ``moe_ep`` for experts."""

    tp: int = 1
    dp: int = 1
    moe_tp: int = 1
    moe_ep: int = 1
    workers: int = 1
    batch_size: int | None = None  # the configuration's batch per engine (per attention-DP rank)
    pp: int = 1

    @property
    def gpus(self) -> int:
        return self.tp * self.dp * self.pp


@dataclass(frozen=True)
class SiliconRow:
    index: int                  # position in the CSV
    id: str
    system: str
    backend: str
    backend_version: str
    model_path: str
    mode: str                   # agg | disagg
    isl: int
    osl: int
    gemm_quant: str | None
    moe_quant: str | None
    concurrency: int | None
    agg: Worker | None          # agg: the (one) worker
    prefill: Worker | None      # disagg: each prefill worker and how many
    decode: Worker | None
    ttft_ms: float
    tpot_ms: float
    notes: tuple[str, ...] = field(default=())

    def describe(self) -> str:
        if self.mode == "agg":
            w = self.agg
            par = f"tp{w.tp} dp{w.dp} moe_tp{w.moe_tp} ep{w.moe_ep}{_pp(w)}"
        else:
            p, d = self.prefill, self.decode
            par = (f"{p.workers}P(tp{p.tp} dp{p.dp} ep{p.moe_ep}{_pp(p)}) "
                   f"{d.workers}D(tp{d.tp} dp{d.dp} ep{d.moe_ep}{_pp(d)})")
        return (f"{self.model_path} {self.system} {self.backend} {self.mode} {self.isl}x{self.osl} "
                f"c{self.concurrency} {par}")


def _pp(w: Worker) -> str:
    return f" pp{w.pp}" if w.pp > 1 else ""


def default_csv() -> Path:
    """``systems/silicon_sample.csv`` inside the installed aiconfigurator-core."""
    try:
        import aiconfigurator_core
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ConfigError("aiconfigurator-core is not installed; pip install aiconfigurator-core==0.12.0") from exc
    return Path(aiconfigurator_core.__file__).parent / "systems" / "silicon_sample.csv"


def _int(value, default: int | None = None) -> int | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return default
    return int(value)


def _str(value) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return str(value)


_ID_PARALLEL = re.compile(r"_tp(\d+)(?:_0)?_ep(\d+)")
_CONCURRENCY = re.compile(r"silicon_concurrency=(\d+)")


def _worker(rec: dict, prefix: str, moe: bool, row_id: str, notes: list[str]) -> Worker:
    tp = max(_int(rec.get(f"{prefix}tp_size"), 1) or 1, 1)
    dp = max(_int(rec.get(f"{prefix}attention_dp_size"), 1) or 1, 1)
    moe_tp = max(_int(rec.get(f"{prefix}moe_tp_size"), 1) or 1, 1)
    moe_ep = max(_int(rec.get(f"{prefix}moe_ep_size"), 1) or 1, 1)
    workers = max(_int(rec.get(f"{prefix}num_workers"), 1) or 1, 1)
    batch = _int(rec.get(f"{prefix}batch_size"))
    pp = max(_int(rec.get(f"{prefix}pp_size"), 1) or 1, 1)  # aiconfigurator 0.12's samples have none above 1
    if not moe:
        return Worker(tp, dp, 1, 1, workers, batch, pp)
    named = _ID_PARALLEL.search(row_id) if not prefix else None
    if named:
        t, e = int(named.group(1)), int(named.group(2))
        if e > 1 and tp * dp == t * e and moe_tp * moe_ep == t * e:
            notes.append(f"parallelism from the id (tp{t}_ep{e}): the columns carry tp x dp = moe_tp x ep = {t * e}")
            tp, dp = (1, t) if dp > 1 else (t, 1)
            moe_tp, moe_ep = t // e, e
    gpus = max(tp * dp, moe_tp * moe_ep)
    if tp * dp != gpus:
        notes.append(f"{prefix or ''}attention tp {tp} x dp {dp} widened to the {gpus} GPUs of the experts")
        tp = gpus // dp
    if moe_tp * moe_ep != gpus:
        moe_tp = gpus // moe_ep
    return Worker(tp, dp, moe_tp, moe_ep, workers, batch, pp)


def parse_row(index: int, rec: dict, moe: bool) -> SiliconRow:
    """One CSV record (a dict of its columns) as a SiliconRow; ``moe``: the model has experts."""
    notes: list[str] = []
    row_id = str(rec["id"])
    mode = str(rec["mode"])
    agg = prefill = decode = None
    if mode == "disagg":
        prefill = _worker(rec, "prefill_", moe, row_id, notes)
        decode = _worker(rec, "decode_", moe, row_id, notes)
        if _int(rec.get("prefill_num_workers")) is None or _int(rec.get("decode_num_workers")) is None:
            notes.append("worker counts not in the row: one prefill and one decode worker assumed")
    else:
        agg = _worker(rec, "", moe, row_id, notes)
    found = _CONCURRENCY.search(str(rec.get("silicon_data_source", "")))
    concurrency = int(found.group(1)) if found else None
    return SiliconRow(
        index=index, id=row_id, system=str(rec["system"]), backend=str(rec["backend"]),
        backend_version=_str(rec.get("backend_version")) or "", model_path=str(rec["model_path"]), mode=mode,
        isl=int(rec["isl"]), osl=int(rec["osl"]), gemm_quant=_str(rec.get("gemm_quant_mode")),
        moe_quant=_str(rec.get("moe_quant_mode")), concurrency=concurrency, agg=agg, prefill=prefill, decode=decode,
        ttft_ms=float(rec["silicon_ttft_ms"]), tpot_ms=float(rec["silicon_tpot_ms"]), notes=tuple(notes))


def read_rows(path: str | Path | None = None, *, system: str | None = None, backend: str | None = None,
              model: str | None = None, mode: str | None = None, limit: int | None = None,
              is_moe=None) -> list[SiliconRow]:
    """The rows of a silicon CSV (default: the installed package's), filtered by system,
    backend, mode and a case-insensitive substring of the model path; ``limit`` keeps the
    first N after filtering. ``is_moe(model_path)`` says whether a model has experts
    (for the parallelism rules); by default, whether any MoE column is above 1."""
    path = Path(path) if path is not None else default_csv()
    if not path.is_file():
        raise ConfigError(f"--csv {path}: no such file")
    frame = pd.read_csv(path)
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise ConfigError(f"{path}: not a silicon sample (missing column(s) {', '.join(missing)})")
    keep = np.ones(len(frame), dtype=bool)
    if system:
        keep &= frame["system"].astype(str).str.lower() == system.lower()
    if backend:
        keep &= frame["backend"].astype(str).str.lower() == backend.lower()
    if mode:
        keep &= frame["mode"].astype(str) == mode
    if model:
        keep &= frame["model_path"].astype(str).str.lower().str.contains(model.lower(), regex=False)
    chosen = frame[keep]
    if limit is not None:
        chosen = chosen.iloc[:limit]
    rows = []
    for index, rec in zip(chosen.index.tolist(), chosen.to_dict("records"), strict=True):
        moe = is_moe(str(rec["model_path"])) if is_moe is not None else _has_moe_columns(rec)
        rows.append(parse_row(int(index), rec, moe))
    return rows


def _has_moe_columns(rec: dict) -> bool:
    return any((_int(rec.get(f"{p}moe_ep_size"), 1) or 1) > 1 or (_int(rec.get(f"{p}moe_tp_size"), 1) or 1) > 1
               for p in ("", "prefill_", "decode_"))


def cheapest_per_partition(rows: list[SiliconRow], n: int) -> list[SiliconRow]:
    """The ``n`` rows of each (system, backend, mode, model) with the fewest tokens to simulate
    (concurrency x (ISL + OSL)), in their original order: a quick look at every partition
    when a whole system would take hours. Rows without a concurrency, which cannot be
    simulated, come last."""
    groups: dict[tuple, list[SiliconRow]] = {}
    for row in rows:
        groups.setdefault((row.system, row.backend, row.mode, row.model_path), []).append(row)
    keep = {row.index for group in groups.values()
            for row in sorted(group, key=lambda r: (r.concurrency is None, (r.concurrency or 0) * (r.isl + r.osl)))[:n]}
    return [row for row in rows if row.index in keep]


def spread_per_partition(rows: list[SiliconRow], n: int) -> list[SiliconRow]:
    """Per (system, backend, mode, model), the row with the fewest tokens to simulate at each
    of ``n`` of its concurrencies, spread from the lowest to the highest (evenly over the
    sorted distinct concurrencies: with 4, 8, 16, 32, 64 and ``n`` = 3, at 4, 16 and 64), in
    their original order: a sample that spans the loads a partition was measured at, which a
    calibration needs (an overhead per sequence fitted at one concurrency says nothing about
    another). Rows without a concurrency cannot be simulated and are not picked."""
    groups: dict[tuple, dict[int, SiliconRow]] = {}
    for row in rows:
        if row.concurrency is None:
            continue
        by_load = groups.setdefault((row.system, row.backend, row.mode, row.model_path), {})
        best = by_load.get(row.concurrency)
        if best is None or row.isl + row.osl < best.isl + best.osl:
            by_load[row.concurrency] = row
    keep = set()
    for by_load in groups.values():
        loads = sorted(by_load)
        for i in sorted({int(round(x)) for x in np.linspace(0, len(loads) - 1, min(n, len(loads)))}):
            keep.add(by_load[loads[i]].index)
    return [row for row in rows if row.index in keep]


#: How ``--per-partition N`` picks its rows: the N cheapest, or the cheapest at N concurrencies.
PICKS = {"cheapest": cheapest_per_partition, "concurrency": spread_per_partition}


def with_concurrency(row: SiliconRow, concurrency: int) -> SiliconRow:
    return replace(row, concurrency=concurrency)
