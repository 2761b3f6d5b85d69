"""Sliding-window attention (gpt-oss): which layers are windowed, the equal-work batch the
coster prices them as, and the KV cache that only full-attention layers grow."""

from __future__ import annotations

import numpy as np

from frontier_dag.config.model import from_hf_config, load_model
from frontier_dag.cost.batch import windowed_batch
from frontier_dag.dsl import trace_config
from tests.conftest import TINY_DENSE, make_config


def test_gpt_oss_alternates_windowed_and_full_layers():
    m = load_model("openai/gpt-oss-120b")
    assert [m.attention_window(i) for i in range(4)] == [128, None, 128, None]
    assert m.num_full_attention_layers == 18
    assert m.kv_bytes_per_token == m.kv_bytes_per_token_per_layer * 18


def test_sliding_window_follows_layer_types_or_the_flag():
    base = {"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 4, "intermediate_size": 128,
            "vocab_size": 100, "sliding_window": 32}
    assert from_hf_config({**base, "use_sliding_window": False}, "m").sliding_window is None  # Qwen-style
    assert from_hf_config({**base, "use_sliding_window": True}, "m").attention_window(3) == 32
    assert from_hf_config(base, "m").attention_window(3) == 32  # Mistral-style: no flag, every layer windowed
    m = from_hf_config({**base, "layer_types": ["sliding_attention", "sliding_attention", "sliding_attention",
                                                "full_attention"]}, "m")
    assert m.full_attention_interval == 4 and m.attention_window(3) is None and m.attention_window(2) == 32


def test_windowed_batch_keeps_the_attention_work():
    w = 128
    q = np.array([1, 1, 100, 4096])
    ctx = np.array([50, 5000, 3000, 0])
    wq, wctx = windowed_batch(q, ctx, w)
    assert wq[:3].tolist() == [1, 1, 100] and wctx[:3].tolist() == [50, 127, 128]
    assert wq[3:].tolist() == [256] * 16 and not wctx[3:].any()
    # a causal piece of 2W tokens without cache: W keys per query on average, as the window
    pairs = (wq[3:] * (wq[3:] + 1) / 2).sum()
    assert abs(pairs / (4096 * w) - 1) < 0.01


def test_windowed_layers_get_their_own_attention_template():
    model = {**TINY_DENSE, "num_layers": 4, "sliding_window": 16, "full_attention_interval": 2}
    config = make_config(model, {"main": {"role": "colocated", "gpus": 1}}, "colocated")
    _, graph = trace_config(config)
    windows = sorted({dict(t.fields).get("window") for t in graph.templates if t.family == "attention"},
                     key=str)
    assert windows == [16, None]
