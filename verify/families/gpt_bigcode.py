"""GPT-BigCode (gpt_bigcode: SantaCoder, StarCoder): the GPT-2 block with multi-query attention
(one key/value head when multi_query: c_attn is h × (h + 2·d_head)), nn.Linear projections with
biases, learned positions, a final LayerNorm, a head tied to the embedding unless the config
says otherwise, and a boolean causal mask of N × N kept as a buffer.

Activation terms are not derived (verify/predict.py says so).
"""

from __future__ import annotations

from verify.families.blocks import attention, mlp, norm

MODEL_TYPES = ("gpt_bigcode",)


def fields(config) -> dict:
    """What a GPT-BigCode config says about its blocks, as Shape fields."""
    h = config.n_embd
    return {
        "gated_mlp": False, "positions": "learned", "norm": "layernorm",
        "attn_bias": True, "o_bias": True, "mlp_bias": True, "embed_norm": False,
        "norms_per_layer": 2, "final_norm": True, "fused_qkv": True, "parallel_attn": False,
        "position_rows": config.n_positions, "rotary_dim": 0, "head_bias": False, "embed_dim": h,
        "qk_norm": False, "sliding_window": None, "ffn": config.n_inner or 4 * h, "activation": config.activation_function,
        "kv_heads": 1 if config.multi_query else config.n_head,
    }


def params(s) -> dict[str, int]:
    """Embedding V·h, positions N·h; per layer attention 2h² + 2h·kv + the biases h + 2kv + h,
    the MLP 2·h·f + f + h and two LayerNorms 2h; a final LayerNorm 2h; an untied head V·h if
    not tied."""
    return {
        "embedding Vh": s.V * s.h,
        "positions Nh": s.max_positions * s.h,
        "attention": s.L * attention(s.h, s.h, s.kv_heads * s.head_dim, True, True),
        "mlp": s.L * mlp(s.h, s.ffn, 2, True),
        "router": 0,
        "norms": (2 * s.L + 1) * norm(s.h, "layernorm"),
        "output head": 0 if s.tied else s.V * s.h,
    }


def buffers(s, p: int) -> dict[str, int]:
    """The causal mask: N × N booleans, one byte each."""
    return {"causal mask N²·1": s.max_positions * s.max_positions}


# --- generation and the no-grad forward: the GPT-2 block's (gpt2.py) ------------------------------


def generation_moments(s, spec) -> dict[str, dict[str, int]]:
    """GPT-BigCode's generation moments (gpt2.inference_moments): c_attn is h × (h + 2·g·d) (one
    key/value head under multi-query); eager attention's softmax runs in fp32 and is cast back."""
    from verify.families.gpt2 import inference_moments

    return inference_moments(s, spec, s.h + 2 * s.kv_heads * s.head_dim, softmax_fp32=True)


def forward_moments(s, spec) -> dict[str, dict[str, int]]:
    """GPT-BigCode's no-grad forward moments (generation_moments' blocks)."""
    return generation_moments(s, spec)
