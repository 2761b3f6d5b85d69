"""A Hugging Face config.json keeps its sliding window (and attention is priced with it)
and its model's name."""

from __future__ import annotations

import json

import numpy as np
import pytest

from frontier_dag.analysis.iteration import analyze_iteration
from frontier_dag.config.model import from_hf_config, load_model
from frontier_dag.config.run import Origin, load_run_config
from frontier_dag.cost.batch import MicroBatchLoad
from frontier_dag.cost.protocol import RooflineCostModel
from frontier_dag.dsl import trace_config
from frontier_dag.errors import ConfigError

#: Mistral-7B-v0.1's config.json, as published (sliding_window without use_sliding_window)
MISTRAL = {
    "architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336,
    "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8, "vocab_size": 32000,
    "max_position_embeddings": 32768, "sliding_window": 4096, "torch_dtype": "bfloat16",
}
TINY = {"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 6, "intermediate_size": 128,
        "vocab_size": 100, "sliding_window": 32}


def test_mistral_windows_every_layer():
    m = from_hf_config(MISTRAL, "m")
    assert m.sliding_window == 4096 and m.full_attention_interval is None
    assert {m.attention_window(i) for i in range(32)} == {4096}


@pytest.mark.parametrize(("extra", "windows"), [
    ({"sliding_window_pattern": 3}, [32, 32, None, 32, 32, None]),  # Gemma 3: every n-th layer full
    ({"model_type": "gemma2"}, [32, None, 32, None, 32, None]),  # Gemma 2 alternates
    ({"use_sliding_window": False, "max_window_layers": 4}, [None] * 6),  # Qwen: the flag says no
])
def test_which_layers_are_windowed(extra, windows):
    m = from_hf_config({**TINY, **extra}, "m")
    assert [m.attention_window(i) for i in range(6)] == windows


def test_a_window_layout_with_its_own_attention_shape_is_refused():
    """MiMo-style hybrid layouts give the windowed layers their own head counts: two attention
    shapes, which one model cannot price; reading every layer as full would price another model."""
    with pytest.raises(ConfigError, match="sliding-window layers with their own head counts"):
        from_hf_config({**TINY, "hybrid_layer_pattern": [0, 1, 1, 1, 1, 0]}, "m")


def test_the_name_of_a_config_json(tmp_path):
    snapshot = tmp_path / "hub" / "models--mistralai--Mistral-7B-v0.1" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(MISTRAL))
    assert load_model(str(snapshot / "config.json")).name == "mistralai/Mistral-7B-v0.1"
    saved = tmp_path / "checkpoints" / "step-1000"
    saved.mkdir(parents=True)
    (saved / "config.json").write_text(json.dumps({**MISTRAL, "_name_or_path": "mistralai/Mistral-7B-v0.1"}))
    assert load_model(str(saved / "config.json")).name == "mistralai/Mistral-7B-v0.1"
    (tmp_path / "config.json").write_text(json.dumps({**MISTRAL, "_name_or_path": "/data/run7/ckpt"}))
    assert load_model("config.json", base_dir=tmp_path).name == tmp_path.name  # a local path is no name


def test_attention_is_priced_with_the_window(tmp_path):
    """Decode sequences with 20k tokens cached: each query of a windowed layer reads the last
    4096 keys only, so Mistral's decode iteration is faster than the same model without a window."""
    (tmp_path / "config.json").write_text(json.dumps(MISTRAL))
    (tmp_path / "full.json").write_text(json.dumps({**MISTRAL, "sliding_window": None}))
    times = {}
    for name in ("config.json", "full.json"):
        path = tmp_path / f"{name}.yaml"
        path.write_text(f"model: {name}\nhardware: h100_sxm\ncluster: {{pools: {{main: {{role: colocated, gpus: 1}}}}}}\n"
                        "predictor: {source: roofline}\n")
        deployment, graph = trace_config(load_run_config(path), Origin.of_file(path))
        windows = {dict(t.fields).get("window") for t in graph.templates if t.family == "attention"}
        assert windows == ({4096} if name == "config.json" else {None})
        load = MicroBatchLoad(np.ones(64, dtype=np.int64), np.full(64, 20000, dtype=np.int64))
        times[name] = analyze_iteration(graph, deployment, RooflineCostModel(deployment.hardware),
                                        {"colocated": [load]}).iteration_time_us
    assert times["config.json"] < 0.8 * times["full.json"]
