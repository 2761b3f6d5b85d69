"""Features on small batches whose statistics are computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from frontier_dag.config import load_hardware
from frontier_dag.predictors.features import DTYPE_CODES, Segments, feature_matrix, features

H200 = load_hardware("h200_sxm")


def attention_query(q_lens, ctx_lens, heads=32, kv_heads=8):
    n = len(q_lens)
    return {"num_heads": [heads] * n, "num_kv_heads": [kv_heads] * n, "head_dim": [128] * n, "dtype": ["bf16"] * n,
            "kv_dtype": ["fp8"] * n, "q_lens": [np.array(q) for q in q_lens], "ctx_lens": [np.array(c) for c in ctx_lens]}


def test_mixed_batch_statistics():
    # one prefill chunk of 100 over nothing, two decodes over 10 and 20 cached tokens
    f, work = features("attention_mixed", attention_query([[100, 1, 1]], [[0, 10, 20]]), H200)
    assert f["n_seqs"][0] == 3 and f["n_decode"][0] == 2 and f["decode_share"][0] == pytest.approx(2 / 3)
    assert (f["q_sum"][0], f["q_min"][0], f["q_max"][0], f["q_p50"][0]) == (102, 1, 100, 1)
    assert f["q_mean"][0] == pytest.approx(34) and f["q_std"][0] == pytest.approx(np.std([100, 1, 1]))
    assert f["q_p90"][0] == pytest.approx(1 + 0.8 * 99)  # linear interpolation between 1 and 100
    # keys attended: context + new tokens = 100, 11, 21
    assert (f["kv_sum"][0], f["kv_min"][0], f["kv_max"][0], f["kv_p50"][0]) == (132, 11, 100, 21)
    # causal pairs: 100 * 101 / 2 for the chunk, 11 and 21 for the decodes
    assert f["pairs"][0] == 5050 + 11 + 21
    assert f["prefill_q_sum"][0] == 100 and f["decode_kv_sum"][0] == 32
    # query tiles: 100 rows x 4 heads per KV head -> 4 tiles; decodes 1 x 4 rows -> 1 tile each; 8 KV heads
    assert f["q_tiles"][0] == (4 + 1 + 1) * 8
    assert f["q_waves"][0] == pytest.approx(48 / 132)
    assert f["kv_tiles"][0] == 3 * 8  # every sequence fits one 128-key tile
    assert f["gqa"][0] == 4 and f["kv_dtype"][0] == DTYPE_CODES["fp8"]
    assert work.shape == (1, 2) and (work > 0).all()


def test_rows_are_independent_of_their_batch():
    alone, _ = features("attention_decode", attention_query([[1, 1]], [[5, 7]]), H200)
    together, _ = features("attention_decode", attention_query([[1] * 5, [1, 1]], [[9] * 5, [5, 7]]), H200)
    for name, values in alone.items():
        assert together[name][1] == pytest.approx(values[0]), name


def test_expert_load_statistics():
    query = {"num_tokens": [4], "hidden": [2048], "inter": [768], "num_experts": [8], "topk": [2], "ep": [2],
             "moe_tp": [1], "dtype": ["bf16"], "expert_tokens": [np.array([0, 0, 0, 8])]}
    f, _ = features("moe_grouped_gemm", query, H200)
    assert f["routed"][0] == 8 and f["load_max"][0] == 8 and f["active"][0] == 1 and f["n_local"][0] == 4
    assert f["load_gini"][0] == pytest.approx(0.75)  # one of four experts holds all: (n - 1) / n
    assert f["load_entropy"][0] == pytest.approx(0.0)
    assert f["load_cv"][0] == pytest.approx(np.sqrt(3))
    assert f["tiles_16"][0] == 1 and f["tiles_64"][0] == 1
    even, _ = features("moe_grouped_gemm", {**query, "expert_tokens": [np.array([2, 2, 2, 2])]}, H200)
    assert even["load_gini"][0] == pytest.approx(0) and even["load_entropy"][0] == pytest.approx(2.0)


def test_expert_features_do_not_depend_on_which_expert_holds_which_load():
    """The coster prices sorted expert loads (more repeats, fewer rows to price): that is only
    right because every feature is a statistic of the multiset of loads."""
    rng = np.random.default_rng(3)
    loads = rng.multinomial(64, np.full(32, 1 / 32))
    base = {"num_tokens": [32], "hidden": [2880], "inter": [2880], "num_experts": [128], "topk": [4], "ep": [4],
            "moe_tp": [1], "dtype": ["fp8_block"]}
    f, work = features("moe_grouped_gemm", {**base, "expert_tokens": [loads]}, H200)
    g, sorted_work = features("moe_grouped_gemm", {**base, "expert_tokens": [-np.sort(-loads)]}, H200)
    assert f.keys() == g.keys()
    for name in f:
        assert g[name] == pytest.approx(f[name], rel=1e-12), name
    assert sorted_work == pytest.approx(work, rel=1e-12)


def test_gemm_tiles_and_waves():
    f, work = features("gemm", {"m": [300], "n": [4096], "k": [4096], "dtype": ["bf16"]}, H200)
    assert f["tiles"][0] == 3 * 32 and f["waves"][0] == pytest.approx(96 / 132)
    assert f["last_wave_fill"][0] == pytest.approx(96 / 132)
    # the padded 384 x 4096 output in one (partial) wave: 384/300 padding x 132/96 idle SMs
    flops = 2 * 300 * 4096 * 4096
    assert work[0, 0] == pytest.approx(flops / 989e12 * 1e6 * (384 / 300) * (132 / 96))


def test_unknown_categories_are_marked():
    f, _ = features("all_reduce", {"bytes": [1e6], "group_size": [8], "placement": ["intra_node"], "impl": ["nccl"]},
                    H200, vocab={"impl": ("custom",)})
    assert f["impl"][0] == -1
    f, _ = features("gemm", {"m": [1], "n": [1], "k": [1], "dtype": ["bf16"]}, H200)
    assert f["dtype"][0] == DTYPE_CODES["bf16"] == DTYPE_CODES["fp16"]


def test_feature_matrix_logs_sizes_and_is_float32_exact():
    X, names, _ = feature_matrix("gemm", {"m": [127], "n": [4096], "k": [4096], "dtype": ["bf16"]}, H200)
    assert X[0, names.index("m")] == pytest.approx(np.log1p(127), rel=1e-6)
    assert X[0, names.index("dtype")] == 1
    assert np.array_equal(X, X.astype(np.float32).astype(float))


def test_segments_sort_keeps_rows_apart():
    seg = Segments([np.array([3, 1, 2]), np.array([0, 9])])
    ordered = seg.sort(seg.flat[:, None])[:, 0]
    assert ordered.tolist() == [1, 2, 3, 0, 9]
    assert [q[0] for q in seg.quantiles(ordered[:, None], [0.5])[0].tolist()] == [2, 4.5]


def test_kv_splits_follow_the_split_kv_heuristic():
    # 12 heads over 4 KV heads, 1024 tokens, head size 128 on 132 SMs: 4 x 24 = 96 query
    # tiles fill under 80% of the SMs, 8 key tiles; 4 splits (2.9 waves, 97% full) come first
    # within 85% of the best
    h100 = load_hardware("h100_sxm")
    query = {**attention_query([[1024]], [[0]], heads=12, kv_heads=4), "kv_dtype": ["bf16"]}
    assert features("attention_prefill", query, h100)[0]["kv_splits"][0] == 4
    # enough query tiles (12 x 32 heads), or few key tiles (512 tokens): no split
    assert features("attention_prefill", {**query, "num_heads": [32], "num_kv_heads": [8]}, h100)[0]["kv_splits"][0] == 1
    short = {**query, "q_lens": [np.array([512])]}
    assert features("attention_prefill", short, h100)[0]["kv_splits"][0] == 1
    # decode and MLA kernels do not get the column
    assert "kv_splits" not in features("attention_decode", attention_query([[1]], [[500]]), h100)[0]


def test_compiled_kv_splits_and_tiles_match_the_reference():
    fastpath = pytest.importorskip("frontier_dag.predictors.fastpath")
    from frontier_dag.predictors.features import fa_tiles, kv_splits

    rng = np.random.default_rng(0)
    m, n = rng.integers(1, 300, 2000).astype(float), rng.integers(1, 200, 2000).astype(float)
    for sm in (108, 132):
        compiled = [fastpath._kv_splits(a, b, float(sm)) for a, b in zip(m, n, strict=True)]
        assert np.array_equal(kv_splits(m, n, sm), compiled)
    head_dim = rng.choice([32, 64, 80, 96, 112, 128, 160, 192, 256, 512], 200).astype(float)
    width = rng.choice([0.5, 1.0, 2.0, 4.0], 200)
    assert np.array_equal(np.column_stack(fa_tiles(head_dim, width)),
                          [fastpath._fa_tiles(d, w) for d, w in zip(head_dim, width, strict=True)])
