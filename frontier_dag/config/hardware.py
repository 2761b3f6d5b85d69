"""Hardware: the GPU, the node that holds several, and the network between nodes.

Presets come from public specifications (``presets/hardware.yaml``); a system
name of the aiconfigurator-core package (``h200_sxm``, ``gb200``, ...) that has
no preset here is read from that package's own system file.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from pydantic import Field, PositiveFloat, PositiveInt

from frontier_dag.config.loading import Strict, load_yaml, validate
from frontier_dag.errors import ConfigError

PRESETS_FILE = Path(__file__).with_name("presets") / "hardware.yaml"

#: Bytes per element of each dtype name used across the project.
DTYPE_BYTES: dict[str, float] = {
    "fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "fp8_block": 1, "int8": 1, "int4": 0.5, "fp4": 0.5,
}

# SM counts are not in aiconfigurator's system files; these are the public figures.
_SM_COUNT_BY_SM_VERSION_AND_NAME = {
    "a100": 108, "a30": 56, "h100_pcie": 114, "h100": 132, "h200": 132, "b200": 148,
    "b300": 148, "gb200": 148, "gb300": 148, "l40s": 142, "l4": 58, "rtx_pro_6000": 188, "b60": 20,
}


class GPUSpec(Strict):
    name: str
    sm_count: PositiveInt
    hbm_capacity_bytes: PositiveFloat
    hbm_bandwidth_bytes_per_s: PositiveFloat
    l2_bytes: PositiveFloat = 50 * 2**20
    flops_per_s: dict[str, PositiveFloat] = Field(
        description="dense tensor-core FLOP/s per compute dtype (bf16, fp16, fp8, int8, fp4)"
    )

    def peak_flops(self, dtype: str) -> float:
        """Peak FLOP/s for ``dtype``; a dtype the GPU lacks falls back to the next wider one."""
        for candidate in (dtype, *_WIDER.get(dtype, ())):
            if candidate in self.flops_per_s:
                return self.flops_per_s[candidate]
        return self.flops_per_s.get("bf16") or max(self.flops_per_s.values())


_WIDER = {"fp4": ("fp8", "bf16"), "fp8_block": ("fp8", "bf16"), "fp8": ("bf16",), "int8": ("bf16",),
          "int4": ("int8", "bf16"), "fp16": ("bf16",), "fp32": ("bf16",)}


class NodeSpec(Strict):
    gpus_per_node: PositiveInt = 8
    nvlink_bandwidth_bytes_per_s: PositiveFloat
    pcie_bandwidth_bytes_per_s: PositiveFloat = 64e9


class NetworkSpec(Strict):
    bandwidth_bytes_per_s: PositiveFloat = Field(description="per GPU, one direction")
    latency_us: float = Field(10.0, ge=0)


class HardwareConfig(Strict):
    name: str
    gpu: GPUSpec
    node: NodeSpec
    network: NetworkSpec
    aiconfigurator_system: str | None = None
    aliases: list[str] = []

    def link_bandwidth(self, within_node: bool) -> float:
        """Bytes per second per GPU between two GPUs, inside a node or across nodes."""
        return self.node.nvlink_bandwidth_bytes_per_s if within_node else self.network.bandwidth_bytes_per_s


@cache
def _presets() -> dict[str, dict]:
    return load_yaml(PRESETS_FILE.read_text())


def hardware_names() -> list[str]:
    """Names of the hardware presets."""
    return sorted(_presets())


def _aiconfigurator_systems_dir() -> Path | None:
    try:
        import aiconfigurator_core
    except ImportError:
        return None
    return Path(aiconfigurator_core.__file__).parent / "systems"


def _from_aiconfigurator(system: str) -> dict | None:
    root = _aiconfigurator_systems_dir()
    if root is None or not (root / f"{system}.yaml").is_file():
        return None
    spec = load_yaml((root / f"{system}.yaml").read_text())
    gpu, node = spec["gpu"], spec["node"]
    flops = {}
    for key, dtype in (("bfloat16_tc_flops", "bf16"), ("fp8_tc_flops", "fp8"),
                       ("int8_tc_flops", "int8"), ("fp4_tc_flops", "fp4")):
        if key in gpu:
            flops[dtype] = float(gpu[key])
    flops.setdefault("fp16", flops["bf16"])
    base = system.removesuffix("_sxm").removesuffix("_server")
    sm_count = _SM_COUNT_BY_SM_VERSION_AND_NAME.get(system) or _SM_COUNT_BY_SM_VERSION_AND_NAME.get(base, 132)
    return {
        "aiconfigurator_system": system,
        "gpu": {"name": system, "sm_count": sm_count, "hbm_capacity_bytes": float(gpu["mem_capacity"]),
                "hbm_bandwidth_bytes_per_s": float(gpu["mem_bw"]), "flops_per_s": flops},
        "node": {"gpus_per_node": int(node["num_gpus_per_node"]),
                 "nvlink_bandwidth_bytes_per_s": float(node["intra_node_bw"]),
                 "pcie_bandwidth_bytes_per_s": float(node.get("pcie_bw", 64e9))},
        "network": {"bandwidth_bytes_per_s": float(node["inter_node_bw"]),
                    "latency_us": float(node.get("p2p_latency", 1e-5)) * 1e6},
    }


def load_hardware(spec: str | dict) -> HardwareConfig:
    """A HardwareConfig from a preset name, an aiconfigurator system name, or a mapping.

    >>> load_hardware("h200").gpu.sm_count
    132
    """
    if isinstance(spec, dict):
        return validate(HardwareConfig, spec, "hardware")
    key = spec.strip().lower()
    presets = _presets()
    for name, entry in presets.items():
        if key == name or key in entry.get("aliases", []):
            return validate(HardwareConfig, {"name": name, **entry}, f"{PRESETS_FILE.name}:{name}")
    entry = _from_aiconfigurator(key)
    if entry is not None:
        return validate(HardwareConfig, {"name": key, **entry}, f"aiconfigurator system {key}")
    known = ", ".join(hardware_names())
    raise ConfigError(
        f"hardware: unknown GPU system {spec!r}; use one of {known}, an aiconfigurator-core "
        "system name (for example gb200), or a mapping with gpu/node/network keys"
    )
