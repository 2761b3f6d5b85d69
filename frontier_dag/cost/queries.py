"""The operator families and the columns of a cost query for each.

This is the contract between the IR (which builds queries from an iteration's
batch) and every cost model (roofline, fitted predictors). The profile schema of
``frontier_dag.predictors.schema`` uses the same input columns, so a profile row is
a query with a measured latency.

A query batch is a mapping from column name to a sequence with one entry per
row: numbers for scalar columns, strings for categorical ones, and 1-D integer
arrays for the ragged columns (``q_lens``, ``ctx_lens``, ``expert_tokens``).

Attention lengths: ``q_lens[i]`` is the number of new tokens of sequence i in this
iteration (1 for a decode step, the chunk for a prefill chunk) and ``ctx_lens[i]``
the tokens already in its KV cache before the iteration; sequence i attends to
``ctx_lens[i] + q_lens[i]`` keys. Shapes are per GPU (after TP/EP sharding).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

ATTENTION_FAMILIES = ("attention_prefill", "attention_decode", "attention_mixed")
MLA_FAMILIES = ("mla_prefill", "mla_decode")
COLLECTIVE_FAMILIES = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all")
#: One EP rank's routed experts: the fused/grouped MoE kernels, and the wide-EP kernels that
#: run behind DeepEP (normal mode: prefill, contiguous grouped GEMM; low-latency mode: decode,
#: masked grouped GEMM), measured apart by aiconfigurator-core (docs/profile-schema.md).
MOE_FAMILIES = ("moe_grouped_gemm", "moe_wideep_prefill", "moe_wideep_decode")
#: The wide-EP expert family behind each DeepEP mode (a collective's ``impl``).
WIDEEP_FAMILY_OF_IMPL = {"deepep_normal": "moe_wideep_prefill", "deepep_ll": "moe_wideep_decode"}
#: DeepEP's all-to-alls around wide-EP experts, by phase: priced on the tokens and the model's
#: shape (the message alone does not tell one shape from another), ``impl`` the DeepEP mode.
DEEPEP_FAMILIES = ("deepep_dispatch", "deepep_combine")
#: Bytes per element DeepEP moves in each phase: dispatch sends FP8 activations (their
#: per-128 scales left out), combine returns BF16 (the SGLang tables' bandwidth columns agree).
DEEPEP_WIDTH = {"deepep_dispatch": 1.0, "deepep_combine": 2.0}

#: Every operator family, in the order reports list them.
FAMILIES: tuple[str, ...] = (
    *ATTENTION_FAMILIES, *MLA_FAMILIES, "gemm", *MOE_FAMILIES,
    *COLLECTIVE_FAMILIES, *DEEPEP_FAMILIES, "p2p", "elementwise",
)

_ATTN = ("num_heads", "num_kv_heads", "head_dim", "dtype", "kv_dtype", "q_lens", "ctx_lens")
_MLA = ("num_heads", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
        "dtype", "kv_dtype", "q_lens", "ctx_lens")
_COLL = ("bytes", "group_size", "placement", "impl")

#: Input columns of each family's queries (and profiles).
QUERY_COLUMNS: dict[str, tuple[str, ...]] = {
    **{f: _ATTN for f in ATTENTION_FAMILIES},
    **{f: _MLA for f in MLA_FAMILIES},
    # m tokens x k in-features -> n out-features
    "gemm": ("m", "n", "k", "dtype"),
    # One EP rank's experts: expert_tokens[j] tokens reach its j-th local expert.
    # num_tokens is the tokens entering the layer across the EP group, before top-k routing.
    **dict.fromkeys(MOE_FAMILIES, ("num_tokens", "hidden", "inter", "num_experts", "topk", "ep", "moe_tp",
                                   "dtype", "expert_tokens")),
    # bytes are each GPU's message; placement is intra_node or inter_node;
    # impl names the implementation: nccl, custom (one-shot/two-shot all-reduce), and DeepEP's
    # all-to-alls by mode and phase: deepep_ll_dispatch, deepep_ll_combine, deepep_normal_dispatch, ...
    **{f: _COLL for f in COLLECTIVE_FAMILIES},
    # num_tokens: the tokens each rank sends (before top-k copies); group_size: the EP ranks;
    # impl: deepep_ll (low-latency, decode) or deepep_normal (prefill)
    **dict.fromkeys(DEEPEP_FAMILIES, ("num_tokens", "hidden", "topk", "num_experts", "group_size", "placement",
                                      "impl")),
    "p2p": ("bytes", "placement"),
    # op: rmsnorm, silu_mul, rope, add, embedding, sampling, router, ...; num_tokens x hidden elements
    "elementwise": ("op", "num_tokens", "hidden", "dtype"),
}

#: Where an iteration's time goes: the categories its critical path is attributed to.
CATEGORIES = ("attention", "dense_gemm", "moe_experts", "elementwise", "collectives", "transfers",
              "waits_and_bubbles", "host_overhead")
#: The category of each template family (``attention`` and ``mla`` are the DSL's dynamic families).
CATEGORY_OF_FAMILY = {
    **dict.fromkeys((*ATTENTION_FAMILIES, *MLA_FAMILIES, "attention", "mla"), "attention"),
    "gemm": "dense_gemm", **dict.fromkeys(MOE_FAMILIES, "moe_experts"), "elementwise": "elementwise",
    **dict.fromkeys((*COLLECTIVE_FAMILIES, *DEEPEP_FAMILIES), "collectives"), "p2p": "transfers", "sync": "waits_and_bubbles",
}

RAGGED_COLUMNS = frozenset({"q_lens", "ctx_lens", "expert_tokens"})
CATEGORICAL_COLUMNS = frozenset({"dtype", "kv_dtype", "placement", "impl", "op"})


def attention_family(q_lens: Sequence[int]) -> str:
    """attention_decode when every sequence has one new token, attention_prefill when none
    has, attention_mixed otherwise."""
    decode = sum(1 for q in q_lens if q == 1)
    if decode == len(q_lens):
        return "attention_decode"
    return "attention_prefill" if decode == 0 else "attention_mixed"


def check_query(family: str, query: Mapping[str, Any]) -> int:
    """Number of rows of ``query``; raise KeyError naming a missing column."""
    columns = QUERY_COLUMNS[family]
    missing = [c for c in columns if c not in query]
    if missing:
        raise KeyError(f"{family} query lacks column(s) {', '.join(missing)}")
    sizes = {len(query[c]) for c in columns}
    if len(sizes) > 1:
        raise ValueError(f"{family} query columns have different lengths {sorted(sizes)}")
    return sizes.pop() if sizes else 0
