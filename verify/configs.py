"""Model name or config.json path -> transformers config -> one normalized Shape.

Every formula reads a Shape; nothing here imports a model class or builds a module.
Configs are parsed as data (JSON); no code is ever executed from them (no trust_remote_code).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from verify.families import family_of

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


class ConfigError(ValueError):
    """Bad input: one line naming what is wrong and what would work."""


@dataclass(frozen=True)
class Shape:
    """The sizes every formula reads, in the seeds' symbols where they have one. The sizes every
    config has are read here; what the blocks hold comes from the model's family
    (verify/families) and is None when no family in the registry covers the model_type."""

    name: str  # bundled name or the config's file stem
    model_type: str  # transformers model_type (llama, gpt2, mixtral, ...)
    family: str | None  # the registry's family for model_type (verify.families); None if none covers it
    h: int  # hidden size (d_model)
    L: int  # number of decoder layers
    V: int  # vocabulary size = rows of the embedding matrix
    heads: int  # attention heads (a)
    kv_heads: int  # key/value heads (== heads for MHA, 1 for MQA, in between for GQA)
    head_dim: int  # per-head dimension (usually h / heads)
    ffn: int  # MLP inner size (d_ff); per expert for MoE
    gated_mlp: bool | None  # SwiGLU-style gate/up/down (3 matrices) instead of up/down (2)
    experts: int  # MoE experts per layer (1 for a dense model)
    experts_per_token: int  # experts each token is routed to (1 for a dense model)
    tied: bool  # output head shares the embedding matrix
    max_positions: int  # longest sequence the model accepts (N); 0 if unbounded (ALiBi)
    positions: str | None  # "learned" | "rope" | "alibi"
    norm: str | None  # "layernorm" (scale + shift) | "rmsnorm" (scale only) | "layernorm-no-affine" (none: OPT's option)
    attn_bias: bool | None  # q/k/v projections carry biases
    o_bias: bool | None  # the attention output projection carries a bias
    mlp_bias: bool | None  # MLP projections carry biases
    embed_norm: bool | None  # a norm right after the embedding (BLOOM's word_embeddings_layernorm)
    norms_per_layer: int | None  # norms in each block: 2, or 1 where attention and MLP share one (GPT-J, Falcon-7B, Phi)
    final_norm: bool | None  # a norm after the last block (OPT with do_layer_norm_before false has none)
    fused_qkv: bool | None  # q, k and v come out of one projection (GPT-2, BLOOM, NeoX, Falcon, BigCode)
    parallel_attn: bool | None  # attention and MLP read the same block input (GPT-J, NeoX's parallel residual, Falcon, Phi)
    position_rows: int | None  # rows of the learned position table (N; OPT's N + 2); 0 without one
    rotary_dim: int | None  # width RoPE rotates per head (d_head; less for NeoX and Phi; GPT-J's sin/cos table width); 0 without RoPE
    head_bias: bool | None  # the output head carries a bias of V (GPT-J, Phi)
    embed_dim: int | None  # width of the token embedding (h; OPT's word_embed_proj_dim, with project_in/out when != h)
    qk_norm: bool | None  # norms over d_head on q and k in every block (Phi's qk_layernorm)
    sliding_window: int | None  # every layer attends to and caches at most this many positions (Mistral); None: no window
    kv_cache_heads: int | None  # key/value heads the KV cache holds (kv_heads; all heads in Falcon's new decoder architecture)

    def as_dict(self) -> dict:
        return asdict(self)


def bundled_names() -> list[str]:
    return sorted(p.stem for p in MODELS_DIR.glob("*.json"))


def resolve(name_or_path: str) -> Path:
    """A bundled model name or a path to a config.json -> the file's path."""
    bundled = MODELS_DIR / f"{name_or_path}.json"
    if bundled.is_file():
        return bundled
    path = Path(name_or_path)
    if path.is_dir():
        path = path / "config.json"
    if path.is_file():
        return path
    if path.suffix == ".json" or "/" in name_or_path:
        raise ConfigError(f"no such config file: {name_or_path}")
    raise ConfigError(
        f"unknown model {name_or_path!r}; bundled models: {', '.join(bundled_names())}; "
        "or pass a path to a transformers config.json"
    )


def load_config(name_or_path: str):
    """Name or path -> a transformers PretrainedConfig, validated."""
    path = resolve(name_or_path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path.name}: malformed JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path.name}: expected a JSON object, got {type(data).__name__}")
    stem = path.stem if path.name != "config.json" else path.parent.name
    return from_dict(data, stem, where=path.name)


def from_dict(data: dict, name: str, where: str | None = None):
    """A config.json's content -> a validated transformers config named `name`."""
    from transformers import CONFIG_MAPPING

    where = where or name
    data = dict(data)
    model_type = data.get("model_type")
    if not model_type:
        raise ConfigError(f"{where}: no 'model_type' field (e.g. \"llama\", \"gpt2\")")
    if model_type not in CONFIG_MAPPING:
        raise ConfigError(
            f"{where}: model_type {model_type!r} is not one transformers knows "
            "(no remote code is run; use a built-in architecture such as llama, gpt2, mixtral)"
        )
    data.pop("auto_map", None)  # remote-code pointers are never followed
    fields = {k: v for k, v in data.items() if k != "model_type"}
    try:
        config = CONFIG_MAPPING[model_type](**fields)
    except Exception as e:  # transformers' strict-dataclass validators raise their own error types
        reason = " ".join(str(e).split())
        raise ConfigError(f"{where}: transformers rejected the config: {reason}") from None
    config.name_or_path = name
    shape(config)  # validates sizes
    return config


def _first(config, *names, default=None):
    for n in names:
        v = getattr(config, n, None)
        if v is not None:
            return v
    return default


def _positive(config, label: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{config.name_or_path}: {label} must be a positive integer, got {value!r}")
    return value


def shape(config) -> Shape:
    """Normalize the many spellings of transformers configs into one Shape: the sizes every config
    has, then what the model's family says its blocks hold (it may read a size its own way:
    Falcon's and BigCode's multi-query key/value heads, BLOOM's fixed 4h MLP)."""
    mt = config.model_type
    h = _positive(config, "hidden size", _first(config, "hidden_size", "n_embd", "d_model"))
    heads = _positive(config, "number of attention heads", _first(config, "num_attention_heads", "n_head"))
    experts = int(_first(config, "num_local_experts", "num_experts", "n_routed_experts", default=1) or 1)
    sizes = {
        "name": str(config.name_or_path or mt),
        "model_type": mt,
        "h": h,
        "L": _positive(config, "number of layers", _first(config, "num_hidden_layers", "n_layer")),
        "V": _positive(config, "vocab_size", _first(config, "vocab_size")),
        "heads": heads,
        "kv_heads": _first(config, "num_key_value_heads", "num_kv_heads", default=heads),
        "head_dim": _first(config, "head_dim", default=None) or (h // heads if h % heads == 0 else 0),
        "ffn": _first(config, "intermediate_size", "n_inner", "ffn_dim", "ffn_hidden_size", default=None) or 4 * h,
        "experts": experts,
        "experts_per_token": int(_first(config, "num_experts_per_tok", "moe_topk", default=1) or 1) if experts > 1 else 1,
        "tied": bool(getattr(config, "tie_word_embeddings", False)),
        "max_positions": int(_first(config, "max_position_embeddings", "n_positions", default=0) or 0),
    }
    family = family_of(mt)
    if family is None:  # what the blocks hold stays unknown
        blocks = dict.fromkeys(f.name for f in fields(Shape) if f.name not in sizes)
    else:
        blocks = {"family": family.name, **family.fields(config)}
    s = {**sizes, **blocks}
    if family is not None:  # the cache holds the heads attention reads unless the family says otherwise
        s.setdefault("kv_cache_heads", s["kv_heads"])
    kv_heads = _positive(config, "number of key/value heads", s["kv_heads"])
    if s["head_dim"] <= 0:
        raise ConfigError(f"{config.name_or_path}: hidden size {h} is not divisible by {heads} heads")
    if heads % kv_heads:
        raise ConfigError(f"{config.name_or_path}: {heads} heads not divisible by {kv_heads} key/value heads")
    _positive(config, "MLP size", s["ffn"])
    return Shape(**s)
