"""Gemma (gemma): the LLaMA block with d_head set by the config (256 in the releases, so
a·d_head need not be h), q, k, v, o biased only with attention_bias, a GELU-gated MLP, RMSNorms
of h scales (applied as 1 + w), an embedding scaled by √h at run time, and a head tied to the
embedding unless the config says otherwise.

Activation terms are not derived (verify/predict.py says so). Gemma-2 (4 norms per layer,
sliding-window attention on every other layer) is not in the registry: its KV cache differs
per layer, which the predictor's one-window Shape does not describe.
"""

from __future__ import annotations

from verify.families.blocks import attention, mlp, rope_inv_freq

MODEL_TYPES = ("gemma",)


def fields(config) -> dict:
    """What a Gemma config says about its blocks, as Shape fields."""
    bias = bool(config.attention_bias)
    return {
        "gated_mlp": True, "positions": "rope", "norm": "rmsnorm",
        "attn_bias": bias, "o_bias": bias, "mlp_bias": False, "embed_norm": False,
        "norms_per_layer": 2, "final_norm": True, "fused_qkv": False, "parallel_attn": False,
        "position_rows": 0, "rotary_dim": config.head_dim, "head_bias": False, "embed_dim": config.hidden_size,
        "qk_norm": False, "sliding_window": None, "ffn": config.intermediate_size, "activation": config.hidden_act,
    }


def params(s) -> dict[str, int]:
    """Embedding V·h; per layer attention h·q + 2h·kv + q·h (+ biases), the gated MLP 3·h·f and
    two RMSNorms h; a final RMSNorm h; an untied head V·h if not tied."""
    q, kv = s.heads * s.head_dim, s.kv_heads * s.head_dim
    return {
        "embedding Vh": s.V * s.h,
        "positions Nh": 0,
        "attention": s.L * attention(s.h, q, kv, s.attn_bias, s.o_bias),
        "mlp": s.L * mlp(s.h, s.ffn, 3, False),
        "router": 0,
        "norms": (2 * s.L + 1) * s.h,
        "output head": 0 if s.tied else s.V * s.h,
    }


def buffers(s, p: int) -> dict[str, int]:
    """RoPE's inverse frequencies over the whole head, and the embedding's scale √h: one element
    of the weights' dtype (p bytes)."""
    return {**rope_inv_freq(s.head_dim), "embedding scale p": p}


# --- generation and the no-grad forward: the LLaMA block's (llama.py) -----------------------------
# Gemma's embedding is scaled by √h (the scaled output is the one kept), its RMSNorm computes 1 + w
# and returns in the input's dtype, its gated MLP uses GELU-tanh (one op, as SiLU): the tensors alive at
# each moment are the LLaMA block's, with Gemma's own head_dim.

from verify.families.llama import forward_moments, generation_moments  # noqa: E402,F401
