"""``frontier-dag systems`` and ``frontier-dag models``, and the close-name suggestions of
unknown hardware, model and system names."""

from __future__ import annotations

import json

from click.testing import CliRunner

from frontier_dag.cli.main import cli


def invoke(*args: str):
    result = CliRunner().invoke(cli, list(args))
    return result


def test_systems_lists_every_system_with_engines_versions_and_families():
    result = invoke("systems", "--json")
    assert result.exit_code == 0, result.output
    systems = {s["name"]: s for s in json.loads(result.output)}
    assert len(systems) == 14
    without = {name for name, s in systems.items() if not s["has_tables"]}
    assert without == {"a100_pcie", "a30", "h100_pcie", "l4"}
    assert all(s["hardware"] == name for name, s in systems.items())  # every system has a preset
    b200 = {e["engine"]: e for e in systems["b200_sxm"]["engines"]}
    assert set(b200) == {"vllm", "trtllm", "sglang"}
    assert "0.24.0" in b200["vllm"]["versions"] and b200["vllm"]["families"]["gemm"] == "gemm/vllm/0.24.0/gemm"
    assert b200["vllm"]["families"]["mla_decode"].startswith("mla/trtllm/")  # vLLM measured whole modules only
    assert any("wideep_moe" in t for t in b200["trtllm"]["wide_ep"]) and not b200["vllm"]["wide_ep"]
    b60 = systems["b60"]
    assert [e["engine"] for e in b60["engines"]] == ["vllm"] and b60["collectives"][0].startswith("oneccl")

    text = invoke("systems")
    assert text.exit_code == 0
    assert "14 systems in aiconfigurator-core, 10 with kernel tables" in text.output
    assert "a30  NVIDIA A30  (hardware: a30): no kernel tables" in text.output
    assert "reads vllm 0.24.0: attention_prefill attention_decode gemm moe_grouped_gemm" in text.output


def test_models_lists_presets_and_the_shipped_hugging_face_ids():
    result = invoke("models", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    presets = {m["name"]: m for m in report["presets"]}
    assert presets["llama-3.1-8b"]["layers"] == 32 and "llama3.1-8b" in presets["llama-3.1-8b"]["aliases"]
    shipped = {m["id"]: m for m in report["aiconfigurator"]}
    assert len(shipped) > 50 and not any(i.endswith("_hf_quant") for i in shipped)
    assert shipped["openai/gpt-oss-120b"]["precision"] == "bf16/w4a16_mxfp4"
    assert shipped["nvidia/DeepSeek-V3.1-NVFP4"]["precision"] == "fp4"  # from its hf_quant_config.json
    assert shipped["moonshotai/Kimi-K2.5"]["precision"] == "bf16/int4"
    qwen35 = shipped["Qwen/Qwen3.5-397B-A17B"]
    assert not qwen35["loads"] and "linear-attention" in qwen35["reason"]
    assert "sparse attention" in shipped["zai-org/GLM-5"]["reason"]

    text = invoke("models")
    assert text.exit_code == 0 and f"presets ({len(presets)}):" in text.output and "Qwen/Qwen3-8B" in text.output
    assert presets["llama-3.1-405b"]["layers"] == 126


def test_unknown_names_suggest_the_closest():
    config = ["simulate", "examples/colocated_llama3_8b.yaml", "--set", "predictor.source=roofline"]
    hardware = invoke(*config, "--set", "hardware=b200sxm", "--out", "unused")
    assert hardware.exit_code == 2 and "did you mean b200_sxm" in hardware.output
    model = invoke(*config, "--set", "model=lama-3.1-8b", "--out", "unused")
    assert model.exit_code == 2 and "did you mean llama-3.1-8b" in model.output
    system = invoke("predictors", "fit", "--source", "aiconfigurator", "--system", "gb2000")
    assert system.exit_code == 2 and "did you mean gb200" in system.output
    assert "Traceback" not in hardware.output + model.output + system.output
