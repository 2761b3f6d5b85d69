"""A run directory stands alone: it keeps a copy of its workflow file and of its model's
config.json, its analysis reads the copies, and it analyses the same wherever it is moved
and whatever becomes of the originals."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import warnings
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import frontier_dag as fd
from frontier_dag.cli.main import cli
from frontier_dag.dsl.registry import get_workflow, module_name
from frontier_dag.errors import FrontierDagWarning, RunDataError
from frontier_dag.sim.run_dir import read_run
from frontier_dag.sweep import load_results

WORKFLOW = '''"""A strategy of our own: a prefill pool hands KV to a decode pool."""

from frontier_dag.dsl import Builder, workflow
from frontier_dag.workflows.layers import attention, embed, ffn, kv_bytes_per_token, lm_head


@workflow("my_pd", "Prefill pool hands KV to a decode pool.")
def my_pd(g: Builder) -> None:
    prefill, decode = g.pool("prefill"), g.pool("decode")
    prefill_gpu, decode_gpu = g.stream("prefill"), g.stream("decode")
    with g.stage("prefill", pools=["prefill"], serves="prefill") as st:
        x = embed(g, prefill, prefill_gpu, st.mb)
        for layer in g.layers():
            x = ffn(g, prefill, prefill_gpu, st.mb, layer, attention(g, prefill, prefill_gpu, st.mb, x))
        first = lm_head(g, prefill, prefill_gpu, st.mb, x)
    with g.stage("kv_transfer", pools=["prefill", "decode"], serves="transfer") as st:
        kv = g.transfer("kv_cache", g.link("prefill", "decode"),
                        bytes=st.mb.kv_tokens * kv_bytes_per_token(g, prefill), after=first)
    with g.stage("decode", pools=["decode"], serves="decode") as st:
        x = embed(g, decode, decode_gpu, st.mb, after=kv)
        for layer in g.layers():
            x = ffn(g, decode, decode_gpu, st.mb, layer, attention(g, decode, decode_gpu, st.mb, x))
        lm_head(g, decode, decode_gpu, st.mb, x)
'''
#: The same strategy edited after the run: every decode layer runs its FFN three times.
EDITED = WORKFLOW.replace("x = ffn(g, decode, decode_gpu, st.mb, layer, attention(g, decode, decode_gpu, st.mb, x))",
                          "x = attention(g, decode, decode_gpu, st.mb, x)\n"
                          "            for _ in range(3):\n"
                          "                x = ffn(g, decode, decode_gpu, st.mb, layer, x)")
#: A Hugging Face config.json of a small Llama.
MODEL = {"architectures": ["LlamaForCausalLM"], "hidden_size": 512, "num_attention_heads": 8,
         "num_key_value_heads": 2, "num_hidden_layers": 2, "intermediate_size": 1024, "vocab_size": 4000,
         "max_position_embeddings": 8192, "torch_dtype": "bfloat16"}
CONFIG = {
    "model": "models/tiny-llama/config.json", "hardware": "h100_sxm",
    "cluster": {"pools": {"prefill": {"role": "prefill", "gpus": 1}, "decode": {"role": "decode", "gpus": 1}}},
    "workflow": {"name": "my_pd", "path": "strategies/my_pd.py"},
    "predictor": {"source": "roofline"},
    "workload": {"arrival": {"kind": "poisson", "rate_per_s": 40}, "num_requests": 30,
                 "prompt_tokens": {"kind": "lognormal", "mean": 600, "cv": 0.8, "high": 4000},
                 "output_tokens": {"kind": "fixed", "value": 12}},
}


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def project(tmp: Path) -> Path:
    """A user's folder: a config, a workflow file and a model config.json beside it."""
    (tmp / "strategies").mkdir(parents=True)
    (tmp / "strategies" / "my_pd.py").write_text(WORKFLOW)
    (tmp / "models" / "tiny-llama").mkdir(parents=True)
    (tmp / "models" / "tiny-llama" / "config.json").write_text(json.dumps(MODEL))
    (tmp / "run.yaml").write_text(yaml.safe_dump(CONFIG))
    return tmp / "run.yaml"


def analyses(run: Path, out: Path) -> dict:
    """Every view of a run directory, from the command line and the API."""
    out.mkdir(exist_ok=True)
    result = invoke("critical-path", run, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    result = invoke("render", run, "--bottlenecks", "--out", out / "b.dot")
    assert result.exit_code == 0, result.output
    result = invoke("trace", run, "--out", out / "t.json")
    assert result.exit_code == 0, result.output
    trace = json.loads((out / "t.json").read_text())
    api = fd.load_run(run).critical_path()
    for r in (report, api):
        r.pop("run_dir")
    events = json.dumps([e for e in trace["traceEvents"] if e.get("pid", 0) >= 1000])
    return {"report": report, "api": api, "dot": (out / "b.dot").read_text().replace(str(run), "RUN"),
            "trace": json.loads(re.sub(r'"where": "[^"]*inputs/workflow/', '"where": "RUN/inputs/workflow/', events)),
            "rebuilt": trace["metadata"]["rebuilt_iterations"]}


@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("standalone")
    config = project(tmp / "user")
    run = tmp / "run"
    result = invoke("simulate", config, "--out", run, "--no-progress")
    assert result.exit_code == 0, result.output
    return {"config": config, "run": run, "before": analyses(run, tmp / "views"), "output": result.output,
            "views": tmp / "views"}


def test_the_run_keeps_copies_named_by_its_config_and_hashed_in_its_summary(simulated):
    run, user = simulated["run"], simulated["config"].parent
    assert (run / "inputs/workflow/my_pd.py").read_text() == WORKFLOW
    assert json.loads((run / "inputs/model/tiny-llama/config.json").read_text()) == MODEL
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["workflow"]["path"] == "inputs/workflow/my_pd.py"
    assert config["model"] == "inputs/model/tiny-llama/config.json"
    inputs = json.loads((run / "summary.json").read_text())["inputs"]
    assert inputs["workflow"] == {"given": "strategies/my_pd.py", "copy": "inputs/workflow/my_pd.py",
                                  "sha256": hashlib.sha256((user / "strategies/my_pd.py").read_bytes()).hexdigest()}
    assert inputs["model"]["sha256"] == hashlib.sha256((user / "models/tiny-llama/config.json").read_bytes()).hexdigest()
    assert "inputs/workflow/my_pd.py" in simulated["output"]


def test_the_views_compare_the_rebuilt_iterations_with_the_recorded_ones(simulated):
    before = simulated["before"]
    assert before["report"]["warnings"] == []
    checks = before["report"]["checks"]["rebuilt_iterations"]
    assert {c["pool"] for c in checks} == {"prefill", "decode"}
    for check in checks:
        assert check["recorded_us"] > 0 and abs(check["rebuilt_us"] / check["recorded_us"] - 1) < 0.01
    assert before["rebuilt"] == checks


def test_a_moved_run_analyses_the_same_with_its_originals_deleted_or_edited(simulated, tmp_path):
    user = simulated["config"].parent
    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(simulated["run"], moved)
    saved = {p: p.read_bytes() for p in (user / "strategies/my_pd.py", user / "models/tiny-llama/config.json")}
    try:
        (user / "strategies/my_pd.py").unlink()
        (user / "models/tiny-llama/config.json").unlink()
        assert analyses(moved, tmp_path / "deleted") == simulated["before"]
        (user / "strategies/my_pd.py").write_text(EDITED)
        (user / "models/tiny-llama/config.json").write_text(json.dumps({**MODEL, "num_hidden_layers": 8}))
        assert analyses(moved, tmp_path / "edited") == simulated["before"]
    finally:
        for path, content in saved.items():
            path.write_bytes(content)


def test_the_edited_workflow_would_have_changed_the_analysis(simulated, tmp_path):
    """The copy matters: the edited strategy's decode iteration is far longer."""
    run = tmp_path / "run"
    shutil.copytree(simulated["run"], run)
    (run / "inputs/workflow/my_pd.py").write_text(EDITED)
    result = invoke("critical-path", run)
    assert result.exit_code == 2
    assert "inputs/workflow/my_pd.py was changed after the run" in result.output and "Traceback" not in result.output
    rehashed = json.loads((run / "summary.json").read_text())
    rehashed["inputs"]["workflow"]["sha256"] = hashlib.sha256(EDITED.encode()).hexdigest()
    (run / "summary.json").write_text(json.dumps(rehashed))
    result = invoke("critical-path", run)
    assert result.exit_code == 2 and "was edited after the run" in result.output  # the run id covers the hash


@pytest.mark.parametrize("damage, message", [
    (lambda run: (run / "inputs/workflow/my_pd.py").unlink(), "inputs/workflow/my_pd.py is missing"),
    (lambda run: (run / "config.yaml").write_text((run / "config.yaml").read_text().replace(
        "path: inputs/workflow/my_pd.py", "path: ../user/strategies/my_pd.py")), "config.yaml is unreadable"),
    (lambda run: (run / "summary.json").write_text((run / "summary.json").read_text().replace(
        '"copy": "inputs/workflow/my_pd.py"', '"copy": "../user/strategies/my_pd.py"')), "not a file under inputs/"),
])
def test_a_damaged_copy_is_an_error_naming_it(simulated, tmp_path, damage, message):
    run = tmp_path / "run"
    shutil.copytree(simulated["run"], run)
    damage(run)
    with pytest.raises(RunDataError, match=message):
        read_run(run)


def test_a_run_written_before_copies_says_how_to_fix_it(simulated, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(simulated["run"], run)
    shutil.rmtree(run / "inputs")
    text = (run / "config.yaml").read_text().replace("inputs/workflow/my_pd.py", "strategies/my_pd.py")
    (run / "config.yaml").write_text(text.replace("inputs/model/tiny-llama/config.json", "models/tiny-llama/config.json"))
    summary = json.loads((run / "summary.json").read_text())
    del summary["inputs"]
    (run / "summary.json").write_text(json.dumps(summary))
    result = invoke("critical-path", run)
    assert result.exit_code == 2
    assert "holds no copy of it (it was written before runs kept" in result.output
    assert f"copy the file to {run / 'strategies/my_pd.py'}" in result.output


def test_simulating_the_runs_own_config_again_gives_its_id(simulated, tmp_path):
    result = invoke("simulate", simulated["run"] / "config.yaml", "--out", tmp_path / "again", "--no-progress")
    assert result.exit_code == 0, result.output
    assert read_run(tmp_path / "again").run_id == read_run(simulated["run"]).run_id
    assert read_run(tmp_path / "again").inputs["workflow"]["given"] == "inputs/workflow/my_pd.py"


def test_a_run_read_back_and_saved_again_keeps_its_copies_and_id(simulated, tmp_path):
    again = fd.load_run(simulated["run"]).save(tmp_path / "again")
    assert (again / "inputs/workflow/my_pd.py").read_text() == WORKFLOW
    assert read_run(again).run_id == read_run(simulated["run"]).run_id
    assert read_run(again).inputs["workflow"]["given"] == "strategies/my_pd.py"


def test_a_run_in_memory_refuses_a_workflow_edited_since(tmp_path):
    config = project(tmp_path)
    run = fd.simulate(config)
    assert run.summary["inputs"]["workflow"] == {"given": "strategies/my_pd.py",
                                                 "sha256": hashlib.sha256(WORKFLOW.encode()).hexdigest()}
    (tmp_path / "strategies/my_pd.py").write_text(EDITED)
    with pytest.raises(RunDataError, match="my_pd.py \\(workflow\\) changed since the run read it"):
        run.critical_path()


def test_the_copy_is_a_module_of_its_own_whose_ops_name_the_copy(simulated, tmp_path):
    original = simulated["config"].parent / "strategies/my_pd.py"
    copy = simulated["run"] / "inputs/workflow/my_pd.py"
    assert get_workflow("my_pd", original).source != get_workflow("my_pd", copy).source == str(copy)
    content = copy.read_bytes()
    digest = hashlib.sha256(str(copy.resolve()).encode() + b"\0" + content).hexdigest()[:16]
    assert module_name(copy, content) == f"frontier_dag_user_workflow_{digest}"  # the same in every process
    assert get_workflow("my_pd", copy).fn.__module__ == module_name(copy, content)
    trace = json.loads((simulated["views"] / "t.json").read_text())["traceEvents"]
    files = {f for e in trace if "where" in e.get("args", {}) for f in re.findall(r"([^\s()]*my_pd\.py):\d+",
                                                                                  e["args"]["where"])}
    assert files and {Path(f).resolve() for f in files} == {copy.resolve()}, files


def test_an_error_in_the_copy_names_the_copy(simulated, tmp_path):
    from frontier_dag.config.run import Origin, load_run_config
    from frontier_dag.dsl import trace_config
    from frontier_dag.errors import WorkflowError

    run = tmp_path / "run"
    shutil.copytree(simulated["run"], run)
    broken = WORKFLOW.replace("        lm_head(g, decode, decode_gpu, st.mb, x)\n",
                              "        lm_head(g, decode, decode_gpu, st.mb, x)\n        raise ValueError('no')\n")
    (run / "inputs/workflow/my_pd.py").write_text(broken)
    line = broken.splitlines().index("        raise ValueError('no')") + 1
    with pytest.raises(WorkflowError, match=f"{run / 'inputs/workflow/my_pd.py'}:{line}: workflow my_pd failed"):
        trace_config(load_run_config(run / "config.yaml"), Origin.of_file(run / "config.yaml"))


def test_the_rebuilt_iteration_of_a_run_priced_otherwise_is_a_warning(tmp_path, fake_cost_model):
    """A run simulated with other prices than its config names: the rebuilt iterations are
    far from the recorded ones, and every view says so with both figures."""
    config = project(tmp_path)
    fd.simulate(config, out=tmp_path / "run", cost_model=fake_cost_model(constant={"gemm": 500.0}))
    result = invoke("critical-path", tmp_path / "run", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert len(report["warnings"]) == 2
    decode = next(c for c in report["checks"]["rebuilt_iterations"] if c["pool"] == "decode")
    assert decode["warning"] == next(w for w in report["warnings"] if "decode" in w)
    assert f"{decode['recorded_us'] / 1e3:,.2f} ms" in decode["warning"] and \
        f"{decode['rebuilt_us'] / 1e3:,.2f} ms" in decode["warning"]
    assert f"warning: {decode['warning']}" in result.stderr
    result = invoke("trace", tmp_path / "run", "--out", tmp_path / "t.json")
    assert f"warning: {decode['warning']}" in result.stderr
    assert decode["warning"] in json.loads((tmp_path / "t.json").read_text())["metadata"]["warnings"]
    result = invoke("render", tmp_path / "run", "--bottlenecks", "--out", tmp_path / "b.dot")
    assert result.exit_code == 0 and "warning: the rebuilt iteration of" in result.stderr
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fd.load_run(tmp_path / "run").critical_path()
    assert any(issubclass(w.category, FrontierDagWarning) and "rebuilt iteration" in str(w.message) for w in caught)


def test_a_sweep_of_a_workflow_file_records_its_hash(tmp_path):
    config = project(tmp_path)
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({
        "base": config.name, "axes": {"cluster.pools.decode.gpus": [1, 2]}}))
    result = invoke("sweep", tmp_path / "sweep.yaml", "--out", tmp_path / "s", "--workers", "1", "--no-progress")
    assert result.exit_code == 0, result.output
    results = load_results(tmp_path / "s")
    digest = hashlib.sha256(WORKFLOW.encode()).hexdigest()
    assert list(results["status"]) == ["ok", "ok"] and set(results["inputs.workflow.sha256"]) == {digest}
    assert set(results["inputs.workflow.given"]) == {"strategies/my_pd.py"} and "inputs.workflow.copy" not in results
