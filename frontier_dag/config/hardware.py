"""Hardware: the GPU, the node that holds several, and the network between nodes.

Presets come from the vendors' data sheets (``presets/hardware.yaml``; each names its
source); a system name of the aiconfigurator-core package that has no preset here is
read from that package's own system file.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from pydantic import Field, PositiveFloat, PositiveInt, field_validator

from frontier_dag.config.loading import Strict, load_yaml, validate
from frontier_dag.config.precision import COMPUTE_PIPES, PRECISIONS, canonical_precision
from frontier_dag.config.suggest import did_you_mean
from frontier_dag.errors import ConfigError

PRESETS_FILE = Path(__file__).with_name("presets") / "hardware.yaml"

#: Bytes per element of each precision's weights (and KV cache), scales included.
DTYPE_BYTES: dict[str, float] = {name: p.weight_bytes for name, p in PRECISIONS.items()}

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
        description=f"dense tensor-core FLOP/s per pipe ({', '.join(COMPUTE_PIPES)}); a precision whose "
                    "pipe is missing cannot run on this GPU"
    )

    @field_validator("flops_per_s")
    @classmethod
    def _known_pipes(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = [k for k in value if k not in COMPUTE_PIPES]
        if unknown:
            raise ValueError(f"unknown tensor-core pipe(s) {', '.join(unknown)}; use {', '.join(COMPUTE_PIPES)}")
        return value

    def supports(self, dtype: str) -> bool:
        """Whether this GPU has the tensor cores ``dtype`` multiplies on."""
        found = PRECISIONS.get(str(canonical_precision(dtype)))
        return found is not None and found.compute in self.flops_per_s

    def peak_flops(self, dtype: str) -> float:
        """Peak FLOP/s of the tensor-core pipe ``dtype`` multiplies on (``precision.PRECISIONS``:
        ``w4a16_mxfp4`` on the BF16 pipe, ``fp4`` on the FP4 one); ConfigError when the
        precision is unknown or this GPU has no such tensor cores."""
        found = PRECISIONS.get(str(canonical_precision(dtype)))
        if found is None:
            raise ConfigError(f"unknown precision {dtype!r}{did_you_mean(str(dtype), PRECISIONS)} "
                              f"(known: {', '.join(PRECISIONS)})")
        peak = self.flops_per_s.get(found.compute)
        if peak is None:
            runnable = [n for n, p in PRECISIONS.items() if p.compute in self.flops_per_s]
            raise ConfigError(f"the {self.name} cannot run {found.name} ({found.description}): it has no "
                              f"{found.compute} tensor cores; it runs {', '.join(runnable)}")
        return peak


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
    source: str = Field("", description="where the figures come from (data sheets, measurements)")

    def link_bandwidth(self, within_node: bool) -> float:
        """Bytes per second per GPU between two GPUs, inside a node or across nodes."""
        return self.node.nvlink_bandwidth_bytes_per_s if within_node else self.network.bandwidth_bytes_per_s


@cache
def _presets() -> dict[str, dict]:
    return load_yaml(PRESETS_FILE.read_text())


def hardware_names() -> list[str]:
    """Names of the hardware presets."""
    return sorted(_presets())


def aiconfigurator_system_names() -> list[str]:
    """The GPU systems aiconfigurator-core describes (``systems/<name>.yaml``)."""
    root = _aiconfigurator_systems_dir()
    if root is None:
        return []
    return sorted(p.stem for p in root.glob("*.yaml") if "gpu" in (load_yaml(p.read_text()) or {}))


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
    if "fp4" in flops and "fp8" in flops:  # FP4 tensor cores come with the block-scaled (MX) MMA
        flops["mxfp8"] = flops["fp8"]
    base = system.removesuffix("_sxm").removesuffix("_server")
    sm_count = _SM_COUNT_BY_SM_VERSION_AND_NAME.get(system) or _SM_COUNT_BY_SM_VERSION_AND_NAME.get(base, 132)
    return {
        "aiconfigurator_system": system,
        "source": f"aiconfigurator-core systems/{system}.yaml (no preset here)",
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
    names = [*hardware_names(), *(a for entry in presets.values() for a in entry.get("aliases", [])),
             *aiconfigurator_system_names()]
    raise ConfigError(
        f"hardware: unknown GPU system {spec!r}{did_you_mean(key, names) or '.'} Use a preset "
        f"({', '.join(hardware_names())}; `frontier-dag systems` lists them), an aiconfigurator-core "
        "system name, or a mapping with gpu/node/network keys"
    )
