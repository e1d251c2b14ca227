"""GPT-J (gptj): per block one LayerNorm feeding attention and the MLP in parallel, attention
q, k, v, out_proj (h × h each, no biases) with RoPE on the first rotary_dim dimensions of each
head, the MLP fc_in (h × f) and fc_out (f × h) with biases; a final LayerNorm; an untied lm_head
V × h with a bias of V.

Activation terms are not derived (verify/predict.py says so).
"""

from __future__ import annotations

from verify.families.blocks import FP32, attention, mlp, norm

MODEL_TYPES = ("gptj",)


def fields(config) -> dict:
    """What a GPT-J config says about its blocks, as Shape fields."""
    h = config.n_embd
    return {
        "gated_mlp": False, "positions": "rope", "norm": "layernorm",
        "attn_bias": False, "o_bias": False, "mlp_bias": True, "embed_norm": False,
        "norms_per_layer": 1, "final_norm": True, "fused_qkv": False, "parallel_attn": True,
        "position_rows": 0, "head_bias": True, "embed_dim": h,
        "rotary_dim": config.rotary_dim or h,  # the width of its sin/cos table (h without rotary_dim)
        "qk_norm": False, "sliding_window": None, "ffn": config.n_inner or 4 * h,
    }


def params(s) -> dict[str, int]:
    """Embedding V·h; per layer attention 4h², the MLP 2·h·f + f + h and one LayerNorm 2h; a final
    LayerNorm 2h; the head V·h (unless tied) plus its bias V."""
    return {
        "embedding Vh": s.V * s.h,
        "positions Nh": 0,
        "attention": s.L * attention(s.h, s.h, s.h, False, False),
        "mlp": s.L * mlp(s.h, s.ffn, 2, True),
        "router": 0,
        "norms": (s.L + 1) * norm(s.h, "layernorm"),
        "output head": (0 if s.tied else s.V * s.h) + s.V,
    }


def buffers(s, p: int) -> dict[str, int]:
    """Every attention block keeps its own sin/cos table: N positions × rotary_dim, fp32."""
    return {"L × sin, cos table N·rotary_dim·4": s.L * s.max_positions * s.rotary_dim * FP32}
