"""SGLang's scheduler: prefill batches first, decode batches otherwise, never mixed.

Whenever prompts are in prefill or the next waiting request can be admitted, the next
iteration is a prefill batch (the partial prompts' next chunks, then new prompts within the
token budget) and the running decodes wait; a request is admitted only when the KV of its
whole prompt fits (a prompt admitted on its first chunk could be preempted by its own next
chunk, again and again, while prefill-first starves the decodes that hold the memory) and,
with ``reserve_output`` (SGLang's ``new_token_ratio``), the reserved share of the running
requests' outputs. When nothing can be prefilled the replica decodes.
"""

from __future__ import annotations

from frontier_dag.sim.policies import register
from frontier_dag.sim.policies.base import SchedulingPolicy


@register
class SGLangPolicy(SchedulingPolicy):
    name = "sglang"

    def prefill_first(self) -> bool:
        return bool(self.replica.prefilling or self._can_admit())

    def admits(self, prefill_first: bool) -> bool:
        return prefill_first

    def checks_admission(self) -> bool:
        return True

    def admission_tokens(self, prompt: int) -> int:
        return prompt

    def _can_admit(self) -> bool:
        """Whether the first waiting request's prompt (and reservation) fits now."""
        r = self.replica
        if not r.waiting or r.running + r.inbound >= self.limits.max_seqs:  # inbound KV holds seats
            return False
        rid = r.waiting[0]
        t = r.table
        prompt, left = int(t.prompt[rid] + t.generated[rid]), int(t.output[rid] - t.generated[rid])
        return r.kv.can_allocate(self.admission_blocks(prompt, left, self.reserved()))
