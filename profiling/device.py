"""torch, the device to measure on, and what is recorded about it.

torch is optional for the project (``pip install 'frontier-dag[profile]'``), so it
is imported here, on demand, with an error that says how to get it.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from frontier_dag.errors import ProfilingError

DEVICES = ("cuda", "cpu")
#: dtype names of the profile schema -> torch dtype attribute names.
TORCH_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32", "fp8": "float8_e4m3fn"}


def require_torch() -> Any:
    """The torch module, or a ProfilingError that says how to install it."""
    try:
        import torch
    except ImportError as exc:
        raise ProfilingError(
            "frontier-dag profile needs torch, which is not installed: run "
            "`pip install 'frontier-dag[profile]'` (the CPU wheel, torch==2.13.0) or, on a GPU "
            f"machine, a CUDA build of torch ({exc})"
        ) from None
    return torch


def check_device(torch: Any, device: str) -> None:
    """Raise a ProfilingError when ``device`` cannot be used, saying what to do instead."""
    if device not in DEVICES:
        raise ProfilingError(f"--device {device!r}: use cuda or cpu")
    if device == "cuda" and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise ProfilingError(
            f"--device cuda: no CUDA GPU is visible (torch {torch.__version__}, {build}). "
            "Run on a machine with an NVIDIA GPU and a CUDA build of torch, or measure tiny "
            "shapes on this CPU with `--device cpu --quick`."
        )


def torch_dtype(torch: Any, name: str) -> Any:
    if name not in TORCH_DTYPES:
        raise ProfilingError(f"--dtype {name!r}: use one of {', '.join(TORCH_DTYPES)}")
    return getattr(torch, TORCH_DTYPES[name])


@dataclass(frozen=True)
class DeviceInfo:
    """What meta.yaml records about the device. On the CPU ``sm_count`` is the number of
    threads torch uses (the profilers use one), the CPU's counterpart of the parallel
    units a tile count is held against."""

    device: str
    gpu: str
    system: str | None
    sm_count: int
    l2_bytes: int
    memory_bytes: int
    compute_capability: str | None
    torch: str
    cuda: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def device_info(torch: Any, device: str) -> DeviceInfo:
    if device == "cuda":
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        return DeviceInfo(
            device="cuda", gpu=props.name, system=system_for(props.name),
            sm_count=int(props.multi_processor_count), l2_bytes=int(getattr(props, "L2_cache_size", 50 << 20)),
            memory_bytes=int(props.total_memory), compute_capability=f"{props.major}.{props.minor}",
            torch=str(torch.__version__), cuda=str(torch.version.cuda),
        )
    return DeviceInfo(
        device="cpu", gpu=_cpu_name(), system=None, sm_count=int(torch.get_num_threads()),
        l2_bytes=0, memory_bytes=_cpu_memory(), compute_capability=None,
        torch=str(torch.__version__), cuda=None,
    )


def system_for(gpu_name: str) -> str | None:
    """The hardware preset whose GPU has this name (e.g. "NVIDIA H200" -> h200_sxm), if any."""
    from frontier_dag.config.hardware import hardware_names, load_hardware

    for name in hardware_names():
        if load_hardware(name).gpu.name.lower() == gpu_name.lower():
            return name
    return None


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "cpu"


def _cpu_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0
