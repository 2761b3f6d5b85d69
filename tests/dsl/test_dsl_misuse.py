"""Misusing the DSL fails when the workflow is traced, naming the file:line that did it.

Each workflow below marks the offending line with a ``# <- name`` comment; the error must
name this file and that line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from frontier_dag.config.run import resolve
from frontier_dag.dsl import Op, WorkflowDef, trace
from frontier_dag.errors import ConfigError, FrontierDagError, WorkflowError

THIS_FILE = Path(__file__)


def line_of(marker: str) -> int:
    """The line of this file that ends with ``# <- marker``."""
    for number, line in enumerate(THIS_FILE.read_text().splitlines(), start=1):
        if line.rstrip().endswith(f"# <- {marker}"):
            return number
    raise AssertionError(f"no line marked {marker}")


@pytest.fixture
def deployment(config_dict, tiny):
    pools = {"p": {"role": "prefill", "gpus": 1}, "d": {"role": "decode", "gpus": 1}}
    return resolve(config_dict(tiny["dense"], pools, "pd"))


def run(fn, deployment, given=None, **defs) -> FrontierDagError:
    with pytest.raises(FrontierDagError) as err:
        trace(WorkflowDef(fn.__name__, "test", fn, **defs), deployment, given)
    return err.value


def assert_names_line(error: Exception, marker: str) -> None:
    text = str(error)
    assert re.search(rf"test_dsl_misuse\.py:{line_of(marker)}\b", text), text


# -- the workflows -----------------------------------------------------------------------------

def unknown_resource(g):
    g.stream("decode")
    with g.stage("decode", pools=["decode"]) as st:
        g.gemm("proj", "decode.side", m=st.mb.tokens, n=8, k=8)  # <- unknown_resource


def no_resource(g):
    with g.stage("decode", pools=["decode"]) as st:
        g.gemm("proj", None, m=st.mb.tokens, n=8, k=8)  # <- no_resource


def foreign_op(g):
    decode = g.stream("decode")
    with g.stage("decode", pools=["decode"]) as st:
        g.gemm("proj", decode, m=st.mb.tokens, n=8, k=8, after=FOREIGN[0])  # <- foreign_op


def made_up_op(g):
    decode = g.stream("decode")
    with g.stage("decode", pools=["decode"]) as st:
        g.gemm("proj", decode, m=st.mb.tokens, n=8, k=8, after=Op(12345, -1, "ghost"))  # <- made_up_op


def not_an_op(g):
    decode = g.stream("decode")
    with g.stage("decode", pools=["decode"]) as st:
        g.gemm("proj", decode, m=st.mb.tokens, n=8, k=8, after="qkv_proj")  # <- not_an_op


def cycle(g):
    decode, link = g.stream("decode"), g.link("prefill", "decode")
    with g.stage("decode", pools=["decode"]) as st:
        a = g.gemm("a", decode, m=st.mb.tokens, n=8, k=8)
        b = g.transfer("b", link, bytes=st.mb.tokens * 2, after=a)
        g.depend(b, a)  # <- cycle


def outside_stage(g):
    decode = g.stream("decode")
    g.gemm("proj", decode, m=1, n=8, k=8)  # <- outside_stage


def other_stage_sym(g):
    prefill, decode = g.stream("prefill"), g.stream("decode")
    with g.stage("prefill", pools=["prefill"]) as pst:
        g.gemm("proj", prefill, m=pst.mb.tokens, n=8, k=8)
    with g.stage("decode", pools=["decode"]):
        g.gemm("proj", decode, m=pst.mb.tokens, n=8, k=8)  # <- other_stage_sym


def other_stage_batch(g):
    prefill, decode = g.stream("prefill"), g.stream("decode")
    with g.stage("prefill", pools=["prefill"]) as pst:
        g.gemm("proj", prefill, m=pst.mb.tokens, n=8, k=8)
    with g.stage("decode", pools=["decode"]) as st:
        g.compute("attention", decode, "attention", batch=pst.mb, m=st.mb.tokens)  # <- other_stage_batch


def unknown_family(g):
    decode = g.stream("decode")
    with g.stage("decode", pools=["decode"]) as st:
        g.compute("fft", decode, "fourier", n=st.mb.tokens)  # <- unknown_family


def transfer_on_gpu(g):
    decode = g.stream("decode")
    with g.stage("decode", pools=["decode"]) as st:
        g.transfer("kv", decode, bytes=st.mb.tokens)  # <- transfer_on_gpu


def nested_stage(g):
    with g.stage("decode", pools=["decode"]), g.stage("inner", pools=["decode"]):  # <- nested_stage
        pass


def dotted_stage(g):
    with g.stage("decode.fast", pools=["decode"]):  # <- dotted_stage
        pass


def missing_pool(g):
    g.stream("attention")  # <- missing_pool


def python_bug(g):
    with g.stage("decode", pools=["decode"]):
        return 1 / 0  # <- python_bug


FOREIGN: list[Op] = []


# -- the tests ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("fn", "message"), [
    (unknown_resource, "runs on unknown resource 'decode.side'"),
    (no_resource, "has no resource"),
    (made_up_op, "which is not an op of this trace"),
    (not_an_op, "after= takes the Op that an earlier g.<op>(...) call returned, or a list of them, not 'qkv_proj'"),
    (cycle, "closes a dependency cycle"),
    (outside_stage, "is outside any stage"),
    (other_stage_sym, "uses prefill.mb0.tokens, a batch of another stage"),
    (other_stage_batch, "reads prefill.mb0, a micro-batch of another stage"),
    (unknown_family, "unknown cost family 'fourier'"),
    (transfer_on_gpu, "must run on a link"),
    (nested_stage, "stages do not nest"),
    (missing_pool, "needs a pool with role 'attention'"),
    (dotted_stage, "stage name 'decode.fast' must be an identifier"),
    (python_bug, "failed while tracing: ZeroDivisionError"),
], ids=lambda v: v.__name__ if callable(v) else "")
def test_misuse_names_file_and_line(fn, message, deployment):
    error = run(fn, deployment)
    assert isinstance(error, WorkflowError)
    assert message in str(error)
    assert_names_line(error, fn.__name__)
    assert "contextlib" not in str(error)  # the body of `with g.stage(...)` runs inside contextlib


def test_dependency_on_an_op_of_another_trace(deployment):
    def producer(g):
        decode = g.stream("decode")
        with g.stage("decode", pools=["decode"]) as st:
            FOREIGN[:] = [g.gemm("proj", decode, m=st.mb.tokens, n=8, k=8)]

    trace(WorkflowDef("producer", "test", producer), deployment)
    error = run(foreign_op, deployment)
    assert "depends on Op(mb0.proj), which is not an op of this trace" in str(error)
    assert_names_line(error, "foreign_op")


def test_a_workflow_without_stages_is_an_error(deployment):
    error = run(lambda g: None, deployment)
    assert "traced no stage" in str(error)


def test_unknown_and_invalid_workflow_params(deployment):
    from frontier_dag.dsl import Param

    params = {"micro_batches": Param(int, 2, "m", minimum=1)}

    def wf(g, micro_batches):
        raise AssertionError("not traced")

    error = run(wf, deployment, {"micro_batch": 3}, params=params)
    assert isinstance(error, ConfigError)
    assert "workflow.params.micro_batch: unknown parameter of workflow 'wf'; it takes micro_batches" in str(error)
    assert "below the minimum" in str(run(wf, deployment, {"micro_batches": 0}, params=params))
    assert "whole number" in str(run(wf, deployment, {"micro_batches": 2.5}, params=params))
    assert "expects a number" in str(run(wf, deployment, {"micro_batches": "two"}, params=params))


def test_unknown_param_through_a_config_names_the_file(tmp_path):
    from frontier_dag.config.run import Origin, load_run_config
    from frontier_dag.dsl import trace_config

    path = tmp_path / "af.yaml"
    path.write_text("model: llama-3.1-8b\nhardware: h100_sxm\n"
                    "cluster: {pools: {a: {role: attention, gpus: 1}, f: {role: ffn, gpus: 1}}}\n"
                    "workflow: {name: af_pingpong, params: {microbatches: 3}}\npredictor: {source: roofline}\n")
    with pytest.raises(ConfigError) as err:
        trace_config(load_run_config(path), Origin.of_file(path))
    assert str(err.value).startswith(f"{path}: workflow.params.microbatches: unknown parameter")
    with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}: workflow.name: unknown workflow 'af_pingpnog'"):
        trace_config(load_run_config(path, ["workflow.name=af_pingpnog", "workflow.params={}"]), Origin.of_file(path))
