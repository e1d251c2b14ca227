"""Falcon (falcon): per block a fused query_key_value (h × (q + 2kv): multi-query keeps one
key/value head, the new decoder architecture num_kv_heads of them, the original one a full
3h) and dense (h × h), the MLP dense_h_to_4h (h × f) and dense_4h_to_h (f × h), biased only
with `bias`; attention and MLP in parallel (parallel_attn, or the new architecture) behind one
LayerNorm (Falcon-7B) or two (ln_attn and ln_mlp in the new architecture; input and
post-attention norms when not parallel); RoPE, or ALiBi with `alibi`; a final LayerNorm; a head
tied to the embedding unless the config says otherwise. The new architecture's KV cache holds
k and v broadcast to all a heads, not its num_kv_heads.

Activation terms are not derived (verify/predict.py says so).
"""

from __future__ import annotations

from verify.families.blocks import attention, mlp, norm, rope_inv_freq

MODEL_TYPES = ("falcon",)


def fields(config) -> dict:
    """What a Falcon config says about its blocks, as Shape fields."""
    heads = config.num_attention_heads
    if config.new_decoder_architecture:
        kv_heads = config.num_kv_heads
    else:
        kv_heads = 1 if config.multi_query else heads
    parallel = bool(config.parallel_attn or config.new_decoder_architecture)
    ln_in_parallel = config.num_ln_in_parallel_attn or (2 if config.new_decoder_architecture else 1)
    norms = 2 if not config.parallel_attn or ln_in_parallel == 2 else 1
    bias = bool(config.bias)
    alibi = bool(config.alibi)
    out = {
        "gated_mlp": False, "positions": "alibi" if alibi else "rope", "norm": "layernorm",
        "attn_bias": bias, "o_bias": bias, "mlp_bias": bias, "embed_norm": False,
        "norms_per_layer": norms, "final_norm": True,
        "fused_qkv": True, "parallel_attn": parallel, "position_rows": 0,
        "rotary_dim": 0 if alibi else config.hidden_size // heads, "head_bias": False, "embed_dim": config.hidden_size,
        "qk_norm": False, "sliding_window": None, "ffn": config.ffn_hidden_size, "kv_heads": kv_heads,
        # the new architecture broadcasts k and v to every head before they enter the cache
        "kv_cache_heads": heads if config.new_decoder_architecture else kv_heads,
    }
    if alibi:  # no maximum length
        out["max_positions"] = 0
    return out


def params(s) -> dict[str, int]:
    """Embedding V·h; per layer attention h·q + 2h·kv + q·h (+ biases), the MLP 2·h·f (+ f + h)
    and its 1 or 2 LayerNorms 2h; a final LayerNorm 2h; an untied head V·h if not tied."""
    q, kv = s.heads * s.head_dim, s.kv_heads * s.head_dim
    return {
        "embedding Vh": s.V * s.h,
        "positions Nh": 0,
        "attention": s.L * attention(s.h, q, kv, s.attn_bias, s.o_bias),
        "mlp": s.L * mlp(s.h, s.ffn, 2, s.mlp_bias),
        "router": 0,
        "norms": (s.L * s.norms_per_layer + 1) * norm(s.h, "layernorm"),
        "output head": 0 if s.tied else s.V * s.h,
    }


def buffers(s, p: int) -> dict[str, int]:
    """RoPE's inverse frequencies over the whole head; the rotary module exists under ALiBi too."""
    return rope_inv_freq(s.head_dim)
