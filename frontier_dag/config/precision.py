"""Numeric formats (precisions) of weights, activations and KV caches, and the tensor-core
pipe each one multiplies on.

A precision says how a kernel stores and computes: ``fp8`` reads 1-byte weights and
activations and multiplies on the FP8 tensor cores; ``w4a16_mxfp4`` reads 4-bit weights
(one 8-bit scale per 32) with bf16 activations and multiplies on the BF16 tensor cores
after dequantizing them. Widths are bytes per element, their scales included, so that
the roofline reads as many bytes as the kernel does. The ``compute`` pipe names the
entry of ``GPUSpec.flops_per_s`` that bounds the kernel's FLOPs: a GPU without that
entry cannot run the precision (``GPUSpec.peak_flops`` says so).

aiconfigurator-core names the same formats differently (``bfloat16``, ``nvfp4``,
``int4_wo``, ``sq``, ...); ``AICONFIGURATOR_NAMES`` maps them, and a model config may
use either name.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Precision:
    name: str
    weight_bytes: float
    activation_bytes: float
    compute: str
    description: str


#: Tensor-core pipes a GPU preset may list in ``flops_per_s``.
#: ``mxfp8`` is Blackwell's block-scaled (microscaling) MMA on FP8 and narrower inputs, at the
#: FP8 rate; ``fp4`` its FP4 MMA (NVFP4 and MXFP4 on both operands).
COMPUTE_PIPES = ("tf32", "bf16", "fp16", "fp8", "mxfp8", "int8", "fp4")

PRECISIONS: dict[str, Precision] = {p.name: p for p in (
    Precision("fp32", 4, 4, "tf32", "fp32 tensors; matrix products on the TF32 tensor cores"),
    Precision("bf16", 2, 2, "bf16", "bfloat16 weights and activations"),
    Precision("fp16", 2, 2, "fp16", "float16 weights and activations"),
    Precision("fp8", 1, 1, "fp8", "FP8 (E4M3) weights and activations, one scale per tensor"),
    Precision("fp8_block", 1 + 4 / 128**2, 1 + 4 / 128, "fp8",
              "FP8 with an fp32 scale per 128x128 weight block and per 128 activations (DeepSeek-V3)"),
    Precision("int8", 1, 1, "int8", "int8 weights and activations (SmoothQuant W8A8)"),
    Precision("int8_wo", 1, 2, "bf16", "int8 weights dequantized to bf16 (W8A16)"),
    Precision("fp8_wo", 1, 2, "bf16",
              "FP8 weights dequantized to bf16 (W8A16): FP8 checkpoints on GPUs without FP8 tensor cores"),
    Precision("int4", 0.5 + 2 / 128, 2, "bf16",
              "int4 weights with an fp16 scale per 128, dequantized to bf16 (AWQ/GPTQ W4A16)"),
    Precision("fp4", 0.5 + 1 / 16, 0.5 + 1 / 16, "fp4",
              "NVFP4: E2M1 values with an FP8 scale per 16, weights and activations (W4A4)"),
    Precision("w4a16_mxfp4", 0.5 + 1 / 32, 2, "bf16",
              "MXFP4 weights (E2M1, an E8M0 scale per 32) with bf16 activations (gpt-oss)"),
    Precision("w4a8_mxfp4_mxfp8", 0.5 + 1 / 32, 1 + 1 / 32, "mxfp8",
              "MXFP4 weights with MXFP8 activations on the block-scaled MMA, at the FP8 rate"),
)}

#: aiconfigurator-core's names (its kernel tables' dtype columns, its quant modes) -> ours.
AICONFIGURATOR_NAMES: dict[str, str] = {
    "bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "fp8": "fp8",
    "fp8_block": "fp8_block", "sq": "int8", "int8": "int8", "int8_wo": "int8_wo", "int4_wo": "int4",
    "fp8_wo": "fp8_wo", "nvfp4": "fp4", "fp4": "fp4", "w4a16_mxfp4": "w4a16_mxfp4", "w4a8_mxfp4_mxfp8": "w4a8_mxfp4_mxfp8",
}


#: How engines run a precision on a GPU without its tensor cores, where they can: FP8
#: checkpoints weight-only (vLLM's Marlin kernels on Ampere, its XPU kernels on Intel).
WEIGHT_ONLY = {"fp8": "fp8_wo"}


def canonical_precision(name: object) -> object:
    """Our name for ``name`` (ours or aiconfigurator's); anything else is returned as is,
    for the caller's validation to reject."""
    text = str(name).strip().lower()
    if text in PRECISIONS:
        return text
    return AICONFIGURATOR_NAMES.get(text, name)


def precision(name: str) -> Precision:
    """The Precision called ``name``; KeyError names the known ones."""
    found = PRECISIONS.get(str(canonical_precision(name)))
    if found is None:
        raise KeyError(f"unknown precision {name!r}; known: {', '.join(PRECISIONS)}")
    return found
