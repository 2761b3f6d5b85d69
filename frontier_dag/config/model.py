"""Model architectures: dense with GQA, MoE (experts, top-k, shared experts, dense first
layers), and MLA (DeepSeek-V3), loadable from presets or a Hugging Face config.json.

Every size here is for the whole model; sharding by TP, EP and attention-DP is
applied where an operation is priced (``frontier_dag.workflows.layers``).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, PositiveInt, model_validator

from frontier_dag.config.hardware import DTYPE_BYTES
from frontier_dag.config.loading import Strict, load_yaml, positive_at_most, validate
from frontier_dag.config.precision import canonical_precision
from frontier_dag.config.suggest import did_you_mean
from frontier_dag.errors import ConfigError

PRESETS_FILE = Path(__file__).with_name("presets") / "models.yaml"

#: Limits of a model's sizes (docs/configuration.md, Limits): a layer and an expert are
#: traced and priced one by one, so a typo's magnitude is refused before tracing.
LayerCount = positive_at_most(1024)
ExpertCount = positive_at_most(4096)

#: a precision of ``frontier_dag.config.precision`` (aiconfigurator's names are accepted too)
Dtype = Annotated[Literal["fp32", "bf16", "fp16", "fp8", "fp8_block", "int8", "int8_wo", "fp8_wo", "int4", "fp4",
                          "w4a16_mxfp4", "w4a8_mxfp4_mxfp8"], BeforeValidator(canonical_precision)]


class MLAConfig(Strict):
    """Multi-head latent attention (DeepSeek-V2/V3)."""

    q_lora_rank: int | None = Field(None, description="None: queries are not low-rank")
    kv_lora_rank: PositiveInt
    qk_nope_head_dim: PositiveInt
    qk_rope_head_dim: PositiveInt
    v_head_dim: PositiveInt


class MoEConfig(Strict):
    num_experts: ExpertCount = Field(description="routed experts (at most 4,096)")
    top_k: PositiveInt
    expert_intermediate_size: PositiveInt
    num_shared_experts: int = Field(0, ge=0)
    shared_intermediate_size: int = Field(0, ge=0, description="0: num_shared_experts x expert size")
    first_dense_layers: int = Field(0, ge=0, description="the first k layers use a dense FFN")
    layer_frequency: PositiveInt = 1

    @model_validator(mode="after")
    def _top_k_fits(self) -> MoEConfig:
        if self.top_k > self.num_experts:
            raise ValueError(f"top_k={self.top_k} exceeds num_experts={self.num_experts}")
        return self

    @property
    def shared_size(self) -> int:
        return self.shared_intermediate_size or self.num_shared_experts * self.expert_intermediate_size


class ModelConfig(Strict):
    name: str
    num_layers: LayerCount = Field(description="decoder layers (at most 1,024: each is traced as DAG nodes)")
    hidden_size: PositiveInt
    num_heads: PositiveInt
    num_kv_heads: PositiveInt
    head_dim: PositiveInt
    intermediate_size: PositiveInt = Field(description="dense FFN width (gated: gate and up each)")
    vocab_size: PositiveInt
    gated_ffn: bool = True
    tie_word_embeddings: bool = False
    dtype: Dtype = Field("bf16", description="weights and GEMM compute")
    moe_dtype: Dtype | None = Field(None, description="expert weights; None: same as dtype")
    kv_cache_dtype: Dtype = "bf16"
    mla: MLAConfig | None = None
    moe: MoEConfig | None = None
    sliding_window: PositiveInt | None = Field(
        None, description="keys a query attends to in sliding-window layers (None: every layer attends to all)")
    full_attention_interval: PositiveInt | None = Field(
        None, description="with sliding_window: every n-th layer (layer % n == n - 1) attends to all keys; "
                          "None: every layer is windowed")
    max_context_tokens: PositiveInt | None = Field(
        None, description="the longest sequence (prompt + output) the model serves, its config.json's "
                          "max_position_embeddings; a workload that exceeds it is an error; None: not checked")

    @model_validator(mode="after")
    def _heads_group(self) -> ModelConfig:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}"
            )
        return self

    # -- derived sizes -------------------------------------------------------------------------
    def is_moe_layer(self, layer: int) -> bool:
        moe = self.moe
        return moe is not None and layer >= moe.first_dense_layers and (
            (layer - moe.first_dense_layers) % moe.layer_frequency == 0
        )

    def attention_window(self, layer: int) -> int | None:
        """The sliding window of ``layer``'s attention, or None when it attends to every key."""
        if self.sliding_window is None:
            return None
        n = self.full_attention_interval
        return None if n is not None and layer % n == n - 1 else self.sliding_window

    @property
    def num_full_attention_layers(self) -> int:
        return sum(self.attention_window(i) is None for i in range(self.num_layers))

    @property
    def num_moe_layers(self) -> int:
        return sum(self.is_moe_layer(i) for i in range(self.num_layers))

    @property
    def kv_bytes_per_token_per_layer(self) -> float:
        """KV-cache bytes one token occupies in one layer (whole model, before TP sharding)."""
        width = DTYPE_BYTES[self.kv_cache_dtype]
        if self.mla is not None:
            return (self.mla.kv_lora_rank + self.mla.qk_rope_head_dim) * width
        return 2 * self.num_kv_heads * self.head_dim * width

    @property
    def kv_bytes_per_token(self) -> float:
        """KV-cache bytes per cached token. Sliding-window layers keep only the last
        ``sliding_window`` tokens of a sequence (their blocks are freed as the window
        moves), so only full-attention layers grow with the context."""
        return self.kv_bytes_per_token_per_layer * self.num_full_attention_layers

    def attention_params(self) -> int:
        h, d = self.hidden_size, self.head_dim
        if self.mla is not None:
            m = self.mla
            qk = m.qk_nope_head_dim + m.qk_rope_head_dim
            q = (h * m.q_lora_rank + m.q_lora_rank * self.num_heads * qk) if m.q_lora_rank else h * self.num_heads * qk
            kv = h * (m.kv_lora_rank + m.qk_rope_head_dim) + m.kv_lora_rank * self.num_heads * (m.qk_nope_head_dim + m.v_head_dim)
            return q + kv + self.num_heads * m.v_head_dim * h
        return h * (self.num_heads + 2 * self.num_kv_heads) * d + self.num_heads * d * h

    def ffn_params(self, width: int) -> int:
        return (3 if self.gated_ffn else 2) * self.hidden_size * width

    def parameter_count(self) -> dict[str, int]:
        """Parameters by kind: attention, dense FFN, routed experts, shared experts, embeddings."""
        dense_layers = self.num_layers - self.num_moe_layers
        counts = {
            "attention": self.attention_params() * self.num_layers,
            "dense_ffn": self.ffn_params(self.intermediate_size) * dense_layers,
            "experts": 0,
            "shared_experts": 0,
            "embeddings": self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2),
        }
        if self.moe is not None:
            counts["experts"] = self.ffn_params(self.moe.expert_intermediate_size) * self.moe.num_experts * self.num_moe_layers
            counts["shared_experts"] = self.ffn_params(self.moe.shared_size) * self.num_moe_layers
        return counts

    def weight_bytes(self) -> dict[str, float]:
        """Bytes of weights by kind (experts in ``moe_dtype``)."""
        counts = self.parameter_count()
        dense = DTYPE_BYTES[self.dtype]
        expert = DTYPE_BYTES[self.moe_dtype or self.dtype]
        return {kind: n * (expert if kind == "experts" else dense) for kind, n in counts.items()}


# -- Hugging Face config.json ------------------------------------------------------------------

def _first(cfg: dict, *keys: str, default=None):
    for key in keys:
        if cfg.get(key) is not None:
            return cfg[key]
    return default


def _compressed_tensors(quant: dict) -> tuple[str, str] | None:
    """(dense, experts) precision of a compressed-tensors checkpoint's first config group."""
    groups = list((quant.get("config_groups") or {}).values())
    weights = (groups[0].get("weights") if groups else None) or {}
    inputs = (groups[0].get("input_activations") if groups else None) or {}
    bits, kind = weights.get("num_bits"), weights.get("type")
    if bits == 4 and kind == "float" and inputs.get("num_bits") == 4:
        return "fp4", "fp4"
    if bits == 4 and kind == "int":  # Kimi-K2.5: int4 experts, attention and shared experts ignored
        return "bf16", "int4"
    if bits == 8 and kind == "float":
        return ("fp8", "fp8") if inputs else ("fp8_wo", "fp8_wo")
    return None


def _hf_dtype(cfg: dict) -> tuple[str, str]:
    """(dense layers, experts) precision of a checkpoint from its ``quantization_config``
    (or the ``quantization`` of a ModelOpt ``hf_quant_config.json``, merged in as ``quantization_config``)."""
    quant = cfg.get("quantization_config") or {}
    method = str(quant.get("quant_method", "")).lower()
    algo = str(quant.get("quant_algo", "")).lower()
    if method == "fp8" or algo == "fp8":
        dtype = "fp8_block" if quant.get("weight_block_size") else "fp8"
        return dtype, dtype
    if method == "mxfp4":  # gpt-oss: MXFP4 experts, everything else in bf16
        return "bf16", "w4a16_mxfp4"
    if method in {"modelopt", "nvfp4", "fp4"} or "fp4" in algo:
        return "fp4", "fp4"
    if method == "compressed-tensors":
        return _compressed_tensors(quant) or ("bf16", "bf16")
    return "bf16", "bf16"


#: config.json keys that arrange windowed layers in a way (window, interval) cannot say:
#: such a model is read with every layer attending to all keys, as before windows were read.
_OTHER_WINDOW_LAYOUTS = ("hybrid_layer_pattern", "compress_ratios")


def _sliding_window(cfg: dict, layers: int) -> tuple[int, int | None] | None:
    """(window, full-attention interval) of a config.json with a ``sliding_window``: from
    ``layer_types`` (gpt-oss: sliding and full layers alternate), ``use_sliding_window``
    where the config has the flag (Qwen: false), ``sliding_window_pattern`` (Gemma 3: every
    n-th layer is full) or Gemma 2's alternation; otherwise every layer is windowed
    (Mistral). None when every layer attends to all keys."""
    window = cfg.get("sliding_window")
    types = cfg.get("layer_types")
    if not window:
        return None
    if types:
        if "sliding_attention" not in types:
            return None
        full = [i for i, t in enumerate(types) if t == "full_attention"]
        if not full:
            return int(window), None
        n = full[0] + 1
        if [i for i in range(len(types)) if i % n == n - 1] != full:
            raise ConfigError(f"layer_types: full-attention layers {full[:6]}... are not every {n}-th layer; "
                              "describe the model with sliding_window and full_attention_interval")
        return int(window), n
    if "use_sliding_window" in cfg:
        return (int(window), None) if cfg["use_sliding_window"] else None
    if cfg.get("sliding_window_pattern"):
        return int(window), int(cfg["sliding_window_pattern"])
    if cfg.get("model_type") == "gemma2":  # even layers windowed, odd layers full
        return int(window), 2
    if any(key in cfg for key in _OTHER_WINDOW_LAYOUTS):
        return None
    return int(window), None


def _model_name(cfg: dict, path: Path) -> str:
    """The name of a model read from ``path`` (a config.json): its Hugging Face id where the
    path or the config says it (a hub cache folder ``models--org--name``, ``_name_or_path``),
    else its folder's name (a snapshot's hash folder, or none, is no name: then the model
    type)."""
    for part in reversed(path.resolve().parts):
        if part.startswith("models--"):
            return part.removeprefix("models--").replace("--", "/")
    given = str(cfg.get("_name_or_path") or "")
    if given and not Path(given).is_absolute() and given.count("/") <= 1 and not given.startswith("."):
        return given
    folder = path.resolve().parent.name
    hashed = len(folder) >= 32 and all(c in "0123456789abcdef" for c in folder)
    return folder if folder and not hashed else str(cfg.get("model_type") or path.stem)


#: (config.json keys that announce it, the operator) of architectures whose layers have an
#: operator this simulator has no model for: loading them as a plain transformer would
#: price a different model without saying so.
UNMODELLED_OPERATORS = (
    (("linear_num_value_heads", "linear_attn_config"),
     "linear-attention layers (Gated DeltaNet, Kimi linear attention), an operator family without predictors"),
    (("mamba_num_heads", "ssm_state_size", "hybrid_override_pattern"),
     "Mamba state-space layers, an operator family without predictors"),
    (("index_topk",), "DeepSeek sparse attention (a top-k indexer over MLA); the MLA tables measure dense "
                      "attention only"),
    (("block_configs",), "per-layer block configurations (a NAS-pruned model whose layers differ in shape)"),
    (("hybrid_layer_pattern", "swa_num_attention_heads"),
     "sliding-window layers with their own head counts (two attention shapes)"),
    (("attention_chunk_size",), "chunked local attention (iRoPE), which the attention operators do not model"),
)


def unmodelled_operator(cfg: dict) -> str | None:
    """Why a config.json's architecture cannot be simulated faithfully, or None."""
    if "text_config" in cfg and "hidden_size" not in cfg:
        cfg = {**cfg, **cfg["text_config"]}
    for keys, operator in UNMODELLED_OPERATORS:
        if any(cfg.get(k) is not None for k in keys):
            return operator
    if "linear_attention" in (cfg.get("layer_types") or []):
        return UNMODELLED_OPERATORS[0][1]
    return None


def from_hf_config(cfg: dict, name: str, source: str = "config.json") -> ModelConfig:
    """A ModelConfig from a Hugging Face ``config.json`` mapping."""
    unmodelled = unmodelled_operator(cfg)
    if unmodelled:
        raise ConfigError(f"{source}: {name} has {unmodelled}; it cannot be simulated faithfully")
    try:
        return _from_hf_config(cfg, name, source)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: a size is missing or not a number ({exc}); is this a decoder LLM "
                          "config.json? A mapping of model fields describes any other model") from None


def _from_hf_config(cfg: dict, name: str, source: str) -> ModelConfig:
    if "text_config" in cfg and "hidden_size" not in cfg:
        text = cfg["text_config"]
        cfg = {**text, "quantization_config": cfg.get("quantization_config") or text.get("quantization_config")}
    try:
        hidden = int(cfg["hidden_size"])
        heads = int(cfg["num_attention_heads"])
        layers = int(cfg["num_hidden_layers"])
    except KeyError as exc:
        raise ConfigError(f"{source}: missing key {exc.args[0]!r}; is this a decoder LLM config.json?") from None
    data: dict = {
        "name": name,
        "num_layers": layers,
        "hidden_size": hidden,
        "num_heads": heads,
        "num_kv_heads": int(_first(cfg, "num_key_value_heads", default=heads)),
        "head_dim": int(_first(cfg, "head_dim", default=hidden // heads)),
        "intermediate_size": int(_first(cfg, "intermediate_size", "ffn_dim")),
        "vocab_size": int(cfg["vocab_size"]),
        "tie_word_embeddings": bool(cfg.get("tie_word_embeddings", False)),
        "dtype": _hf_dtype(cfg)[0],
    }
    if cfg.get("max_position_embeddings"):
        data["max_context_tokens"] = int(cfg["max_position_embeddings"])
    window = _sliding_window(cfg, layers)
    if window is not None:
        data["sliding_window"], data["full_attention_interval"] = window
    if cfg.get("kv_lora_rank"):
        data["mla"] = {
            "q_lora_rank": cfg.get("q_lora_rank"),
            "kv_lora_rank": int(cfg["kv_lora_rank"]),
            "qk_nope_head_dim": int(cfg["qk_nope_head_dim"]),
            "qk_rope_head_dim": int(cfg["qk_rope_head_dim"]),
            "v_head_dim": int(cfg["v_head_dim"]),
        }
        data["num_kv_heads"] = heads
        data["head_dim"] = int(cfg["qk_nope_head_dim"]) + int(cfg["qk_rope_head_dim"])
    experts = _first(cfg, "n_routed_experts", "num_local_experts", "num_experts")
    if experts:
        shared = int(_first(cfg, "n_shared_experts", "num_shared_experts", default=0) or 0)
        expert_width = int(_first(cfg, "moe_intermediate_size", default=data["intermediate_size"]))
        data["moe"] = {
            "num_experts": int(experts),
            "top_k": int(_first(cfg, "num_experts_per_tok", "moe_topk", default=2)),
            "expert_intermediate_size": expert_width,
            "num_shared_experts": shared,
            "shared_intermediate_size": int(cfg.get("shared_expert_intermediate_size") or 0),
            "first_dense_layers": int(cfg.get("first_k_dense_replace") or 0),
            "layer_frequency": int(_first(cfg, "moe_layer_freq", "decoder_sparse_step", default=1) or 1),
        }
        if data["moe"]["shared_intermediate_size"] and not shared:
            data["moe"]["num_shared_experts"] = 1
        data["moe_dtype"] = _hf_dtype(cfg)[1]
    return validate(ModelConfig, data, source)


# -- presets -----------------------------------------------------------------------------------

@cache
def _presets() -> dict[str, dict]:
    return load_yaml(PRESETS_FILE.read_text())


def model_names() -> list[str]:
    return sorted(_presets())


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(" ", "-").split("/")[-1]


def _aiconfigurator_configs() -> dict[str, Path]:
    """Hugging Face id -> the config.json aiconfigurator-core ships for it."""
    try:
        import aiconfigurator_core
    except ImportError:
        return {}
    folder = Path(aiconfigurator_core.__file__).parent / "model_configs"
    return {path.name.removesuffix("_config.json").replace("--", "/", 1): path
            for path in sorted(folder.glob("*_config.json")) if not path.name.endswith("_hf_quant_config.json")}


def model_aliases(name: str) -> list[str]:
    """The other names a model preset answers to."""
    return list(_presets()[name].get("aliases", []))


def unmodelled_reason(model_id: str) -> str | None:
    """The operator a shipped config.json's architecture has that no predictor models, or None."""
    path = _aiconfigurator_configs().get(model_id)
    return unmodelled_operator(json.loads(path.read_text())) if path is not None else None


def aiconfigurator_model_ids() -> list[str]:
    """The Hugging Face ids whose config.json ships with aiconfigurator-core."""
    return sorted(_aiconfigurator_configs(), key=str.lower)


def _aiconfigurator_model(name: str) -> tuple[dict, str] | None:
    wanted = name.lower()
    for model_id, path in _aiconfigurator_configs().items():
        if model_id.lower() == wanted or _normalise(model_id) == _normalise(name):
            cfg = json.loads(path.read_text())
            quant = path.with_name(path.name.replace("_config.json", "_hf_quant_config.json"))
            if quant.is_file() and not cfg.get("quantization_config"):  # ModelOpt checkpoints
                cfg["quantization_config"] = json.loads(quant.read_text()).get("quantization") or {}
            return cfg, path.name
    return None


def load_model(spec: str | dict, *, base_dir: Path | None = None) -> ModelConfig:
    """A ModelConfig from a preset name, a Hugging Face id shipped with aiconfigurator-core,
    a path to a ``config.json``, or a mapping of ModelConfig fields.

    >>> load_model("llama-3.1-8b").num_kv_heads
    8
    """
    if isinstance(spec, dict):
        return validate(ModelConfig, spec, "model")
    path = Path(spec) if base_dir is None or Path(spec).is_absolute() else base_dir / spec
    if spec.endswith(".json") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"model: no such file {path}")
        try:
            cfg = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON: {exc}") from None
        return from_hf_config(cfg, name=_model_name(cfg, path), source=str(path))
    key = _normalise(spec)
    presets = _presets()
    for name, entry in presets.items():
        if key == name or key in entry.get("aliases", []):
            fields = {k: v for k, v in entry.items() if k != "aliases"}
            return validate(ModelConfig, {"name": name, **fields}, f"{PRESETS_FILE.name}:{name}")
    found = _aiconfigurator_model(spec)
    if found is not None:
        cfg, source = found
        return from_hf_config(cfg, name=key, source=f"aiconfigurator-core model_configs/{source}")
    known = [*model_names(), *(a for entry in presets.values() for a in entry.get("aliases", [])),
             *aiconfigurator_model_ids()]
    raise ConfigError(
        f"model: unknown model {spec!r}{did_you_mean(spec, known) or '.'} Use a preset "
        f"({', '.join(model_names())}), a Hugging Face id whose config ships with aiconfigurator-core (for "
        "example Qwen/Qwen3-8B; `frontier-dag models` lists them), or a path to a config.json"
    )
