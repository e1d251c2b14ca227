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

from verify.units import INDEX_BYTES, dtype_bytes

from verify.families.blocks import FP32, attention, mlp, rope_inv_freq
from verify.families.tape import (Options, Training, dims, embedding_backward, linear_backward, rmsnorm_backward,
                                  rmsnorm_forward, rope_backward, rope_forward, softmax_backward,
                                  softmax_forward)

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


# --- training: what the forward keeps for backward, and the backward on a tape ----------------


def options(config) -> Options:
    """The LLaMA family's dropout: attention_dropout alone (0 in its releases)."""
    return Options(dropout=(0.0, float(getattr(config, "attention_dropout", 0.0) or 0.0), 0.0))


def explicit_mask(s, spec) -> bool:
    """SDPA is given an explicit mask: a sliding window no longer than the sequence (transformers
    passes one from S = W on; below it the mask is the plain causal one and SDPA runs causal)."""
    return bool(s.sliding_window) and spec.seq >= s.sliding_window


def activation_gaps(s, spec, opts: Options) -> str | None:
    """Where the training terms are not derived: eager attention with dropout on its probabilities."""
    if spec.mode != "train":
        return None
    if spec.attn == "eager" and opts.dropout[1] > 0:
        return "eager attention with attention_dropout > 0 is not derived for the LLaMA family"
    return None


def _matrices(s) -> dict[str, int]:
    """Elements of each weight matrix of one decoder layer."""
    q, kv = s.heads * s.head_dim, s.kv_heads * s.head_dim
    return {"q": s.h * q, "k": s.h * kv, "v": s.h * kv, "o": q * s.h, "gate": s.h * s.ffn, "up": s.h * s.ffn, "down": s.ffn * s.h}


def _biases(s) -> dict[str, int]:
    """Elements of each projection's bias in one decoder layer (0: none)."""
    q, kv = s.heads * s.head_dim, s.kv_heads * s.head_dim
    qkv = {"q": q, "k": kv, "v": kv} if s.attn_bias else dict.fromkeys(("q", "k", "v"), 0)
    mlp_b = {"gate": s.ffn, "up": s.ffn, "down": s.h} if s.mlp_bias else dict.fromkeys(("gate", "up", "down"), 0)
    return {**qkv, "o": s.h if s.o_bias else 0, **mlp_b}


def layer_forward(t, i: int, s, spec, opts: Options) -> None:
    """Layer i's forward from its input ("layer input", n·h in the residual stream's dtype) to the
    last tensor it keeps for backward (where a checkpointed recompute stops); these modules apply
    no dropout. What stays live is what the layer keeps: two RMSNorms (`rmsnorm_forward`), q and
    k after RoPE and v (SDPA: as they are, with its output and an fp32 logsumexp per head and
    token, 4·B·a·S: linear in S; eager: contiguous copies, k and v repeated to a heads for GQA,
    with the fp32 softmax 4·B·a·S², its cast p·B·a·S² when p < 4, and the re-laid-out output:
    quadratic in S), the gated MLP's gate, up, act(gate) and their product (p·n·f each); under
    autocast also each projection's cast of its input (p·nh) and the compute-dtype copy of each
    weight matrix (autocast's cache: p per element)."""
    lt = t.scope(f"layer {i}: ")
    attention_forward(lt, s, spec)
    mlp_forward(lt, s, spec)


def attention_forward(lt, s, spec) -> None:
    """A layer's attention half (its input "layer input" to the residual stream after attention,
    "x2"): the input RMSNorm, q, k, v, RoPE, attention by kind, o and the residual add."""
    p, B, S, n, mixed, stream = dims(s, spec)
    a, g, d, h = s.heads, s.kv_heads, s.head_dim, s.h
    w = _matrices(s)
    qe, kve, sq = n * a * d, n * g * d, B * a * S * S

    bias = _biases(s)

    def proj(x: str, out: str, e: int) -> None:
        if mixed:
            if bias[x]:  # autocast's cached copy of the bias: not kept, held until autocast exits
                lt.alloc(f"{x} bias copy", p * bias[x])
            lt.alloc(f"{x} weight copy", p * w[x])
            lt.alloc(f"{x} input cast", p * n * h)
        lt.alloc(out, p * e)

    rmsnorm_forward(lt, "attn norm", "layer input", n, h, p, mixed)
    proj("q", "q proj", qe)
    proj("k", "k proj", kve)
    proj("v", "v proj", kve)
    rope_forward(lt, "q", qe, p, mixed)
    rope_forward(lt, "k", kve, p, mixed)
    lt.free("q proj", "k proj")
    transients = ["q roped", "k roped"] + (["attn norm: out"] if mixed else [])

    def keep(src: str, name: str) -> None:  # a tensor the forward made is the one backward keeps
        lt.rename(src, name)
        if src in transients:
            transients.remove(src)

    if spec.attn == "sdpa":
        repeated = explicit_mask(s, spec) and g != a  # with a mask SDPA gets k and v repeated to a heads (repeat_kv)
        mqa = g == 1 < a  # repeat_kv of one head: broadcast views, no copies (autocast's cast of k makes one)
        if repeated:
            if mixed and not mqa:
                lt.alloc("k repeated fp32", FP32 * qe)
            elif not mixed:
                if mqa:
                    keep("k roped", "k")
                else:
                    lt.alloc("k", p * qe)
            if not mqa:
                lt.alloc("v", p * qe)
                transients.append("v proj")
            if mixed:
                lt.alloc("k", p * qe)
        elif mixed:
            lt.alloc("k", p * kve)
        else:
            keep("k roped", "k")
        if mixed:  # autocast casts the fp32 rotated q and k for SDPA
            lt.alloc("q", p * qe)
        else:
            keep("q roped", "q")
        if "v proj" not in transients:
            lt.rename("v proj", "v")
        if explicit_mask(s, spec):  # the boolean mask made additive in the compute dtype, kept by SDPA
            lt.alloc("mask fill 0", p)
            lt.alloc("mask fill -inf", p)
            lt.alloc("mask", p * B * S * S)
            lt.free("mask fill 0", "mask fill -inf")
        lt.alloc("attn out", p * qe)
        lt.alloc("logsumexp", FP32 * B * a * S)
        if mixed and repeated and not mqa:
            lt.free("k repeated fp32")
    else:
        # the batched matmuls want q, kᵀ and v as (B·a)×S×d operands: contiguous copies, where
        # repeat_kv (GQA) has not made them already; with one sequence (B = 1) views do. With one
        # k and v head (multi-query) repeat_kv gives broadcast views, copied like the heads of MHA
        mqa = g == 1 < a
        gqa, copy = g != a and not mqa, B > 1
        if mixed and gqa:
            lt.alloc("k repeated fp32", FP32 * qe)
        if not mixed and gqa:
            lt.alloc("k", p * qe)
        if gqa:
            lt.alloc("v", p * qe)
        if mixed:  # autocast casts q and kᵀ (fp32 after RoPE)
            lt.alloc("k" if gqa else "k cast", p * qe)
            lt.alloc("q cast", p * qe)
        if copy:
            lt.alloc("q", p * qe)
        else:
            keep("q cast" if mixed else "q roped", "q")
        if not gqa:
            if copy and not (mixed and mqa):  # autocast's cast of broadcast kᵀ is a contiguous copy already
                lt.alloc("k", p * qe)
            else:
                keep("k cast" if mixed else "k roped", "k")
        lt.alloc("scores", p * sq)
        if mixed and copy:
            lt.free("q cast", *(() if gqa or mqa else ("k cast",)))
        softmax_forward(lt, p, sq, mixed, stream, late_cast=True)
        transients.append("v proj")
        if not gqa:
            if copy:
                lt.alloc("v", p * qe)
            else:
                keep("v proj", "v")
        lt.alloc("probs·v", p * qe)
        lt.alloc("attn out", p * qe)
        lt.free("probs·v")
        if mixed and gqa:
            lt.free("k repeated fp32")
    if mixed:
        if bias["o"]:
            lt.alloc("o bias copy", p * bias["o"])
        lt.alloc("o weight copy", p * w["o"])
    lt.alloc("o out", p * n * h)
    lt.free(*transients)
    lt.alloc("x2", stream * n * h)  # the residual stream after attention
    lt.free("o out")


def mlp_forward(lt, s, spec) -> None:
    """A layer's MLP half on "x2" to its last kept tensor: the RMSNorm and the gated MLP, then
    what the layer held beyond its kept tensors is freed (at the residual add, or where a
    checkpointed recompute stops)."""
    p, B, S, n, mixed, stream = dims(s, spec)
    h, f = s.h, s.ffn
    w, bias = _matrices(s), _biases(s)
    rmsnorm_forward(lt, "mlp norm", "x2", n, h, p, mixed)
    for x in ("gate", "act", "up", "act·up"):
        if mixed and x in ("gate", "up"):
            if bias[x]:
                lt.alloc(f"{x} bias copy", p * bias[x])
            lt.alloc(f"{x} weight copy", p * w[x])
            lt.alloc(f"{x} input cast", p * n * h)
        lt.alloc(x, p * n * f)
    if mixed:
        if bias["down"]:
            lt.alloc("down bias copy", p * bias["down"])
        lt.alloc("down weight copy", p * w["down"])
    # what the layer's forward holds past its last kept tensor (freed by then, or when a recompute stops)
    if mixed:
        lt.free("mlp norm: out", *(f"{k} bias copy" for k, b in bias.items() if b))
    elif p != FP32:
        lt.free("x2")


def outside_saved(s, spec, opts: Options) -> dict[str, int]:
    """Outside the layers: the final RMSNorm (as `rmsnorm_forward` keeps it; under autocast the
    head's cast of its output and the head's weight copy, V·h·p, instead of the product), RoPE's cos and sin (one row of positions shared by the batch:
    S·d each, in the compute dtype; fp32 under autocast), the int64 input ids (8n) and the loss
    (`loss_terms`); with checkpointing the position ids (8S) and, for eager attention, the B×S×S
    mask in the stream's dtype, which every layer's recompute reads."""
    p, B, S, n, mixed, stream = dims(s, spec)
    u = FP32 * n * s.h
    out = {"final norm: fp32 input": u, "final norm: 1/rms": FP32 * n}
    if mixed:
        out.update({"final norm: normalized": u, "head input cast": p * n * s.h, "head weight copy": p * s.V * s.h})
    else:
        out.update({"final norm: normalized": p * n * s.h, "final norm: × weight": p * n * s.h})
    out.update({"cos": S * s.head_dim * stream, "sin": S * s.head_dim * stream, "input ids": INDEX_BYTES * n})
    if spec.checkpointing:
        out["position ids"] = INDEX_BYTES * S
        if spec.attn == "eager":
            out["attention mask"] = B * S * S * stream
        elif explicit_mask(s, spec):  # SDPA's is boolean, one for the batch
            out["attention mask"] = S * S
    return out


def head_backward(t, s, spec) -> None:
    """From the logits' gradient ("grad logits") to the last layer's output's ("dy"): the head's
    backward (its weight's gradient V·h·p_w: the embedding's first one when tied) and the final
    RMSNorm's."""
    p, B, S, n, mixed, stream = dims(s, spec)
    weight = "embedding" if s.tied else "head"
    saved = ("head weight copy", "head input cast") if mixed else ("final norm: × weight",)
    linear_backward(t, weight, s.V * s.h, "final norm: gy", n * s.h, p, mixed, ("grad logits",), cast_input=mixed, saved=saved)
    dx = rmsnorm_backward(t, "final norm", "final norm: gy", n, s.h, stream, stream, stream == FP32, None)
    t.rename(dx, "dy")


def layer_backward(t, i: int, s, spec, opts: Options) -> None:
    """Layer i's backward, from the gradient of its output ("dy", the residual stream's) to the
    gradient of its input (named "dy" again), freeing what the layer kept as its last user does;
    with checkpointing it starts with the recompute (`layer_forward`) as soon as backward needs
    a kept tensor."""
    p, B, S, n, mixed, stream = dims(s, spec)
    lt = t.scope(f"layer {i}: ")
    if mixed:  # the residual add hands dy to the MLP, cast to the MLP's dtype under autocast
        lt.alloc("d mlp out", p * n * s.h)
    if spec.checkpointing:  # the first kept tensor backward needs starts the recompute
        layer_forward(t, i, s, spec, opts)
    mlp_backward(lt, s, spec)
    attention_backward(lt, i, s, spec)


def mlp_backward(lt, s, spec) -> None:
    """The gated MLP's backward and its RMSNorm's, from dy (kept in the residual stream) to dy
    with the MLP's input gradient added."""
    p, B, S, n, mixed, stream = dims(s, spec)
    f, h = s.ffn, s.h
    w, bias = _matrices(s), _biases(s)
    ck = spec.checkpointing

    def copies(*names):  # autocast: the weight copy and the input cast a projection keeps
        return tuple(x for k in names for x in (f"{k} weight copy", f"{k} input cast")) if mixed else ()

    linear_backward(lt, "down", w["down"], "d act·up", n * f, p, mixed, ("d mlp out",) if mixed else (), bias=bias["down"],
                    saved=(("down weight copy",) if mixed else ()) + ("act·up",), recomputed=ck)
    lt.alloc("d act", p * n * f)
    lt.alloc("d up", p * n * f)
    lt.free("d act·up", "up", "act")
    linear_backward(lt, "up", w["up"], "d mlp norm out", n * h, p, mixed, ("d up",), cast_input=mixed,
                    bias=bias["up"], saved=copies("up"), recomputed=ck)
    lt.alloc("d gate", p * n * f)
    lt.free("d act", "gate")
    linear_backward(lt, "gate", w["gate"], "dx gate", n * h, p, mixed, ("d gate",), cast_input=mixed, into="d mlp norm out",
                    bias=bias["gate"], saved=copies("gate") if mixed else ("mlp norm: × weight",), recomputed=ck)
    rmsnorm_backward(lt, "mlp norm", "d mlp norm out", n, h, stream, stream, stream == FP32, "/dy", spec.checkpointing)



def attention_backward(lt, i: int, s, spec) -> None:
    """Layer i's attention backward and its input RMSNorm's, from dy to the gradient of the
    layer's input (dy again)."""
    p, B, S, n, mixed, stream = dims(s, spec)
    a, g, d, h = s.heads, s.kv_heads, s.head_dim, s.h
    w, bias = _matrices(s), _biases(s)
    qe, kve = n * a * d, n * g * d  # elements of q and of k (v)
    ck = spec.checkpointing

    def copies(*names):  # autocast: the weight copy and the input cast a projection keeps
        return tuple(x for k in names for x in (f"{k} weight copy", f"{k} input cast")) if mixed else ()

    if mixed:
        lt.alloc("d attn o", p * n * h)
    o_saved = (("o weight copy",) if mixed else ()) + (("attn out",) if spec.attn == "eager" else ())
    linear_backward(lt, "o", w["o"], "d attn out", qe, p, mixed, ("d attn o",) if mixed else (), bias=bias["o"], saved=o_saved,
                    recomputed=ck)
    repeated = spec.attn == "eager" or (explicit_mask(s, spec) and g != a)  # k and v went in repeated to a heads
    if spec.attn == "sdpa":
        ke = qe if repeated else kve
        lt.alloc("dq", p * qe)
        lt.alloc("dk", p * ke)
        lt.alloc("dv", p * ke)
        lt.free("d attn out", *(("mask",) if explicit_mask(s, spec) else ()), "k", "q", "v", "logsumexp", "attn out")
        if mixed:  # back through autocast's casts of the fp32 rotated q and k
            for x, e in (("dq", qe), ("dk", ke)):
                lt.alloc(x + " fp32", FP32 * e)
                lt.free(x)
                lt.rename(x + " fp32", x)
        if repeated:  # repeat_kv's backward: the sum over the repeated heads
            lt.rename("dv", "dv rep")
            lt.rename("dk", "dk rep")
            lt.alloc("dv", p * kve)
            lt.free("dv rep")
            lt.alloc("dk", (FP32 if mixed else p) * kve)
            lt.free("dk rep")
    else:
        eager_core_backward(lt, B, S, a, g, d, p, mixed)
    rope_backward(lt, "dk", kve, p, mixed)
    rope_backward(lt, "dq", qe, p, mixed, last=i == 0 and not spec.checkpointing)
    mqa = g == 1 < a  # one k and v head: their gradients are laid out as the projections' already
    if repeated and not mqa:  # the sum over repeated heads is laid out by head: contiguous copy for v_proj
        lt.alloc("dv contiguous", p * kve)
        lt.free("dv")
        lt.rename("dv contiguous", "dv")
    linear_backward(lt, "v", w["v"], "d attn norm out", n * h, p, mixed, ("dv",), cast_input=mixed,
                    bias=bias["v"], saved=copies("v"), recomputed=ck)
    for x, e, into_frees in (("k", kve, ()), ("q", qe, () if mixed else ("attn norm: × weight",))):
        if mqa and x == "k":
            lt.rename("dk", "dk contiguous")
        else:
            lt.alloc(f"d{x} contiguous", p * e)
            lt.free(f"d{x}")
        linear_backward(lt, x, w[x], f"dx {x}", n * h, p, mixed, (f"d{x} contiguous",), cast_input=mixed,
                        into="d attn norm out", bias=bias[x], saved=copies(x) + into_frees, recomputed=ck)
    frame = ()  # with checkpointing the layer's kept inputs go with its last recomputed tensor (the shared ones with the first layer's)
    if spec.checkpointing:
        shared = ("/cos", "/sin", "/position ids") + (("/attention mask",) if spec.attn == "eager" or explicit_mask(s, spec) else ())
        frame = (() if stream == FP32 else ("layer input",)) + (shared if i == 0 else ())
    rmsnorm_backward(lt, "attn norm", "d attn norm out", n, h, stream, stream, stream == FP32, "/dy", spec.checkpointing, frame)


def eager_core_backward(lt, B: int, S: int, a: int, g: int, d: int, p: int, mixed: bool) -> None:
    """Eager attention's core from the gradient of its output ("d attn out") to those of q, k, v
    ("dq", "dk", "dv"): probs·v and q·kᵀ back through their batched matmuls, the softmax in fp32
    (4·B·a·S² each for its gradient and its input's, p·B·a·S² for the casts around it), the
    scaling, and the sum over the heads k and v were repeated to (GQA). Under autocast q and kᵀ
    were cast from fp32: their gradients go back to fp32 (4 per element)."""
    n, sq = B * S, B * a * S * S
    qe, kve = n * a * d, n * g * d
    heads = "d attn out"
    if B > 1:  # the re-merged output's gradient laid out as (B·a)×S×d again (a view when B = 1)
        lt.alloc("d heads", p * qe)
        lt.free("d attn out")
        heads = "d heads"
    lt.alloc("dv rep", p * qe)
    lt.alloc("d probs", p * sq)
    lt.free(heads, "v")
    softmax_backward(lt, p, sq, "d scores")
    lt.alloc("d scores scaled", p * sq)
    lt.free("d softmax")
    lt.alloc("dk rep", p * qe)
    lt.alloc("dq", p * qe)
    lt.free("d scores scaled", "k", "q")
    pk = FP32 if mixed else p
    if mixed:
        for x in ("dq", "dk rep"):
            lt.alloc(x + " fp32", FP32 * qe)
            lt.free(x)
            lt.rename(x + " fp32", x)
    if g != a:
        lt.alloc("dv", p * kve)
        lt.free("dv rep")
        lt.alloc("dk", pk * kve)
        lt.free("dk rep")
    else:
        lt.rename("dv rep", "dv")
        lt.rename("dk rep", "dk")




def forward_end(s, spec) -> dict[str, int]:
    """Under autocast the head keeps a cast of the final norm's fp32 output; the output itself
    (4nh) lives until the model's forward returns, past the loss; autocast's cached copies of
    the biases (p each) live until autocast exits, after the loss, and so do its copies of the
    weight matrices where checkpointing keeps none of them for backward."""
    if spec.precision != "mixed":
        return {}
    n, p = spec.batch * spec.seq, dtype_bytes(spec.dtype)
    out = {"final hidden state fp32": FP32 * n * s.h, "L × bias copies": s.L * p * sum(_biases(s).values())}
    if spec.checkpointing:
        out["L × weight copies"] = s.L * p * sum(_matrices(s).values())
    return out


TRAINING = Training(layer_forward, outside_saved, head_backward, layer_backward, embedding_backward, forward_end,
                    activation_gaps, options)


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
