"""A newcomer's mistaken workflow files (tests/dsl/mistakes/) fail when traced, with an
error that names the file and the marked line: never contextlib.py, never only the line
of a helper in workflows/layers.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from frontier_dag.config.run import run_config_from_dict
from frontier_dag.dsl import trace_config
from frontier_dag.errors import WorkflowError
from tests.conftest import TINY_DENSE

MISTAKES = Path(__file__).parent / "mistakes"
AF = {"attention": {"role": "attention", "gpus": 1}, "ffn": {"role": "ffn", "gpus": 1}}
PD = {"prefill": {"role": "prefill", "gpus": 1}, "decode": {"role": "decode", "gpus": 1}}
COLOCATED = {"main": {"role": "colocated", "gpus": 1}}


def traced_mistake(name: str, pools: dict):
    config = run_config_from_dict({
        "model": TINY_DENSE, "hardware": "h100_sxm", "cluster": {"pools": pools},
        "workflow": {"name": name, "path": str(MISTAKES / f"{name}.py")}, "predictor": {"source": "roofline"},
    })
    return trace_config(config)


def marked_line(name: str) -> int:
    lines = (MISTAKES / f"{name}.py").read_text().splitlines()
    return next(i for i, line in enumerate(lines, start=1) if line.rstrip().endswith("# <- mistake"))


@pytest.mark.parametrize(("name", "pools", "message"), [
    ("af_op_outside_stage_pools", AF,
     "runs on ffn, a stream of the ffn pool, but stage 'af' steps pools ['attention']; add 'ffn' to its pools="),
    ("decode_on_prefill_stream", PD,
     "of stage 'decode', which serves decode, runs on prefill, a stream of the prefill pool"),
    ("pd_without_kv_transfer", PD,
     "stage 'decode' decodes on decode but waits for no KV transfer from the prefill pool: the KV cache would "
     "move for free"),
    ("after_a_name", COLOCATED,
     "op 'o_proj': after= takes the Op that an earlier g.<op>(...) call returned, or a list of them, not "
     "'qkv_proj'"),
    ("stage_names_a_pool", COLOCATED,
     "stage 'colocated': pools= names 'main', which is the name of a pool in cluster.pools, not a role; the DSL "
     "names pools by role: use 'colocated'"),
    ("stage_unknown_role", COLOCATED,
     "stage 'colocated': pools= names 'colocate', which is not a role; roles are colocated, prefill, decode, "
     "attention, ffn"),
    ("compute_missing_columns", COLOCATED,
     "op 'attention': family 'attention' is priced on num_heads, num_kv_heads, head_dim, dtype, kv_dtype; the call "
     "lacks num_kv_heads, dtype, kv_dtype: pass num_kv_heads=..., dtype=..., kv_dtype=..."),
])
def test_a_mistaken_workflow_file_fails_naming_its_line(name, pools, message):
    with pytest.raises(WorkflowError) as err:
        traced_mistake(name, pools)
    text = str(err.value)
    assert message in text
    # the workflow's line, first or after the helper's (workflows/layers.py:148 (from ...:15))
    spot = re.escape(str(Path("tests/dsl/mistakes") / f"{name}.py")) + f":{marked_line(name)}"
    assert re.match(rf"(\S*{spot}\b|\S+ \(from \S*{spot}\))", text), text
    assert "contextlib" not in text


def test_a_stage_given_one_role_as_a_string(config_dict, tiny):
    from frontier_dag.config.run import resolve
    from frontier_dag.dsl import WorkflowDef, trace

    def wf(g):
        with g.stage("colocated", pools="colocated"):
            pass

    deployment = resolve(config_dict(tiny["dense"], COLOCATED, "colocated"))
    with pytest.raises(WorkflowError, match=r"pools= takes a list of roles, such as pools=\['colocated'\]"):
        trace(WorkflowDef("wf", "test", wf), deployment)
