"""The engine's time outside the kernels (``engine_overheads``): where each parameter
shows in a run, how a config names it, and that without it nothing changes."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from frontier_dag.cli.main import cli
from frontier_dag.config.overheads import EngineOverheads, OverheadsFile
from frontier_dag.config.run import Origin, resolve
from frontier_dag.errors import ConfigError
from frontier_dag.sim.assembly import assemble
from frontier_dag.sim.run import simulate
from tests.conftest import TINY_DENSE, FakeCostModel, make_config

FAST = FakeCostModel(constant={"gemm": 20.0, "attention": 10.0, "p2p": 5.0, "all": 2.0, "elementwise": 1.0},
                     per_unit={"gemm": 0.05, "attention": 0.02, "p2p": 1e-6})
COLOCATED = {"main": {"role": "colocated", "gpus": 1}}
PD = {"prefill": {"role": "prefill", "gpus": 1}, "decode": {"role": "decode", "gpus": 1}}


def run(pools, workflow, overheads=None, clients=1, requests=3):
    workload = {"clients": clients, "num_requests": requests, "prompt_tokens": {"kind": "fixed", "value": 200},
                "output_tokens": {"kind": "fixed", "value": 9}}
    extra = {"engine_overheads": overheads} if overheads is not None else {}
    return simulate(assemble(make_config(TINY_DENSE, pools, workflow, workload=workload, **extra), cost_model=FAST))


def test_each_parameter_lands_where_it_is_named():
    plain = run(COLOCATED, "colocated").requests
    intake = run(COLOCATED, "colocated", {"request_us": 3000.0}).requests
    # one request at a time: the intake adds to its TTFT and nothing else
    assert intake["ttft_ms"].to_numpy() == pytest.approx(plain["ttft_ms"].to_numpy() + 3.0)
    assert intake["tpot_ms"].to_numpy() == pytest.approx(plain["tpot_ms"].to_numpy())
    step = run(COLOCATED, "colocated", {"step_us": 100.0, "step_per_sequence_us": 7.0}).requests
    # one sequence per step: every step is 107 µs longer, the prefill step included
    assert step["tpot_ms"].to_numpy() == pytest.approx(plain["tpot_ms"].to_numpy() + 0.107)
    assert step["ttft_ms"].to_numpy() == pytest.approx(plain["ttft_ms"].to_numpy() + 0.107)


def test_host_time_per_step_grows_with_the_batch():
    plain = run(COLOCATED, "colocated", clients=4, requests=4)
    per_seq = run(COLOCATED, "colocated", {"step_per_sequence_us": 50.0}, clients=4, requests=4)
    # four sequences decoding together: 4 x 50 µs more per step
    extra = per_seq.requests["tpot_ms"].to_numpy() - plain.requests["tpot_ms"].to_numpy()
    assert extra == pytest.approx(0.2, rel=0.05)
    host = per_seq.iterations["host_overhead_us"].to_numpy() - plain.iterations["host_overhead_us"].to_numpy()
    assert host == pytest.approx(50.0 * per_seq.iterations["num_seqs"].to_numpy())


def test_pd_first_token_comes_from_the_decode_server_after_the_handoff():
    zero = run(PD, "pd", {}).requests
    handoff = run(PD, "pd", {"handoff_us": 2000.0}).requests
    # with a model, the first token reaches the client once its KV arrived and the handoff is over
    assert (zero["first_token_s"] >= zero["transfer_end_s"] - 1e-12).all()
    assert zero["prefill_done_s"].to_numpy() == pytest.approx(
        run(PD, "pd").requests["first_token_s"].to_numpy())
    assert handoff["ttft_ms"].to_numpy() == pytest.approx(zero["ttft_ms"].to_numpy() + 2.0)
    assert (handoff["decode_admitted_s"] >= handoff["transfer_end_s"] + 2e-3 - 1e-12).all()


def test_without_the_key_nothing_changes():
    """No key and a key of zeros give the same colocated run (zeros only move a PD run's first
    token to the decode server, where the client gets it)."""
    a, b = run(COLOCATED, "colocated", clients=2, requests=6), run(COLOCATED, "colocated", {}, clients=2, requests=6)
    assert a.summary["ttft_ms"] == b.summary["ttft_ms"] and a.summary["tpot_ms"] == b.summary["tpot_ms"]
    assert np.array_equal(a.iterations["duration_us"].to_numpy(), b.iterations["duration_us"].to_numpy())


def _config(tmp_path, value):
    workload = {"clients": 1, "num_requests": 2, "prompt_tokens": {"kind": "fixed", "value": 100},
                "output_tokens": {"kind": "fixed", "value": 4}}
    return make_config(TINY_DENSE, COLOCATED, "colocated", workload=workload, engine_overheads=value)


def test_a_file_written_by_calibrate_is_named_by_its_path_and_engine(tmp_path):
    file = OverheadsFile(engines={"vllm": EngineOverheads(request_us=1.0),
                                  "sglang": EngineOverheads(request_us=2.0),
                                  "sglang 0.5.8": EngineOverheads(request_us=3.0)})
    (tmp_path / "engine.yaml").write_text(file.to_yaml())
    origin = Origin("run.yaml", tmp_path)
    # the run's engine (scheduler.policy, vllm by default) picks the entry; the run keeps the values
    assert resolve(_config(tmp_path, "engine.yaml"), origin).overheads.request_us == 1.0
    named = resolve(_config(tmp_path, {"file": "engine.yaml", "engine": "sglang 0.5.8"}), origin)
    assert named.overheads.request_us == 3.0
    assert named.config.engine_overheads == EngineOverheads(request_us=3.0)
    assert file.entry("sglang", "0.5.8").request_us == 3.0 and file.entry("sglang", "0.5.9").request_us == 2.0
    assert file.entry("trtllm") is None


def test_bad_overheads_say_what_to_do(tmp_path):
    origin = Origin("run.yaml", tmp_path)
    with pytest.raises(ConfigError, match="no such file.*calibrate"):
        resolve(_config(tmp_path, "missing.yaml"), origin)
    (tmp_path / "engine.yaml").write_text(yaml.safe_dump({"engines": {"sglang": {"request_us": 5.0}}}))
    with pytest.raises(ConfigError, match=r"no entry for engine 'vllm' \(it has: sglang\)"):
        resolve(_config(tmp_path, "engine.yaml"), origin)
    with pytest.raises(ConfigError, match="request_us"):
        _config(tmp_path, {"request_us": -1.0})
    with pytest.raises(ConfigError, match="step_ms"):
        _config(tmp_path, {"step_ms": 1.0})
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"engines": {"vllm": {"request": 5.0}}}))
    with pytest.raises(ConfigError, match="bad.yaml"):
        resolve(_config(tmp_path, "bad.yaml"), origin)


def test_cli_simulate_refuses_a_missing_overheads_file(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "model": TINY_DENSE, "hardware": "h100_sxm", "cluster": {"pools": COLOCATED},
        "workflow": {"name": "colocated"}, "predictor": {"source": "roofline"},
        "workload": {"clients": 1, "num_requests": 2, "prompt_tokens": {"kind": "fixed", "value": 100},
                     "output_tokens": {"kind": "fixed", "value": 4}},
        "engine_overheads": "engine.yaml"}))
    result = CliRunner().invoke(cli, ["simulate", str(config), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert "engine_overheads: engine.yaml: no such file" in result.output
