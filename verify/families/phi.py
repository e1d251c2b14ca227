"""Phi (phi: Phi-1, Phi-1.5, Phi-2): per block one LayerNorm feeding attention and the MLP in
parallel, attention q (h × a·d_head), k and v (h × n_kv·d_head), dense (a·d_head × h), the MLP
fc1 (h × f) and fc2 (f × h), every projection biased, optional LayerNorms over d_head on q and
k (qk_layernorm); RoPE on partial_rotary_factor of each head; a final LayerNorm; an untied
lm_head with a bias of V.

Activation terms are not derived (verify/predict.py says so).
"""

from __future__ import annotations

from verify.families.blocks import attention, mlp, norm, rope_inv_freq

MODEL_TYPES = ("phi",)


def fields(config) -> dict:
    """What a Phi config says about its blocks, as Shape fields."""
    head_dim = config.hidden_size // config.num_attention_heads
    share = (getattr(config, "rope_parameters", None) or {}).get("partial_rotary_factor", 1.0)
    return {
        "gated_mlp": False, "positions": "rope", "norm": "layernorm",
        "attn_bias": True, "o_bias": True, "mlp_bias": True, "embed_norm": False,
        "norms_per_layer": 1, "final_norm": True, "fused_qkv": False, "parallel_attn": True,
        "position_rows": 0, "rotary_dim": int(head_dim * share), "head_bias": True, "embed_dim": config.hidden_size,
        "qk_norm": bool(config.qk_layernorm), "sliding_window": None, "ffn": config.intermediate_size,
    }


def params(s) -> dict[str, int]:
    """Embedding V·h; per layer attention h·q + 2h·kv + q·h + q + 2kv + h, the MLP 2·h·f + f + h,
    one LayerNorm 2h (and two of 2·d_head on q and k with qk_layernorm); a final LayerNorm 2h;
    the head V·h (unless tied) plus its bias V."""
    q, kv = s.heads * s.head_dim, s.kv_heads * s.head_dim
    qk_norms = 2 * norm(s.h // s.heads, "layernorm") if s.qk_norm else 0
    return {
        "embedding Vh": s.V * s.h,
        "positions Nh": 0,
        "attention": s.L * attention(s.h, q, kv, True, True),
        "mlp": s.L * mlp(s.h, s.ffn, 2, True),
        "router": 0,
        "norms": (s.L + 1) * norm(s.h, "layernorm") + s.L * qk_norms,
        "output head": (0 if s.tied else s.V * s.h) + s.V,
    }


def buffers(s, p: int) -> dict[str, int]:
    """RoPE's inverse frequencies over the rotated share of the head."""
    return rope_inv_freq(s.rotary_dim)
