"""Multi-token prediction (MTP), DeepSeek-V3's speculative decoding, as SGLang and
TensorRT-LLM run it.

Every decode iteration verifies the draft tokens of the previous one and drafts the next:

* verification: the target model runs each sequence's last token and its ``d`` draft
  tokens together, ``1 + d`` tokens per sequence through every GEMM, MoE layer and the LM
  head; attention folds a sequence's ``1 + d`` queries into the heads, as FlashMLA's decode
  kernel does;
* drafting: the MTP module runs ``d`` times, one token per sequence each: the embedding,
  two RMSNorms, the projection of [embedding; hidden state] back to the hidden size, one
  decoder layer and the shared LM head.

Draft token ``i`` is accepted when it and every draft before it are (``acceptance[i]`` is
its chance given the ones before), so an iteration emits
``1 + a_1 + a_1 a_2 + ...`` tokens per sequence on average. The simulator counts that
many tokens per iteration in TPOT and throughput (``g.speculate``), on average: every
sequence advances alike, and a request's TPOT does not vary with its own acceptances.

Priced with one approximation: the MTP module's decoder layer is the model's last layer,
and its MoE FFN (router, shared and routed experts, dispatch and combine) is priced at the
verification's tokens (``1 + d`` per sequence, the verification's routing draw), an upper
bound for that one layer per draft token.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

from frontier_dag.dsl import Builder, MicroBatch, Op, Param, PoolView
from frontier_dag.errors import ConfigError
from frontier_dag.workflows.layers import MoEBlock, attention, ffn, lm_head, rank_tokens

MTP = Param(dict, {}, "multi-token prediction (speculative decoding) on the decode pool: {draft_tokens: d, "
            "acceptance: a or [a_1, ..., a_d]} (a_i: the chance that draft token i is accepted when the ones "
            "before it are); {} or draft_tokens 0: none")


@dataclass(frozen=True)
class Speculation:
    draft_tokens: int
    acceptance: tuple[float, ...]

    @staticmethod
    def parse(value: dict | None, where: str = "workflow.params.mtp") -> Speculation | None:
        value = dict(value or {})
        unknown = set(value) - {"draft_tokens", "acceptance"}
        if unknown:
            raise ConfigError(f"{where}.{sorted(unknown)[0]}: unknown key; mtp takes draft_tokens and acceptance")
        draft = value.get("draft_tokens", 0)
        if not isinstance(draft, int) or isinstance(draft, bool) or draft < 0:
            raise ConfigError(f"{where}.draft_tokens: a whole number >= 0, got {draft!r}")
        if draft == 0:
            return None
        if "acceptance" not in value:
            raise ConfigError(f"{where}.acceptance: MTP with {draft} draft tokens needs their acceptance rate "
                              "(DeepSeek reports 0.85-0.9 for the first draft token), e.g. acceptance: 0.8")
        rates = value["acceptance"]
        rates = [rates] * draft if isinstance(rates, int | float) else list(rates)
        if len(rates) != draft or not all(isinstance(a, int | float) and 0 <= a <= 1 for a in rates):
            raise ConfigError(f"{where}.acceptance: one rate in [0, 1], or a list of {draft} rates in [0, 1] (one "
                              f"per draft token), got {value['acceptance']!r}")
        return Speculation(draft, tuple(float(a) for a in rates))

    @property
    def queries_per_seq(self) -> int:
        """Tokens each sequence runs through the target model per iteration."""
        return 1 + self.draft_tokens

    @property
    def tokens_per_step(self) -> float:
        """Tokens each sequence emits per iteration on average: the verified token and the
        accepted drafts."""
        return 1 + sum(prod(self.acceptance[: i + 1]) for i in range(self.draft_tokens))


class Verification(MicroBatch):
    """A decode micro-batch as the verification sees it: ``1 + d`` tokens per sequence."""

    def __init__(self, mb: MicroBatch, queries_per_seq: int):
        super().__init__(mb.stage, mb.index)
        self.queries_per_seq = queries_per_seq
        self.tokens = mb.tokens * queries_per_seq
        self.seqs = mb.seqs * queries_per_seq  # logits at every verified position


def draft(g: Builder, pool: PoolView, on, mb: MicroBatch, verified: MicroBatch, after, spec: Speculation,
          moe_block: MoEBlock | None = None) -> Op:
    """The MTP module run ``spec.draft_tokens`` times after the verification ``after``, one
    token per sequence each."""
    m = g.model
    layer = m.num_layers - 1
    x = after
    for _ in range(spec.draft_tokens):
        tokens = rank_tokens(pool, mb)
        with g.weights("embeddings", split=pool.tp):
            x = g.elementwise("mtp_embedding", on, kind="embedding", tokens=tokens, hidden=m.hidden_size, after=x)
        x = g.elementwise("mtp_norms", on, kind="rmsnorm", tokens=tokens * 2, hidden=m.hidden_size, after=x)
        with g.weights("attention", split=pool.tp):
            x = g.gemm("mtp_eh_proj", on, m=tokens, n=m.hidden_size, k=2 * m.hidden_size, after=x)
        x = attention(g, pool, on, mb, x, layer)
        # the MoE FFN at the verification's tokens and routing draw (see the module's docstring)
        x = ffn(g, pool, on, verified if m.is_moe_layer(layer) else mb, layer, x, moe_block)
        x = lm_head(g, pool, on, mb, x)
    return x
