"""Routing between entry pools: the strategy (g.entry) or the config (cluster.entry) says
which pools new requests enter and a rule picks one; both pools of a mixed strategy work,
and the split follows the rule; a pool that can never receive work is an error before
the run, one that stayed idle a warning after it."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from frontier_dag.dsl.entry import ByPromptLength, LeastOutstandingTokens, RoundRobin
from frontier_dag.errors import ConfigError, SimulationError, WorkflowError
from frontier_dag.sim.assembly import assemble
from frontier_dag.sim.run import simulate
from tests.conftest import TINY_DENSE, FakeCostModel, make_config
from tests.sim.test_simulator import check_invariants

FAST = FakeCostModel(constant={"gemm": 20.0, "attention": 10.0, "p2p": 5.0, "moe": 10.0, "all": 2.0},
                     per_unit={"gemm": 0.05, "attention": 0.02, "moe": 0.05, "p2p": 1e-6})
POOLS = {"prefill": {"role": "prefill", "gpus": 1}, "decode": {"role": "decode", "gpus": 1}}


def mixed_load(n=200, low=16, high=2048, rate=200.0, output=16):
    return {"arrival": {"kind": "poisson", "rate_per_s": rate}, "num_requests": n,
            "prompt_tokens": {"kind": "uniform", "low": low, "high": high},
            "output_tokens": {"kind": "fixed", "value": output}}


def hybrid(threshold=512, entry=None, workflow=None, **extra):
    cluster = {"entry": entry} if entry else {}
    cfg = make_config(TINY_DENSE, POOLS, "hybrid_pd", {"threshold": threshold},
                      **{"workload": mixed_load(), **extra})
    if cluster or workflow:
        data = cfg.model_dump(mode="json", exclude_none=True)
        data["cluster"].update(cluster)
        if workflow:
            data["workflow"] = workflow
        from frontier_dag.config.run import run_config_from_dict
        cfg = run_config_from_dict(data, source="test-config")
    return cfg


def run(cfg):
    return simulate(assemble(cfg, cost_model=FAST))


def test_both_pools_work_and_the_split_follows_the_prompt_length():
    result = run(hybrid(threshold=512))
    check_invariants(result)
    req, s = result.requests, result.summary
    short = req["prompt_tokens"].to_numpy() < 512
    assert 0.1 < short.mean() < 0.5
    assert (req["prefill_pool"].astype(str).to_numpy() == np.where(short, "decode", "prefill")).all()
    assert s["entry"] == {"rule": "by_prompt_length(threshold=512, short=decode, long=prefill)",
                          "requests": {"decode": int(short.sum()), "prefill": int((~short).sum())}}
    assert s["utilization"]["prefill"] > 0.05 and s["utilization"]["decode"] > 0.05
    # a short prompt is prefilled where it decodes: its KV never moves; a long one's does
    assert (req.loc[short, "decode_replica"] == -1).all() and req.loc[short, "transfer_start_s"].isna().all()
    assert (req.loc[~short, "decode_replica"] >= 0).all() and req.loc[~short, "transfer_end_s"].notna().all()
    # the prefill pool computed the long prompts, the decode pool the short ones and every decode step
    it = result.iterations
    assert it.loc[it["pool"] == "prefill", "prefill_tokens"].sum() == req.loc[~short, "prompt_tokens"].sum()
    assert it.loc[it["pool"] == "decode", "prefill_tokens"].sum() == req.loc[short, "prompt_tokens"].sum()
    assert it.loc[it["pool"] == "prefill", "decode_seqs"].sum() == 0
    assert s["warnings"] == ""


def test_the_config_overrides_the_workflows_rule():
    result = run(hybrid(entry={"rule": "round_robin"}))
    check_invariants(result)
    # requests arrive in id order, and round robin alternates in the order declared
    entered = result.requests.sort_values("arrival_s")["prefill_pool"].astype(str).to_list()
    assert entered == [("decode", "prefill")[i % 2] for i in range(len(entered))]
    assert result.summary["entry"]["rule"] == "round_robin()"


def test_the_configs_threshold_replaces_the_workflows():
    result = run(hybrid(threshold=512, entry={"params": {"threshold": 1500}}))
    req = result.requests
    short = req["prompt_tokens"].to_numpy() < 1500
    assert (req["prefill_pool"].astype(str).to_numpy() == np.where(short, "decode", "prefill")).all()


def test_least_outstanding_tokens_balances_the_pools():
    result = run(hybrid(entry={"rule": "least_outstanding_tokens"}))
    check_invariants(result)
    counts = result.summary["entry"]["requests"]
    assert counts["decode"] > 0 and counts["prefill"] > 0 and sum(counts.values()) == 200


def test_the_rules_choose_as_documented():
    class Pool:
        def __init__(self, role, tokens, replicas=1):
            self.role, self.outstanding_tokens, self.replicas = role, tokens, replicas

    class Request:
        def __init__(self, prompt):
            self.prompt_tokens = prompt

    d, p = Pool("decode", 900), Pool("prefill", 1000, replicas=2)
    rr = RoundRobin()
    assert [rr(Request(1), [d, p]) for _ in range(3)] == [d, p, d]
    assert LeastOutstandingTokens()(Request(1), [d, p]) is p  # 500 per replica
    assert LeastOutstandingTokens()(Request(1), [Pool("decode", 0), Pool("prefill", 0)]).role == "decode"  # a tie
    rule = ByPromptLength(threshold=100, short="decode", long="prefill")
    assert rule(Request(99), [d, p]) is d and rule(Request(100), [d, p]) is p


WORKFLOW = """
    from frontier_dag.dsl import workflow
    from frontier_dag.workflows.layers import decoder
    from frontier_dag.workflows.pd import prefill_and_transfer

    SEEN = []

    def quieter(request, pools):
        SEEN.append((request.prompt_tokens, [(p.name, p.queued, p.running, p.kv_free_tokens) for p in pools]))
        return min(pools, key=lambda p: p.queued + p.running)

    @workflow("quiet_pd", "a mixed pool entered by the quieter pool")
    def quiet_pd(g):
        decode = g.pool("decode")
        sent = prefill_and_transfer(g, "decode")
        with g.stage("decode", pools=["decode"], serves="both") as st:
            decoder(g, decode, g.stream("decode"), st.mb, after=sent)
        g.entry(pools=["decode", "prefill"], rule=quieter)
"""


def workflow_file(tmp_path, body=WORKFLOW, name="quiet_pd"):
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return {"name": name, "path": str(path)}


def test_a_rule_of_your_own_reads_the_pools_state(tmp_path):
    result = run(hybrid(workflow=workflow_file(tmp_path)))
    check_invariants(result)
    counts = result.summary["entry"]["requests"]
    assert counts["decode"] > 0 and counts["prefill"] > 0
    assert result.summary["entry"]["rule"].startswith("quieter(")


def test_a_rule_that_returns_no_entry_pool_is_an_error_naming_the_request(tmp_path):
    body = WORKFLOW.replace("return min(pools, key=lambda p: p.queued + p.running)", "return 'ffn'")
    with pytest.raises(SimulationError, match=r"returned 'ffn' for request 0; a rule returns one of the pools"):
        run(hybrid(workflow=workflow_file(tmp_path, body)))


def test_a_rule_that_fails_names_the_rule_and_the_request(tmp_path):
    body = WORKFLOW.replace("return min(pools, key=lambda p: p.queued + p.running)", "return 1 / 0")
    with pytest.raises(SimulationError, match=r"entry rule quieter\(\) .*quiet_pd.py:\d+\) failed for request 0 "
                                              r"\(prompt \d+ tokens\): ZeroDivisionError"):
        run(hybrid(workflow=workflow_file(tmp_path, body)))


@pytest.mark.parametrize(("entry", "message"), [
    ({"pools": ["decode"], "rule": "round_robin"}, r"pool prefill \(stage 'prefill', serves prefill\) can never receive work: it only "
                            r"prefills, and requests do not enter it\. Add prefill to cluster.entry.pools"),
    ({"pools": ["prefill", "ffn"]}, r"entry.pools names 'ffn', which is not a pool of cluster.pools"),
    ({"rule": "fastest"}, r"rule='fastest' is not a built-in rule; built-in rules are round_robin, "
                          r"least_outstanding_tokens, by_prompt_length"),
    ({"rule": "round_robin", "params": {"threshold": 3}}, r"rule 'round_robin' has no parameter 'threshold'"),
    ({"params": {"threshold": 0}}, r"threshold=0 must be a whole number of prompt tokens >= 1"),
    ({"params": {"short": "prefill"}}, r"short and long are both 'prefill'"),
])
def test_an_entry_that_cannot_work_is_a_config_error(entry, message):
    with pytest.raises(ConfigError, match=message):
        assemble(hybrid(entry=entry), cost_model=FAST)


def test_a_threshold_outside_the_prompts_leaves_a_pool_without_work():
    with pytest.raises(WorkflowError, match=r"hybrid_pd.py:\d+: g.entry: pool prefill can never receive work: "
                                            r"by_prompt_length\(threshold=4096, .*\) sends no prompt of "
                                            r"workload.prompt_tokens \(uniform, 16 to 2,048 tokens\) to it"):
        assemble(hybrid(threshold=4096), cost_model=FAST)


TWO_ENTRIES = """
    from frontier_dag.dsl import workflow
    from frontier_dag.workflows.layers import decoder
    from frontier_dag.workflows.pd import prefill_and_transfer

    @workflow("two_doors", "prefills on both pools, entry not said")
    def two_doors(g):
        decode = g.pool("decode")
        sent = prefill_and_transfer(g, "decode")
        with g.stage("decode", pools=["decode"], serves="both") as st:
            decoder(g, decode, g.stream("decode"), st.mb, after=sent)
"""


def test_two_pools_that_prefill_without_an_entry_is_an_error_at_the_stage(tmp_path):
    """It used to send every request to the last of them, the other pool idle but counted."""
    with pytest.raises(WorkflowError, match=r"two_doors.py:10: pools prefill \(stage prefill, serves prefill\), decode "
                                            r"\(stage decode, serves both\) can all prefill new requests.*"
                                            r"g.entry\(pools=\['prefill', 'decode'\]"):
        assemble(hybrid(workflow=workflow_file(tmp_path, TWO_ENTRIES, "two_doors")), cost_model=FAST)
    # the config may say it instead
    result = run(hybrid(workflow=workflow_file(tmp_path, TWO_ENTRIES, "two_doors"),
                        entry={"pools": ["decode", "prefill"], "rule": "round_robin"}))
    assert result.summary["entry"]["requests"] == {"decode": 100, "prefill": 100}


@pytest.mark.parametrize(("call", "message"), [
    ("g.entry(pools='decode', rule='round_robin')", r"pools= takes a list of roles"),
    ("g.entry(pools=['decode', 'attention'], rule='round_robin')", r"'attention'"),
    ("g.entry(pools=['decode', 'prefill'], rule='nearest')", r"rule='nearest' is not a built-in rule"),
    ("g.entry(pools=['decode', 'prefill'], rule=3)", r"rule=3 must be the name of a built-in rule"),
    ("g.entry(pools=['decode', 'prefill'], rule='round_robin')\n        g.entry(pools=['decode'], rule='round_robin')",
     r"g.entry is declared twice"),
])
def test_a_wrong_g_entry_is_an_error_at_its_line(tmp_path, call, message):
    body = TWO_ENTRIES + f"        {call}\n"
    with pytest.raises(WorkflowError, match=r"two_doors.py:1[0-9]: .*" + message):
        assemble(hybrid(workflow=workflow_file(tmp_path, body, "two_doors")), cost_model=FAST)


def test_a_pool_that_stayed_idle_is_a_warning():
    result = run(hybrid(entry={"rule": "round_robin"}, workload=mixed_load(n=1)))
    assert result.summary["entry"]["requests"] == {"decode": 1, "prefill": 0}
    assert result.summary["warnings"].startswith(
        "pool prefill stayed idle through the run: the entry rule round_robin() sent it none of the 1 requests, "
        "yet its 1 GPU count in the output tokens/s per GPU")


def test_one_entry_pool_leaves_the_summary_as_it_was():
    cfg = make_config(TINY_DENSE, POOLS, "pd", workload=mixed_load(n=20))
    result = run(cfg)
    assert "entry" not in result.summary
    assert (result.requests["prefill_pool"].astype(str) == "prefill").all()


def test_the_cli_refuses_a_pool_without_work_before_simulating(tmp_path):
    import yaml
    from click.testing import CliRunner

    from frontier_dag.cli.main import cli

    config = tmp_path / "hybrid.yaml"
    config.write_text(yaml.safe_dump(hybrid().model_dump(mode="json", exclude_none=True)))
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["simulate", str(config), "--out", str(out), "--no-progress",
                                      "--set", "cluster.entry={pools: [decode], rule: round_robin}"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.startswith("error: ") and "pool prefill (stage 'prefill', serves prefill) can never receive work" \
        in result.output and "hybrid.yaml" in result.output
    assert not out.exists()
