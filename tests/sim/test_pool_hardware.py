"""Pools on different GPUs: every op is priced by its own pool's GPU, links between them by
the slower end's network, and a GPU that the predictor cannot price is an error that
names the pool, never another GPU's times."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import frontier_dag as fd
from frontier_dag.errors import ConfigError
from tests.conftest import TINY_DENSE

FIXTURES = Path(__file__).resolve().parent.parent / "predictors" / "fixtures"


def af(top: str = "h100_sxm", attention: str | None = None, **extra) -> dict:
    pools = {"a": {"role": "attention", "gpus": 2}, "f": {"role": "ffn", "gpus": 2}}
    if attention:
        pools["a"]["hardware"] = attention
    return {"model": TINY_DENSE, "hardware": top, "cluster": {"pools": pools}, "workflow": {"name": "af_pingpong"},
            "predictor": {"source": "roofline"}, **extra}


def pd(top: str = "h100_sxm", decode: str | None = None, **extra) -> dict:
    pools = {"p": {"role": "prefill", "gpus": 2, "tp": 2}, "d": {"role": "decode", "gpus": 2, "tp": 2}}
    if decode:
        pools["d"]["hardware"] = decode
    return {"model": TINY_DENSE, "hardware": top, "cluster": {"pools": pools},
            "workflow": {"name": "pd", "params": {"kv_transfer": "per_request"}}, "predictor": {"source": "roofline"},
            **extra}


def op_times(config: dict) -> dict[tuple[str, str], float]:
    """Duration of the first node of each (op, resource) in one priced iteration."""
    _, graph, report = fd.iteration(config, batch_size=16)
    times = {}
    for position, node in enumerate(report.compiled.nodes):
        attrs = graph.graph.nodes[node]
        times.setdefault((attrs["op"], attrs["resource"]), float(report.duration_us[position]))
    return times


def test_each_op_is_priced_on_its_pools_gpu():
    mixed = op_times(af(attention="a100_sxm"))
    all_a100, all_h100 = op_times(af(top="a100_sxm")), op_times(af())
    attention = [key for key in mixed if key[1] == "attention" and key[0] == "attention"]
    ffn = [key for key in mixed if key[1] == "ffn" and key[0] in ("gate_up_proj", "down_proj")]
    assert attention and ffn
    for key in attention:
        assert mixed[key] == all_a100[key] > all_h100[key]  # the A100 attention pool, priced on the A100
    for key in ffn:
        assert mixed[key] == all_h100[key] < all_a100[key]  # the H100 FFN pool, on the H100


def test_a_link_between_gpus_crosses_the_network_at_the_slower_ends_pace():
    assembly = fd.assemble(pd(decode="a100_sxm"))
    link = [t for t in assembly.graph.templates if t.family == "p2p"]
    assert link and all(t.gpu == "a100_sxm" and t.field("placement") == "inter_node" for t in link)
    # the same pools on one GPU type, within one node, move KV over NVLink
    same = fd.assemble(pd())
    assert {t.field("placement") for t in same.graph.templates if t.family == "p2p"} == {"intra_node"}


def test_the_summary_and_the_drawing_name_each_pools_gpu(tmp_path):
    run = fd.simulate(pd(decode="a100_sxm", workload={"num_requests": 20, "arrival": {"kind": "poisson",
                                                                                     "rate_per_s": 50.0}}))
    assert run.summary["pools"] == {"p": {"role": "prefill", "gpu": "h100_sxm", "gpus": 2},
                                    "d": {"role": "decode", "gpu": "a100_sxm", "gpus": 2}}
    assert run.summary["cost"] is None  # no prices given, none assumed
    dot = fd.render(pd(decode="a100_sxm"), tmp_path / "pd.dot").read_text()
    assert "2 x a100_sxm" in dot and "2 x h100_sxm" in dot


def test_the_cost_per_unit_of_currency_comes_from_the_given_prices_only():
    workload = {"num_requests": 20, "arrival": {"kind": "poisson", "rate_per_s": 50.0}}
    priced = fd.simulate(pd(decode="a100_sxm", workload=workload,
                            gpu_hour_prices={"h100_sxm": 3.0, "a100_sxm": 1.0})).summary
    assert priced["cost"]["per_hour"] == pytest.approx(2 * 3.0 + 2 * 1.0)
    assert priced["cost"]["output_tokens_per_unit"] == pytest.approx(priced["output_tokens_per_s"] * 3600 / 8.0)
    partial = fd.simulate(pd(decode="a100_sxm", workload=workload, gpu_hour_prices={"h100_sxm": 3.0})).summary
    assert partial["cost"] is None


def test_a_pool_on_a_gpu_without_kernel_tables_is_an_error_naming_it():
    config = pd(decode="h800_sxm", predictor={"source": "aiconfigurator"})
    with pytest.raises(ConfigError, match=r"cluster\.pools\.d runs on h800_sxm: .*no aiconfigurator tables.*"
                                          r"cluster\.pools\.d\.predictor: \{source: roofline\}"):
        fd.assemble(config)


def test_a_pool_may_ask_for_the_roofline(tmp_path, monkeypatch):
    """The H100 prefill pool by forests fitted to profiles measured on an H200 is refused; an
    H200 pool priced by them, next to an H100 pool priced by the roofline, is not."""
    monkeypatch.setenv("FRONTIER_DAG_CACHE", str(tmp_path / "cache"))
    profiles = tmp_path / "profiles"
    shutil.copytree(FIXTURES / "tiny_profile", profiles)  # measured on h200_sxm
    wrong = pd(top="h200_sxm", decode="h100_sxm")
    wrong["cluster"]["pools"]["d"]["predictor"] = {"source": str(profiles)}
    with pytest.raises(ConfigError, match="runs on h100_sxm but its predictor's profiles were measured on h200_sxm"):
        fd.assemble(wrong)
    right = pd(top="h100_sxm", decode="h200_sxm")
    right["cluster"]["pools"]["d"]["predictor"] = {"source": str(profiles)}
    run = fd.simulate(right, set={"workload": {"num_requests": 10, "arrival": {"kind": "poisson", "rate_per_s": 50.0}}})
    assert run.summary["predictor_sources"].get("rf", 0) > 0 and run.summary["predictor_sources"].get("roofline", 0) > 0


def test_pools_on_one_gpu_share_its_predictor():
    config = pd(decode="a100_sxm")
    config["cluster"]["pools"]["p"]["hardware"] = "a100_sxm"
    config["cluster"]["pools"]["p"]["predictor"] = {"source": "roofline"}
    config["cluster"]["pools"]["d"]["predictor"] = {"source": "aiconfigurator"}
    with pytest.raises(ConfigError, match="pools p and d both run on a100_sxm but ask for different predictors"):
        fd.assemble(config)
