"""A few measured serving runs simulated end to end with the real fitted predictors
(aiconfigurator-core's kernel tables for the row's engine), their errors held to the
goals of docs/validation.md: TTFT within 20%, TPOT within 10% of the measurement.

The rows are small (a few clients, short outputs) so that the simulation takes a
second or two; the first use of a (system, engine) fits its predictors (about 45 s,
cached afterwards). The rest of the rows run through ``frontier-dag validate silicon``.
"""

from __future__ import annotations

import pytest

from frontier_dag.validation.models import is_moe
from frontier_dag.validation.runner import simulate_row
from frontier_dag.validation.silicon import read_rows

TTFT_GOAL, TPOT_GOAL = 0.20, 0.10


def _row(index: int, system: str, model: str, mode: str):
    rows = [r for r in read_rows(system=system, model=model, mode=mode, is_moe=is_moe) if r.index == index]
    assert rows, f"silicon row {index} is no longer in the installed aiconfigurator-core sample"
    return rows[0]


def _check(record: dict) -> None:
    assert record["status"] == "ok", record["reason"]
    detail = (f"{record['parallelism']}: TTFT {record['sim_ttft_ms']:.1f} vs {record['measured_ttft_ms']:.1f} ms, "
              f"TPOT {record['sim_tpot_ms']:.2f} vs {record['measured_tpot_ms']:.2f} ms")
    assert record["ttft_ape"] <= TTFT_GOAL, detail
    assert record["tpot_ape"] <= TPOT_GOAL, detail


def test_aggregated_dense_row():
    """Qwen3-32B, SGLang, TP2 on H100, 16 clients of 2048 x 512 tokens."""
    _check(simulate_row(_row(959, "h100_sxm", "Qwen3-32B", "agg"), rounds=4))


@pytest.mark.xfail(strict=True, reason="TensorRT-LLM's time to first token carries ~100 ms per request outside the "
                                       "GPU kernels that is not modelled (docs/validation.md)")
def test_aggregated_dense_row_tensorrt_llm():
    """Qwen3-32B, TensorRT-LLM, TP8 on H100, 8 clients of 1024 x 128 tokens."""
    _check(simulate_row(_row(1260, "h100_sxm", "Qwen3-32B", "agg"), rounds=4))


def test_aggregated_moe_row():
    """gpt-oss-120b (128 experts, top 4, sliding-window layers), vLLM, one H200, 4 clients
    of 1024 x 1024 tokens."""
    _check(simulate_row(_row(1916, "h200_sxm", "gpt-oss-120b", "agg"), rounds=1))


def test_spread_clients_wait_less_for_other_prompts_than_a_burst():
    """The ``spread`` phase (docs/validation.md): the same row with the clients' first
    requests spread over one request's duration and the first round left out. Fewer prompts
    queue behind each other, so TTFT falls (to about one prompt's prefill), and the same
    row gives the same figures again."""
    row = _row(1260, "h100_sxm", "Qwen3-32B", "agg")
    burst, spread = simulate_row(row, rounds=2), simulate_row(row, rounds=2, phase="spread")
    assert burst["status"] == spread["status"] == "ok"
    assert spread["requests"] == burst["requests"] + row.concurrency  # one more round, left out
    assert spread["sim_ttft_ms"] < 0.8 * burst["sim_ttft_ms"]
    again = simulate_row(row, rounds=2, phase="spread")
    assert (again["sim_ttft_ms"], again["sim_tpot_ms"]) == (spread["sim_ttft_ms"], spread["sim_tpot_ms"])


@pytest.mark.xfail(strict=True, reason="disaggregated TTFT is 35% low and TPOT 12% high (docs/validation.md)")
def test_disaggregated_row(monkeypatch):
    """DeepSeek-R1, SGLang, one TP16 prefill and one TP16 decode worker on H100, one client
    of 1024 x 1024 tokens, two requests."""
    from frontier_dag.validation import convert

    monkeypatch.setattr(convert, "MIN_REQUESTS", 2)
    _check(simulate_row(_row(2424, "h100_sxm", "DeepSeek-R1", "disagg"), rounds=2))


def test_dataset_clients_send_reused_prompts_after_a_warm_up():
    """The ``dataset`` phase (docs/validation.md, "The benchmark's clients"): a warm-up of 2C
    requests, then the benchmark's 100 prompts reused with the prefix cache on. The dataset's
    first pass is simulated whole, then two rounds; the repeats prefill only their last
    block, so the clients no longer queue behind each other's prompts."""
    row = _row(1260, "h100_sxm", "Qwen3-32B", "agg")  # 8 clients
    burst, dataset = simulate_row(row, rounds=3), simulate_row(row, rounds=3, phase="dataset")
    assert burst["status"] == dataset["status"] == "ok"
    assert dataset["requests"] == 2 * 8 + (100 - 2 * 8) + 2 * 8
    assert dataset["sim_ttft_ms"] < 0.8 * burst["sim_ttft_ms"]
