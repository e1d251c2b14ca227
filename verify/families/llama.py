"""The LLaMA family: llama, mistral, qwen2 (RMSNorm + RoPE + SwiGLU decoders).

Each block: an RMSNorm, attention with separate q, k, v, o projections (a·d_head query heads,
n_kv key/value heads: GQA), an RMSNorm, the gated MLP (gate and up h×f, down f×h); a final
RMSNorm; RoPE on the whole head (no position parameters). Biases: Llama's attention_bias puts
them on q, k, v and o and its mlp_bias on the MLP; Qwen2 always has q, k, v biases and no other;
Mistral has none. Mistral attends within a sliding window.

The activation terms were counted tensor by tensor from what autograd saves in these modules
(no dropout), for eager and SDPA attention, in pure precision, under autocast (mixed) and with
activation checkpointing; verify/predict.py adds the moments of the peak.

Symbols: n = B·S tokens, h hidden, f MLP inner size, a heads, g key/value heads, d head dim,
V vocabulary, L layers, p bytes of the compute dtype; fp32 tensors are 4 bytes whatever p is.
"""

from __future__ import annotations

from verify.formulas import memory as M
from verify.units import INDEX_BYTES, dtype_bytes

from verify.families.blocks import FP32, attention, mlp, rope_inv_freq

MODEL_TYPES = ("llama", "mistral", "qwen2")


def fields(config) -> dict:
    """What a LLaMA-family config says about its blocks, as Shape fields."""
    mt = config.model_type
    if mt == "qwen2":
        qkv_bias, o_bias, mlp_bias = True, False, False
    elif mt == "llama":
        qkv_bias = o_bias = bool(config.attention_bias)
        mlp_bias = bool(config.mlp_bias)
    else:
        qkv_bias = o_bias = mlp_bias = False
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return {
        "gated_mlp": True, "positions": "rope", "norm": "rmsnorm",
        "attn_bias": qkv_bias, "o_bias": o_bias, "mlp_bias": mlp_bias, "embed_norm": False,
        "norms_per_layer": 2, "final_norm": True, "fused_qkv": False, "parallel_attn": False,
        "position_rows": 0, "rotary_dim": head_dim, "head_bias": False, "embed_dim": config.hidden_size,
        "qk_norm": False, "ffn": config.intermediate_size, "activation": config.hidden_act,
        # Mistral slides every layer; Qwen2's use_sliding_window (off in its releases) is not modelled
        "sliding_window": getattr(config, "sliding_window", None) if mt == "mistral" else None,
    }


def params(s) -> dict[str, int]:
    """Embedding V·h; per layer attention h·q + 2h·kv + q·h (+ the biases the config has), the
    SwiGLU MLP 3·h·f (+ 2f + h with mlp_bias) and two RMSNorms h; a final RMSNorm h; an untied
    head V·h."""
    q, kv = s.heads * s.head_dim, s.kv_heads * s.head_dim
    return {
        "embedding Vh": s.V * s.h,
        "positions Nh": 0,
        "attention": s.L * attention(s.h, q, kv, s.attn_bias, s.o_bias),
        "mlp": s.L * mlp(s.h, s.ffn, 3, s.mlp_bias),
        "router": 0,
        "norms": (2 * s.L + 1) * s.h,
        "output head": 0 if s.tied else s.V * s.h,
    }


def buffers(s, p: int) -> dict[str, int]:
    """RoPE's inverse frequencies over the whole head."""
    return rope_inv_freq(s.head_dim)


def activation_gaps(s, spec) -> str | None:
    """Where `activations` is not derived: SDPA given an explicit sliding-window mask (transformers
    passes one from S = W on; below it the mask is the plain causal one)."""
    if spec.mode == "train" and spec.attn == "sdpa" and s.sliding_window and spec.seq >= s.sliding_window:
        return (f"activations under SDPA with a sliding window ({s.sliding_window}) no longer than the sequence "
                "(an explicit mask) are not derived; --attn eager is")
    return None


def rmsnorm_saved(n: int, h: int, p: int) -> dict[str, int]:
    """One RMSNorm (transformers computes it in fp32): its fp32 input (4nh), the fp32 1/rms per
    token (4n), the normalized tensor cast to the compute dtype and its product with the weight
    (p·nh each; in fp32 the cast is the normalized product itself)."""
    return {"fp32 input 4nh": FP32 * n * h, "1/rms 4n": FP32 * n, "normalized p·nh": p * n * h, "× weight p·nh": p * n * h}


def attention_saved(B: int, S: int, h: int, a: int, g: int, d: int, p: int, attn: str) -> dict[str, int]:
    """One attention block. SDPA saves q and k after RoPE, v, its output and an fp32 logsumexp per
    head and token (4·B·a·S): linear in S. Eager saves the fp32 softmax (4·B·a·S²), its cast to
    the compute dtype (p·B·a·S², none when p = 4), q, k and v (k and v repeated to a heads for
    GQA) and the re-laid-out output: quadratic in S."""
    n = B * S
    if attn == "sdpa":
        return {"q after RoPE n·a·d·p": n * a * d * p, "k after RoPE n·g·d·p": n * g * d * p, "v n·g·d·p": n * g * d * p,
                "output n·a·d·p": n * a * d * p, "logsumexp 4·B·a·S": FP32 * B * a * S}
    kv_heads = g if g == a else a  # repeat_kv materializes a-head copies of k and v under GQA
    return {
        "q after RoPE n·a·d·p": n * a * d * p,
        "k n·kv·d·p": n * kv_heads * d * p,
        "v n·kv·d·p": n * kv_heads * d * p,
        "softmax fp32 4·B·a·S²": FP32 * B * a * S * S,
        "softmax cast p·B·a·S²": 0 if p == FP32 else p * B * a * S * S,
        "output n·a·d·p": n * a * d * p,
    }


def gated_mlp_saved(n: int, f: int, p: int) -> dict[str, int]:
    """SwiGLU MLP: gate and up projections, the activation of the gate and the product (p·nf each)."""
    return {"gate n·f·p": n * f * p, "up n·f·p": n * f * p, "act(gate) n·f·p": n * f * p, "act·up n·f·p": n * f * p}


def head_saved(B: int, S: int, h: int, d: int, V: int, p: int) -> dict[str, int]:
    """Outside the layers: the final RMSNorm, RoPE's cos and sin (one row of positions shared by
    the batch: p·S·d each), the fp32 log-probabilities of the loss (4nV; the logits themselves
    are not kept), the int64 input ids (8n), the labels the loss keeps (padded by one position
    and shifted: a view of the 8·(S+1) padded row when B = 1, a contiguous 8·B·S copy when B > 1)
    and the loss with its total weight (2 fp32 scalars)."""
    n = B * S
    return {
        **{f"final norm {k}": v for k, v in rmsnorm_saved(n, h, p).items()},
        "cos, sin 2·S·d·p": 2 * S * d * p,
        "log-probs 4nV": FP32 * n * V,
        "input ids 8n": INDEX_BYTES * n,
        "labels 8(S+1) or 8BS": INDEX_BYTES * (S + 1 if B == 1 else B * S),
        "loss, total weight 2·4": 2 * FP32,
    }


def rmsnorm_saved_autocast(n: int, h: int, p: int, consumers: int) -> dict[str, int]:
    """One RMSNorm under autocast (fp32 weights, fp32 residual stream): its fp32 input (4nh), 1/rms
    (4n), the fp32 normalized tensor (4nh), and one cast to the compute dtype (p·nh) for each
    projection that reads the output (autocast casts activations per call; only weights are
    cached): 3 after the attention norm (q, k, v), 2 after the MLP norm (gate, up), 1 at the end."""
    return {"fp32 input 4nh": FP32 * n * h, "1/rms 4n": FP32 * n, "normalized fp32 4nh": FP32 * n * h,
            f"{consumers} casts c·p·nh": consumers * p * n * h}


def layer_matrices(s) -> int:
    """Elements of the weight matrices of one decoder layer (q, k, v, o and the gated MLP)."""
    q, kv = s.heads * s.head_dim, s.kv_heads * s.head_dim
    return s.h * q + 2 * s.h * kv + q * s.h + 3 * s.h * s.ffn


def activations(s, spec, dropout: tuple[float, float, float]) -> dict[str, int]:
    """Bytes live at the forward/backward boundary beyond the persistent state (training); these
    modules apply no dropout (`dropout` is GPT-2's and unused here).

    Pure precision: per layer 2 RMSNorms, attention by kind, the gated MLP. Mixed precision
    (autocast, fp32 weights): the norms keep fp32 tensors plus per-projection casts, and each
    layer keeps the cached compute-dtype copy of its weight matrices (p per element), the head
    its own (V·h·p); attention and MLP keep the same tensors as in pure precision. Checkpointing:
    each layer keeps only its input (n·h in the residual stream's dtype) and the CPU RNG state
    torch.utils.checkpoint saves for its recompute (host memory on a GPU: the GPU model takes it
    off); the position ids (8S) and, for eager attention, the B×S×S mask in the stream's dtype are
    kept for the recompute."""
    p = dtype_bytes(spec.dtype)
    B, S = spec.batch, spec.seq
    n = B * S
    mixed = spec.precision == "mixed"
    stream = FP32 if mixed else p  # bytes of the residual stream between layers
    if spec.checkpointing:
        layer = {"layer input n·h": n * s.h * stream, "CPU RNG state": M.CPU_RNG_STATE_BYTES}
        extra = {"position ids 8S": INDEX_BYTES * S}
        if spec.attn == "eager":  # eager gets an explicit mask, a checkpoint input like the rest
            extra["attention mask B·S²·p_stream"] = B * S * S * stream
    elif mixed:
        layer = {
            **{f"attention norm: {k}": v for k, v in rmsnorm_saved_autocast(n, s.h, p, 3).items()},
            **{f"MLP norm: {k}": v for k, v in rmsnorm_saved_autocast(n, s.h, p, 2).items()},
            **attention_saved(B, S, s.h, s.heads, s.kv_heads, s.head_dim, p, spec.attn),
            **gated_mlp_saved(n, s.ffn, p),
            "weight copies p·(matrices)": p * layer_matrices(s),
        }
        extra = {}
    else:
        layer = {
            **{f"2 norms: {k}": 2 * v for k, v in rmsnorm_saved(n, s.h, p).items()},
            **attention_saved(B, S, s.h, s.heads, s.kv_heads, s.head_dim, p, spec.attn),
            **gated_mlp_saved(n, s.ffn, p),
        }
        extra = {}
    head = head_saved(B, S, s.h, s.head_dim, s.V, p)
    if mixed:
        head = {k: v for k, v in head.items() if not k.startswith(("final norm", "cos, sin"))}
        head = {**{f"final norm {k}": v for k, v in rmsnorm_saved_autocast(n, s.h, p, 1).items()},
                "head weight copy V·h·p": p * s.V * s.h, "cos, sin 2·S·d·4": 2 * S * s.head_dim * FP32, **head}
    return {**{f"L × {k}": s.L * v for k, v in layer.items()}, **extra, **head}


# --- generation and the no-grad forward (verify/families/generation.py) ---------------------------


def norm_working_set(s, r, q: int) -> dict[str, int]:
    """What an RMSNorm on B·q tokens holds beside its input at its highest. LLaMA (x.float(), x ·
    rsqrt(mean(x²) + eps), cast back, times the weight): in half precision the fp32 copy of x and
    the normalized product (8·B·q·h) beside the fp32 variance and rsqrt (8·B·q); in fp32, where the
    copy and the cast are the tensors themselves, the product and the weighted output (8·B·q·h)
    beside the variance (4·B·q). Gemma (x.float() normalized, times 1 + w, cast back): the fp32
    copy and the product, or the product and its product with 1 + w (8·B·q·h), beside rsqrt
    (4·B·q) in half precision."""
    n = r.B * q
    if s.model_type == "gemma":
        return {"fp32 normalized tensors 8·B·q·h": 8 * n * s.h, "rsqrt 4·B·q": FP32 * n if r.p < FP32 else 0}
    if r.p < FP32:
        return {"fp32 copy, normalized product 8·B·q·h": 8 * n * s.h, "variance, rsqrt 8·B·q": 8 * n}
    return {"normalized product, weighted output 8·B·q·h": 8 * n * s.h, "variance 4·B·q": FP32 * n}


def layer_moments(s, r, q: int, step, layer: int) -> dict[str, dict[str, int]]:
    """The highest points of one decoder layer's no-grad forward on q query positions, each with the
    cache as it stands then (`step`: the cache's update in this forward, None without a cache), for
    layer `layer` (0-based; layer 0's input is the embedding output, counted outside). Q = p·B·a·q·d,
    K = p·B·g·q·d, X = p·B·q·h.

    RoPE: q·cos, rotate_half(q) and its product with sin live beside q (3Q more), then the same for
      k while q and the rotated q live (apply_rotary_pos_emb returns before the caller drops q, k).
    update: the rotated q and k and v beside the cache at its highest (generation.cache_at_update).
    attention: eager: matmul, scaling and mask add in p, then softmax in fp32 and its cast to p;
      softmax(dtype=float32) first copies the masked scores to fp32: (p + 8)·B·a·q·keys live (8 in
      fp32, where the copy is the scores themselves), beside copies of k and v repeated to a heads
      under GQA (and a static window's prompt k and v, which the update returns); then the weights
      (p·B·a·q·keys) times v (with one key/value head repeat_kv is a view, and for B > 1 matmul copies
      v broadcast to a heads) and the output made contiguous (a copy, Q, for q > 1); sdpa: its
      output (Q) and fp32 logsumexp (4·B·a·q), with k and v repeated under GQA when it gets a mask and
      several queries (a single query is reshaped instead).
    o_proj: the attention output (Q) and its projection (X) beside the rotated q (and eager's weights).
    post-attention norm: the layer input, the residual after attention and the norm's working set
      (norm_working_set).
    MLP: the layer input, the residual after attention, the normed input, and act(gate), up and their
      product (3·p·B·q·f); eager attention's weights (p·B·a·q·keys) live until the layer returns."""
    from verify.families import generation as G

    p, B, a, g, d = r.p, r.B, s.heads, s.kv_heads, s.head_dim
    Q, K, X = p * B * a * q * d, p * B * g * q * d, p * B * q * s.h
    keys = step.keys if step else q
    before = G.cache_before_update(s, r, step, layer) if step else {}
    at_update = G.cache_at_update(s, r, step, layer) if step else {}
    after = G.cache_before_update(s, r, step, layer + 1) if step else {}
    returned = {"k, v the update returns (the prompt's) 2K": 2 * K} if step and step.returned_copies else {}
    if step is None:  # no cache: attention reads the rotated k and v themselves
        returned = {"rotated k, v 2K": 2 * K}
    base = {"layer input X": X} if layer else {}
    base["normed input X"] = X
    repeated = 2 * p * B * a * keys * d if 1 < g < a else 0  # one key/value head repeats as a view
    if r.attn == "eager":
        scores = (p + FP32 + (FP32 if p < FP32 else 0)) * B * a * q * keys
        weights = {"rotated q Q": Q, "k, v repeated to a heads 2·p·B·a·keys·d": repeated,
                   "attention weights p·B·a·q·keys": p * B * a * q * keys, "output Q": Q}
        attention = G.largest({
            "softmax": {"rotated q Q": Q, "k, v repeated to a heads 2·p·B·a·keys·d": repeated,
                        "masked scores, their fp32 copy, fp32 softmax (p+8)·B·a·q·keys": scores},
            "weights @ v": {**weights, "v broadcast to a heads (MQA) p·B·a·keys·d": p * B * a * keys * d if g == 1 < a and B > 1 else 0},
            "output made contiguous": {**weights, "contiguous copy Q": Q if q > 1 else 0},
        })
    else:
        gqa_copies = repeated if q > 1 and G.sdpa_needs_mask(r, q, keys) else 0
        attention = {"rotated q Q": Q, "k, v repeated to a heads 2·p·B·a·keys·d": gqa_copies,
                     "SDPA output Q": Q, "logsumexp 4·B·a·q": FP32 * B * a * q}
    eager_weights = {"attention weights p·B·a·q·keys": p * B * a * q * keys} if r.attn == "eager" else {}
    mlp = {"residual X": X, "act(gate), up, product 3·p·B·q·f": 3 * p * B * q * s.ffn, **eager_weights}
    o_proj = {"rotated q Q": Q, **eager_weights, "attention output Q": Q, "o_proj output X": X}
    norm = {"layer input X": X if layer else 0, "residual X": X, **norm_working_set(s, r, q), **eager_weights}
    return {
        "RoPE of q": {**base, "q, k, v Q + 2K": Q + 2 * K, "q·cos, rotate_half(q), ·sin 3Q": 3 * Q, **before},
        "RoPE of k": {**base, "q, rotated q, k, v 2Q + 2K": 2 * Q + 2 * K, "k·cos, rotate_half(k), ·sin 3K": 3 * K, **before},
        "cache update": {**base, "rotated q, k and v Q + 2K": Q + 2 * K, **at_update} if step else {},
        "attention": {**base, **attention, **after, **returned},
        "o_proj": {**base, **o_proj, **after, **returned},
        "post-attention norm": {**norm, **after},
        "MLP": {**base, **mlp, **after},
    }


def generation_moments(s, spec) -> dict[str, dict[str, int]]:
    """The candidate peaks of a greedy generation (mode generate) beyond the weights, each as named
    terms: inside the prefill's last layer (layer_moments), at the prefill's logits and its end,
    inside the last decode step's last layer (the cache at its longest), at its logits and its end,
    and inside the first decode step's first layer where a sliding-window cache shrinks from the
    prompt's S positions to W. Outside the layers (q queries: S in the prefill, 1 in a decode
    step): generate()'s tensors, the embedding output (p·B·q·h), RoPE's cos and sin for the B × q
    position ids (2·p·B·q·d) and the mask (generation.py)."""
    from verify.families import generation as G

    r = G.run_of(s, spec)
    out = {}

    def outside(q: int, keys: int, t: int) -> dict[str, int]:
        step_inputs = G.prefill_inputs(r) if t == 0 else G.decode_inputs(r, t, s.V)
        return {**G.generate_state(r), **step_inputs, "embeddings p·B·q·h": r.p * r.B * q * s.h,
                "cos, sin 2·p·B·q·d": 2 * r.p * r.B * q * s.head_dim, **G.model_mask(r, q, keys)}

    prefill = G.prefill_cache(r)
    for name, terms in layer_moments(s, r, r.S, prefill, s.L - 1).items():
        if terms:
            out[f"prefill: last layer's {name}"] = {**outside(r.S, prefill.keys, 0), **terms}
    for name, terms in G.logits_moments(r, s.V, 0).items():
        out[f"prefill: {name}"] = {**G.generate_state(r), **G.cache_after(s, r, prefill), **terms}
    if r.decodes:
        steps = {r.N - 1: s.L - 1}
        first = G.decode_cache(r, 1)
        if first.before > first.after:  # a window layer drops the prompt's storage at its first update
            steps[1] = 0
        for t, layer in steps.items():
            step = G.decode_cache(r, t)
            which = "last" if t == r.N - 1 else "first"
            for name, terms in layer_moments(s, r, 1, step, layer).items():
                if terms:
                    out[f"decode: {which} step, {'last' if layer else 'first'} layer's {name}"] = {**outside(1, step.keys, t), **terms}
        last = G.decode_cache(r, r.N - 1)
        for name, terms in G.logits_moments(r, s.V, r.N - 1).items():
            out[f"decode: last step's {name}"] = {**G.generate_state(r), **G.cache_after(s, r, last), **terms}
    return out


def forward_moments(s, spec) -> dict[str, dict[str, int]]:
    """The candidate peaks of one no-grad forward without a cache (mode forward) beyond the weights:
    inside the last layer (layer_moments; the final norm holds less than the post-attention norm)
    and at the head, where the final norm's output (p·nh) and every position's logits (p·nV) live. Outside the layers: the ids (8n), the embedding output,
    the 1 × S position ids the model makes (8S), RoPE's cos and sin for them (2·p·S·d) and the mask."""
    from verify.families import generation as G

    r = G.run_of(s, spec)
    n = r.B * r.S
    ids = {"input ids 8n": INDEX_BYTES * n}
    outside = {**ids, "embeddings p·nh": r.p * n * s.h, "position ids 8S": INDEX_BYTES * r.S,
               "cos, sin 2·p·S·d": 2 * r.p * r.S * s.head_dim, **G.model_mask(r, r.S, r.S)}
    out = {f"forward: last layer's {name}": {**outside, **terms} for name, terms in layer_moments(s, r, r.S, None, s.L - 1).items() if terms}
    out["forward: logits"] = {**ids, "final norm output p·nh": r.p * n * s.h, "logits p·nV": r.p * n * s.V}
    return out
