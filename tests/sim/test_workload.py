"""The request stream: properties under generated configs, distributions, trace replay."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from frontier_dag.config.workload import WorkloadConfig
from frontier_dag.data import shared_data_dir
from frontier_dag.errors import ConfigError
from frontier_dag.sim.workload import Requests, generate_requests

FIXTURES = Path(__file__).parent / "fixtures"
SPLITWISE = str(FIXTURES / "splitwise_small.csv")
MOONCAKE = str(FIXTURES / "mooncake.jsonl")


def _same(a: Requests, b: Requests) -> bool:
    return (
        np.array_equal(a.arrival_s, b.arrival_s, equal_nan=True)
        and np.array_equal(a.prompt_tokens, b.prompt_tokens)
        and np.array_equal(a.output_tokens, b.output_tokens)
        and np.array_equal(a.hash_offsets, b.hash_offsets)
        and np.array_equal(a.hash_values, b.hash_values)
    )


# --- properties under generated synthetic workloads --------------------------------------

rates = st.floats(0.01, 1000.0)
arrivals = st.one_of(
    st.builds(lambda r: {"kind": "poisson", "rate_per_s": r}, rates),
    st.builds(lambda r, cv: {"kind": "gamma", "rate_per_s": r, "cv": cv}, rates, st.floats(0.1, 5.0)),
    st.builds(lambda r: {"kind": "constant", "rate_per_s": r}, rates),
)


@st.composite
def lengths(draw):
    kind = draw(st.sampled_from(["fixed", "uniform", "lognormal"]))
    low = draw(st.none() | st.integers(1, 500))
    high = draw(st.none() | st.integers(low or 1, 5000))
    spec = {"kind": kind, "low": low, "high": high}
    if kind == "fixed":
        spec["value"] = draw(st.integers(1, 10_000))
    elif kind == "uniform":
        spec["low"], spec["high"] = low or 1, high or 4096
    else:
        spec |= {"mean": draw(st.floats(1.0, 5000.0)), "cv": draw(st.floats(0.05, 4.0))}
    return {k: v for k, v in spec.items() if v is not None}


@st.composite
def workloads(draw):
    loop = {"clients": draw(st.integers(1, 64))} if draw(st.booleans()) else {"arrival": draw(arrivals)}
    return WorkloadConfig(**loop, prompt_tokens=draw(lengths()), output_tokens=draw(lengths()),
                          num_requests=draw(st.integers(1, 300)))


@settings(max_examples=60, deadline=None)
@given(cfg=workloads(), seed=st.integers(0, 2**32))
def test_generated_requests_are_well_formed(cfg, seed):
    requests = generate_requests(cfg, seed)
    n = cfg.num_requests
    assert len(requests) == n and len(requests.to_frame()) == n
    if cfg.clients is not None:
        assert requests.closed_loop and np.isnan(requests.arrival_s).all()
    else:
        assert requests.arrival_s[0] == 0.0 and np.isfinite(requests.arrival_s).all()
        assert np.all(np.diff(requests.arrival_s) >= 0)
    for tokens, spec in ((requests.prompt_tokens, cfg.prompt_tokens), (requests.output_tokens, cfg.output_tokens)):
        assert tokens.dtype == np.int64 and tokens.min() >= max(1, spec.low or 1)
        if spec.high is not None:
            assert tokens.max() <= spec.high
    assert requests.hash_offsets.tolist() == [0] * (n + 1) and requests.block_tokens == 0
    assert _same(requests, generate_requests(cfg, seed))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32), kind=st.sampled_from(["poisson", "gamma"]))
def test_another_seed_gives_another_stream(seed, kind):
    cfg = WorkloadConfig(arrival={"kind": kind, "rate_per_s": 5.0, "cv": 2.0},
                         prompt_tokens={"kind": "lognormal", "mean": 800, "cv": 1.0},
                         output_tokens={"kind": "uniform", "low": 1, "high": 10_000}, num_requests=50)
    a, b = generate_requests(cfg, seed), generate_requests(cfg, seed + 1)
    assert not np.array_equal(a.arrival_s, b.arrival_s)
    assert not np.array_equal(a.prompt_tokens, b.prompt_tokens)
    assert not np.array_equal(a.output_tokens, b.output_tokens)


def test_changing_the_length_model_does_not_move_arrivals():
    base = {"arrival": {"kind": "poisson", "rate_per_s": 3.0}, "num_requests": 200,
            "output_tokens": {"kind": "lognormal", "mean": 100}}
    a = generate_requests(WorkloadConfig(**base, prompt_tokens={"kind": "fixed", "value": 7}), 11)
    b = generate_requests(WorkloadConfig(**base, prompt_tokens={"kind": "lognormal", "mean": 900}), 11)
    assert np.array_equal(a.arrival_s, b.arrival_s)
    assert np.array_equal(a.output_tokens, b.output_tokens)
    assert not np.array_equal(a.prompt_tokens, b.prompt_tokens)


# --- a benchmark's dataset of prompts, reused (workload.prompt_pool) ----------------------


def test_a_prompt_pool_is_sent_in_shuffled_passes_and_hashes_alike_only_when_repeated():
    cfg = WorkloadConfig(clients=4, num_requests=23, prompt_pool={"size": 10, "block_tokens": 16},
                         prompt_tokens={"kind": "uniform", "low": 20, "high": 200})
    r = generate_requests(cfg, 3)
    hashes = [tuple(r.block_hashes(i)) for i in range(len(r))]
    for start in (0, 10):  # each pass sends every prompt once
        assert len(set(hashes[start:start + 10])) == 10
    assert set(hashes[:10]) == set(hashes[10:20]) and set(hashes[20:]) < set(hashes[:10])
    assert hashes[:10] != hashes[10:20]  # in a new order
    blocks = set()
    for h, tokens in zip(hashes[:10], r.prompt_tokens[:10], strict=True):
        assert len(h) == tokens // 16 and not blocks & set(h)  # full blocks, none shared between prompts
        blocks |= set(h)
    by_hash = {h: t for h, t in zip(hashes, r.prompt_tokens, strict=True)}
    assert all(by_hash[h] == t for h, t in zip(hashes, r.prompt_tokens, strict=True))  # a prompt keeps its length
    assert r.block_tokens == 16 and _same(r, generate_requests(cfg, 3))


def test_a_prompt_pool_and_a_trace_are_not_combined():
    with pytest.raises(ValidationError, match="prompt_pool"):
        WorkloadConfig(clients=2, prompt_pool={"size": 5}, trace={"path": SPLITWISE})


# --- distributions (fixed seeds; tolerances of several standard errors) -------------------


def _gaps(arrival: dict, n: int = 40_000, seed: int = 3) -> np.ndarray:
    return np.diff(generate_requests(WorkloadConfig(arrival=arrival, num_requests=n), seed).arrival_s)


def test_poisson_gaps_have_mean_one_over_rate_and_cv_one():
    gaps = _gaps({"kind": "poisson", "rate_per_s": 8.0})
    assert gaps.mean() == pytest.approx(1 / 8.0, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.04)


@pytest.mark.parametrize("cv", [0.5, 2.0])
def test_gamma_gaps_have_the_requested_cv(cv):
    gaps = _gaps({"kind": "gamma", "rate_per_s": 4.0, "cv": cv})
    assert gaps.mean() == pytest.approx(1 / 4.0, rel=0.04)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.05)


def test_constant_rate_is_evenly_spaced():
    arrival_s = generate_requests(WorkloadConfig(arrival={"kind": "constant", "rate_per_s": 4.0},
                                                 num_requests=9), 0).arrival_s
    np.testing.assert_allclose(arrival_s, np.arange(9) / 4.0)


@pytest.mark.parametrize(("mean", "cv"), [(500.0, 0.5), (2000.0, 1.5)])
def test_lognormal_lengths_have_the_requested_mean_and_cv(mean, cv):
    cfg = WorkloadConfig(arrival={"kind": "constant", "rate_per_s": 1}, num_requests=60_000,
                         prompt_tokens={"kind": "lognormal", "mean": mean, "cv": cv})
    tokens = generate_requests(cfg, 5).prompt_tokens
    assert tokens.mean() == pytest.approx(mean, rel=0.03)
    # The sample cv of a heavy lognormal converges slowly; only check it where it is tight.
    if cv <= 1:
        assert tokens.std() / tokens.mean() == pytest.approx(cv, rel=0.05)


def test_uniform_and_clipped_lengths():
    cfg = WorkloadConfig(arrival={"kind": "constant", "rate_per_s": 1}, num_requests=20_000,
                         prompt_tokens={"kind": "uniform", "low": 10, "high": 20},
                         output_tokens={"kind": "lognormal", "mean": 100, "cv": 2, "low": 50, "high": 120})
    requests = generate_requests(cfg, 1)
    assert set(requests.prompt_tokens.tolist()) == set(range(10, 21))
    assert requests.prompt_tokens.mean() == pytest.approx(15.0, rel=0.02)
    out = requests.output_tokens
    assert out.min() == 50 and out.max() == 120
    # With cv=2 well over half of the draws fall below the median 100/sqrt(5) < 50.
    assert (out == 50).mean() > 0.5


# --- traces --------------------------------------------------------------------------------


def _file_rows(path: str) -> np.ndarray:
    return np.loadtxt(path, delimiter=",", skiprows=1)


def test_trace_replay_uses_rows_in_order_scaled_from_start():
    cfg = WorkloadConfig(trace={"path": SPLITWISE, "time_scale": 0.5, "start": 4}, num_requests=20)
    requests = generate_requests(cfg, 0)
    rows = _file_rows(SPLITWISE)[4:24]
    np.testing.assert_allclose(requests.arrival_s, (rows[:, 0] - rows[0, 0]) * 0.5)
    assert requests.prompt_tokens.tolist() == rows[:, 1].astype(int).tolist()
    assert requests.output_tokens.tolist() == rows[:, 2].astype(int).tolist()


def test_resampled_trace_lengths_keep_prompt_and_output_of_one_row():
    cfg = WorkloadConfig(arrival={"kind": "poisson", "rate_per_s": 2.0}, trace={"path": SPLITWISE},
                         num_requests=500)
    requests = generate_requests(cfg, 9)
    pairs = {(int(p), int(o)) for _, p, o in _file_rows(SPLITWISE)}
    drawn = set(zip(requests.prompt_tokens.tolist(), requests.output_tokens.tolist(), strict=True))
    assert drawn <= pairs and len(drawn) > 20  # 500 draws from 30 rows reach most rows


def test_closed_loop_with_trace_lengths():
    cfg = WorkloadConfig(clients=4, trace={"path": SPLITWISE}, num_requests=40)
    requests = generate_requests(cfg, 2)
    assert requests.closed_loop
    assert set(requests.prompt_tokens.tolist()) <= set(_file_rows(SPLITWISE)[:, 1].astype(int).tolist())


def test_mooncake_replay_carries_prefix_blocks():
    records = [json.loads(line) for line in Path(MOONCAKE).read_text().splitlines()]
    requests = generate_requests(WorkloadConfig(trace={"path": MOONCAKE}, num_requests=30), 0)
    assert requests.block_tokens == 512
    np.testing.assert_allclose(requests.arrival_s, [r["timestamp"] / 1000 for r in records])
    for i, record in enumerate(records):
        assert requests.block_hashes(i).tolist() == record["hash_ids"]
    assert requests.to_frame()["num_blocks"].tolist() == [len(r["hash_ids"]) for r in records]


def test_clipped_mooncake_prompts_keep_only_the_blocks_they_cover():
    cfg = WorkloadConfig(trace={"path": MOONCAKE}, num_requests=30,
                         prompt_tokens={"kind": "trace", "high": 1000})
    requests = generate_requests(cfg, 0)
    assert requests.prompt_tokens.max() == 1000
    blocks = np.diff(requests.hash_offsets)
    assert np.all(blocks <= -(-requests.prompt_tokens // 512)) and blocks.max() == 2
    # Synthetic prompts have no prefix information, even with a Mooncake trace.
    cfg = WorkloadConfig(trace={"path": MOONCAKE}, num_requests=30,
                         prompt_tokens={"kind": "fixed", "value": 64})
    assert generate_requests(cfg, 0).hash_values.size == 0


def test_relative_trace_path_is_taken_from_the_config_folder():
    cfg = WorkloadConfig(trace={"path": "splitwise_small.csv"}, num_requests=5)
    assert len(generate_requests(cfg, 0, base_dir=FIXTURES)) == 5


@pytest.mark.skipif(shared_data_dir() is None, reason="no shared data folder (set FRONTIER_DAG_DATA)")
def test_real_splitwise_conv_replay():
    path = "${FRONTIER_DAG_DATA}/vidur/data/processed_traces/splitwise_conv.csv"
    if not (shared_data_dir() / "vidur/data/processed_traces/splitwise_conv.csv").is_file():
        pytest.skip("splitwise_conv.csv is not in the shared data folder")
    requests = generate_requests(WorkloadConfig(trace={"path": path}, num_requests=2000), 0)
    assert requests.prompt_tokens[:3].tolist() == [374, 396, 879]
    assert requests.arrival_s[1] == pytest.approx(4.314579)
    assert np.all(np.diff(requests.arrival_s) >= 0)


# --- errors ------------------------------------------------------------------------------


def test_replaying_more_requests_than_rows_is_an_error():
    cfg = WorkloadConfig(trace={"path": SPLITWISE, "start": 10}, num_requests=25)
    with pytest.raises(ConfigError, match="replaying 25 requests from row 10 needs 35 rows but the trace has 30"):
        generate_requests(cfg, 0)


def test_start_past_the_end_is_an_error():
    cfg = WorkloadConfig(arrival={"kind": "poisson", "rate_per_s": 1}, trace={"path": SPLITWISE, "start": 30},
                         num_requests=5)
    with pytest.raises(ConfigError, match="start=30 but the trace has 30 rows"):
        generate_requests(cfg, 0)


def test_replaying_a_trace_without_arrival_times_is_an_error(tmp_path):
    path = tmp_path / "lengths.csv"
    path.write_text("num_prefill_tokens,num_decode_tokens\n10,2\n30,4\n")
    with pytest.raises(ConfigError, match="no arrival times to replay"):
        generate_requests(WorkloadConfig(trace={"path": str(path)}, num_requests=2), 0)


def test_missing_trace_file_names_the_path(tmp_path):
    with pytest.raises(ConfigError, match="nope.csv: no such trace file"):
        generate_requests(WorkloadConfig(trace={"path": str(tmp_path / "nope.csv")}, num_requests=2), 0)


def test_negative_seed_is_an_error():
    with pytest.raises(ConfigError, match="seed=-1"):
        generate_requests(WorkloadConfig(arrival={"kind": "poisson", "rate_per_s": 1}), -1)


# --- config defaults and checks ----------------------------------------------------------


def test_a_trace_alone_replays_its_arrivals_and_lengths():
    cfg = WorkloadConfig(trace={"path": SPLITWISE})
    assert (cfg.arrival.kind, cfg.prompt_tokens.kind, cfg.output_tokens.kind) == ("trace",) * 3
    kept = WorkloadConfig(trace={"path": SPLITWISE}, output_tokens={"kind": "fixed", "value": 3})
    assert kept.output_tokens.kind == "fixed"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"arrival": {"kind": "trace"}, "trace": {"path": SPLITWISE, "replay_arrivals": False}}, "replay_arrivals is false"),
        ({"arrival": {"kind": "poisson", "rate_per_s": 1}, "num_requests": 5, "warmup_requests": 5}, "warmup_requests=5"),
        ({"arrival": {"kind": "poisson"}}, "needs rate_per_s"),
        ({"arrival": {"kind": "poisson", "rate_per_s": 1}, "clients": 2}, "not both"),
        ({"arrival": {"kind": "poisson", "rate_per_s": 1}, "prompt_tokens": {"kind": "trace"}}, "workload.trace.path"),
    ],
)
def test_inconsistent_configs_are_rejected(spec, message):
    with pytest.raises(ValidationError, match=message):
        WorkloadConfig(**spec)
