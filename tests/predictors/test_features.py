"""Features on small batches whose values are computed by hand: a wrong feature fails here."""

from __future__ import annotations

import numpy as np
import pytest

from frontier_dag.config import load_hardware
from frontier_dag.cost.queries import FAMILIES
from frontier_dag.cost.roofline import roofline_us
from frontier_dag.predictors.features import DTYPE_CODES, KINDS, feature_matrix, features, names

H200 = load_hardware("h200_sxm")
BF16, FP8 = H200.gpu.peak_flops("bf16"), H200.gpu.peak_flops("fp8")
HBM, NVLINK = H200.gpu.hbm_bandwidth_bytes_per_s, H200.node.nvlink_bandwidth_bytes_per_s


def attention_query(q_lens, ctx_lens, heads=32, kv_heads=8, head_dim=128, kv_dtype="fp8"):
    n = len(q_lens)
    return {"num_heads": [heads] * n, "num_kv_heads": [kv_heads] * n, "head_dim": [head_dim] * n,
            "dtype": ["bf16"] * n, "kv_dtype": [kv_dtype] * n, "q_lens": [np.array(q) for q in q_lens],
            "ctx_lens": [np.array(c) for c in ctx_lens]}


def moe_query(loads, **shape):
    return {"num_tokens": [4], "hidden": [2048], "inter": [768], "num_experts": [8], "topk": [2], "ep": [2],
            "moe_tp": [1], "dtype": ["bf16"], **shape, "expert_tokens": [np.array(loads)]}


def test_mixed_batch_statistics():
    # one prefill chunk of 100 over nothing, two decodes over 10 and 20 cached tokens
    f, work = features("attention_mixed", attention_query([[100, 1, 1]], [[0, 10, 20]]), H200)
    assert f["n_seqs"][0] == 3 and f["n_decode"][0] == 2 and f["decode_share"][0] == pytest.approx(2 / 3)
    assert (f["q_sum"][0], f["q_min"][0], f["q_max"][0], f["q_p50"][0]) == (102, 1, 100, 1)
    assert f["q_mean"][0] == pytest.approx(34) and f["q_std"][0] == pytest.approx(np.std([100, 1, 1]))
    assert f["q_p90"][0] == pytest.approx(1 + 0.8 * 99)  # linear interpolation between 1 and 100
    # keys attended: context + new tokens = 100, 11, 21
    assert (f["kv_sum"][0], f["kv_min"][0], f["kv_max"][0], f["kv_p50"][0]) == (132, 11, 100, 21)
    assert f["kv_std"][0] == pytest.approx(np.std([100, 11, 21]))
    # causal pairs: 100 * 101 / 2 for the chunk, 11 and 21 for the decodes
    assert f["pairs"][0] == 5050 + 11 + 21
    assert f["prefill_q_sum"][0] == 100 and f["decode_kv_sum"][0] == 32
    # query tiles: 100 rows x 4 heads per KV head -> 4 tiles; decodes 1 x 4 rows -> 1 tile each; 8 KV heads
    assert f["q_tiles"][0] == (4 + 1 + 1) * 8 and f["q_full_waves"][0] == 1
    assert f["q_waves"][0] == pytest.approx(48 / 132)
    assert f["kv_tiles"][0] == 3 * 8 and f["kv_waves"][0] == pytest.approx(24 / 132)  # each fits one 128-key tile
    assert (f["heads"][0], f["kv_heads"][0], f["head_dim"][0], f["gqa"][0]) == (32, 8, 128, 4)
    assert f["dtype"][0] == DTYPE_CODES["bf16"] and f["kv_dtype"][0] == DTYPE_CODES["fp8"]
    # the roofline terms: 4 x heads x head_dim FLOPs per pair; KV read at 1 byte, queries and outputs at 2
    flops = 4 * 32 * 128 * 5082
    nbytes = 132 * 2 * 8 * 128 * 1 + 2 * 102 * 32 * 128 * 2
    assert f["log_flops"][0] == pytest.approx(np.log1p(flops)) and f["log_bytes"][0] == pytest.approx(np.log1p(nbytes))
    assert f["log_roofline_us"][0] == pytest.approx(np.log(3 + max(flops / BF16, nbytes / HBM) * 1e6))
    # the compute time counts padded tiles and idle SMs: each KV head's rows (512 + 128 + 128 in
    # tiles against 400 + 4 + 4 real, weighted by the keys each row sees) and 48 tiles on 132 SMs
    padded, real = 4 * 50.5 + 11 + 21, 400 * 50.5 + 4 * 11 + 4 * 21
    assert work[0, 0] == pytest.approx(flops / BF16 * 1e6 * (padded * 128 / real) * (132 / 48))
    assert work[0, 1] == pytest.approx(nbytes / HBM * 1e6)
    # thread blocks of a mixed kernel: a block per 128 new tokens of each of the 32 heads, the
    # decodes' single token included: (1 + 1 + 1) x 32 blocks on 132 SMs
    assert work[0, 2] == pytest.approx(3 * 32 / 132)


def test_waves_of_thread_blocks():
    """Prefill kernels launch a block per 128 new tokens of each head; decode kernels one per
    KV head of each sequence; MLA and the other families count none."""
    _, prefill = features("attention_prefill", attention_query([[16, 128], [129]], [[0, 0], [0]]), H200)
    assert list(prefill[:, 2]) == pytest.approx([(1 + 1) * 32 / 132, 2 * 32 / 132])
    _, decode = features("attention_decode", attention_query([[1] * 300], [[1000] * 300]), H200)
    assert decode[0, 2] == pytest.approx(300 * 8 / 132)
    _, gemm = features("gemm", {"m": [300], "n": [4096], "k": [4096], "dtype": ["bf16"]}, H200)
    mla = {"num_heads": [16], "kv_lora_rank": [512], "qk_rope_head_dim": [64], "qk_nope_head_dim": [128],
           "v_head_dim": [128], "dtype": ["bf16"], "kv_dtype": ["bf16"], "q_lens": [np.ones(4)],
           "ctx_lens": [np.full(4, 100.0)]}
    _, mla_work = features("mla_decode", mla, H200)
    assert gemm[0, 2] == 0 and mla_work[0, 2] == 0


def test_a_kv_cache_stored_in_a_precision_the_gpu_cannot_compute_in():
    """An A100 stores an FP8 KV cache (1 byte a value) and reads it into BF16 matmuls: no FP8
    tensor cores are needed; an FP8 matmul on it stays an error."""
    a100 = load_hardware("a100_sxm")
    f, work = features("attention_decode", attention_query([[1, 1]], [[100, 300]], kv_dtype="fp8"), a100)
    assert f["kv_dtype"][0] == DTYPE_CODES["fp8"]
    assert f["log_bytes"][0] == pytest.approx(np.log1p(402 * 2 * 8 * 128 * 1 + 2 * 2 * 32 * 128 * 2))
    with pytest.raises(Exception, match="cannot run fp8"):
        features("gemm", {"m": [8], "n": [64], "k": [64], "dtype": ["fp8"]}, a100)


def test_quantiles_of_each_row_in_a_batch():
    f, _ = features("attention_mixed", attention_query([[3, 1, 2], [10, 40]], [[0, 0, 0], [5, 0]]), H200)
    assert list(f["q_p50"]) == [2, 25] and f["q_p90"] == pytest.approx([2.8, 37])  # 1 2 3; 10 40
    assert list(f["kv_p50"]) == [2, 27.5] and f["kv_p90"] == pytest.approx([2.8, 37.5])  # 15 40
    assert f["q_std"] == pytest.approx([np.sqrt(2 / 3), 15]) and list(f["q_mean"]) == [2, 25]
    assert list(f["pairs"]) == [6 + 1 + 3, 10 * 5 + 55 + 820]


def test_rows_are_independent_of_their_batch():
    alone, _ = features("attention_decode", attention_query([[1, 1]], [[5, 7]]), H200)
    together, _ = features("attention_decode", attention_query([[1] * 5, [1, 1]], [[9] * 5, [5, 7]]), H200)
    for name, values in alone.items():
        assert together[name][1] == pytest.approx(values[0]), name


def test_mla_shapes_and_work():
    query = {"num_heads": [16], "kv_lora_rank": [512], "qk_rope_head_dim": [64], "qk_nope_head_dim": [128],
             "v_head_dim": [128], "dtype": ["bf16"], "kv_dtype": ["fp8"], "q_lens": [np.array([1, 1])],
             "ctx_lens": [np.array([99, 199])]}
    decode, _ = features("mla_decode", query, H200)
    assert (decode["kv_lora_rank"][0], decode["rope_dim"][0], decode["nope_dim"][0], decode["v_dim"][0]) == \
        (512, 64, 128, 128)
    assert decode["pairs"][0] == 300 and "kv_heads" not in decode
    # one latent KV head: 16 query rows per tile row group, one tile a sequence; keys 100 and 200
    assert decode["q_tiles"][0] == 2 and decode["kv_tiles"][0] == 1 + 2
    # absorbed decode: scores over the latent and rope dims, values in the latent space
    assert decode["log_flops"][0] == pytest.approx(np.log1p(2 * 16 * 300 * (576 + 512)))
    assert decode["log_bytes"][0] == pytest.approx(np.log1p(300 * 576 * 1 + 2 * 2 * 16 * 576 * 2))
    prefill, _ = features("mla_prefill", query, H200)
    assert prefill["log_flops"][0] == pytest.approx(np.log1p(2 * 16 * 300 * (128 + 64 + 128)))


def test_expert_load_statistics():
    f, _ = features("moe_grouped_gemm", moe_query([0, 0, 0, 8]), H200)
    assert f["routed"][0] == 8 and f["load_max"][0] == 8 and f["active"][0] == 1 and f["n_local"][0] == 4
    assert f["load_gini"][0] == pytest.approx(0.75)  # one of four experts holds all: (n - 1) / n
    assert f["load_entropy"][0] == pytest.approx(0.0)
    assert f["load_cv"][0] == pytest.approx(np.sqrt(3))
    assert f["tiles_16"][0] == 1 and f["tiles_64"][0] == 1
    even, _ = features("moe_grouped_gemm", moe_query([2, 2, 2, 2]), H200)
    assert even["load_gini"][0] == pytest.approx(0) and even["load_entropy"][0] == pytest.approx(2.0)
    assert even["load_cv"][0] == 0


def test_expert_load_statistics_of_a_skewed_vector():
    # loads 0, 2, 2, 4: mean 2, std sqrt(2); sorted, sum((2i - n - 1) x_i) = -2 + 2 + 12 = 12 over n x 8;
    # shares 1/4, 1/4, 1/2: 1.5 bits
    f, work = features("moe_grouped_gemm", moe_query([2, 0, 4, 2]), H200)
    assert (f["load_mean"][0], f["load_max"][0], f["active"][0]) == (2, 4, 3)
    assert f["load_cv"][0] == pytest.approx(np.sqrt(2) / 2)
    assert f["load_gini"][0] == pytest.approx(12 / 32)
    assert f["load_entropy"][0] == pytest.approx(1.5)
    assert f["tiles_16"][0] == 3 and f["tiles_64"][0] == 3
    # the first GEMM (2 x 768 columns: 12 column tiles) over 3 row tiles: 36 tiles on 132 SMs
    assert f["waves"][0] == pytest.approx(36 / 132)
    flops = 2 * 3 * 2048 * 768 * 8
    nbytes = 3 * 2048 * 768 * 2 * 3 + 2 * 8 * 2048 * 2  # the active experts' weights, tokens in and out
    # 192 padded rows for 8 tokens, one wave of 36 tiles on 132 SMs
    assert work[0, 0] == pytest.approx(flops / BF16 * 1e6 * (192 / 8) * (132 / 36))
    assert work[0, 1] == pytest.approx(nbytes / HBM * 1e6)
    assert [f[c][0] for c in ("num_tokens", "hidden", "inter", "num_experts", "topk", "ep", "moe_tp")] == \
        [4, 2048, 768, 8, 2, 2, 1]


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
    assert work[0, 0] == pytest.approx(flops / BF16 * 1e6 * (384 / 300) * (132 / 96))
    f, _ = features("gemm", {"m": [1000], "n": [8192], "k": [1024], "dtype": ["fp8"]}, H200)
    assert (f["tiles"][0], f["tiles_64"][0], f["m_mod_64"][0], f["dtype"][0]) == (8 * 64, 16 * 64, 40, 2)
    assert f["waves"][0] == pytest.approx(512 / 132) and f["last_wave_fill"][0] == pytest.approx(512 / 528)
    assert f["log_bytes"][0] == pytest.approx(np.log1p((1000 * 1024 + 1024 * 8192) * 1 + 1000 * 8192 * 2))


def test_collectives_and_copies():
    query = {"bytes": [1e6, 1e6], "group_size": [8, 1], "placement": ["intra_node"] * 2, "impl": ["nccl", "custom"]}
    f, work = features("all_reduce", query, H200, vocab={"impl": ("custom", "nccl")})
    ring = 8 + 2 * 7 / 8 * 1e6 / NVLINK * 1e6  # latency + twice the share each GPU sends
    assert f["log_roofline_us"] == pytest.approx(np.log1p([ring, 0]))  # a group of one moves nothing
    assert list(work[:, 1]) == pytest.approx([ring, 0]) and list(work[:, 0]) == [0, 0]
    assert f["log_bytes_per_rank"] == pytest.approx(np.log1p([1e6 / 8, 1e6])) and list(f["impl"]) == [1, 0]
    f, _ = features("all_gather", query, H200, vocab={"impl": ("nccl",)})
    assert f["log_roofline_us"][0] == pytest.approx(np.log1p(8 + 7 / 8 * 1e6 / NVLINK * 1e6))
    assert list(f["impl"]) == [0, -1]  # an implementation never measured
    f, work = features("p2p", {"bytes": [1e9], "placement": ["inter_node"]}, H200)
    assert list(f) == list(names("p2p")) and f["placement"][0] == 1
    assert work[0, 1] == pytest.approx(H200.network.latency_us + 1e9 / H200.network.bandwidth_bytes_per_s * 1e6)


def test_elementwise():
    query = {"op": ["rmsnorm", "add"], "num_tokens": [100, 100], "hidden": [4096, 4096], "dtype": ["bf16"] * 2}
    f, work = features("elementwise", query, H200, vocab={"op": ("add", "rmsnorm")})
    assert list(f["op"]) == [1, 0] and list(f["elements"]) == [409600] * 2
    traffic = np.array([2.0, 3.0])  # elements read and written per element
    assert work[:, 1] == pytest.approx(409600 * traffic * 2 / HBM * 1e6)
    assert work[:, 0] == pytest.approx([409600 / BF16 * 1e6] * 2)


def test_the_roofline_terms_are_the_roofline_models():
    """The features' FLOPs, bytes and roofline time are the roofline cost model's, for every family."""
    queries = {
        "attention_prefill": attention_query([[512, 100], [7]], [[0, 300], [2000]]),
        "mla_decode": {"num_heads": [16], "kv_lora_rank": [512], "qk_rope_head_dim": [64], "qk_nope_head_dim": [128],
                       "v_head_dim": [128], "dtype": ["bf16"], "kv_dtype": ["bf16"], "q_lens": [np.array([1, 1])],
                       "ctx_lens": [np.array([50, 5000])]},
        "gemm": {"m": [7, 3000], "n": [4096, 512], "k": [128, 14336], "dtype": ["bf16", "fp8"]},
        "moe_grouped_gemm": moe_query([3, 0, 9, 1, 40]),
        "all_to_all": {"bytes": [3e5], "group_size": [16], "placement": ["inter_node"], "impl": ["nccl"]},
        "p2p": {"bytes": [3e7], "placement": ["intra_node"]},
        "elementwise": {"op": ["silu_mul"], "num_tokens": [77], "hidden": [14336], "dtype": ["bf16"]},
    }
    for family, query in queries.items():
        f, _ = features(family, query, H200)
        transfer = family in ("all_to_all", "p2p")
        logged = np.log1p if transfer else np.log
        assert f["log_roofline_us"] == pytest.approx(logged(roofline_us(family, query, H200)), rel=1e-12), family


def test_unknown_categories_are_marked():
    f, _ = features("all_reduce", {"bytes": [1e6], "group_size": [8], "placement": ["intra_node"], "impl": ["nccl"]},
                    H200, vocab={"impl": ("custom",)})
    assert f["impl"][0] == -1
    f, _ = features("gemm", {"m": [1], "n": [1], "k": [1], "dtype": ["bf16"]}, H200)
    assert f["dtype"][0] == DTYPE_CODES["bf16"] == DTYPE_CODES["fp16"]


def test_every_family_has_features():
    assert set(KINDS) == set(FAMILIES)
    with pytest.raises(KeyError, match="unknown operator family"):
        names("attention")


def test_feature_matrix_logs_sizes_and_is_float32_exact():
    X, names_, _ = feature_matrix("gemm", {"m": [127], "n": [4096], "k": [4096], "dtype": ["bf16"]}, H200)
    assert X[0, names_.index("m")] == np.float32(np.log1p(127))
    assert X[0, names_.index("dtype")] == 1 and X[0, names_.index("last_wave_fill")] == np.float32(32 / 132)
    assert X[0, names_.index("log_flops")] == np.float32(np.log1p(2 * 127 * 4096 * 4096))
    assert np.array_equal(X, X.astype(np.float32).astype(float)) and names_ == list(names("gemm"))


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


def test_kv_splits_use_the_tile_of_the_head_size_and_kv_width():
    # head size 192, 8 heads over 8, 600 tokens: 8 x 5 query tiles of 128 rows. 2-byte KV: keys
    # in tiles of 112, 6 tiles; 3 splits fill 91% of a wave. fp8 KV: tiles of 160 keys, 4: no split
    query = attention_query([[600]], [[0]], heads=8, kv_heads=8, head_dim=192, kv_dtype="bf16")
    assert features("attention_prefill", query, H200)[0]["kv_splits"][0] == 3
    assert features("attention_prefill", {**query, "kv_dtype": ["fp8"]}, H200)[0]["kv_splits"][0] == 1
