"""Mixtral (mixtral): the LLaMA block with the MLP replaced by E SwiGLU experts (gate, up h×f
and down f×h each, fused into two tensors per layer) and a router h×E choosing k of them per
token; no biases; RoPE; an untied head unless the config ties it.

Activation terms are not derived for the routed MLP (verify/predict.py says so).
"""

from __future__ import annotations

from verify.families.blocks import attention, rope_inv_freq

MODEL_TYPES = ("mixtral",)


def fields(config) -> dict:
    """What a Mixtral config says about its blocks, as Shape fields."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return {
        "gated_mlp": True, "positions": "rope", "norm": "rmsnorm",
        "attn_bias": False, "o_bias": False, "mlp_bias": False, "embed_norm": False,
        "norms_per_layer": 2, "final_norm": True, "fused_qkv": False, "parallel_attn": False,
        "position_rows": 0, "rotary_dim": head_dim, "head_bias": False, "embed_dim": config.hidden_size,
        "qk_norm": False, "sliding_window": config.sliding_window, "ffn": config.intermediate_size,
        "experts": config.num_local_experts, "experts_per_token": config.num_experts_per_tok,
    }


def params(s) -> dict[str, int]:
    """Embedding V·h; per layer attention h·q + 2h·kv + q·h, E experts of 3·h·f, the router h·E
    and two RMSNorms h; a final RMSNorm h; an untied head V·h."""
    q, kv = s.heads * s.head_dim, s.kv_heads * s.head_dim
    return {
        "embedding Vh": s.V * s.h,
        "positions Nh": 0,
        "attention": s.L * attention(s.h, q, kv, False, False),
        "mlp": s.L * s.experts * 3 * s.h * s.ffn,
        "router": s.L * s.h * s.experts,
        "norms": (2 * s.L + 1) * s.h,
        "output head": 0 if s.tied else s.V * s.h,
    }


def buffers(s, p: int) -> dict[str, int]:
    """RoPE's inverse frequencies over the whole head."""
    return rope_inv_freq(s.head_dim)
