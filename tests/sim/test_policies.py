"""Scheduling policies: a policy of one's own is one class in one file, registered and
simulated end to end; TensorRT-LLM's policy is vLLM's batching with every output reserved;
the registry says which names it knows."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from frontier_dag.errors import ConfigError
from frontier_dag.sim.assembly import assemble
from frontier_dag.sim.policies import POLICIES, build_policy, register
from frontier_dag.sim.policies.base import SchedulingPolicy
from frontier_dag.sim.run import simulate
from tests.conftest import TINY_DENSE, FakeCostModel, make_config

FAST = FakeCostModel(constant={"gemm": 20.0, "attention": 10.0, "p2p": 5.0, "all": 2.0},
                     per_unit={"gemm": 0.05, "attention": 0.02, "p2p": 1e-6})
DOCS = Path(__file__).resolve().parents[2] / "docs"


@register
class ShortestJobFirst(SchedulingPolicy):
    """Admits the waiting request with the fewest output tokens first (an oracle's SJF)."""

    name = "test_shortest_job_first"

    def order_waiting(self) -> None:
        waiting, output = self.replica.waiting, self.replica.table.output
        ordered = sorted(waiting, key=lambda rid: (output[rid], rid))
        waiting.clear()
        waiting.extend(ordered)


def burst(policy: str, **scheduler):
    """Twelve requests at once into a replica that runs one sequence at a time: the policy
    alone decides the order they are served in."""
    workload = {"clients": 12, "num_requests": 12, "prompt_tokens": {"kind": "uniform", "low": 20, "high": 400},
                "output_tokens": {"kind": "uniform", "low": 2, "high": 60}}
    cfg = make_config(TINY_DENSE, {"main": {"role": "colocated", "gpus": 1}}, "colocated", workload=workload,
                      scheduler={"policy": policy, "max_num_seqs": 1, **scheduler}, seed=3)
    return simulate(assemble(cfg, cost_model=FAST)).requests


def test_a_policy_of_ones_own_is_registered_and_decides_the_order():
    fcfs, sjf = burst("vllm"), burst("test_shortest_job_first")
    served = lambda rq: rq.sort_values("first_scheduled_s")["request_id"].tolist()  # noqa: E731
    assert served(fcfs) == list(range(12))  # as they arrived
    order = served(sjf)
    # request 0 arrives alone and starts at once; the others waited together, shortest output first
    assert order[0] == 0 and order[1:] == sorted(order[1:], key=lambda r: (sjf["output_tokens"][r], r))
    assert order != served(fcfs)
    # the shortest jobs finish sooner, the longest later
    short = sjf["output_tokens"].to_numpy() <= np.median(sjf["output_tokens"])
    assert sjf["e2e_ms"][short].mean() < fcfs["e2e_ms"][short].mean()
    assert "test_shortest_job_first" in POLICIES


def test_the_policy_of_docs_simulation_md_runs():
    text = (DOCS / "simulation.md").read_text()
    section = text[text.index("## Scheduling policies"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "docs/simulation.md", "exec"), namespace)
    name = next(v.name for v in namespace.values() if isinstance(v, type) and issubclass(v, SchedulingPolicy)
                and v is not SchedulingPolicy)
    rq = burst(name)
    order = rq.sort_values("first_scheduled_s")["request_id"].tolist()
    assert order[0] == 0 and order[1:] == sorted(order[1:], key=lambda r: (rq["prompt_tokens"][r], r))
    assert order != list(range(12))


def test_trtllm_is_vllm_batching_with_every_output_reserved():
    def run(**scheduler):
        cfg = make_config(TINY_DENSE, {"main": {"role": "colocated", "gpus": 1, "kv_capacity_tokens": 900}}, "colocated",
                          workload={"arrival": {"kind": "poisson", "rate_per_s": 400.0}, "num_requests": 40,
                                    "prompt_tokens": {"kind": "fixed", "value": 200},
                                    "output_tokens": {"kind": "fixed", "value": 150}},
                          scheduler={"chunked_prefill": False, **scheduler})
        return simulate(assemble(cfg, cost_model=FAST))

    trtllm, reserved = run(policy="trtllm"), run(policy="vllm", reserve_output=1.0)
    assert trtllm.summary["preemptions"] == 0 < run(policy="vllm").summary["preemptions"]
    assert trtllm.requests.equals(reserved.requests)
    assert trtllm.iterations.equals(reserved.iterations)


@pytest.mark.parametrize(("setting", "key"), [({"reserve_output": 0.7}, "reserve_output"),
                                              ({"decode_reserve_tokens": 512}, "decode_reserve_tokens"),
                                              ({"max_prefill_tokens": 4000}, "max_prefill_tokens")])
def test_trtllm_refuses_the_settings_of_other_engines(setting, key):
    cfg = make_config(TINY_DENSE, {"main": {"role": "colocated", "gpus": 1}}, "colocated",
                      scheduler={"policy": "trtllm", **setting})
    with pytest.raises(ConfigError, match=f"scheduler.{key}"):
        build_policy(cfg.scheduler, cfg.cluster.pools["main"])


def test_an_unknown_policy_names_the_known_ones():
    cfg = make_config(TINY_DENSE, {"main": {"role": "colocated", "gpus": 1}}, "colocated",
                      scheduler={"policy": "fifo"})
    with pytest.raises(ConfigError, match="unknown policy 'fifo'; known: .*sglang, .*trtllm, .*vllm"):
        simulate(assemble(cfg, cost_model=FAST))


def test_policies_scale_their_limits_with_attention_dp_and_role():
    cfg = make_config(TINY_DENSE, {"prefill": {"role": "prefill", "gpus": 1}, "decode": {"role": "decode", "gpus": 1}},
                      "pd", scheduler={"policy": "sglang", "reserve_output": 0.7, "decode_reserve_tokens": 512})
    prefill = build_policy(cfg.scheduler, cfg.cluster.pools["prefill"]).limits
    decode = build_policy(cfg.scheduler, cfg.cluster.pools["decode"]).limits
    assert (prefill.reserve_output, prefill.reserve_tokens) == (0.0, 0)  # a prefill replica keeps no outputs
    assert (decode.reserve_output, decode.reserve_tokens) == (0.7, 512)
