"""OPT (opt): token embedding V × e (e = word_embed_proj_dim) with project_in (e → h) and
project_out (h → e) when e ≠ h, learned positions of max_position_embeddings + 2 rows (OPT
offsets position ids by 2), per block attention q, k, v, out_proj (h × h each) and the MLP fc1
(h × f), fc2 (f × h), biased unless enable_bias is false, two LayerNorms (before the sublayers
with do_layer_norm_before, after them otherwise); a final LayerNorm only with
do_layer_norm_before (OPT-350M has none); a head V × e tied to the embedding unless the config
says otherwise.

Activation terms are not derived (verify/predict.py says so).
"""

from __future__ import annotations

from verify.families.blocks import attention, mlp, norm

MODEL_TYPES = ("opt",)
POSITION_OFFSET = 2  # OPTLearnedPositionalEmbedding holds max_position_embeddings + 2 rows


def fields(config) -> dict:
    """What an OPT config says about its blocks, as Shape fields."""
    bias = bool(config.enable_bias)
    return {
        "gated_mlp": False, "positions": "learned",
        "norm": "layernorm" if config.layer_norm_elementwise_affine else "layernorm-no-affine",
        "attn_bias": bias, "o_bias": bias, "mlp_bias": bias, "embed_norm": False,
        "norms_per_layer": 2, "final_norm": bool(config.do_layer_norm_before and not config._remove_final_layer_norm),
        "fused_qkv": False, "parallel_attn": False,
        "position_rows": config.max_position_embeddings + POSITION_OFFSET, "rotary_dim": 0, "head_bias": False,
        "embed_dim": config.word_embed_proj_dim, "qk_norm": False, "sliding_window": None, "ffn": config.ffn_dim,
    }


def params(s) -> dict[str, int]:
    """Embedding V·e, positions (N+2)·h, project_in and project_out e·h each when e ≠ h; per layer
    attention 4h² (+ 4h biases), the MLP 2·h·f (+ f + h biases) and two LayerNorms 2h; a final
    LayerNorm 2h when there is one; an untied head V·e if not tied."""
    e = s.embed_dim
    return {
        "embedding Vh": s.V * e,
        "positions Nh": (s.max_positions + POSITION_OFFSET) * s.h,
        "embedding projections": 2 * e * s.h if e != s.h else 0,
        "attention": s.L * attention(s.h, s.h, s.h, s.attn_bias, s.o_bias),
        "mlp": s.L * mlp(s.h, s.ffn, 2, s.mlp_bias),
        "router": 0,
        "norms": (2 * s.L + (1 if s.final_norm else 0)) * norm(s.h, s.norm),
        "output head": 0 if s.tied else s.V * e,
    }


def buffers(s, p: int) -> dict[str, int]:
    """OPT keeps no buffers."""
    return {}
