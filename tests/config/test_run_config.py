"""Run configs: unknown keys name the file and key, --set overrides, and resolve()'s
feasibility checks say what is wrong and how to fix it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from frontier_dag.config.loading import apply_overrides, parse_override
from frontier_dag.config.run import Origin, load_run_config, resolve, run_config_from_dict
from frontier_dag.errors import ConfigError

BASE = {
    "model": "llama-3.1-8b",
    "hardware": "h200_sxm",
    "cluster": {"pools": {"prefill": {"role": "prefill", "gpus": 1}, "decode": {"role": "decode", "gpus": 2}}},
    "workflow": {"name": "pd", "params": {}},
    "workload": {"arrival": {"kind": "poisson", "rate_per_s": 4.0}, "num_requests": 100},
    "predictor": {"source": "roofline"},
}


def write(tmp_path: Path, data: dict, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def config_error(tmp_path: Path, data: dict, overrides=()) -> str:
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        resolve(load_run_config(path, overrides), Origin.of_file(path))
    return str(err.value)


def test_a_valid_config_loads_and_resolves(tmp_path):
    path = write(tmp_path, BASE)
    config = load_run_config(path)
    deployment = resolve(config, Origin.of_file(path))
    assert deployment.total_gpus == 3
    assert deployment.model.name == "llama-3.1-8b" and deployment.hardware.name == "h200_sxm"
    assert deployment.origin == Origin(str(tmp_path / "run.yaml"), tmp_path)
    # the resolved YAML round-trips
    again = run_config_from_dict(yaml.safe_load(config.to_yaml()))
    assert again.model_dump() == config.model_dump()


@pytest.mark.parametrize(("mutate", "key"), [
    (lambda d: d.update(sedd=3), "sedd"),
    (lambda d: d["cluster"]["pools"]["decode"].update(kv_capacity=4096), "cluster.pools.decode.kv_capacity"),
    (lambda d: d["scheduler"].update(max_num_seq=8) if "scheduler" in d else d.update(scheduler={"max_num_seq": 8}),
     "scheduler.max_num_seq"),
    (lambda d: d["workload"]["arrival"].update(rate=3), "workload.arrival.rate"),
    (lambda d: d["workflow"].update(parms={}), "workflow.parms"),
])
def test_unknown_key_names_the_file_and_the_key(tmp_path, mutate, key):
    data = yaml.safe_load(yaml.safe_dump(BASE))
    mutate(data)
    message = config_error(tmp_path, data)
    assert f"{tmp_path / 'run.yaml'}: {key}: unknown key" in message


def test_bad_yaml_and_missing_files_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match=f"{bad}: not valid YAML"):
        load_run_config(bad)
    with pytest.raises(ConfigError, match="nope.yaml: no such file"):
        load_run_config(tmp_path / "nope.yaml")
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        load_run_config(listed)


def test_set_overrides_reach_nested_keys(tmp_path):
    data = yaml.safe_load(yaml.safe_dump(BASE))
    config = load_run_config(write(tmp_path, data), [
        "cluster.pools.decode.kv_capacity_tokens=4096", "workflow.params.kv_transfer=per_layer", "seed=7",
        "workload.arrival.rate_per_s=2.5", "scheduler.max_num_seqs=64",
    ])
    assert config.cluster.pools["decode"].kv_capacity_tokens == 4096
    assert config.workflow.params == {"kv_transfer": "per_layer"}
    assert config.seed == 7 and config.workload.arrival.rate_per_s == 2.5
    assert config.scheduler.max_num_seqs == 64


def test_set_micro_batches_reaches_the_traced_workflow(tmp_path):
    from frontier_dag.dsl import trace_config

    data = {**BASE, "cluster": {"pools": {"a": {"role": "attention", "gpus": 1}, "f": {"role": "ffn", "gpus": 1}}},
            "workflow": {"name": "af_pingpong"}}
    config = load_run_config(write(tmp_path, data), ["workflow.params.micro_batches=3"])
    assert config.workflow.params == {"micro_batches": 3}
    _, graph = trace_config(config)
    assert graph.stages["af"].micro_batches == 3


def test_overrides_are_validated_like_the_file(tmp_path):
    message = config_error(tmp_path, BASE, ["cluster.pools.decode.kv_capacity_token=4096"])
    assert "cluster.pools.decode.kv_capacity_token: unknown key" in message
    message = config_error(tmp_path, BASE, ["cluster.pools.decode.gpus=many"])
    assert "cluster.pools.decode.gpus" in message


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="expected key.path=value"):
        parse_override("seed")
    with pytest.raises(ConfigError, match="model is the name 'llama-3.1-8b', not a mapping"):
        apply_overrides({"model": "llama-3.1-8b"}, ["model.num_layers=2"])
    assert parse_override("workflow.params.routing={kind: power_law, alpha: 1.1}") == (
        ["workflow", "params", "routing"], {"kind": "power_law", "alpha": 1.1})
    assert apply_overrides({}, ["a.b.c=x"]) == {"a": {"b": {"c": "x"}}}


def test_tp_must_divide_the_heads(tmp_path):
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["cluster"]["pools"]["decode"] = {"role": "decode", "gpus": 3, "tp": 3}
    message = config_error(tmp_path, data)
    assert "cluster.pools.decode.tp: tp=3 does not divide the 32 attention heads of llama-3.1-8b" in message
    assert str(tmp_path / "run.yaml") in message


def test_model_must_fit_in_memory(tmp_path):
    data = {**BASE, "model": "llama-3.1-70b", "hardware": "h100_sxm"}
    message = config_error(tmp_path, data)
    assert "cluster.pools.prefill: llama-3.1-70b needs" in message
    assert "GiB of weights per GPU" in message and "raise tp/ep or use more GPUs per replica" in message
    # four H100s hold it
    data["cluster"] = {"pools": {"prefill": {"role": "prefill", "gpus": 4, "tp": 4},
                                 "decode": {"role": "decode", "gpus": 4, "tp": 4}}}
    assert resolve(load_run_config(write(tmp_path, data, "ok.yaml"))).model.name == "llama-3.1-70b"


@pytest.mark.parametrize(("override", "key"), [
    ("cluster.pools.decode.gpus=0", "cluster.pools.decode.gpus"),
    ("cluster.pools.decode.tp=0", "cluster.pools.decode.tp"),
    ("workload.arrival.rate_per_s=-1", "workload.arrival.rate_per_s"),
    ("workload.num_requests=0", "workload.num_requests"),
    ("scheduler.gpu_memory_utilization=1.5", "scheduler.gpu_memory_utilization"),
])
def test_non_positive_sizes_and_rates_are_rejected(tmp_path, override, key):
    message = config_error(tmp_path, BASE, [override])
    assert f"--set {override} (on {tmp_path / 'run.yaml'}): {key}:" in message


@pytest.mark.parametrize(("pools", "message"), [
    ({"m": {"role": "colocated", "gpus": 1}, "d": {"role": "decode", "gpus": 1}}, "cannot be combined"),
    ({"a": {"role": "attention", "gpus": 1}}, "needs one attention and one ffn pool"),
    ({"p": {"role": "prefill", "gpus": 1}}, "a prefill pool needs a decode pool"),
    ({"d": {"role": "decode", "gpus": 1}}, "a decode pool needs a prefill pool"),
    ({}, "cluster.pools is empty"),
    ({"d": {"role": "decode", "gpus": 3, "replicas": 2}}, "not divisible by replicas"),
    ({"d": {"role": "decode", "gpus": 2, "tp": 2, "dp": 2}}, "must equal the gpus per replica"),
    ({"m": {"role": "colocated", "gpus": 2, "ep": 2}}, "is dense; expert parallelism needs a MoE model"),
    ({"a": {"role": "attention", "gpus": 2}, "f": {"role": "ffn", "gpus": 4, "ep": 3}},
     "cluster.pools.f: ep=3 does not divide the gpus per replica (4)"),
])
def test_cluster_shape_errors(tmp_path, pools, message):
    data = {**BASE, "cluster": {"pools": pools}}
    assert message in config_error(tmp_path, data)


def test_ep_must_divide_the_experts(tmp_path):
    data = {**BASE, "model": "mixtral-8x7b", "cluster": {"pools": {
        "p": {"role": "prefill", "gpus": 6, "ep": 6}, "d": {"role": "decode", "gpus": 6, "ep": 6, "tp": 2, "dp": 3}}}}
    assert "ep=6 does not divide the 8 experts of mixtral-8x7b" in config_error(tmp_path, data)


def test_redundant_experts_count_in_the_expert_slots(tmp_path):
    """EP 72 with DeepSeek-V3's 256 experts and 32 redundant replicas (EPLB): 4 slots a rank."""
    pools = {"p": {"role": "prefill", "gpus": 16, "ep": 16}, "d": {"role": "decode", "gpus": 72, "ep": 72}}
    data = {**BASE, "model": "deepseek-v3", "hardware": "h200_sxm", "cluster": {"pools": pools},
            "workflow": {"name": "pd_ep_moe", "params": {"routing": {"kind": "power_law", "redundant_experts": 32}}}}
    resolve(load_run_config(write(tmp_path, data)))
    data["workflow"]["params"]["routing"]["redundant_experts"] = 16
    message = config_error(tmp_path, data)
    assert "cluster.pools.d.ep: ep=72 does not divide the 256 + 16 redundant experts of deepseek-v3" in message
    assert "multiple of 72 (for example 32 or 104)" in message


def test_redundant_experts_hold_weights_and_leave_less_kv(tmp_path):
    """Each EP rank holds (256 + 32) / 32 = 9 expert slots of DeepSeek-V3, not 8: the routed
    experts' bytes per GPU grow by 9/8, and the KV capacity of every attention-DP rank falls by
    what they take."""
    from frontier_dag.config.run import SchedulerConfig, weights_per_gpu_bytes
    from frontier_dag.sim.memory import kv_capacity_tokens

    pools = {"p": {"role": "prefill", "gpus": 16, "ep": 16}, "d": {"role": "decode", "gpus": 32, "ep": 32}}
    data = {**BASE, "model": "deepseek-v3", "hardware": "h200_sxm", "cluster": {"pools": pools},
            "workflow": {"name": "pd_ep_moe", "params": {"routing": {"kind": "power_law", "redundant_experts": 32}}}}
    deployment = resolve(load_run_config(write(tmp_path, data)))
    model, pool, hw = deployment.model, deployment.pools["d"], deployment.pool_hardware["d"]
    experts = model.weight_bytes()["experts"] / 32
    plain, eplb = weights_per_gpu_bytes(model, pool), weights_per_gpu_bytes(model, pool, redundant=32)
    assert eplb - plain == pytest.approx(experts / 8)
    scheduler = SchedulerConfig()
    kv = [kv_capacity_tokens(model, pool, hw, scheduler, "d", redundant=r) for r in (0, 32)]
    # summed over the replica's attention-DP ranks, each floored to whole tokens
    assert kv[0] - kv[1] == pytest.approx(experts / 8 / model.kv_bytes_per_token * pool.attention_dp,
                                          abs=pool.attention_dp)
    # an EP-1 pool holds every expert once: no replicas
    single = deployment.pools["d"].model_copy(update={"gpus": 8, "ep": 1, "tp": 8})
    assert weights_per_gpu_bytes(model, single, redundant=32) == weights_per_gpu_bytes(model, single)


def test_tp_beyond_the_kv_heads_must_replicate_them_evenly(tmp_path):
    data = {**BASE, "model": "qwen3-32b", "cluster": {"pools": {
        "p": {"role": "prefill", "gpus": 16, "tp": 16}, "d": {"role": "decode", "gpus": 8, "tp": 8}}}}
    resolve(load_run_config(write(tmp_path, data)))  # 64 heads, 8 KV heads: tp 16 holds each KV head twice
    data = {**BASE, "model": "qwen2-7b", "cluster": {"pools": {
        "p": {"role": "prefill", "gpus": 7, "tp": 7}, "d": {"role": "decode", "gpus": 1}}}}
    assert "tp=7 must be a multiple of the 4 KV heads of qwen2-7b" in config_error(tmp_path, data)


@pytest.mark.parametrize(("overrides", "fragments"), [
    (["workload.prompt_tokens={kind: fixed, value: 200000}"],
     ["run.yaml: workload: the longest prompt has 200,000 tokens, beyond llama-3.1-8b's context of 131,072",
      "simulates them as if the context were longer", "Set workload.prompt_tokens.high"]),
    (["workload.prompt_tokens={kind: uniform, low: 1, high: 100000}",
      "workload.output_tokens={kind: uniform, low: 1, high: 40000}"],
     ["the longest request (prompt + output) has 140,000 tokens"]),
    (["workload.prompt_tokens={kind: fixed, value: 5000}", "scheduler.max_model_len=4096"],
     ["beyond scheduler.max_model_len=4,096"]),
])
def test_requests_beyond_the_context_are_simulated_and_said(tmp_path, overrides, fragments):
    """An engine would reject them; the run simulates them as a longer context would serve them,
    and says so (a warning, kept in the deployment and the run's summary), so that a study
    of a hypothetical context, or a replay of a peer's trace, still runs."""
    path = write(tmp_path, BASE)
    deployment = resolve(load_run_config(path, overrides), Origin.of_file(path))
    assert len(deployment.warnings) == 1
    for fragment in fragments:
        assert fragment in deployment.warnings[0], deployment.warnings[0]


def test_a_prompt_beyond_one_step_without_chunked_prefill_is_an_error(tmp_path):
    message = config_error(tmp_path, BASE, ["workload.prompt_tokens={kind: fixed, value: 8000}",
                                            "scheduler.chunked_prefill=false", "scheduler.max_num_batched_tokens=512"])
    for fragment in ["run.yaml: scheduler: chunked_prefill is false", "max_num_batched_tokens=512 is below the "
                     "longest prompt (8,000 tokens)", "vLLM refuses", "raise scheduler.max_num_batched_tokens to at "
                     "least 8,000"]:
        assert fragment in message, message


def test_max_model_len_serves_beyond_the_models_context(tmp_path):
    """As vLLM's VLLM_ALLOW_LONG_MAX_MODEL_LEN: the user says so explicitly."""
    resolve(load_run_config(write(tmp_path, BASE), ["workload.prompt_tokens={kind: fixed, value: 200000}",
                                                    "scheduler.max_model_len=262144"]))


@pytest.mark.parametrize(("overrides", "message"), [
    (["cluster.pools.decode.gpus=1000000000000"], "cluster.pools.decode: gpus per replica = 1,000,000,000,000 is above "
                                                  "the limit of 4,096"),
    (["cluster.pools.decode={role: decode, gpus: 2000000, replicas: 1000000}"], "replicas = 1,000,000 is above the "
                                                                                "limit of 10,000"),
    (["workload.num_requests=1000000000000"], "workload.num_requests: 1,000,000,000,000 is above the limit of "
                                              "10,000,000 (a typo?"),
    (["scheduler.max_num_seqs=1000000000"], "a replica runs up to scheduler.max_num_seqs x attention-DP ranks = "
                                            "1,000,000,000 x 1 sequences, above the limit of 1,048,576"),
    (["scheduler.block_size=1000000000"], "scheduler.block_size: 1,000,000,000 is above the limit of 4,096"),
    (["workflow.name=af_pingpong", "cluster.pools={attention: {role: attention, gpus: 1}, ffn: {role: ffn, gpus: 1}}",
      "workflow.params.micro_batches=1000000000"], "workflow.params.micro_batches: 1000000000 is above the maximum 64"),
])
def test_a_size_with_a_typos_magnitude_is_refused_at_once(tmp_path, overrides, message):
    """Before anything is built: each within a second, not minutes and gigabytes later."""
    import time

    from frontier_dag.dsl import trace_config

    started = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        trace_config(load_run_config(write(tmp_path, BASE), overrides))
    assert time.perf_counter() - started < 1.0
    assert message in str(err.value)


@pytest.mark.parametrize(("change", "message"), [
    ({"model": {"name": "m", "num_layers": 1_000_000_000}}, "run.yaml: model.num_layers: 1,000,000,000 is above the "
                                                            "limit of 1,024"),
    ({"model": {"name": "m"}}, "run.yaml: model.hidden_size: required key is missing"),
    ({"hardware": {"name": "h", "gpux": {}}}, "run.yaml: hardware.gpux: unknown key"),
    ({"cluster": {"pools": {"prefill": {"role": "prefill", "gpus": 1, "hardware": "h999"}, "decode": {"role": "decode", "gpus": 1}}}},
     "run.yaml: cluster.pools.prefill.hardware: unknown GPU system 'h999'"),
    ({"model": "no-such-model"}, "run.yaml: model: unknown model 'no-such-model'"),
])
def test_errors_about_a_model_or_hardware_name_the_config_file(tmp_path, change, message):
    assert message in config_error(tmp_path, {**BASE, **change})


@pytest.mark.parametrize(("overrides", "message"), [
    (["cluster.pools.decode.gpus=-3"], "--set cluster.pools.decode.gpus=-3 (on {path}): cluster.pools.decode.gpus: "
                                       "Input should be greater than 0"),
    (["seed=2", "scheduler.max_num_seqs=0"], "--set scheduler.max_num_seqs=0 (on {path}): scheduler.max_num_seqs"),
    (["cluster.pools.decode.gpux=2"], "--set cluster.pools.decode.gpux=2 (on {path}): cluster.pools.decode.gpux: "
                                      "unknown key"),
])
def test_a_bad_override_is_blamed_on_the_set(tmp_path, overrides, message):
    path = write(tmp_path, BASE)
    with pytest.raises(ConfigError) as err:
        load_run_config(path, overrides)
    assert message.format(path=path) in str(err.value)


def test_a_bad_key_in_the_file_is_still_blamed_on_the_file(tmp_path):
    path = write(tmp_path, {**BASE, "seed": -1.5})
    with pytest.raises(ConfigError, match=f"^{path}: seed: "):
        load_run_config(path, ["scheduler.max_num_seqs=8"])


@pytest.mark.parametrize(("overrides", "message"), [
    (["predictor.source=aiconfigurator", "predictor.backend=vlm"],
     "error: predictor.backend: 'vlm' has no aiconfigurator tables; use one of vllm, trtllm, sglang"),
    (["predictor.source=aiconfigurator", "predictor.system=h9"],
     "error: predictor.system: aiconfigurator-core has no kernel tables for system 'h9'"),
])
def test_predictor_errors_name_the_config_key_not_a_cli_option(tmp_path, overrides, message):
    from click.testing import CliRunner

    from frontier_dag.cli.main import cli

    args = ["critical-path", str(write(tmp_path, BASE))] + [a for o in overrides for a in ("--set", o)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and message in result.output and "--backend" not in result.output


def test_an_ffn_pools_tp_is_its_gpus_per_replica_and_the_resolved_config_reads_back(tmp_path):
    data = {**BASE, "cluster": {"pools": {"a": {"role": "attention", "gpus": 4, "tp": 4},
                                          "f": {"role": "ffn", "gpus": 8, "replicas": 2}}},
            "workflow": {"name": "af_pingpong"}}
    config = load_run_config(write(tmp_path, data))
    assert config.cluster.pools["f"].tp == 4
    again = run_config_from_dict(yaml.safe_load(config.to_yaml()))  # what a run directory's config.yaml holds
    assert again.model_dump() == config.model_dump()
