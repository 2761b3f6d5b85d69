"""Attention over heterogeneous batches: prefill, decode and mixed.

A batch is a list of sequences; sequence i brings ``q_lens[i]`` new tokens and has
``ctx_lens[i]`` tokens cached, and its queries attend causally to all
``ctx_lens[i] + q_lens[i]`` keys (the causal mask is aligned to the last key, as in
chunked prefill and decode). Lengths are drawn per batch from a distribution
(``batches.draw_lengths``), so one row is one real-looking batch, not n copies
of one sequence.

The kernel is the best of torch's variable-length attentions that runs here,
chosen once per run and per dtype by checking each candidate against a
per-sequence reference, and recorded in the ``method`` column:

    varlen_paged   flash varlen attention reading K/V from a paged cache (scattered
                   256-token pages through a block table), as a serving engine does
    varlen         flash varlen attention on packed K/V
    flex           flex_attention (compiled) with a per-sequence causal block mask
    sdpa_packed    one scaled_dot_product_attention call over the packed batch with a
                   block-diagonal causal mask (the fallback; the only one on the CPU)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from frontier_dag.cost.queries import attention_family

from .batches import LENGTH_DISTRIBUTIONS, draw_lengths, ensure_heterogeneous, fit_total
from .case import Case, Context, max_abs_error, work
from .design import Axis, Space
from .device import torch_dtype

DTYPES = ("bf16", "fp16", "fp32")
METHODS = ("varlen_paged", "varlen", "flex", "sdpa_packed")
#: Tokens per KV page. Flash attention's paged path needs a multiple of 256.
PAGE = 256
#: Masked SDPA materialises a (query x key) mask; beyond this many entries a point is skipped.
MASK_LIMIT = 1 << 28

# (num_heads, num_kv_heads, head_dim) per GPU: Llama-3-8B/70B, Qwen3 at TP 1..8, MHA.
_HEADS = ((32, 8, 128), (64, 8, 128), (16, 2, 128), (8, 1, 128), (32, 32, 128), (16, 16, 128))
_QUICK_HEADS = ((4, 2, 16), (2, 2, 16))


def default_dtypes(device: str) -> tuple[str, ...]:
    return ("bf16",)


def _limits(quick: bool) -> dict[str, int]:
    """Token caps of one batch: new tokens (a scheduler's max_num_batched_tokens), cached
    keys (bounds device memory), and one sequence's length."""
    return {"q": 96, "kv": 512, "seq": 256} if quick else {"q": 16384, "kv": 1 << 20, "seq": 131072}


def space(ctx: Context) -> Space:
    quick = ctx.quick
    return Space((
        Axis("kind", choices=("prefill", "decode", "mixed")),
        Axis("heads", choices=_QUICK_HEADS if quick else _HEADS),
        Axis("dtype", choices=ctx.dtypes),
        Axis("num_seqs", 1, 6 if quick else 256, log=True, integer=True),
        Axis("ctx_mean", 4 if quick else 16, 64 if quick else 32768, log=True),
        Axis("q_mean", 2 if quick else 16, 32 if quick else 8192, log=True),
        Axis("cv", 0.1, 1.5),
        Axis("dist", choices=LENGTH_DISTRIBUTIONS),
        Axis("decode_frac", 0.1, 0.9),
        Axis("prefix_frac", 0.0, 1.0),
    ))


def batch_lengths(point: dict[str, Any], rng: np.random.Generator, quick: bool) -> tuple[np.ndarray, np.ndarray]:
    """(q_lens, ctx_lens) of one batch of the design point's kind, decode sequences first.

    Prefill sequences bring at least 2 tokens (so a prefill batch is never labelled
    decode); a share ``prefix_frac`` of them continue a cached context (chunked
    prefill, prefix caching), the others start from an empty cache.
    """
    cap = _limits(quick)
    n, kind, dist, cv = point["num_seqs"], point["kind"], point["dist"], point["cv"]
    if kind == "mixed":
        n = max(n, 2)
        n_decode = int(np.clip(round(point["decode_frac"] * n), 1, n - 1))
    else:
        n_decode = n if kind == "decode" else 0
    n_prefill = n - n_decode
    q_prefill = draw_lengths(rng, n_prefill, point["q_mean"], cv, dist, low=2, high=cap["seq"])
    q_prefill = fit_total(q_prefill, max(cap["q"] - n_decode, 2 * n_prefill), low=2)
    q_lens = np.concatenate([np.ones(n_decode, dtype=np.int64), q_prefill])
    ctx = draw_lengths(rng, n, point["ctx_mean"], cv, dist, low=1, high=cap["seq"])
    cached = np.concatenate([np.ones(n_decode, bool), rng.random(n_prefill) < point["prefix_frac"]])
    ctx_lens = fit_total(np.where(cached, ctx, 0), max(cap["kv"] - int(q_lens.sum()), n), low=0)
    if kind == "decode":
        ctx_lens = ensure_heterogeneous(ctx_lens, low=1, high=cap["seq"])
    else:
        q_lens[n_decode:] = ensure_heterogeneous(q_lens[n_decode:], low=2, high=cap["seq"])
    return q_lens, ctx_lens


def attention_work(q_lens: np.ndarray, ctx_lens: np.ndarray, heads: tuple[int, int, int], elem_bytes: int) -> float:
    """Causal attention FLOPs (QK^T and PV) and the bytes of Q, K, V and the output."""
    h, hkv, d = heads
    q, k = q_lens.astype(float), (ctx_lens + q_lens).astype(float)
    flops = 4.0 * h * d * float(np.sum(q * (k - (q - 1) / 2)))
    return work(flops, elem_bytes * d * (2 * h * q.sum() + 2 * hkv * k.sum()))


# ---- the kernels: each turns packed q (Tq, H, D) and k, v (Tk, Hkv, D) into a call ----

def _index(torch_device: Any, q_lens: np.ndarray, ctx_lens: np.ndarray) -> tuple[Any, ...]:
    """Per packed query and key: its sequence and its position in that sequence."""
    kv_lens = ctx_lens + q_lens
    q_seq = np.repeat(np.arange(len(q_lens)), q_lens)
    k_seq = np.repeat(np.arange(len(q_lens)), kv_lens)
    q_pos = np.arange(len(q_seq)) - np.repeat(np.cumsum(q_lens) - q_lens, q_lens) + ctx_lens[q_seq]
    k_pos = np.arange(len(k_seq)) - np.repeat(np.cumsum(kv_lens) - kv_lens, kv_lens)
    return tuple(torch.as_tensor(a, device=torch_device) for a in (q_seq, q_pos, k_seq, k_pos))


def _cumulative(lengths: np.ndarray, device: Any) -> Any:
    return torch.as_tensor(np.concatenate([[0], np.cumsum(lengths)]), dtype=torch.int32, device=device)


def _varlen(q, k, v, q_lens, ctx_lens):
    from torch.nn.attention.varlen import varlen_attn

    kv_lens = ctx_lens + q_lens
    cu_q, cu_k = _cumulative(q_lens, q.device), _cumulative(kv_lens, q.device)
    max_q, max_k = int(q_lens.max()), int(kv_lens.max())
    # window (-1, 0) is causal, aligned to the last key: query i sees keys up to ctx + i.
    return lambda: varlen_attn(q, k, v, cu_q, cu_k, max_q, max_k, window_size=(-1, 0), enable_gqa=True)


def paged_cache(k, v, kv_lens: np.ndarray, page: int = PAGE):
    """K and V of packed sequences laid out as a paged cache: pools of shape
    (pages, page, Hkv, D) and a block table (sequences, max pages) of int32 page ids.

    A long-running cache hands out pages in no particular order, so the pages of a
    sequence are scattered through the pool; a sequence's last page is zero-padded.
    """
    pages = -(-kv_lens // page)
    order = torch.randperm(int(pages.sum()), device=k.device)
    pool_k = k.new_zeros((int(pages.sum()), page, *k.shape[1:]))
    pool_v = torch.zeros_like(pool_k)
    table = torch.zeros((len(kv_lens), int(pages.max())), dtype=torch.int32, device=k.device)
    first_page, first_key = 0, 0
    for i, (n_pages, n_keys) in enumerate(zip(pages.tolist(), kv_lens.tolist(), strict=True)):
        ids = order[first_page:first_page + n_pages]
        table[i, :n_pages] = ids.to(torch.int32)
        for pool, src in ((pool_k, k), (pool_v, v)):
            seq = src[first_key:first_key + n_keys]
            seq = torch.cat([seq, seq.new_zeros((n_pages * page - n_keys, *seq.shape[1:]))])
            pool[ids] = seq.view(n_pages, page, *seq.shape[1:])
        first_page, first_key = first_page + n_pages, first_key + n_keys
    return pool_k, pool_v, table


def _varlen_paged(q, k, v, q_lens, ctx_lens):
    from torch.nn.attention.varlen import varlen_attn

    kv_lens = ctx_lens + q_lens
    pool_k, pool_v, table = paged_cache(k, v, kv_lens)
    cu_q, cu_k = _cumulative(q_lens, q.device), _cumulative(kv_lens, q.device)
    used = torch.as_tensor(kv_lens, dtype=torch.int32, device=q.device)
    max_q, max_k = int(q_lens.max()), int(kv_lens.max())
    return lambda: varlen_attn(q, pool_k, pool_v, cu_q, cu_k, max_q, max_k, window_size=(-1, 0),
                               enable_gqa=True, seqused_k=used, block_table=table)


_compiled_flex = None


def _flex(q, k, v, q_lens, ctx_lens):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    global _compiled_flex
    if _compiled_flex is None:
        # Uncompiled flex_attention materialises the scores; only the compiled one is a fused
        # kernel. Default dynamism: after the first new shape, shapes are compiled symbolically.
        _compiled_flex = torch.compile(flex_attention)
    q_seq, q_pos, k_seq, k_pos = _index(q.device, q_lens, ctx_lens)

    def mask(b, h, qi, kj):
        return (q_seq[qi] == k_seq[kj]) & (k_pos[kj] <= q_pos[qi])

    block_mask = create_block_mask(mask, None, None, q.shape[0], k.shape[0], device=q.device)
    qt, kt, vt = (x.transpose(0, 1).unsqueeze(0) for x in (q, k, v))
    return lambda: _compiled_flex(qt, kt, vt, block_mask=block_mask, enable_gqa=True)


def _sdpa_packed(q, k, v, q_lens, ctx_lens):
    q_seq, q_pos, k_seq, k_pos = _index(q.device, q_lens, ctx_lens)
    allowed = (q_seq[:, None] == k_seq[None, :]) & (k_pos[None, :] <= q_pos[:, None])
    qt, kt, vt = (x.transpose(0, 1).unsqueeze(0) for x in (q, k, v))
    return lambda: F.scaled_dot_product_attention(qt, kt, vt, attn_mask=allowed, enable_gqa=True)


_KERNELS: dict[str, Callable[..., Callable[[], Any]]] = {
    "varlen_paged": _varlen_paged, "varlen": _varlen, "flex": _flex, "sdpa_packed": _sdpa_packed,
}


def reference(q, k, v, q_lens, ctx_lens):
    """Attention computed one sequence at a time in float32: what every method must match."""
    outputs, q0, k0 = [], 0, 0
    for nq, nc in zip(q_lens.tolist(), ctx_lens.tolist(), strict=True):
        qi, ki, vi = (x.float().transpose(0, 1) for x in (q[q0:q0 + nq], k[k0:k0 + nc + nq], v[k0:k0 + nc + nq]))
        allowed = torch.arange(nc + nq, device=q.device)[None, :] <= (nc + torch.arange(nq, device=q.device))[:, None]
        outputs.append(F.scaled_dot_product_attention(qi, ki, vi, attn_mask=allowed, enable_gqa=True).transpose(0, 1))
        q0, k0 = q0 + nq, k0 + nc + nq
    return torch.cat(outputs)


def _packed(ctx: Context, dtype: Any, heads, q_lens, ctx_lens):
    h, hkv, d = heads
    device = ctx.device
    q = torch.randn(int(q_lens.sum()), h, d, dtype=dtype, device=device)
    k = torch.randn(int((q_lens + ctx_lens).sum()), hkv, d, dtype=dtype, device=device)
    return q, k, torch.randn_like(k)


def choose_method(ctx: Context, dtype_name: str) -> str:
    """The first method of METHODS that runs here and matches the reference on a small
    heterogeneous batch; the others' failures are noted."""
    dtype = torch_dtype(torch, dtype_name)
    q_lens, ctx_lens = np.array([3, 1, 5]), np.array([4, 7, 0])
    q, k, v = _packed(ctx, dtype, (4, 2, 64), q_lens, ctx_lens)
    want = reference(q, k, v, q_lens, ctx_lens)
    tolerance = 1e-4 if dtype_name == "fp32" else 3e-2
    candidates = METHODS
    if ctx.device == "cpu":
        # varlen is flash attention, a CUDA kernel; uncompiled flex_attention on the CPU is
        # no fused kernel, only a slower masked SDPA. Skipping them also saves their imports.
        candidates = ("sdpa_packed",)
        ctx.note("attention: varlen_paged, varlen and flex are GPU kernels; the CPU measures sdpa_packed")
    for method in candidates:
        try:
            got = _KERNELS[method](q, k, v, q_lens, ctx_lens)()
            got = got.squeeze(0).transpose(0, 1) if got.dim() == 4 else got
            error = max_abs_error(got, want)
        except Exception as exc:  # a capability probe: any failure means "not here"
            ctx.note(f"attention {dtype_name}: {method} unavailable ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})")
            continue
        if error <= tolerance:
            ctx.note(f"attention {dtype_name}: method {method}")
            return method
        ctx.note(f"attention {dtype_name}: {method} rejected, off the reference by {error:.3g}")
    raise RuntimeError("sdpa_packed, the fallback attention, failed its check")  # a torch bug, not a user error


def prepare(ctx: Context) -> Callable[[dict[str, Any]], Case | None]:
    methods = {dt: choose_method(ctx, dt) for dt in ctx.dtypes}

    def case(point: dict[str, Any]) -> Case | None:
        q_lens, ctx_lens = batch_lengths(point, ctx.rng, ctx.quick)
        method, dtype_name = methods[point["dtype"]], point["dtype"]
        if method == "sdpa_packed" and q_lens.sum() * (q_lens + ctx_lens).sum() > MASK_LIMIT:
            return None
        heads = point["heads"]
        dtype = torch_dtype(torch, dtype_name)
        row = {"num_heads": heads[0], "num_kv_heads": heads[1], "head_dim": heads[2], "dtype": dtype_name,
               "kv_dtype": dtype_name, "q_lens": q_lens.tolist(), "ctx_lens": ctx_lens.tolist()}

        def build():
            q, k, v = _packed(ctx, dtype, heads, q_lens, ctx_lens)
            return _KERNELS[method](q, k, v, q_lens, ctx_lens), row

        return Case(attention_family(q_lens.tolist()), attention_work(q_lens, ctx_lens, heads, dtype.itemsize), method, build)

    return case
