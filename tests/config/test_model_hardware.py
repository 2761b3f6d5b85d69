"""Model and hardware presets, the Hugging Face config.json loader, and derived sizes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from frontier_dag.config.hardware import DTYPE_BYTES, hardware_names, load_hardware
from frontier_dag.config.model import from_hf_config, load_model, model_names
from frontier_dag.errors import ConfigError

REQUIRED_MODELS = ["llama-3.1-8b", "llama-3.1-70b", "llama-2-7b", "qwen2-7b", "qwen3-32b", "qwen3-30b-a3b",
                   "qwen3-235b-a22b", "mixtral-8x7b", "deepseek-v3"]
REQUIRED_HARDWARE = ["a100_sxm", "h100_sxm", "h200_sxm", "h800_sxm", "b200_sxm"]

#: preset -> the aiconfigurator-core config.json it was taken from
AICONFIGURATOR_SOURCES = {
    "llama-3.1-8b": "meta-llama--Meta-Llama-3.1-8B", "llama-3.1-70b": "meta-llama--Meta-Llama-3.1-70B",
    "qwen3-32b": "Qwen--Qwen3-32B", "qwen3-30b-a3b": "Qwen--Qwen3-30B-A3B",
    "qwen3-235b-a22b": "Qwen--Qwen3-235B-A22B", "mixtral-8x7b": "mistralai--Mixtral-8x7B-v0.1",
    "deepseek-v3": "deepseek-ai--DeepSeek-V3",
}
ARCHITECTURE = ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim", "vocab_size", "mla", "moe")


@pytest.mark.parametrize("name", REQUIRED_MODELS)
def test_required_model_presets_load(name):
    assert name in model_names()
    model = load_model(name)
    assert model.name == name
    params = sum(model.parameter_count().values())
    assert 5e9 < params < 8e11


@pytest.mark.parametrize("name", sorted(AICONFIGURATOR_SOURCES))
def test_presets_agree_with_their_hugging_face_config(name):
    import aiconfigurator_core  # a dependency: a broken install must fail here, not skip

    path = Path(aiconfigurator_core.__file__).parent / "model_configs" / f"{AICONFIGURATOR_SOURCES[name]}_config.json"
    from_json = from_hf_config(json.loads(path.read_text()), name=name, source=str(path))
    preset = load_model(name)
    for key in ARCHITECTURE:
        assert getattr(from_json, key) == getattr(preset, key), key


def test_parameter_counts_match_the_published_sizes():
    assert sum(load_model("llama-3.1-8b").parameter_count().values()) == pytest.approx(8.03e9, rel=0.01)
    assert sum(load_model("llama-3.1-70b").parameter_count().values()) == pytest.approx(70.6e9, rel=0.01)
    assert sum(load_model("mixtral-8x7b").parameter_count().values()) == pytest.approx(46.7e9, rel=0.01)
    assert sum(load_model("deepseek-v3").parameter_count().values()) == pytest.approx(671e9, rel=0.02)


def test_derived_sizes():
    llama = load_model("llama-3.1-8b")
    assert llama.kv_bytes_per_token_per_layer == 2 * 8 * 128 * 2
    assert llama.num_moe_layers == 0
    ds = load_model("deepseek-v3")
    assert ds.kv_bytes_per_token_per_layer == (512 + 64) * 2  # the latent and the rope key, bf16 cache
    assert ds.num_moe_layers == 61 - 3
    assert not ds.is_moe_layer(2) and ds.is_moe_layer(3)


def test_aliases_and_hugging_face_ids():
    assert load_model("Meta-Llama-3.1-8B").name == "llama-3.1-8b"
    assert load_model("Qwen/Qwen3-8B").num_layers == 36  # shipped with aiconfigurator-core


def test_config_json_path(tmp_path):
    cfg = {"hidden_size": 512, "num_attention_heads": 8, "num_hidden_layers": 4, "num_key_value_heads": 2,
           "intermediate_size": 1024, "vocab_size": 3200, "num_local_experts": 4, "num_experts_per_tok": 2,
           "quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}}
    folder = tmp_path / "my-moe"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(cfg))
    model = load_model("config.json", base_dir=folder)
    assert model.name == "my-moe" and model.head_dim == 64 and model.dtype == "fp8_block"
    assert model.moe.num_experts == 4 and model.moe.top_k == 2 and model.moe.expert_intermediate_size == 1024
    with pytest.raises(ConfigError, match="missing key 'hidden_size'"):
        from_hf_config({"num_attention_heads": 8}, name="x")
    with pytest.raises(ConfigError, match="no such file"):
        load_model(str(tmp_path / "absent.json"))


def test_model_dict_and_errors():
    with pytest.raises(ConfigError, match="model: num_heads: required key is missing"):
        load_model({"name": "x", "num_layers": 1, "hidden_size": 8, "num_kv_heads": 1, "head_dim": 8,
                    "intermediate_size": 8, "vocab_size": 8})
    with pytest.raises(ConfigError, match="not a multiple of num_kv_heads"):
        load_model({"name": "x", "num_layers": 1, "hidden_size": 8, "num_heads": 3, "num_kv_heads": 2,
                    "head_dim": 8, "intermediate_size": 8, "vocab_size": 8})
    with pytest.raises(ConfigError, match="unknown model 'gpt-17'"):
        load_model("gpt-17")


@pytest.mark.parametrize("name", REQUIRED_HARDWARE)
def test_required_hardware_presets_load(name):
    assert name in hardware_names()
    hw = load_hardware(name)
    assert hw.gpu.flops_per_s["bf16"] > 1e14 and hw.gpu.hbm_bandwidth_bytes_per_s > 1e12
    assert hw.link_bandwidth(True) > hw.link_bandwidth(False)


def test_hardware_aliases_aiconfigurator_systems_and_errors(tmp_path, monkeypatch):
    assert load_hardware("h200").name == "h200_sxm"
    assert load_hardware("gb200").aiconfigurator_system == "gb200"
    with pytest.raises(ConfigError, match="unknown GPU system 'tpu_v5'"):
        load_hardware("tpu_v5")
    with pytest.raises(ConfigError, match="did you mean b200_sxm"):
        load_hardware("b200_sx")
    # a system without a preset is read from aiconfigurator-core's own system file
    from frontier_dag.config import hardware

    monkeypatch.setattr(hardware, "_presets", lambda: {})
    gb200 = load_hardware("gb200")
    assert gb200.gpu.sm_count == 148 and gb200.gpu.flops_per_s["fp4"] == 1e16 and "systems/gb200.yaml" in gb200.source


def test_every_aiconfigurator_system_has_a_preset_with_its_source():
    from frontier_dag.config.hardware import aiconfigurator_system_names

    systems = aiconfigurator_system_names()
    assert len(systems) == 14
    presets = {load_hardware(name).aiconfigurator_system for name in hardware_names()}
    assert set(systems) <= presets
    for name in hardware_names():
        hw = load_hardware(name)
        assert hw.source, f"{name} names no source"
        assert hw.gpu.flops_per_s["bf16"] <= hw.gpu.flops_per_s.get("fp8", math.inf) <= hw.gpu.flops_per_s.get(
            "fp4", math.inf)


def test_precisions_run_on_their_tensor_cores():
    h100, b200, a100 = load_hardware("h100"), load_hardware("b200"), load_hardware("a100_sxm")
    assert h100.gpu.peak_flops("fp8_block") == h100.gpu.flops_per_s["fp8"]
    assert h100.gpu.peak_flops("w4a16_mxfp4") == h100.gpu.flops_per_s["bf16"]  # weight-only: dequantized
    assert b200.gpu.peak_flops("fp4") == 9e15 and b200.gpu.peak_flops("nvfp4") == 9e15
    assert b200.gpu.peak_flops("w4a8_mxfp4_mxfp8") == b200.gpu.flops_per_s["fp8"]
    for gpu, dtype, pipe in ((h100, "fp4", "fp4"), (h100, "w4a8_mxfp4_mxfp8", "mxfp8"), (a100, "fp8", "fp8")):
        with pytest.raises(ConfigError, match=f"{gpu.gpu.name} cannot run {dtype}.*no {pipe} tensor cores"):
            gpu.gpu.peak_flops(dtype)
    with pytest.raises(ConfigError, match="unknown precision 'fp5'"):
        b200.gpu.peak_flops("fp5")
    assert DTYPE_BYTES["fp4"] == 0.5625 and DTYPE_BYTES["w4a16_mxfp4"] == 0.53125 and DTYPE_BYTES["fp8"] == 1


def test_a_model_precision_the_pool_gpu_cannot_run_is_an_error_before_simulating():
    from frontier_dag.config.run import resolve, run_config_from_dict

    model = {**load_model("llama-3.1-8b").model_dump(exclude_none=True), "dtype": "nvfp4"}
    assert load_model(model).dtype == "fp4"  # aiconfigurator's name for it is accepted
    data = {"model": model, "hardware": "h100_sxm", "cluster": {"pools": {"main": {"role": "colocated", "gpus": 1}}},
            "workflow": {"name": "colocated"}, "predictor": {"source": "roofline"}}
    with pytest.raises(ConfigError, match=r"cluster.pools.main: model.dtype fp4 on h100_sxm: the NVIDIA H100 .* cannot run fp4"):
        resolve(run_config_from_dict(data, source="test"))
    resolve(run_config_from_dict({**data, "hardware": "b200_sxm"}, source="test"))


def test_hugging_face_checkpoints_give_their_precisions_and_unmodelled_operators_are_errors():
    gpt_oss = load_model("openai/gpt-oss-120b")
    assert (gpt_oss.dtype, gpt_oss.moe_dtype) == ("bf16", "w4a16_mxfp4")
    assert load_model("nvidia/DeepSeek-V3.1-NVFP4").moe_dtype == "fp4"  # from its hf_quant_config.json
    assert load_model("moonshotai/Kimi-K2.5").moe_dtype == "int4"  # compressed-tensors int4 experts
    with pytest.raises(ConfigError, match="linear-attention layers"):
        load_model("Qwen/Qwen3.5-27B")
    with pytest.raises(ConfigError, match="DeepSeek sparse attention"):
        load_model("zai-org/GLM-5")
    with pytest.raises(ConfigError, match="a size is missing or not a number"):
        from_hf_config({"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 10}, "x")
