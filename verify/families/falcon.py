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

from verify.units import INDEX_BYTES, dtype_bytes

from verify.families.blocks import FP32, attention, mlp, norm, rope_inv_freq
from verify.families.tape import (Options, Training, dims, embedding_backward, layernorm_backward, layernorm_forward,
                                  layernorm_head_backward, layernorm_head_saved, layernorm_stats, linear_backward, linear_forward, rope_backward, rope_forward)

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


# --- training: what the forward keeps for backward, and the backward on a tape ----------------


def options(config) -> Options:
    """Falcon's dropout (hidden_dropout on the residual, attention_dropout), its activation and
    which of its three attention layouts the config picks: "new" (new_decoder_architecture: k and
    v per group, broadcast to every head), "multi-query" (one k and v head) or "fused" (3h, one
    k and v per head)."""
    variant = "new" if config.new_decoder_architecture else "multi-query" if config.multi_query else "fused"
    return Options(dropout=(0.0, float(config.attention_dropout or 0.0), float(config.hidden_dropout or 0.0)),
                   activation=config.activation, variant=variant)


def gaps(s, spec, opts: Options) -> str | None:
    """What the terms below are not derived for."""
    if spec.mode != "train":
        return None
    if s.positions == "alibi":
        return "Falcon's training terms are derived for RoPE, not ALiBi"
    if not s.parallel_attn:
        return "Falcon's training terms are derived for parallel attention and MLP, not the sequential block"
    if opts.variant == "fused":
        return "Falcon's training terms are derived for multi-query and the new decoder architecture, not the fused 3h qkv"
    if s.attn_bias or s.mlp_bias:
        return "Falcon's training terms are derived without biases (bias false, as in the released models)"
    if any(opts.dropout):
        return "Falcon's training terms are derived without dropout (hidden_dropout, attention_dropout 0)"
    if opts.activation != "gelu":
        return f"Falcon's training terms are derived for gelu, not {opts.activation}"
    return None


def _kv(s, opts: Options) -> tuple[int, int]:
    """(k and v heads selected from the fused projection, k and v heads attention sees): one and
    one for multi-query; kv_heads groups broadcast to all a heads in the new architecture."""
    if opts.variant == "new":
        return s.kv_heads, s.heads
    return 1, 1


def _flash(s, opts: Options) -> bool:
    """SDPA runs the fused (flash) kernel where q, k and v have the same heads (the new
    architecture); with one k and v head (multi-query) this backend runs the math path."""
    return opts.variant == "new"


def layer_forward(t, i: int, s, spec, opts: Options) -> None:
    """Layer i's forward from its input to its last kept tensor (module docstring of the family's
    terms: `_attention_forward`, then the MLP). Kept: the norms' input (the layer's input), mean,
    1/std and (pure precision) output; what attention keeps; the MLP's h→f output and GELU's;
    under autocast each projection's copy of its transposed weight (FalconLinear multiplies by
    weight.T: a cast per call, not autocast's cached copy) and its input cast."""
    p, B, S, n, mixed, stream = dims(s, spec)
    lt = t.scope(f"layer {i}: ")
    h, f = s.h, s.ffn
    two = s.norms_per_layer == 2
    layernorm_forward(lt, "ln_attn" if two else "ln", "layer input", n, h, stream)
    if two:
        layernorm_stats(lt, "ln_mlp", n, h, stream)
    _attention_forward(lt, s, spec, opts)
    linear_forward(lt, "h_to_4h", "fc", h * f, n * f, n * h, p, mixed, cast_input=mixed)
    lt.alloc("act", p * n * f)
    # 4h→h keeps the layer's last kept tensor: a checkpointed recompute stops before its output
    linear_forward(lt, "4h_to_h", None, f * h, n * h, n * f, p, mixed)
    # attention's output is added into the MLP's in place, kept by nothing; under autocast the norms'
    # fp32 outputs (each projection keeps its own cast) live until the layer returns
    lt.free(*((("ln_attn: out", "ln_mlp: out") if two else ("ln: out",)) if mixed else ()), "attn dense")


def _attention_forward(lt, s, spec, opts: Options) -> None:
    """Falcon's attention from the norm's output to the dense projection's output ("attn dense").

    The fused projection (p·n·w, w = (a + 2g)·d; not kept) is split: k and v are gathered with
    an index (a copy each, p·n·g·d, and the 8-byte index, kept); in the new architecture q, k
    and v are then flattened from the group layout (copies, p·nh each). RoPE on q (p·nh, fp32
    under autocast) and k (p·n·k·d, k = 1 head for multi-query, a for the new architecture).
    Eager attention keeps contiguous copies of q, kᵀ and v broadcast to all heads (p·nh each),
    the softmax in the hidden states' dtype (p·B·a·S²; fp32 under autocast, then cast, kept) and
    the re-merged heads (p·nh). SDPA: with k heads equal to q's (new architecture) the fused CPU
    kernel keeps q, k, v, its output (p·nh), the fp32 logsumexp (4·B·a·S) and the mask made
    additive (p·B·S²); with one k head (multi-query) the math path runs in fp32 and keeps fp32
    copies of q (scaled), kᵀ and v broadcast (4nh each) and the fp32 softmax (4·B·a·S²)."""
    p, B, S, n, mixed, stream = dims(s, spec)
    h, a, d = s.h, s.heads, s.head_dim
    g, kh = _kv(s, opts)
    w = (a + 2 * g) * d
    sq = B * a * S * S
    new = opts.variant == "new"
    linear_forward(lt, "qkv", "qkv", h * w, n * w, n * h, p, mixed, cast_input=mixed)
    for x in ("k", "v"):
        lt.alloc(x + " index", INDEX_BYTES)
        lt.alloc(x + " sel", p * n * g * d)
    if new:
        for x in ("q", "k", "v"):
            lt.alloc(x + " flat", p * n * h)
        lt.free("k sel", "v sel")
    rope_forward(lt, "q", n * h, p, mixed)
    rope_forward(lt, "k", n * kh * d, p, mixed)
    lt.free(*(("q flat", "k flat") if new else ("k sel",)))
    v = "v flat" if new else "v sel"
    if spec.attn == "sdpa" and _flash(s, opts):
        if mixed:
            lt.alloc("k cast", p * n * kh * d)
            lt.alloc("q cast", p * n * h)
        mask_additive(lt, p * B * S * S, p)
        lt.alloc("sdpa out", p * n * h)
        lt.alloc("logsumexp", FP32 * B * a * S)
        linear_forward(lt, "dense", "attn dense", h * h, n * h, n * h, p, mixed)
        lt.free("qkv", *(("q roped", "k roped") if mixed else ()))
        return
    # batched matmuls take q, kᵀ and v broadcast to all heads as contiguous copies (B > 1; with B = 1
    # the head dimension is the batch and strided views do)
    clone = B > 1
    if spec.attn == "sdpa":  # the math path, in fp32
        if mixed:
            lt.alloc("k cast", p * n * kh * d)
            lt.alloc("q cast", p * n * h)
        mask_additive(lt, p * B * S * S, p)
        up = p != FP32
        if up:
            lt.alloc("q fp32", FP32 * n * h)
            lt.alloc("k fp32", FP32 * n * kh * d)
            lt.alloc("v fp32", FP32 * n * g * d)
        lt.alloc("q scaled", FP32 * n * h)
        lt.alloc("kᵀ scaled", FP32 * n * kh * d)
        if clone:
            lt.alloc("q clone", FP32 * n * h)
            lt.alloc("kᵀ clone", FP32 * n * h)
        lt.alloc("scores", FP32 * sq)
        if clone:
            lt.free("kᵀ scaled")
        lt.alloc("masked", FP32 * sq)
        lt.free("scores")
        lt.alloc("softmax", FP32 * sq)
        lt.free("masked")
        if up:
            lt.alloc("probs cast", p * sq)
        if clone:
            lt.alloc("v clone", FP32 * n * h)
        lt.alloc("probs·v", FP32 * n * h)
        if up:
            lt.alloc("sdpa out", p * n * h)
            lt.free("probs·v", *(("q scaled", "v fp32") if clone else ()), "k fp32", "q fp32", "probs cast", "mask",
                    *(("q cast", "k cast") if mixed else ()))
            lt.alloc("attn out", p * n * h)
            lt.free("sdpa out")
        else:
            lt.free(*(("q scaled",) if clone else ()), "mask")
            lt.alloc("attn out", p * n * h)
            lt.free("probs·v")
        keeps_v = not clone and not up
    else:  # eager
        if mixed:
            lt.alloc("kᵀ cast", p * n * kh * d)
            lt.alloc("q cast", p * n * h)
        if clone:
            lt.alloc("q clone", p * n * h)
            lt.alloc("kᵀ clone", p * n * h)
        lt.alloc("scores", p * sq)
        if mixed and clone:
            lt.free("q cast", "kᵀ cast")
        lt.alloc("masked", stream * sq)
        lt.alloc("softmax", stream * sq)  # in the hidden states' dtype: fp32 under autocast
        lt.free("masked", "scores")
        if mixed:
            lt.alloc("probs", p * sq)
        if clone:
            lt.alloc("v clone", p * n * h)
        lt.alloc("probs·v", p * n * h)
        lt.alloc("attn out", p * n * h)
        lt.free("probs·v")
        keeps_v = not clone
    linear_forward(lt, "dense", "attn dense", h * h, n * h, n * h, p, mixed)
    # q and k after RoPE are kept where eager attention took them as they are (B = 1, pure precision)
    keeps_qk = spec.attn == "eager" and not clone and not mixed
    lt.free("qkv", *(() if keeps_qk else ("q roped", "k roped")), *(() if keeps_v else (v,)))


def mask_additive(lt, nbytes: int, p: int) -> None:
    """SDPA turns the boolean mask additive in q's dtype: two scalars, then a B×1×S×S where."""
    lt.alloc("mask fill 0", p)
    lt.alloc("mask fill -inf", p)
    lt.alloc("mask", nbytes)
    lt.free("mask fill 0", "mask fill -inf")


def outside_saved(s, spec, opts: Options) -> dict[str, int]:
    """Outside the layers: the final LayerNorm's input, mean, 1/std and (pure precision) output,
    under autocast the head's cast of it and its weight copy; RoPE's cos and sin (S·d each, in
    the embeddings' dtype: fp32 under autocast); the input ids; with checkpointing the position
    ids and the mask every recompute reads (eager: B×S×S additive, stream's dtype; SDPA: S×S
    boolean)."""
    p, B, S, n, mixed, stream = dims(s, spec)
    out = layernorm_head_saved(s, spec)
    out.update({"cos": stream * S * s.head_dim, "sin": stream * S * s.head_dim, "input ids": INDEX_BYTES * n})
    if spec.checkpointing:
        out["position ids"] = INDEX_BYTES * S
        out["attention mask"] = B * S * S * stream if spec.attn == "eager" else S * S
    return out


def forward_end(s, spec) -> dict[str, int]:
    """Under autocast ln_f's fp32 output lives until the forward returns."""
    if spec.precision != "mixed":
        return {}
    return {"ln_f output fp32": FP32 * spec.batch * spec.seq * s.h}


def layer_backward(t, i: int, s, spec, opts: Options) -> None:
    """Layer i's backward from its output's gradient ("dy") to its input's ("dy"): the MLP, the
    attention, then the norms, whose input gradients are added into dy (the residual's)."""
    p, B, S, n, mixed, stream = dims(s, spec)
    lt = t.scope(f"layer {i}: ")
    h, f = s.h, s.ffn
    ck, two = spec.checkpointing, s.norms_per_layer == 2
    ln_mlp = "ln_mlp" if two else "ln"

    def copies(k: str) -> tuple[str, ...]:
        return (f"{k} weight copy", f"{k} input cast") if mixed else ()

    if mixed:  # the stream's fp32 gradient cast for the two compute-dtype branches (summed in place)
        lt.alloc("d branches", p * n * h)
    if ck:
        layer_forward(t, i, s, spec, opts)
    linear_backward(lt, "4h_to_h", f * h, "d act", n * f, p, mixed,
                    saved=(("4h_to_h weight copy",) if mixed else ()) + ("act",), recomputed=ck)
    lt.alloc("d fc", p * n * f)
    lt.free("d act", "fc")
    linear_backward(lt, "h_to_4h", h * f, f"d {ln_mlp} out", n * h, p, mixed, ("d fc",), cast_input=mixed,
                    saved=copies("h_to_4h") if mixed else ((f"{ln_mlp}: out",) if two else ()), recomputed=ck)
    linear_backward(lt, "dense", h * h, "d attn out", n * h, p, mixed, ("d branches",) if mixed else (),
                    saved=(("dense weight copy",) if mixed else ()) + (() if _flash_path(s, spec, opts) else ("attn out",)),
                    recomputed=ck)
    _attention_backward(lt, i, s, spec, opts)
    ln_attn = "ln_attn" if two else "ln"
    linear_backward(lt, "qkv", h * (s.heads + 2 * _kv(s, opts)[0]) * s.head_dim, f"d {ln_attn} out (qkv)", n * h, p,
                    mixed, ("d qkv",), cast_input=mixed, saved=copies("qkv") if mixed else (f"{ln_attn}: out",),
                    into=None if two else f"d {ln_mlp} out", recomputed=ck)
    frame = (("/cos", "/sin", "/position ids", "/attention mask")) if ck and i == 0 else ()
    if two:
        layernorm_backward(lt, "ln_attn", "d ln_attn out (qkv)", n, h, stream, stream, "/dy", frees_input=False)
        lt.rename("ln_attn: input", "ln_mlp: input")  # the layer's input, which ln_mlp frees
        layernorm_backward(lt, "ln_mlp", "d ln_mlp out", n, h, stream, stream, "/dy", frame=frame)
    else:
        layernorm_backward(lt, "ln", "d ln out", n, h, stream, stream, "/dy", frame=frame)


def _flash_path(s, spec, opts: Options) -> bool:
    return spec.attn == "sdpa" and _flash(s, opts)


def _attention_backward(lt, i: int, s, spec, opts: Options) -> None:
    """The backward of `_attention_forward` from the re-merged heads' gradient ("d attn out") to
    the fused projection's ("d qkv")."""
    p, B, S, n, mixed, stream = dims(s, spec)
    h, a, d = s.h, s.heads, s.head_dim
    g, kh = _kv(s, opts)
    w = (a + 2 * g) * d
    new = opts.variant == "new"
    last = i == 0 and not spec.checkpointing
    if _flash_path(s, spec, opts):
        for x in ("dq", "dk", "dv"):
            lt.alloc(x, p * n * h)
        lt.free("d attn out", "mask", *(("q cast", "k cast") if mixed else ("q roped", "k roped")), "v flat",
                "logsumexp", "sdpa out")
    else:
        clone = B > 1
        if spec.attn == "sdpa":
            _math_backward(lt, s, spec, opts, clone)
        else:
            _eager_backward(lt, s, spec, opts, clone)
    if mixed:  # q and k went through their casts to p
        lt.alloc("dq fp32", FP32 * n * h)
        lt.free("dq")
        lt.rename("dq fp32", "dq")
        lt.alloc("dk fp32", FP32 * n * kh * d)
        lt.free("dk")
        lt.rename("dk fp32", "dk")
    rope_backward(lt, "dk", n * kh * d, p, mixed)
    rope_backward(lt, "dq", n * h, p, mixed, last=last)
    # the split's backward: k and v scattered into the fused layout, q's slice, summed
    if new:
        lt.alloc("dv sum", p * n * g * d)
        lt.free("dv")
        lt.alloc("dk sum", p * n * g * d)
        lt.free("dk")
        lt.rename("dv sum", "dv")
        lt.rename("dk sum", "dk")
    for x in ("v", "k"):
        lt.alloc(f"d{x} zeros", p * n * w)
        lt.alloc(f"d{x} scattered", p * n * w)
        lt.free(f"d{x} zeros", f"d{x}", f"{x} index")
    lt.alloc("d kv", p * n * w)
    lt.free("dv scattered", "dk scattered")
    lt.alloc("dq full", p * n * w)
    lt.free("dq")
    lt.alloc("d qkv", p * n * w)
    lt.free("d kv", "dq full")


def _kept(s, spec, opts: Options, clone: bool) -> tuple[str, str, str]:
    """The names of what attention's matmuls keep of q, kᵀ and v: their contiguous copies
    (B > 1), else the tensors themselves (the casts under autocast; fp32 copies in the math path)."""
    if clone:
        return "q clone", "kᵀ clone", "v clone"
    mixed, up = spec.precision == "mixed", dtype_bytes(spec.dtype) != FP32
    v = "v flat" if opts.variant == "new" else "v sel"
    if spec.attn == "sdpa":
        return "q scaled", "kᵀ scaled", "v fp32" if up else v
    return ("q cast", "kᵀ cast", v) if mixed else ("q roped", "k roped", v)


def _math_backward(lt, s, spec, opts: Options, clone: bool) -> None:
    """SDPA's fp32 math path back from "d attn out" to "dq", "dk", "dv" (p; fp32 when p is)."""
    p, B, S, n, mixed, stream = dims(s, spec)
    h, a, d = s.h, s.heads, s.head_dim
    g, kh = _kv(s, opts)
    sq = B * a * S * S
    q, k, v = _kept(s, spec, opts, clone)
    up = p != FP32
    if up:
        lt.alloc("d out fp32", FP32 * n * h)
        lt.free("d attn out")
        lt.rename("d out fp32", "d attn out")
    if clone:
        lt.alloc("d heads", FP32 * n * h)
        lt.free("d attn out")
    else:
        lt.rename("d attn out", "d heads")
    lt.alloc("dv exp", FP32 * n * h)
    lt.alloc("d probs", FP32 * sq)
    lt.free("d heads", v)
    lt.alloc("dv fp32", FP32 * n * g * d)
    lt.free("dv exp")
    lt.alloc("d softmax", FP32 * sq)
    lt.free("d probs", "softmax")
    lt.alloc("dkᵀ exp", FP32 * n * h)
    lt.alloc("dq fp32", FP32 * n * h)
    lt.free("d softmax", k, q)
    lt.alloc("dkᵀ sum", FP32 * n * kh * d)
    lt.free("dkᵀ exp")
    lt.alloc("dk fp32", FP32 * n * kh * d)
    lt.free("dkᵀ sum")
    lt.alloc("dq scaled", FP32 * n * h)
    lt.free("dq fp32")
    if up:
        lt.alloc("dv", p * n * g * d)
        lt.free("dv fp32")
        lt.alloc("dk", p * n * kh * d)
        lt.free("dk fp32")
        lt.alloc("dq", p * n * h)
        lt.free("dq scaled")
    else:
        lt.rename("dv fp32", "dv")
        lt.rename("dk fp32", "dk")
        lt.rename("dq scaled", "dq")


def _eager_backward(lt, s, spec, opts: Options, clone: bool) -> None:
    """Eager attention back from "d attn out" to "dq", "dk", "dv"."""
    p, B, S, n, mixed, stream = dims(s, spec)
    h, a, d = s.h, s.heads, s.head_dim
    g, kh = _kv(s, opts)
    sq = B * a * S * S
    new = opts.variant == "new"
    q, k, v = _kept(s, spec, opts, clone)
    if clone:
        lt.alloc("d heads", p * n * h)
        lt.free("d attn out")
    else:
        lt.rename("d attn out", "d heads")
    lt.alloc("dv exp", p * n * h)
    lt.alloc("d probs", p * sq)
    lt.free("d heads", v, *(("probs",) if mixed else ()))
    if new:
        lt.rename("dv exp", "dv")
    else:
        lt.alloc("dv", p * n * g * d)
        lt.free("dv exp")
    if mixed:  # back through the probabilities' cast, the fp32 softmax and the mask's promotion
        lt.alloc("d probs fp32", FP32 * sq)
        lt.free("d probs")
        lt.alloc("d softmax fp32", FP32 * sq)
        lt.free("d probs fp32", "softmax")
        lt.alloc("d softmax", p * sq)
        lt.free("d softmax fp32")
    else:
        lt.alloc("d softmax", p * sq)
        lt.free("d probs", "softmax")
    lt.alloc("d scaled", p * sq)
    lt.free("d softmax")
    lt.alloc("dkᵀ exp", p * n * h)
    lt.alloc("dq", p * n * h)
    lt.free("d scaled", k, q)
    if new:
        lt.rename("dkᵀ exp", "dk")
    else:
        lt.alloc("dk", p * n * kh * d)
        lt.free("dkᵀ exp")




TRAINING = Training(layer_forward, outside_saved, layernorm_head_backward, layer_backward, embedding_backward, forward_end,
                    gaps, options)


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
