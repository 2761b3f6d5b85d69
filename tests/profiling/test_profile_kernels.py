"""The measured kernels compute what they claim, and the attention batches are what the
rows say: heterogeneous, of the labelled family, within the caps."""

from __future__ import annotations

import numpy as np
import pytest

from frontier_dag.cost.queries import attention_family

torch = pytest.importorskip("torch")

from frontier_dag.profiling import attention, elementwise, grouped_gemm  # noqa: E402
from frontier_dag.profiling.case import Context  # noqa: E402
from frontier_dag.profiling.timing import CpuTimer, TimerSettings  # noqa: E402


def _ctx(quick: bool = True, dtypes=("fp32",)) -> Context:
    return Context(torch, "cpu", quick, tuple(dtypes), np.random.default_rng(0), CpuTimer(TimerSettings.quick()))


@pytest.mark.parametrize("quick", [True, False])
def test_attention_batches_are_heterogeneous_and_of_their_kind(quick):
    ctx = _ctx(quick, ("bf16",))
    rng = np.random.default_rng(0)
    limits = attention._limits(quick)
    seen = set()
    for point in attention.space(ctx).points(256, seed=1):
        q_lens, ctx_lens = attention.batch_lengths(point, rng, quick)
        family = attention_family(q_lens.tolist())
        seen.add(family)
        assert family == f"attention_{point['kind']}"
        assert q_lens.sum() <= limits["q"] and (ctx_lens + q_lens).sum() <= limits["kv"] + len(q_lens)
        assert (q_lens >= 1).all() and (ctx_lens >= 0).all()
        if len(q_lens) >= 2:  # every multi-sequence batch mixes lengths
            assert len(set(zip(q_lens.tolist(), ctx_lens.tolist(), strict=True))) > 1
        if point["kind"] == "decode" and len(q_lens) >= 2:
            assert len(set(ctx_lens.tolist())) > 1
    assert seen == {"attention_prefill", "attention_decode", "attention_mixed"}


def _naive_attention(q, k, v, q_lens, ctx_lens):
    """Softmax(QK^T/sqrt(d)) V per sequence and head, written out; GQA by head index."""
    h, hkv, d = q.shape[1], k.shape[1], q.shape[2]
    out, q0, k0 = torch.zeros_like(q), 0, 0
    for nq, nc in zip(q_lens.tolist(), ctx_lens.tolist(), strict=True):
        for head in range(h):
            kv_head = head // (h // hkv)
            scores = q[q0:q0 + nq, head] @ k[k0:k0 + nc + nq, kv_head].T / d**0.5
            for i in range(nq):
                scores[i, nc + i + 1:] = float("-inf")  # query i sees keys up to nc + i
            out[q0:q0 + nq, head] = scores.softmax(-1) @ v[k0:k0 + nc + nq, kv_head]
        q0, k0 = q0 + nq, k0 + nc + nq
    return out


def test_packed_attention_and_its_reference_match_a_written_out_one():
    q_lens, ctx_lens = np.array([3, 1, 6, 2]), np.array([5, 9, 0, 1])
    q = torch.randn(int(q_lens.sum()), 4, 8)
    k = torch.randn(int((q_lens + ctx_lens).sum()), 2, 8)
    v = torch.randn_like(k)
    want = _naive_attention(q, k, v, q_lens, ctx_lens)
    got = attention._sdpa_packed(q, k, v, q_lens, ctx_lens)().squeeze(0).transpose(0, 1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attention.reference(q, k, v, q_lens, ctx_lens), want, atol=1e-5, rtol=1e-5)


def test_the_paged_cache_holds_every_sequence_behind_its_block_table():
    kv_lens = np.array([5, 1, 9])
    k = torch.randn(int(kv_lens.sum()), 2, 4)
    v = torch.randn_like(k)
    pool_k, pool_v, table = attention.paged_cache(k, v, kv_lens, page=4)
    assert pool_k.shape == (2 + 1 + 3, 4, 2, 4) and table.dtype == torch.int32
    assert sorted(table[table > 0].tolist() + [0]) == list(range(6))  # every page used once
    start = 0
    for i, n in enumerate(kv_lens.tolist()):
        pages = table[i, : -(-n // 4)].long()
        torch.testing.assert_close(pool_k[pages].reshape(-1, 2, 4)[:n], k[start:start + n])
        torch.testing.assert_close(pool_v[pages].reshape(-1, 2, 4)[:n], v[start:start + n])
        start += n


def test_attention_method_on_the_cpu_is_sdpa_packed_and_noted():
    ctx = _ctx()
    assert attention.choose_method(ctx, "fp32") == "sdpa_packed"
    assert any("sdpa_packed" in note for note in ctx.notes)


def test_grouped_gemm_kernels_agree_with_each_other_and_with_zero_token_experts():
    counts = np.array([4, 0, 7, 1])
    x = torch.randn(int(counts.sum()), 32)
    w13, w2 = torch.randn(4, 2 * 16, 32), torch.randn(4, 32, 16)
    loop = grouped_gemm._experts_loop(x, w13, w2, counts)()
    h = x[:4] @ w13[0].T
    torch.testing.assert_close(loop[:4], (torch.nn.functional.silu(h[:, :16]) * h[:, 16:]) @ w2[0].T)
    torch.testing.assert_close(grouped_gemm._experts_grouped(x, w13, w2, counts)(), loop, atol=1e-4, rtol=1e-4)
    assert grouped_gemm.choose_method(_ctx(), "fp32") in ("grouped_mm", "loop_of_gemms")


def test_grouped_gemm_rows_describe_one_ep_rank():
    ctx = _ctx(dtypes=("bf16",))
    make = grouped_gemm.prepare(ctx)
    for point in grouped_gemm.space(ctx).points(16, seed=0):
        case = make(point)
        _, row = case.build()
        assert len(row["expert_tokens"]) == row["num_experts"] // row["ep"]
        assert sum(row["expert_tokens"]) <= row["num_tokens"] * row["topk"]
        assert max(row["expert_tokens"]) <= row["num_tokens"]


def test_elementwise_ops_compute_their_formulas():
    x, w = torch.randn(3, 32), torch.randn(32)
    want = x / (x.pow(2).mean(-1, keepdim=True) + 1e-6).sqrt() * w
    torch.testing.assert_close(elementwise.rms_norm(x, w), want)
    gate_up = torch.randn(2, 16)
    torch.testing.assert_close(elementwise.silu_mul(gate_up), gate_up[:, :8] * torch.sigmoid(gate_up[:, :8]) * gate_up[:, 8:])


def test_rope_rotates_each_pair_by_its_position_angle():
    cos, sin = elementwise.rope_tables(8, torch.float32, "cpu", max_position=64)
    heads = torch.randn(3, 2, 8)
    positions = torch.tensor([0, 5, 63])
    out = elementwise.rope(heads, cos[positions][:, None, :], sin[positions][:, None, :])
    torch.testing.assert_close(out[0], heads[0])  # position 0: no rotation
    pair_norm = lambda t: (t[..., :4] ** 2 + t[..., 4:] ** 2).sqrt()  # noqa: E731
    torch.testing.assert_close(pair_norm(out), pair_norm(heads))
    assert not torch.allclose(out[1], heads[1])
    # Pair 0 turns by `position` radians (inverse frequency 1).
    angle = torch.atan2(out[1, 0, 4], out[1, 0, 0]) - torch.atan2(heads[1, 0, 4], heads[1, 0, 0])
    assert torch.cos(angle - 5.0).item() == pytest.approx(1.0, abs=1e-5)


def test_every_elementwise_op_builds_and_runs():
    for op in elementwise.OPS:
        assert elementwise._build(op, 4, 32, torch.bfloat16, "cpu", 16)().shape[0] == 4
