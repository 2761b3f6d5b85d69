"""Dense GEMM: m tokens x k in-features -> n out-features, as in a linear layer.

bf16 (and fp16, fp32) go through ``F.linear``, method ``linear``. fp8 (e4m3, per-tensor
scales, bf16 output) goes through ``torch._scaled_mm``, method ``scaled_mm``, and only
where the device runs it: compute capability 8.9 or newer (Ada, Hopper, Blackwell)
and a successful check against the bf16 product.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from .case import Case, Context, max_abs_error, work
from .design import Axis, Space
from .device import torch_dtype

DTYPES = ("bf16", "fp16", "fp32", "fp8")


def default_dtypes(device: str) -> tuple[str, ...]:
    return ("bf16", "fp8") if device == "cuda" else ("bf16",)


def _multiple(x: int, of: int = 16) -> int:
    # fp8 kernels need k and n divisible by 16; real layer widths are anyway.
    return max(of, (x + of // 2) // of * of)


def space(ctx: Context) -> Space:
    quick = ctx.quick
    return Space((
        Axis("dtype", choices=ctx.dtypes),
        Axis("m", 1, 64 if quick else 16384, log=True, integer=True),
        Axis("n", 16 if quick else 128, 128 if quick else 32768, log=True, integer=True),
        Axis("k", 16 if quick else 128, 128 if quick else 32768, log=True, integer=True),
    ))


def _fp8_runs(ctx: Context) -> bool:
    """Whether fp8 GEMM runs here and agrees with bf16 on a small product; notes why not."""
    if ctx.device == "cuda" and torch.cuda.get_device_capability() < (8, 9):
        ctx.note(f"gemm fp8 skipped: compute capability {torch.cuda.get_device_capability()} has no fp8 tensor cores")
        return False
    try:
        a, w = torch.randn(32, 64, device=ctx.device), torch.randn(48, 64, device=ctx.device)
        got = _fp8_call(a, w)()
        want = F.linear(a.to(torch.float8_e4m3fn).float(), w.to(torch.float8_e4m3fn).float())
    except Exception as exc:  # a capability probe: any failure means "not here"
        ctx.note(f"gemm fp8 skipped: torch._scaled_mm failed ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})")
        return False
    if max_abs_error(got, want) > 0.02 * float(want.abs().max()):
        ctx.note("gemm fp8 skipped: torch._scaled_mm disagrees with the dequantised product")
        return False
    return True


def _fp8_call(a: Any, w: Any) -> Callable[[], Any]:
    a8, w8 = a.to(torch.float8_e4m3fn), w.to(torch.float8_e4m3fn)
    one = torch.ones((), device=a.device)
    # _scaled_mm wants its second operand column-major: w8.t() of a row-major (n, k) weight is.
    return lambda: torch._scaled_mm(a8, w8.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16)


def prepare(ctx: Context) -> Callable[[dict[str, Any]], Case | None]:
    runnable = {dt for dt in ctx.dtypes if dt != "fp8" or _fp8_runs(ctx)}

    def case(point: dict[str, Any]) -> Case | None:
        dtype_name = point["dtype"]
        if dtype_name not in runnable:
            return None
        m, n, k = point["m"], _multiple(point["n"]), _multiple(point["k"])
        fp8 = dtype_name == "fp8"
        elem = 1 if fp8 else torch_dtype(torch, dtype_name).itemsize
        row = {"m": m, "n": n, "k": k, "dtype": dtype_name}

        def build():
            compute = torch.bfloat16 if fp8 else torch_dtype(torch, dtype_name)
            a = torch.randn(m, k, dtype=compute, device=ctx.device)
            w = torch.randn(n, k, dtype=compute, device=ctx.device)
            return (_fp8_call(a, w) if fp8 else lambda: F.linear(a, w)), row

        cost = work(2.0 * m * n * k, elem * (m * k + n * k) + 2 * m * n)
        return Case("gemm", cost, "scaled_mm" if fp8 else "linear", build)

    return case
