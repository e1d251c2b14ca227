"""BLOOM (bloom): a LayerNorm right after the embedding, then per block a LayerNorm, a fused
query_key_value (h × 3h) and dense (h × h), a LayerNorm and the MLP h → 4h → h (GELU), every
projection biased; ALiBi (no position parameters, no buffers); a final LayerNorm; a head tied to
the embedding unless the config says otherwise.

Activation terms are not derived (verify/predict.py says so).
"""

from __future__ import annotations

from verify.families.blocks import attention, mlp, norm

MODEL_TYPES = ("bloom",)


def fields(config) -> dict:
    """What a BLOOM config says about its blocks, as Shape fields; the MLP is 4h whatever the
    config holds, and ALiBi sets no maximum length."""
    return {
        "gated_mlp": False, "positions": "alibi", "norm": "layernorm",
        "attn_bias": True, "o_bias": True, "mlp_bias": True, "embed_norm": True,
        "norms_per_layer": 2, "final_norm": True, "fused_qkv": True, "parallel_attn": False,
        "position_rows": 0, "rotary_dim": 0, "head_bias": False, "embed_dim": config.hidden_size,
        "qk_norm": False, "sliding_window": None, "ffn": 4 * config.hidden_size, "max_positions": 0,
    }


def params(s) -> dict[str, int]:
    """Embedding V·h; per layer attention 4h² + 4h, the MLP 8h² + 5h and two LayerNorms 2h; the
    embedding LayerNorm and a final one 2h each; an untied head V·h if not tied."""
    return {
        "embedding Vh": s.V * s.h,
        "positions Nh": 0,
        "attention": s.L * attention(s.h, s.h, s.h, True, True),
        "mlp": s.L * mlp(s.h, 4 * s.h, 2, True),
        "router": 0,
        "norms": (2 * s.L + 2) * norm(s.h, "layernorm"),
        "output head": 0 if s.tied else s.V * s.h,
    }


def buffers(s, p: int) -> dict[str, int]:
    """BLOOM keeps no buffers (ALiBi slopes and the mask are built per call)."""
    return {}
