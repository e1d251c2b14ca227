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

from verify.families.blocks import FP32, attention, mlp, norm, rope_inv_freq

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
        "activation": config.activation,
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


# --- generation and the no-grad forward (verify/families/generation.py) ---------------------------


def inference_gaps(s, spec) -> str | None:
    """Where generation and the forward are not derived for Falcon: ALiBi positions, and SDPA with
    fewer key/value heads than query heads (multi-query in the original architecture), where
    FalconAttention hands torch one k/v head without enable_gqa and SDPA runs its math kernel (fp32
    copies of q, k and v, the fp32 scores and softmax)."""
    if s.positions == "alibi":
        return "Falcon with ALiBi: generation and the no-grad forward are derived for Falcon with RoPE"
    if spec.attn == "sdpa" and s.kv_cache_heads < s.heads:
        return ("Falcon multi-query under SDPA (its math kernel: one k/v head without enable_gqa) is not derived for "
                "generation and the forward; --attn eager is")
    return None


def layer_moments(s, r, q: int, step, layer: int) -> dict[str, dict[str, int]]:
    """The highest points of one Falcon decoder layer's no-grad forward (RoPE, parallel attention or
    not) on q query positions, each with the cache as it stands then (`step`: the cache's update, None
    without a cache). FQ = p·B·q·(a + 2g)·d the fused projection's output, alive until attention
    returns; Q = p·B·a·q·d; K = p·B·c·q·d for the c heads the cache holds (g; a in the new decoder
    architecture); X = p·B·q·h; F = p·B·q·f.

    split: q is a view of FQ, k and v index copies (one k/v head: K/c each) or views (one head per
      query head); the new architecture with several k/v heads copies q (Q) and k, v broadcast to every
      head (K each).
    RoPE, update: as the LLaMA block's (llama.layer_moments), beside FQ and the split's copies.
    attention: eager: matmul copies the rotated q (its layout follows FQ's; not for one query) and,
      for B > 1, k broadcast to a heads (p·B·a·keys·d) beside the scores (p·B·a·q·keys); then scores,
      masked scores and softmax in p (3p·B·a·q·keys); then the weights times v (copied broadcast for
      B > 1 when the cache holds fewer heads) and the heads merged (X, for q > 1); the previous layer's
      weights live on (FalconModel keeps each block's outputs until the next returns) and this
      layer's until it returns. sdpa: its output and fp32 logsumexp.
    dense: the merged heads and their projection (X each).
    MLP: the layer input (layer 0's is the embedding output, counted outside), its LayerNorm output(s)
      (one when attention and MLP share it, two in the new
      architecture), the attention output, and without parallel attention the residual and the MLP's
      LayerNorm output; dense_h_to_4h and the activation (2F)."""
    from verify.families import generation as G

    p, B, a, g, c, d = r.p, r.B, s.heads, s.kv_heads, s.kv_cache_heads, s.head_dim
    new_arch = c != g
    FQ, Q, K, X, F = p * B * q * (a + 2 * g) * d, p * B * a * q * d, p * B * c * q * d, p * B * q * s.h, p * B * q * s.ffn
    K1 = p * B * q * d  # one head's k or v
    keys = step.keys if step else q
    if new_arch and g > 1:  # q, and k, v broadcast to a heads, flattened into copies
        q_copy, own_v = Q, K
    elif new_arch or g == 1 < a:  # one k/v head: index copies (a broadcast of one head flattens as a view)
        q_copy, own_v = 0, K1
    else:
        q_copy, own_v = 0, 0
    split = {"fused qkv FQ": FQ, "q copy (new architecture) Q": q_copy, "k, v copies": 2 * own_v}
    before = G.cache_before_update(s, r, step, layer) if step else {}
    after = G.cache_before_update(s, r, step, layer + 1) if step else {"rotated k K": K, "v copy": own_v}
    norms = 2 if s.norms_per_layer == 2 and s.parallel_attn else 1
    previous = p * B * a * q * keys if r.attn == "eager" and layer else 0
    base = {"layer input X": X if layer else 0, f"{norms} LayerNorm output(s) X": norms * X,
            "previous layer's attention weights p·B·a·q·keys": previous}
    if r.attn == "eager":
        weights = {"attention weights p·B·a·q·keys": p * B * a * q * keys, "output Q": Q}
        broadcast = p * B * a * keys * d if c < a and B > 1 else 0
        attention = G.largest({
            "scores": {"rotated q copied Q": Q if q > 1 else 0, "k broadcast to a heads p·B·a·keys·d": broadcast,
                       "scores p·B·a·q·keys": p * B * a * q * keys},
            "softmax": {"scores, masked scores, softmax 3p·B·a·q·keys": 3 * p * B * a * q * keys},
            "weights @ v": {**weights, "v broadcast to a heads p·B·a·keys·d": broadcast},
            "heads merged": {**weights, "merged copy X": X if q > 1 else 0},
        })
    else:
        attention = {"SDPA output Q": Q, "logsumexp 4·B·a·q": FP32 * B * a * q}
    mlp = {"attention output X": X, "dense_h_to_4h, activation 2F": 2 * F}
    if not s.parallel_attn:
        mlp.update({"residual X": X, "MLP LayerNorm output X": X})
    if r.attn == "eager":
        mlp["attention weights p·B·a·q·keys"] = p * B * a * q * keys
    return {
        "RoPE of q": {**base, **split, "q·cos, rotate_half(q), ·sin 3Q": 3 * Q, **before},
        "RoPE of k": {**base, **split, "rotated q Q": Q, "k·cos, rotate_half(k), ·sin 3K": 3 * K, **before},
        "cache update": {**base, "fused qkv FQ": FQ, "rotated q, k Q + K": Q + K, "v copy": own_v,
                         **G.cache_at_update(s, r, step, layer)} if step else {},
        "attention": {**base, "fused qkv FQ": FQ, "rotated q Q": Q, **after, **attention},
        "dense": {**base, "fused qkv FQ": FQ, "rotated q Q": Q, **after, **({"attention weights p·B·a·q·keys": p * B * a * q * keys}
                  if r.attn == "eager" else {}), "merged heads X": X, "dense output X": X},
        "MLP": {**base, **mlp, **(G.cache_before_update(s, r, step, layer + 1) if step else {})},
    }


def _mask(r, q: int, keys: int) -> dict[str, int]:
    """FalconModel builds its mask without SDPA's causal skip: eager a float B × q × keys mask (p per
    element), sdpa a boolean q × keys one (an expanded view), unless a static cache's inputs bring a
    4-D mask."""
    from verify.families import generation as G

    if r.attn == "eager":
        return {} if r.static else {"causal mask p·B·q·keys": r.p * r.B * q * keys}
    if r.static and G.static_mask(r, q, keys):
        return {}
    return {"causal mask q·keys": q * keys}


def generation_moments(s, spec) -> dict[str, dict[str, int]]:
    """Falcon's generation moments: inside the last layer of the prefill and of the last decode step
    (layer_moments), and at the logits (generation.py). Outside the layers: generate()'s tensors, the
    embedding output (p·B·q·h), RoPE's cos and sin (2·p·B·q·d) and the mask (_mask)."""
    from verify.families import generation as G

    r = G.run_of(s, spec)

    def outside(q: int, keys: int, t: int) -> dict[str, int]:
        step_inputs = G.prefill_inputs(r) if t == 0 else G.decode_inputs(r, t, s.V)
        return {**G.generate_state(r), **step_inputs, "embeddings p·B·q·h": r.p * r.B * q * s.h,
                "cos, sin 2·p·B·q·d": 2 * r.p * r.B * q * s.head_dim, **_mask(r, q, keys)}

    out = {}
    prefill = G.prefill_cache(r)
    for name, terms in layer_moments(s, r, r.S, prefill, s.L - 1).items():
        if terms:
            out[f"prefill: last layer's {name}"] = {**outside(r.S, prefill.keys, 0), **terms}
    for name, terms in G.logits_moments(r, s.V, 0).items():
        out[f"prefill: {name}"] = {**G.generate_state(r), **G.cache_after(s, r, prefill), **terms}
    if r.decodes:
        step = G.decode_cache(r, r.N - 1)
        for name, terms in layer_moments(s, r, 1, step, s.L - 1).items():
            if terms:
                out[f"decode: last step, last layer's {name}"] = {**outside(1, step.keys, r.N - 1), **terms}
        for name, terms in G.logits_moments(r, s.V, r.N - 1).items():
            out[f"decode: last step's {name}"] = {**G.generate_state(r), **G.cache_after(s, r, step), **terms}
    return out


def forward_moments(s, spec) -> dict[str, dict[str, int]]:
    """Falcon's no-grad forward moments: inside the last layer (layer_moments, no cache) and at the
    head (the final LayerNorm's output and every position's logits). Outside the layers: the ids,
    the embedding output, the 1 × S position ids (8S), RoPE's cos and sin for them and the mask."""
    from verify.families import generation as G
    from verify.units import INDEX_BYTES

    r = G.run_of(s, spec)
    n = r.B * r.S
    ids = {"input ids 8n": INDEX_BYTES * n}
    outside = {**ids, "embeddings p·nh": r.p * n * s.h, "position ids 8S": INDEX_BYTES * r.S,
               "cos, sin 2·p·S·d": 2 * r.p * r.S * s.head_dim, **_mask(r, r.S, r.S)}
    out = {f"forward: last layer's {k}": {**outside, **v} for k, v in layer_moments(s, r, r.S, None, s.L - 1).items() if v}
    out["forward: logits"] = {**ids, "final LayerNorm output p·nh": r.p * n * s.h, "logits p·nV": r.p * n * s.V}
    return out
