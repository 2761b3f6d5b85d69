"""Memory-bound per-token ops: rmsnorm, silu_mul, add, rope.

``num_tokens x hidden`` is the output's shape: for ``silu_mul`` the input is twice as
wide (gate and up halves), for ``rope`` the hidden width is ``heads x 128`` query
features rotated at positions drawn up to 32k. Each op is torch's eager
implementation (method ``eager``): rmsnorm is one fused kernel (``F.rms_norm``), the
others are a few kernels each where a serving engine would fuse them, so these rows
are an upper bound for those engines.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from .case import Case, Context, work
from .design import Axis, Space
from .device import torch_dtype

DTYPES = ("bf16", "fp16", "fp32")
OPS = ("rmsnorm", "silu_mul", "add", "rope")
#: Bytes moved per output element, in units of the element size: reads plus writes.
_TRAFFIC = {"rmsnorm": 2, "silu_mul": 3, "add": 3, "rope": 4}


def default_dtypes(device: str) -> tuple[str, ...]:
    return ("bf16",)


def space(ctx: Context) -> Space:
    quick = ctx.quick
    return Space((
        Axis("op", choices=OPS),
        Axis("dtype", choices=ctx.dtypes),
        Axis("num_tokens", 1, 64 if quick else 32768, log=True, integer=True),
        Axis("hidden", 16 if quick else 512, 128 if quick else 16384, log=True, integer=True),
    ))


def rms_norm(x: Any, weight: Any) -> Any:
    return F.rms_norm(x, (x.shape[-1],), weight, eps=1e-6)


def silu_mul(x: Any) -> Any:
    """SiLU of the gate half times the up half: (tokens, 2h) -> (tokens, h)."""
    half = x.shape[-1] // 2
    return F.silu(x[:, :half]) * x[:, half:]


def rope(heads: Any, cos: Any, sin: Any) -> Any:
    """Neox-style rotary embedding: (x1, x2) halves of each head -> (x1 cos - x2 sin,
    x2 cos + x1 sin), with cos and sin of shape (tokens, 1, head_dim / 2)."""
    half = heads.shape[-1] // 2
    x1, x2 = heads[..., :half], heads[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def rope_tables(head_dim: int, dtype: Any, device: str, max_position: int = 32768) -> tuple[Any, Any]:
    """cos and sin of every position's angles, (max_position, head_dim / 2)."""
    half = head_dim // 2
    inv_freq = 1.0 / (10000 ** (torch.arange(half, device=device, dtype=torch.float32) / half))
    angles = torch.arange(max_position, device=device, dtype=torch.float32)[:, None] * inv_freq
    return angles.cos().to(dtype), angles.sin().to(dtype)


def _build(op: str, num_tokens: int, hidden: int, dtype: Any, device: str, head_dim: int) -> Callable[[], Any]:
    def randn(*shape):
        return torch.randn(*shape, dtype=dtype, device=device)

    if op == "rmsnorm":
        x, weight = randn(num_tokens, hidden), randn(hidden)
        return lambda: rms_norm(x, weight)
    if op == "silu_mul":
        x = randn(num_tokens, 2 * hidden)
        return lambda: silu_mul(x)
    if op == "add":
        a, b, out = randn(num_tokens, hidden), randn(num_tokens, hidden), randn(num_tokens, hidden)
        return lambda: torch.add(a, b, out=out)
    heads = randn(num_tokens, hidden // head_dim, head_dim)
    positions = torch.randint(0, 32768, (num_tokens,), device=device)
    cos_table, sin_table = rope_tables(head_dim, dtype, device)
    # The gather of each token's angles is part of the op, as in a serving engine.
    return lambda: rope(heads, cos_table[positions][:, None, :], sin_table[positions][:, None, :])


def prepare(ctx: Context) -> Callable[[dict[str, Any]], Case | None]:
    head_dim = 16 if ctx.quick else 128
    ctx.note("elementwise: method eager")

    def case(point: dict[str, Any]) -> Case | None:
        op, dtype_name, num_tokens = point["op"], point["dtype"], point["num_tokens"]
        multiple = head_dim if op == "rope" else 16  # rope rotates whole heads
        hidden = max(multiple, round(point["hidden"] / multiple) * multiple)
        dtype = torch_dtype(torch, dtype_name)
        row = {"op": op, "num_tokens": num_tokens, "hidden": hidden, "dtype": dtype_name}

        def build():
            return _build(op, num_tokens, hidden, dtype, ctx.device, head_dim), row

        cost = work(0.0, _TRAFFIC[op] * dtype.itemsize * num_tokens * hidden)
        return Case("elementwise", cost, "eager", build)

    return case
