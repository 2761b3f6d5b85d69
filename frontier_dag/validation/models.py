"""The model and precision of a silicon row.

The architecture comes from a preset or from the ``config.json`` that ships with
aiconfigurator-core; the precision comes from the row (``gemm_quant_mode``,
``moe_quant_mode``), so that the kernel tables' rows of that dtype price the GEMMs and
the experts. The checkpoints that quantize only their experts (gpt-oss's MXFP4,
Kimi-K2.5's int4) run their dense layers in bf16 whatever the row says, and a dtype the
system's GEMM table never measured (FP4 GEMMs on a Hopper GPU, which has no such tensor
cores) means the dense layers ran in bf16.
"""

from __future__ import annotations

from functools import cache

import pandas as pd

from frontier_dag.config.model import ModelConfig, load_model
from frontier_dag.errors import ConfigError
from frontier_dag.predictors.aiconfigurator import DTYPES, find_table, package_data_root

#: model_path -> the name ``load_model`` knows it by, where that is not the path itself.
MODEL_SPECS = {
    "meta-llama/Llama-3.1-8B-Instruct": "llama-3.1-8b",
    "nvidia/Llama-3.1-8B-Instruct-FP8": "llama-3.1-8b",
    "meta-llama/Llama-3.1-70B": "llama-3.1-70b",
    "Qwen/Qwen3-32B": "qwen3-32b",
    "deepseek-ai/DeepSeek-R1": "deepseek-r1",
    "deepseek-ai/DeepSeek-V3": "deepseek-v3",
    # NVFP4 checkpoints of the same architectures (the precision comes from the row)
    "nvidia/DeepSeek-R1-NVFP4": "deepseek-r1",
    "nvidia/Qwen3-32B-NVFP4": "qwen3-32b",
}

#: Models whose architecture has an operator no kernel table measures: their rows are
#: counted as not simulated, with this reason.
UNSUPPORTED = {
    "Qwen/Qwen3.5-397B-A17B": "hybrid attention: 45 of 60 layers are Gated-DeltaNet linear attention, an "
                              "operator family without predictors",
    "zhipuai/GLM-5": "DeepSeek sparse attention (a top-2048 indexer) over MLA with 256-wide heads; the MLA "
                     "tables measure only DeepSeek-V3's 192/128 head sizes and dense attention",
}


class Unsupported(Exception):
    """A row that cannot be simulated; the message says why."""


def row_dtype(quant: str | None) -> str:
    """Our dtype name for an aiconfigurator quant mode (empty: bf16)."""
    if quant is None or quant == "":
        return "bf16"
    return DTYPES.get(quant, quant)


@cache
def measured_dtypes(system: str, backend: str, kind: str) -> frozenset[str]:
    """Dtypes (our names) that a system's ``gemm`` or ``moe`` table for ``backend`` holds."""
    filename = {"gemm": "gemm_perf.parquet", "moe": "moe_perf.parquet"}[kind]
    column = {"gemm": "gemm_dtype", "moe": "moe_dtype"}[kind]
    path = find_table(package_data_root() / system, kind, backend, filename)
    if path is None:
        return frozenset()
    values = pd.read_parquet(path, columns=[column])[column].astype(str).unique()
    return frozenset(DTYPES.get(v, v) for v in values)


@cache
def base_model(model_path: str) -> ModelConfig:
    if model_path in UNSUPPORTED:
        raise Unsupported(f"{model_path}: {UNSUPPORTED[model_path]}")
    try:
        return load_model(MODEL_SPECS.get(model_path, model_path))
    except ConfigError as exc:
        raise Unsupported(f"{model_path}: no preset or aiconfigurator config.json ({exc})") from None


def is_moe(model_path: str) -> bool:
    try:
        return base_model(model_path).moe is not None
    except Unsupported:
        return True  # the MoE columns of such rows are read as given


def checkpoint_format(row: str, checkpoint: str | None) -> str:
    """The experts' kernel dtype: the rows say ``fp8`` for any FP8 run, but a checkpoint
    quantized in 128x128 blocks (its config.json's ``weight_block_size``: DeepSeek-V3/R1,
    Qwen3-*-FP8, MiniMax-M2.5) runs the block-scaled FP8 MoE kernels (``fp8_block``), not
    the per-tensor ones (3x slower at 4 tokens in vLLM's H100 MoE table).

    Dense GEMMs keep the row's ``fp8``: vLLM's ``fp8_block`` GEMM table on H100 times a
    4-token GEMM at 60 µs, 7x its ``fp8`` and ``bf16`` rows of the same shape, which read
    the same or more bytes on the same tensor cores; that is not the production kernel.

    gpt-oss's checkpoint holds MXFP4 experts (``w4a16_mxfp4``); its rows say ``nvfp4``.
    aiconfigurator-core runs such checkpoints as MXFP4 weights with bf16 activations
    whatever the GPU, and so do we."""
    if row == "fp8" and checkpoint == "fp8_block":
        return "fp8_block"
    # gpt-oss ships MXFP4 experts; the rows call them nvfp4 (as aiconfigurator does, they run as
    # MXFP4 weights with bf16 activations on every GPU)
    if row == "fp4" and checkpoint == "w4a16_mxfp4":
        return checkpoint
    return row


def row_model(model_path: str, system: str, backend: str, gemm_quant: str | None, moe_quant: str | None
              ) -> tuple[dict, list[str]]:
    """The model as a config mapping with the row's precision, and notes on what was assumed."""
    model = base_model(model_path)
    notes = []
    gemm = row_dtype(gemm_quant)  # dense GEMMs as the row says: see checkpoint_format
    experts_only = model.moe is not None and model.dtype == "bf16" and model.moe_dtype not in (None, "bf16")
    if gemm != "bf16" and experts_only:
        notes.append(f"GEMMs in bf16: the checkpoint quantizes only its experts ({model.moe_dtype})")
        gemm = "bf16"
    elif gemm not in measured_dtypes(system, backend, "gemm"):
        notes.append(f"GEMMs in bf16: {system} {backend} GEMM tables have no {gemm_quant}")
        gemm = "bf16"
    data = model.model_dump(exclude_none=True)
    data["dtype"] = gemm
    if model.moe is not None:
        moe = checkpoint_format(row_dtype(moe_quant or gemm_quant), model.moe_dtype or model.dtype)
        have = measured_dtypes(system, backend, "moe")
        if moe not in have:
            raise Unsupported(f"{system} {backend} MoE tables have no {moe_quant} experts (they have "
                              f"{', '.join(sorted(have))})")
        data["moe_dtype"] = moe
    return data, notes
