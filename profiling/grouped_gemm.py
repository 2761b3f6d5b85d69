"""MoE expert compute on one EP rank: grouped GEMMs over unevenly loaded experts.

One measurement is what a rank's experts do in one layer once the tokens are routed
and permuted: the gate/up projection of every local expert (hidden -> 2 x inter),
SiLU-and-multiply, and the down projection (inter -> hidden); routing and the
all-to-all are not included. ``expert_tokens[j]`` tokens reach the rank's j-th
expert, drawn by routing ``num_tokens`` tokens to ``topk`` distinct experts each
under uniform or power-law expert popularity (``batches.route_tokens``), so the
table spans balanced and badly skewed loads. ``inter`` is the model's expert width;
each GPU holds ``inter / moe_tp`` of it.

The kernel is torch's grouped matmul (``F.grouped_mm``, else ``torch._grouped_mm``),
method ``grouped_mm``, where it runs and matches a per-expert reference; otherwise a
timed Python loop of one GEMM pair per expert, method ``loop_of_gemms``, which is
slower than any fused MoE kernel and labelled so that nobody mistakes it for one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .batches import ROUTINGS, expert_popularity, local_expert_tokens, route_tokens
from .case import Case, Context, max_abs_error, work
from .design import Axis, Space
from .device import torch_dtype

DTYPES = ("bf16", "fp16", "fp32")

# (hidden, inter, num_experts, topk): Qwen3-30B-A3B, Qwen3-235B-A22B, DeepSeek-V3,
# Mixtral-8x7B, gpt-oss-120b.
_MODELS = ((2048, 768, 128, 8), (4096, 1536, 128, 8), (7168, 2048, 256, 8), (4096, 14336, 8, 2),
           (2880, 2880, 128, 4))
_QUICK_MODELS = ((64, 32, 8, 2), (32, 48, 4, 1))


def default_dtypes(device: str) -> tuple[str, ...]:
    return ("bf16",)


def space(ctx: Context) -> Space:
    quick = ctx.quick
    return Space((
        Axis("model", choices=_QUICK_MODELS if quick else _MODELS),
        Axis("dtype", choices=ctx.dtypes),
        Axis("num_tokens", 1, 64 if quick else 16384, log=True, integer=True),
        Axis("ep_level", 0.0, 1.0),   # picks among the EP sizes that divide the model's experts
        Axis("moe_tp", choices=(1,) if quick else (1, 1, 2)),  # TP-sharded experts are rarer
        Axis("routing", choices=ROUTINGS),
        Axis("alpha", 0.5, 2.0),
    ))


def _grouped_mm() -> Callable[..., Any]:
    return getattr(F, "grouped_mm", None) or torch._grouped_mm


def _experts_grouped(x, w13, w2, counts):
    gmm = _grouped_mm()
    offs = torch.as_tensor(np.cumsum(counts), dtype=torch.int32, device=x.device)
    inter = w2.shape[2]

    def call():
        # Weights are stored (experts, out, in) like nn.Linear; the kernel wants (in, out)
        # column-major, which the transposed view is.
        h = gmm(x, w13.transpose(-2, -1), offs=offs)
        return gmm(F.silu(h[:, :inter]) * h[:, inter:], w2.transpose(-2, -1), offs=offs)

    return call


def _experts_loop(x, w13, w2, counts):
    bounds = np.concatenate([[0], np.cumsum(counts)]).tolist()
    inter = w2.shape[2]

    def call():
        outs = []
        for j in range(len(counts)):
            if bounds[j + 1] > bounds[j]:
                h = F.linear(x[bounds[j]:bounds[j + 1]], w13[j])
                outs.append(F.linear(F.silu(h[:, :inter]) * h[:, inter:], w2[j]))
        return torch.cat(outs) if outs else x.new_empty((0, w2.shape[1]))

    return call


_KERNELS = {"grouped_mm": _experts_grouped, "loop_of_gemms": _experts_loop}


def _weights(ctx: Context, dtype: Any, experts: int, hidden: int, inter: int):
    # Values do not change the timing; uniform_ fills gigabytes faster than randn.
    w13 = torch.empty(experts, 2 * inter, hidden, dtype=dtype, device=ctx.device).uniform_(-0.05, 0.05)
    w2 = torch.empty(experts, hidden, inter, dtype=dtype, device=ctx.device).uniform_(-0.05, 0.05)
    return w13, w2


def choose_method(ctx: Context, dtype_name: str) -> str:
    dtype = torch_dtype(torch, dtype_name)
    counts = np.array([3, 0, 5, 1])
    x = torch.randn(int(counts.sum()), 64, dtype=dtype, device=ctx.device)
    w13, w2 = _weights(ctx, dtype, len(counts), 64, 32)
    want = _experts_loop(x, w13, w2, counts)()
    try:
        error = max_abs_error(_experts_grouped(x, w13, w2, counts)(), want)
    except Exception as exc:  # a capability probe: any failure means "not here"
        ctx.note(f"grouped-gemm {dtype_name}: grouped_mm unavailable ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); "
                 "timing a loop of GEMMs instead")
        return "loop_of_gemms"
    if error > 1e-2 * max(1.0, float(want.abs().max())):
        ctx.note(f"grouped-gemm {dtype_name}: grouped_mm off the reference by {error:.3g}; timing a loop of GEMMs instead")
        return "loop_of_gemms"
    ctx.note(f"grouped-gemm {dtype_name}: method grouped_mm")
    return "grouped_mm"


def prepare(ctx: Context) -> Callable[[dict[str, Any]], Case | None]:
    methods = {dt: choose_method(ctx, dt) for dt in ctx.dtypes}

    def case(point: dict[str, Any]) -> Case | None:
        hidden, inter, experts, topk = point["model"]
        eps = [ep for ep in (1, 2, 4, 8, 16, 32, 64) if experts % ep == 0 and ep <= experts]
        ep = eps[min(int(point["ep_level"] * len(eps)), len(eps) - 1)]
        moe_tp, num_tokens, dtype_name = point["moe_tp"], point["num_tokens"], point["dtype"]
        local, inter_local = experts // ep, inter // moe_tp
        dtype = torch_dtype(torch, dtype_name)
        routed = num_tokens * topk / ep  # expected tokens on this rank
        cost = work(6.0 * routed * hidden * inter_local,
                    dtype.itemsize * (3 * local * hidden * inter_local + 4 * routed * hidden))

        def build():
            popularity = expert_popularity(ctx.rng, experts, point["routing"], point["alpha"])
            counts = route_tokens(ctx.rng, num_tokens, popularity, topk)
            mine = local_expert_tokens(counts, ep, int(ctx.rng.integers(ep)))
            x = torch.randn(int(mine.sum()), hidden, dtype=dtype, device=ctx.device)
            w13, w2 = _weights(ctx, dtype, local, hidden, inter_local)
            row = {"num_tokens": num_tokens, "hidden": hidden, "inter": inter, "num_experts": experts,
                   "topk": topk, "ep": ep, "moe_tp": moe_tp, "dtype": dtype_name,
                   "expert_tokens": mine.tolist()}
            return _KERNELS[methods[dtype_name]](x, w13, w2, mine), row

        return Case("moe_grouped_gemm", cost, methods[dtype_name], build)

    return case
