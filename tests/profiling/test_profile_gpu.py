"""The CUDA path, on a machine with a GPU: `pytest -m gpu tests/profiling`."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

torch = pytest.importorskip("torch")

from frontier_dag.profiling import attention, grouped_gemm  # noqa: E402
from frontier_dag.profiling.case import Context  # noqa: E402
from frontier_dag.profiling.runner import profile  # noqa: E402
from frontier_dag.profiling.timing import CudaTimer, TimerSettings  # noqa: E402

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _ctx() -> Context:
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    return Context(torch, "cuda", True, ("bf16",), np.random.default_rng(0), CudaTimer(torch, TimerSettings(), l2))


def test_fused_varlen_attention_is_chosen_and_matches_the_reference():
    ctx = _ctx()
    method = attention.choose_method(ctx, "bf16")
    assert method in ("varlen_paged", "varlen"), ctx.notes
    q_lens, ctx_lens = np.array([1, 37, 1, 300]), np.array([900, 0, 17, 600])
    q, k, v = attention._packed(ctx, torch.bfloat16, (32, 8, 128), q_lens, ctx_lens)
    got = attention._KERNELS[method](q, k, v, q_lens, ctx_lens)()
    want = attention.reference(q, k, v, q_lens, ctx_lens)
    assert (got.float() - want).abs().max().item() < 3e-2


def test_grouped_mm_is_chosen_on_hopper():
    if torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("grouped_mm needs sm90")
    assert grouped_gemm.choose_method(_ctx(), "bf16") == "grouped_mm"


def test_cuda_timer_separates_sizes_and_flushes_l2():
    timer = CudaTimer(torch, TimerSettings(), torch.cuda.get_device_properties(0).L2_cache_size)
    small, large = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for n in (1024, 8192))
    t_small, t_large = timer(lambda: small @ small), timer(lambda: large @ large)
    assert 0 < t_small.median_us < t_large.median_us
    # 8192^3 x 2 FLOPs: between 50 and 1000 TFLOP/s on any GPU this targets.
    tflops = 2 * 8192**3 / (t_large.median_us * 1e-6) / 1e12
    assert 50 < tflops < 1000, tflops


def test_quick_cuda_run_writes_its_profile(tmp_path):
    for op in ("attention", "gemm", "grouped-gemm", "elementwise"):
        run = profile(op, device="cuda", out=tmp_path, quick=True, budget_s=30)
        assert run.report.measured > 0, run.notes
        assert not any("failed" in note for note in run.notes), run.notes
    meta = yaml.safe_load((tmp_path / "meta.yaml").read_text())
    assert meta["device"] == "cuda" and meta["sm_count"] > 0 and meta["cuda"]
    gemm = pq.read_table(tmp_path / "gemm.parquet").to_pandas()
    if torch.cuda.get_device_capability() >= (8, 9):
        assert "fp8" in set(gemm["dtype"])
