"""Golden text dumps of every built-in workflow's DAG on tiny models.

A change to a workflow or to the tracer shows up here as a readable diff. After an
intended change, regenerate the files and review the diff before committing it:

    UPDATE_GOLDEN=1 python -m pytest tests/workflows/test_golden.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from frontier_dag.dsl import list_workflows

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"

ATTN_FFN = {"a": {"role": "attention", "gpus": 1}, "f": {"role": "ffn", "gpus": 1}}
PD_TP2 = {"p": {"role": "prefill", "gpus": 2, "tp": 2}, "d": {"role": "decode", "gpus": 2, "tp": 2}}
PD_EP4 = {"p": {"role": "prefill", "gpus": 4, "ep": 4}, "d": {"role": "decode", "gpus": 4, "ep": 4}}

#: prompts on both sides of hybrid_pd's threshold (with one length, one entry pool gets nothing: an error)
MIXED_PROMPTS = {"workload": {"arrival": {"kind": "poisson", "rate_per_s": 1.0},
                              "prompt_tokens": {"kind": "uniform", "low": 16, "high": 4096}}}

#: case -> (tiny model, pools, workflow, params[, config keys])
CASES = {
    "colocated_dense_tp2": ("dense", {"m": {"role": "colocated", "gpus": 2, "tp": 2}}, "colocated", {}),
    "colocated_moe_dp2": ("moe", {"m": {"role": "colocated", "gpus": 2}}, "colocated", {}),
    "pd_per_request": ("dense", PD_TP2, "pd", {}),
    "pd_per_layer": ("dense", PD_TP2, "pd", {"kv_transfer": "per_layer"}),
    "af_pingpong_m2": ("dense", ATTN_FFN, "af_pingpong", {"micro_batches": 2}),
    "af_pingpong_after_prefill": ("dense", {"p": {"role": "prefill", "gpus": 1}, **ATTN_FFN}, "af_pingpong",
                                  {"micro_batches": 2}),
    "ep_moe_ep4": ("moe", {"m": {"role": "colocated", "gpus": 4, "ep": 4}}, "ep_moe", {}),
    "pd_ep_moe_mla": ("mla", PD_EP4, "pd_ep_moe", {"routing": {"kind": "power_law", "alpha": 1.2}}),
    "pd_ep_moe_tbo_mtp": ("mla", PD_EP4, "pd_ep_moe", {"micro_batches": 2,
                                                         "mtp": {"draft_tokens": 1, "acceptance": 0.8}}),
    "ep_moe_tbo": ("moe", {"m": {"role": "colocated", "gpus": 4, "ep": 4}}, "ep_moe", {"micro_batches": 2}),
    "af_ep_moe_m2": ("moe", {"a": {"role": "attention", "gpus": 1}, "f": {"role": "ffn", "gpus": 4, "ep": 4}},
                     "af_ep_moe", {"micro_batches": 2}),
    "hybrid_pd": ("dense", PD_TP2, "hybrid_pd", {"threshold": 512}, MIXED_PROMPTS),
    # pipeline parallelism: one layer per stage, the activations sent between them
    "colocated_dense_tp2_pp2": ("dense", {"m": {"role": "colocated", "gpus": 4, "tp": 2, "pp": 2}}, "colocated", {}),
    "pd_ep_moe_pp2": ("moe", {"p": {"role": "prefill", "gpus": 2, "pp": 2},
                              "d": {"role": "decode", "gpus": 4, "ep": 2, "pp": 2}}, "pd_ep_moe", {}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_dump(case, trace_dict, tiny):
    model, pools, workflow, params, *extra = CASES[case]
    _, graph = trace_dict(tiny[model], pools, workflow, params, **(extra[0] if extra else {}))
    text = graph.dump()
    path = GOLDEN / f"{case}.txt"
    if UPDATE:
        path.write_text(text)
    assert path.is_file(), f"{path} is missing; run UPDATE_GOLDEN=1 python -m pytest {__file__}"
    assert text == path.read_text(), (
        f"{workflow} no longer traces to {path.name}; if the change is intended, regenerate with "
        f"UPDATE_GOLDEN=1 python -m pytest tests/workflows/test_golden.py and review the diff")


def test_every_built_in_workflow_has_a_golden_dump():
    covered = {case[2] for case in CASES.values()}
    built_in = {w.name for w in list_workflows() if w.fn.__module__.startswith("frontier_dag.workflows.")}
    assert built_in <= covered


def test_no_stale_golden_files():
    assert {p.stem for p in GOLDEN.glob("*.txt")} == set(CASES)
