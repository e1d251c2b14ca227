"""Model name or config.json path -> transformers config -> one normalized Shape.

Every formula reads a Shape; nothing here imports a model class or builds a module.
Configs are parsed as data (JSON); no code is ever executed from them (no trust_remote_code).
"""

from __future__ import annotations

import difflib
import json
import os
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
    activation: str | None = None  # the MLP's activation as transformers names it (ACT2FN: silu, gelu_new, ...); None: not read

    def as_dict(self) -> dict:
        return asdict(self)


def bundled_names() -> list[str]:
    return sorted(p.stem for p in MODELS_DIR.glob("*.json"))


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache the environment names now (HF_HUB_CACHE, else HF_HOME/hub, else
    ~/.cache/huggingface/hub): read at call time, so a changed HF_HOME is honoured."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "huggingface")
    return Path(home) / "hub"


def downloads_allowed() -> bool:
    """Whether the user allowed the network: HF_HUB_OFFLINE set to 0 / false / no (the
    --allow-download flag passes allow_download=True instead)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("0", "false", "no", "off")


def _is_repo_id(text: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if text.count("/") != 1 or text.endswith(".json"):
        return False
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def from_hub_cache(repo_id: str, allow_download: bool = False) -> Path:
    """config.json of the Hugging Face repo `repo_id`, from the local hub cache (huggingface_hub's
    own cache layout and lookup); fetched (config.json alone, never weights) only when
    `allow_download` or HF_HUB_OFFLINE=0. ConfigError, one line saying how to get it, otherwise."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cache = hub_cache_dir()
    found = try_to_load_from_cache(repo_id, "config.json", cache_dir=cache)
    if isinstance(found, str):
        return Path(found)
    if allow_download or downloads_allowed():
        try:
            return Path(hf_hub_download(repo_id, "config.json", cache_dir=cache))
        except Exception as e:  # network, gated repo, no such repo: one line whatever the hub raised
            reason = " ".join(str(e).split())[:200]
            raise ConfigError(f"{repo_id}: could not fetch config.json from the Hugging Face hub ({type(e).__name__}: "
                              f"{reason}); a gated repo needs `hf auth login` first, or pass a path to a config.json") from None
    raise ConfigError(
        f"{repo_id}: config.json is not in the local Hugging Face cache ({cache}); get it with "
        f"`hf download {repo_id} config.json` (config.json only, no weights), or rerun with --allow-download, "
        "or pass a path to a config.json")


def resolve(name_or_path: str, allow_download: bool = False) -> Path:
    """A bundled model name, a path to a config.json (or its folder), or a Hugging Face repo id -> the file."""
    return locate(name_or_path, allow_download)[0]


def locate(name_or_path: str, allow_download: bool = False) -> tuple[Path, str]:
    """A bundled model name, a path to a config.json (or its folder), or a Hugging Face repo id
    (config.json from the local hub cache, see from_hub_cache) -> (the file, the model's name)."""
    bundled = MODELS_DIR / f"{name_or_path}.json"
    if bundled.is_file():
        return bundled, name_or_path
    path = Path(name_or_path)
    if path.is_dir():
        path = path / "config.json"
    if path.is_file():
        return path, path.stem if path.name != "config.json" else path.parent.name
    if _is_repo_id(name_or_path):
        return from_hub_cache(name_or_path, allow_download), name_or_path
    if path.suffix == ".json" or "/" in name_or_path or os.sep in name_or_path:
        raise ConfigError(f"no such config file: {name_or_path}")
    near = difflib.get_close_matches(name_or_path, bundled_names(), n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(near)}? " if near else ""
    raise ConfigError(
        f"unknown model {name_or_path!r}; {hint}bundled models: {', '.join(bundled_names())}; "
        "or pass a path to a transformers config.json, or a Hugging Face repo id (org/name)"
    )


def load_config(name_or_path: str, allow_download: bool = False):
    """Name, path or Hugging Face repo id -> a transformers PretrainedConfig, validated."""
    path, name = locate(name_or_path, allow_download)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path.name}: malformed JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path.name}: expected a JSON object, got {type(data).__name__}")
    return from_dict(data, name, where=name if path.name == "config.json" else path.name)


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
