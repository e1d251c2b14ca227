"""Model name or config.json path -> transformers config -> one normalized Shape.

Every formula reads a Shape; nothing here imports a model class or builds a module.
Configs are parsed as data (JSON); no code is ever executed from them (no trust_remote_code).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


class ConfigError(ValueError):
    """Bad input: one line naming what is wrong and what would work."""


@dataclass(frozen=True)
class Shape:
    """The sizes every formula reads, in the seeds' symbols where they have one."""

    name: str  # bundled name or the config's file stem
    model_type: str  # transformers model_type (llama, gpt2, mixtral, ...)
    h: int  # hidden size (d_model)
    L: int  # number of decoder layers
    V: int  # vocabulary size = rows of the embedding matrix
    heads: int  # attention heads (a)
    kv_heads: int  # key/value heads (== heads for MHA, 1 for MQA, in between for GQA)
    head_dim: int  # per-head dimension (usually h / heads)
    ffn: int  # MLP inner size (d_ff); per expert for MoE
    gated_mlp: bool  # SwiGLU-style gate/up/down (3 matrices) instead of up/down (2)
    experts: int  # MoE experts per layer (1 for a dense model)
    experts_per_token: int  # experts each token is routed to (1 for a dense model)
    tied: bool  # output head shares the embedding matrix
    max_positions: int  # longest sequence the model accepts (N); 0 if unbounded (ALiBi)
    positions: str  # "learned" | "rope" | "alibi"
    norm: str  # "layernorm" (scale + shift) | "rmsnorm" (scale only)
    attn_bias: bool  # q/k/v projections carry biases
    o_bias: bool  # the attention output projection carries a bias
    mlp_bias: bool  # MLP projections carry biases
    embed_norm: bool  # a norm right after the embedding (BLOOM's word_embeddings_layernorm)

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
    """Normalize the many spellings of transformers configs into one Shape."""
    mt = config.model_type
    h = _positive(config, "hidden size", _first(config, "hidden_size", "n_embd", "d_model"))
    L = _positive(config, "number of layers", _first(config, "num_hidden_layers", "n_layer"))
    V = _positive(config, "vocab_size", _first(config, "vocab_size"))
    heads = _positive(config, "number of attention heads", _first(config, "num_attention_heads", "n_head"))
    kv = _first(config, "num_key_value_heads", "num_kv_heads")
    if mt == "falcon" and not getattr(config, "new_decoder_architecture", False):
        kv = 1 if getattr(config, "multi_query", False) else heads
    kv_heads = _positive(config, "number of key/value heads", kv if kv is not None else heads)
    head_dim = _first(config, "head_dim", default=None) or (h // heads if h % heads == 0 else 0)
    if head_dim <= 0:
        raise ConfigError(f"{config.name_or_path}: hidden size {h} is not divisible by {heads} heads")
    if heads % kv_heads:
        raise ConfigError(f"{config.name_or_path}: {heads} heads not divisible by {kv_heads} key/value heads")
    ffn = _positive(
        config,
        "MLP size",
        _first(config, "intermediate_size", "n_inner", "ffn_dim", "ffn_hidden_size", default=None) or 4 * h,
    )
    act = str(_first(config, "hidden_act", "activation_function", default=""))
    gated = mt not in {"gpt2", "bloom", "opt", "gpt_neox", "falcon", "gptj", "gpt_bigcode", "phi"} or "glu" in act
    experts = int(_first(config, "num_local_experts", "num_experts", "n_routed_experts", default=1) or 1)
    per_tok = int(_first(config, "num_experts_per_tok", "moe_topk", default=1) or 1) if experts > 1 else 1
    if mt == "bloom" or getattr(config, "alibi", False):
        positions, max_pos = "alibi", 0
    elif mt in {"gpt2", "opt", "gpt_bigcode"}:
        positions, max_pos = "learned", _first(config, "n_positions", "max_position_embeddings")
    else:
        positions, max_pos = "rope", _first(config, "max_position_embeddings", default=0)
    norm = "layernorm" if mt in {"gpt2", "bloom", "opt", "gpt_neox", "falcon", "gptj", "gpt_bigcode", "phi"} else "rmsnorm"
    biased = mt in {"gpt2", "bloom", "opt", "gpt_neox", "gptj", "gpt_bigcode", "phi"}
    attn_bias = biased or bool(_first(config, "attention_bias", "bias", default=False)) or mt == "qwen2"
    o_bias = biased or bool(_first(config, "attention_bias", "bias", default=False))
    mlp_bias = biased or bool(_first(config, "mlp_bias", "bias", default=False))
    return Shape(
        name=str(config.name_or_path or mt),
        model_type=mt,
        h=h,
        L=L,
        V=V,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        ffn=ffn,
        gated_mlp=gated,
        experts=experts,
        experts_per_token=per_tok,
        tied=bool(getattr(config, "tie_word_embeddings", False)),
        max_positions=int(max_pos or 0),
        positions=positions,
        norm=norm,
        attn_bias=attn_bias,
        o_bias=o_bias,
        mlp_bias=mlp_bias,
        embed_norm=mt == "bloom",
    )
