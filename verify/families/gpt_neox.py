"""GPT-NeoX (gpt_neox, Pythia): per block two LayerNorms, a fused query_key_value (h × 3h) and
dense (h × h), biased unless attention_bias is false, the MLP dense_h_to_4h (h × f) and
dense_4h_to_h (f × h) with biases, attention and MLP in parallel with use_parallel_residual;
RoPE on rotary_pct of each head; a final LayerNorm; an untied embed_out head unless the config
ties it.

Activation terms are not derived (verify/predict.py says so).
"""

from __future__ import annotations

from verify.families.blocks import attention, mlp, norm, rope_inv_freq

MODEL_TYPES = ("gpt_neox",)


def fields(config) -> dict:
    """What a GPT-NeoX config says about its blocks, as Shape fields."""
    head_dim = config.hidden_size // config.num_attention_heads
    share = (getattr(config, "rope_parameters", None) or {}).get("partial_rotary_factor", 1.0)
    bias = bool(config.attention_bias)
    return {
        "gated_mlp": False, "positions": "rope", "norm": "layernorm",
        "attn_bias": bias, "o_bias": bias, "mlp_bias": True, "embed_norm": False,
        "norms_per_layer": 2, "final_norm": True, "fused_qkv": True, "parallel_attn": bool(config.use_parallel_residual),
        "position_rows": 0, "rotary_dim": int(head_dim * share), "head_bias": False, "embed_dim": config.hidden_size,
        "qk_norm": False, "sliding_window": None, "ffn": config.intermediate_size,
    }


def params(s) -> dict[str, int]:
    """Embedding V·h; per layer attention 4h² (+ 4h biases), the MLP 2·h·f + f + h and two
    LayerNorms 2h; a final LayerNorm 2h; an untied head V·h."""
    return {
        "embedding Vh": s.V * s.h,
        "positions Nh": 0,
        "attention": s.L * attention(s.h, s.h, s.h, s.attn_bias, s.o_bias),
        "mlp": s.L * mlp(s.h, s.ffn, 2, True),
        "router": 0,
        "norms": (2 * s.L + 1) * norm(s.h, "layernorm"),
        "output head": 0 if s.tied else s.V * s.h,
    }


def buffers(s, p: int) -> dict[str, int]:
    """RoPE's inverse frequencies over the rotated share of the head."""
    return rope_inv_freq(s.rotary_dim)
