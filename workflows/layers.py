"""Transformer building blocks that the built-in workflows compose.

Each function traces one block of a decoder layer onto a pool's stream for one
micro-batch and returns the Op that finishes it. Sizes are per GPU: attention
heads and dense FFN columns are split by TP; with attention data parallelism
(``dp`` > 1) each DP rank holds ``1/dp`` of the micro-batch's tokens. With pipeline
parallelism nothing changes here: the tracer puts each layer's ops on its stage's
GPUs and moves the activations between stages (docs/dsl.md).
"""

from __future__ import annotations

from collections.abc import Callable

from frontier_dag.dsl import Builder, MicroBatch, Op, Param, PoolView

#: Bytes per activation element moved between kernels and pools (bf16).
ACTIVATION_BYTES = 2


def rank_tokens(pool: PoolView, mb: MicroBatch):
    """Tokens one attention-DP rank processes (all of them without attention DP)."""
    return mb.tokens if pool.dp == 1 else mb.tokens.ceil_div(pool.dp)


#: The workflow parameter that chooses the all-reduce implementation of TP and MoE sums.
ALL_REDUCE = Param(str, "nccl", "all-reduce implementation: nccl, or auto (the engine's own all-reduce kernel "
                   "where it is faster, NCCL otherwise, as vLLM, SGLang and TensorRT-LLM choose)",
                   choices=("nccl", "auto"))


def all_reduce_impl(g: Builder) -> str:
    """The all-reduce implementation a workflow chose (``use_all_reduce``); nccl by default."""
    return getattr(g, "_all_reduce_impl", "nccl")


def use_all_reduce(g: Builder, impl: str) -> None:
    g._all_reduce_impl = impl


def tp_all_reduce(g: Builder, pool: PoolView, on, name: str, tokens, after: Op) -> Op:
    """Sum the TP shards' partial outputs (nothing to do without TP)."""
    if pool.tp == 1:
        return after
    return g.collective(name, on, "all_reduce", bytes=tokens * g.model.hidden_size * ACTIVATION_BYTES,
                        group=pool.tp, placement=pool.placement(pool.tp), impl=all_reduce_impl(g), after=after)


def embed(g: Builder, pool: PoolView, on, mb: MicroBatch, after: Op | None = None) -> Op:
    with g.weights("embeddings", split=pool.tp):
        return g.elementwise("embedding", on, kind="embedding", tokens=rank_tokens(pool, mb),
                             hidden=g.model.hidden_size, after=after)


def attention(g: Builder, pool: PoolView, on, mb: MicroBatch, after: Op | None, layer: int | None = None) -> Op:
    """Input RMSNorm, QKV projections, attention over the micro-batch's sequences, output
    projection, and the TP all-reduce. In a sliding-window layer (``layer``, by default
    the one ``g.layers()`` is tracing, where the model has a window) each query attends to
    at most the window's keys."""
    with g.weights("attention", split=pool.tp):
        return _attention(g, pool, on, mb, after, g.layer if layer is None else layer)


def _attention(g: Builder, pool: PoolView, on, mb: MicroBatch, after: Op | None, layer: int | None) -> Op:
    m = g.model
    tokens = rank_tokens(pool, mb)
    heads = m.num_heads // pool.tp
    # a decode step that verifies draft tokens attends with each of them: decode kernels
    # (FlashMLA, FlashInfer) fold a sequence's queries into the heads
    queries = heads * mb.queries_per_seq
    window = m.attention_window(layer) if layer is not None else None
    windowed = {"window": window} if window else {}
    x = g.elementwise("input_norm", on, kind="rmsnorm", tokens=tokens, hidden=m.hidden_size, after=after)
    if m.mla is not None:
        mla = m.mla
        qk = mla.qk_nope_head_dim + mla.qk_rope_head_dim
        if mla.q_lora_rank:
            x = g.gemm("q_a_proj", on, m=tokens, n=mla.q_lora_rank, k=m.hidden_size, after=x)
            x = g.gemm("q_b_proj", on, m=tokens, n=heads * qk, k=mla.q_lora_rank, after=x)
        else:
            x = g.gemm("q_proj", on, m=tokens, n=heads * qk, k=m.hidden_size, after=x)
        x = g.gemm("kv_a_proj", on, m=tokens, n=mla.kv_lora_rank + mla.qk_rope_head_dim, k=m.hidden_size, after=x)
        x = g.compute("attention", on, "mla", batch=mb, after=x, dp_ranks=pool.dp, num_heads=queries,
                      kv_lora_rank=mla.kv_lora_rank, qk_nope_head_dim=mla.qk_nope_head_dim,
                      qk_rope_head_dim=mla.qk_rope_head_dim, v_head_dim=mla.v_head_dim,
                      dtype="bf16", kv_dtype=m.kv_cache_dtype)
        x = g.gemm("o_proj", on, m=tokens, n=m.hidden_size, k=heads * mla.v_head_dim, after=x)
    else:
        kv_heads = max(1, m.num_kv_heads // pool.tp)
        x = g.gemm("qkv_proj", on, m=tokens, n=(heads + 2 * kv_heads) * m.head_dim, k=m.hidden_size, after=x)
        x = g.compute("attention", on, "attention", batch=mb, after=x, dp_ranks=pool.dp, num_heads=queries,
                      num_kv_heads=kv_heads, head_dim=m.head_dim, dtype="bf16", kv_dtype=m.kv_cache_dtype,
                      **windowed)
        x = g.gemm("o_proj", on, m=tokens, n=m.hidden_size, k=heads * m.head_dim, after=x)
    return tp_all_reduce(g, pool, on, "attn_all_reduce", tokens, x)


def dense_ffn(g: Builder, pool: PoolView, on, mb: MicroBatch, after: Op | None, *, width: int | None = None,
              tp: int | None = None, prefix: str = "", reduce: bool = True, tokens=None) -> Op:
    """Gated MLP: gate/up projection, SiLU-and-multiply, down projection, TP all-reduce.
    ``width`` defaults to the model's dense FFN width, ``tp`` to the pool's, ``tokens``
    (each GPU's) to the micro-batch's tokens of one attention-DP rank."""
    m = g.model
    tp = tp or pool.tp
    shard = (width or m.intermediate_size) // tp
    tokens = rank_tokens(pool, mb) if tokens is None else tokens
    gates = 2 if m.gated_ffn else 1
    with g.weights("shared_experts" if prefix == "shared_" else "dense_ffn", split=tp):
        x = g.gemm(f"{prefix}gate_up_proj", on, m=tokens, n=gates * shard, k=m.hidden_size, after=after)
        x = g.elementwise(f"{prefix}act", on, kind="silu_mul", tokens=tokens, hidden=shard, after=x)
        x = g.gemm(f"{prefix}down_proj", on, m=tokens, n=m.hidden_size, k=shard, after=x)
    if reduce and tp > 1:
        x = g.collective(f"{prefix}ffn_all_reduce", on, "all_reduce", bytes=tokens * m.hidden_size * ACTIVATION_BYTES,
                         group=tp, placement=pool.placement(tp), impl=all_reduce_impl(g), after=x)
    return x


def router(g: Builder, pool: PoolView, on, mb: MicroBatch, after: Op | None) -> Op:
    """The gate that scores experts for every token."""
    with g.weights("experts"):
        return g.gemm("router", on, m=rank_tokens(pool, mb), n=g.model.moe.num_experts, k=g.model.hidden_size,
                      dtype="bf16", after=after)


def shared_experts(g: Builder, pool: PoolView, on, mb: MicroBatch, after: Op, *, whole_per_gpu: bool = False) -> Op:
    """The shared experts. Split by the pool's TP like a dense FFN, their partial sums left
    for the MoE layer's final all-reduce (or reduce-scatter) to add up with the routed
    experts'; or, ``whole_per_gpu`` (expert parallelism with all-to-alls, whose combine
    returns only the routed experts' output), whole on every GPU on the tokens that GPU
    dispatches, as DeepEP deployments run them (SGLang's moe_dense_tp_size 1)."""
    if g.model.moe.shared_size == 0:
        return after
    if whole_per_gpu:
        gpus = pool.gpus_per_stage
        return dense_ffn(g, pool, on, mb, after, width=g.model.moe.shared_size, prefix="shared_", tp=1,
                         tokens=mb.tokens if gpus == 1 else mb.tokens.ceil_div(gpus))
    return dense_ffn(g, pool, on, mb, after, width=g.model.moe.shared_size, prefix="shared_", reduce=False)


def tp_moe(g: Builder, pool: PoolView, on, mb: MicroBatch, layer: int, after: Op | None) -> Op:
    """A MoE layer whose experts are all on every GPU, each split by TP (no expert parallelism):
    router, shared experts, one grouped GEMM over all experts, TP all-reduce."""
    moe = g.model.moe
    x = router(g, pool, on, mb, after)
    x = shared_experts(g, pool, on, mb, x)
    with g.weights("experts"):
        x = g.compute("experts", on, "moe_grouped_gemm", routing=(mb, layer, 0), after=x,
                      num_tokens=mb.tokens, hidden=g.model.hidden_size,
                      inter=moe.expert_intermediate_size // pool.gpus_per_stage, num_experts=moe.num_experts,
                      topk=moe.top_k, ep=1, moe_tp=pool.gpus_per_stage, dtype=g.model.moe_dtype or g.model.dtype)
    group = pool.gpus_per_stage
    if group == 1:
        return x
    return g.collective("moe_all_reduce", on, "all_reduce", bytes=mb.tokens * g.model.hidden_size * ACTIVATION_BYTES,
                        group=group, placement=pool.placement(group), impl=all_reduce_impl(g), after=x)


MoEBlock = Callable[[Builder, PoolView, object, MicroBatch, int, Op | None], Op]


def moe_block_for(pool: PoolView, impl: str = "deepep_normal") -> MoEBlock:
    """Expert parallelism when the pool has ``ep`` > 1, otherwise experts split by TP."""
    if pool.ep > 1:
        from frontier_dag.workflows.ep_moe import ep_moe_block

        return ep_moe_block(impl)
    return tp_moe


def ffn(g: Builder, pool: PoolView, on, mb: MicroBatch, layer: int, after: Op | None, moe_block: MoEBlock | None = None) -> Op:
    """The FFN half of decoder layer ``layer``: dense, or MoE through ``moe_block`` (by
    default chosen by the pool's ``ep``)."""
    x = g.elementwise("post_attention_norm", on, kind="rmsnorm", tokens=rank_tokens(pool, mb),
                      hidden=g.model.hidden_size, after=after)
    if g.model.is_moe_layer(layer):
        return (moe_block or moe_block_for(pool))(g, pool, on, mb, layer, x)
    return dense_ffn(g, pool, on, mb, x)


def lm_head(g: Builder, pool: PoolView, on, mb: MicroBatch, after: Op) -> Op:
    """Final norm, logits for one token per sequence, and sampling."""
    m = g.model
    seqs = mb.seqs if pool.dp == 1 else mb.seqs.ceil_div(pool.dp)
    with g.weights("embeddings", split=pool.tp):
        x = g.elementwise("final_norm", on, kind="rmsnorm", tokens=seqs, hidden=m.hidden_size, after=after)
        x = g.gemm("lm_head", on, m=seqs, n=m.vocab_size // pool.tp, k=m.hidden_size, dtype="bf16", after=x)
        return g.elementwise("sampling", on, kind="sampling", tokens=seqs, hidden=m.vocab_size // pool.tp, after=x)


def decoder(g: Builder, pool: PoolView, on, mb: MicroBatch, after: Op | None = None, moe_block: MoEBlock | None = None) -> Op:
    """A whole forward pass of one micro-batch on one pool: embedding, every layer, lm head."""
    x = embed(g, pool, on, mb, after)
    for layer in g.layers():
        x = attention(g, pool, on, mb, x, layer)
        x = ffn(g, pool, on, mb, layer, x, moe_block)
    return lm_head(g, pool, on, mb, x)


def kv_bytes_per_token(g: Builder, pool: PoolView, layers: int | None = None):
    """KV-cache bytes of one token that one GPU of ``pool`` sends (its KV-head shard of
    ``layers`` layers; by default of all the layers its GPUs hold: with pipeline parallelism
    each stage sends its own layers' KV at once, and the largest stage sets the pace)."""
    m = g.model
    shards = 1 if m.mla is not None else min(pool.tp, m.num_kv_heads)
    per_layer = m.kv_bytes_per_token_per_layer / shards
    if layers is None:
        layers = m.num_layers if pool.pp == 1 else max(pool.stage_layers(m.num_layers))
    return per_layer * layers
