"""GPT-2 (gpt2): LayerNorm before attention and before the MLP, a fused c_attn (h × 3h) and
c_proj (h × h), the MLP c_fc (h × f) and c_proj (f × h) with GELU, every projection biased
(Conv1D), learned positions (n_positions × h), a final LayerNorm, and a head tied to the
embedding unless the config says otherwise.

The training terms were read off the fake backend's trace tensor by tensor (tiny-gpt2 with
distinct widths was the derivation): what the forward keeps, and the order in which backward
allocates and frees, for eager and SDPA attention, pure precision and autocast, with and without
checkpointing, with the dropout masks of one byte the CUDA kernels keep.

Symbols: n = B·S tokens, h hidden, f MLP inner size, a heads, V vocabulary, L layers, p bytes of
the compute dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from verify.units import INDEX_BYTES, dtype_bytes

from verify.families.blocks import FP32, attention, mlp, norm
from verify.families.tape import (GRAD, Options, Training, dims, dropout_backward, dropout_forward, gelu_tanh_backward,
                                  gelu_tanh_forward, layernorm_backward, layernorm_forward, layernorm_head_backward,
                                  layernorm_head_saved, linear_backward, linear_forward, token_embedding_backward)

MODEL_TYPES = ("gpt2",)


def fields(config) -> dict:
    """What a GPT-2 config says about its blocks, as Shape fields."""
    h = config.n_embd
    return {
        "gated_mlp": False, "positions": "learned", "norm": "layernorm",
        "attn_bias": True, "o_bias": True, "mlp_bias": True, "embed_norm": False,
        "norms_per_layer": 2, "final_norm": True, "fused_qkv": True, "parallel_attn": False,
        "position_rows": config.n_positions, "rotary_dim": 0, "head_bias": False, "embed_dim": h,
        "qk_norm": False, "sliding_window": None, "ffn": config.n_inner or 4 * h, "activation": config.activation_function,
    }


def params(s) -> dict[str, int]:
    """Embedding V·h, positions N·h; per layer attention 4h² + 4h, the MLP 2·h·f + f + h and two
    LayerNorms 2h; a final LayerNorm 2h; an untied head V·h if not tied."""
    return {
        "embedding Vh": s.V * s.h,
        "positions Nh": s.max_positions * s.h,
        "attention": s.L * attention(s.h, s.h, s.h, True, True),
        "mlp": s.L * mlp(s.h, s.ffn, 2, True),
        "router": 0,
        "norms": (2 * s.L + 1) * norm(s.h, "layernorm"),
        "output head": 0 if s.tied else s.V * s.h,
    }


def buffers(s, p: int) -> dict[str, int]:
    """GPT-2 keeps no buffers (the causal mask is built per call)."""
    return {}


# --- training: what the forward keeps for backward, and the backward on a tape ----------------


@dataclass(frozen=True)
class Block:
    """What differs between the GPT-2-style blocks `block_forward` and `block_backward` play (GPT-2
    here, GPT-BigCode in gpt_bigcode.py): pre-LN, a fused qkv, residual dropout after each branch,
    a two-projection MLP, every projection biased."""

    conv1d: bool  # projections are GPT-2's Conv1D (autocast casts weight, input, bias) rather than nn.Linear (bias, weight, input)
    eager_forward: Callable  # (lt, s, spec, opts) eager attention from the fused "qkv" to the re-merged heads "attn out"
    eager_backward: Callable  # (lt, s, spec, opts) its backward, "d attn out" to "d qkv"
    act_forward: Callable  # (lt, opts, e, p) the MLP's activation on "fc" (e elements) to "gelu"
    act_backward: Callable  # (lt, opts, e, p) its backward, "d gelu" to "d fc"


def qkv_width(s) -> int:
    """Columns of the fused qkv projection: q's h, k's and v's kv_heads·d each (3h with every head)."""
    return s.h + 2 * s.kv_heads * s.head_dim


def block_forward(t, i: int, s, spec, opts: Options, kind: Block) -> None:
    """Block i's forward from its input ("layer input", n·h in the stream's dtype) to its last
    kept tensor; dropout = (embd_pdrop, attn_pdrop, resid_pdrop). Kept: ln_1's and ln_2's input,
    mean and 1/std (`layernorm_forward`); the fused qkv (p·n·w, w = `qkv_width`: SDPA keeps q, k,
    v as views of it, with its output and an fp32 logsumexp per head and token, 4·B·a·S; eager
    attention keeps what `kind.eager_forward` says and the re-merged heads p·nh); the MLP's c_fc
    output and what its activation keeps; the residual dropouts' 1-byte masks; in pure precision
    the norms' outputs (kept by c_attn and c_fc); under autocast each projection's weight copy and
    input cast."""
    p, B, S, n, mixed, stream = dims(s, spec)
    embd, attn_p, resid = opts.dropout
    lt = t.scope(f"layer {i}: ")
    h, f, a, w = s.h, s.ffn, s.heads, qkv_width(s)
    c1 = kind.conv1d

    def residual_dropout(name: str, src: str) -> None:
        if resid > 0:
            dropout_forward(lt, name, src, n * h, p)
            lt.free(src)
        else:
            lt.rename(src, name)

    layernorm_forward(lt, "ln_1", "layer input", n, h, stream)
    linear_forward(lt, "c_attn", "qkv", h * w, n * w, n * h, p, mixed, cast_input=mixed, bias=w, conv1d=c1)
    if spec.attn == "sdpa":
        lt.alloc("attn out", p * n * h)
        lt.alloc("logsumexp", FP32 * B * a * S)
    else:
        kind.eager_forward(lt, s, spec, opts)
    linear_forward(lt, "attn c_proj", "attn proj", h * h, n * h, n * h, p, mixed, bias=h, conv1d=c1)
    residual_dropout("attn dropout", "attn proj")
    if spec.attn == "eager" and B > 1:  # q, k and v were copied: the fused output is not kept
        lt.free("qkv")
    lt.alloc("x2", stream * n * h)
    if mixed:
        lt.free("ln_1: out")
    layernorm_forward(lt, "ln_2", "x2", n, h, stream)
    linear_forward(lt, "c_fc", "fc", h * f, n * f, n * h, p, mixed, cast_input=mixed, bias=f, conv1d=c1)
    kind.act_forward(lt, opts, n * f, p)
    # without the MLP's dropout the output projection keeps the block's last kept tensors: a
    # checkpointed recompute stops before its output
    linear_forward(lt, "mlp c_proj", "mlp proj" if resid > 0 else None, f * h, n * h, n * f, p, mixed, bias=h, conv1d=c1)
    if resid > 0:
        residual_dropout("mlp dropout", "mlp proj")
    # the residual add (or the recompute's stop) ends what the block holds beyond its kept tensors
    lt.free(*(("ln_2: out",) if mixed else ()), *(("mlp dropout",) if resid > 0 else ()), "attn dropout",
            *((f"{k} bias copy" for k in ("c_attn", "attn c_proj", "c_fc", "mlp c_proj")) if mixed else ()))


def eager_forward(lt, s, spec, opts: Options) -> None:
    """GPT-2's eager attention on the fused qkv: q and kᵀ as (B·a)×S×d operands (contiguous copies,
    p·nh each, kept; views of the fused output when B = 1), the scores and their scaling
    (p·B·a·S²), the mask added (stream's dtype), the softmax (kept; fp32 under autocast, with its
    cast to p, kept), with attention dropout the dropped probabilities (p·B·a·S², kept) and their
    1-byte mask, v copied (B > 1, kept), probs·v and the heads re-merged (p·nh, kept)."""
    p, B, S, n, mixed, stream = dims(s, spec)
    h, a = s.h, s.heads
    sq = B * a * S * S
    if B > 1:  # q and kᵀ as (B·a)×S×d operands: contiguous copies (views of the fused output when B = 1)
        lt.alloc("q", p * n * h)
        lt.alloc("kᵀ", p * n * h)
    lt.alloc("scores", p * sq)
    lt.alloc("scores scaled", p * sq)
    lt.free("scores")
    lt.alloc("masked", stream * sq)  # the float mask is in the stream's dtype
    lt.free("scores scaled")
    lt.alloc("softmax", stream * sq)
    lt.free("masked")
    probs = "softmax"
    if mixed:  # .type(value.dtype) after autocast's fp32 softmax
        lt.alloc("softmax cast", p * sq)
        probs = "softmax cast"
    if opts.dropout[1] > 0:
        dropout_forward(lt, "probs", probs, sq, p)
        if mixed:
            lt.free("softmax cast")
    if B > 1:
        lt.alloc("v", p * n * h)
    lt.alloc("probs·v", p * n * h)
    lt.alloc("attn out", p * n * h)
    lt.free("probs·v")


def gelu_new_forward(lt, opts: Options, e: int, p: int) -> None:
    """GPT-2's gelu_new, written out (`gelu_tanh_forward`)."""
    gelu_tanh_forward(lt, "fc", "gelu", e, p)


def gelu_new_backward(lt, opts: Options, e: int, p: int) -> None:
    gelu_tanh_backward(lt, "fc", "gelu", "d gelu", e, p)


def outside_saved(s, spec, opts: Options) -> dict[str, int]:
    """Outside the blocks: ln_f's input, mean and 1/std (and its output, kept by the head, in pure
    precision; under autocast the head's cast of it and the head's weight copy, V·h·p), the
    embedding-dropout mask (1 byte per element), the token and position ids; with checkpointing
    and eager attention the B×S×S float mask every block's recompute reads."""
    p, B, S, n, mixed, stream = dims(s, spec)
    out = layernorm_head_saved(s, spec)
    if opts.dropout[0] > 0:
        out["embedding dropout mask"] = n * s.h
    out.update({"input ids": INDEX_BYTES * n, "position ids": INDEX_BYTES * S})
    if spec.checkpointing and spec.attn == "eager":
        out["attention mask"] = B * S * S * stream
    return out


def forward_end(s, spec) -> dict[str, int]:
    """Under autocast ln_f's fp32 output (4nh) lives until the model's forward returns, past the
    loss, and autocast's cached bias copies (p each) until autocast exits; with checkpointing
    so do its weight copies (kept by nothing else)."""
    if spec.precision != "mixed":
        return {}
    p, n, h, f, w = dtype_bytes(spec.dtype), spec.batch * spec.seq, s.h, s.ffn, qkv_width(s)
    out = {"ln_f output fp32": FP32 * n * h, "L × bias copies": s.L * p * (w + h + f + h)}
    if spec.checkpointing:
        out["L × weight copies"] = s.L * p * (h * w + h * h + 2 * h * f)
    return out


def block_backward(t, i: int, s, spec, opts: Options, kind: Block) -> None:
    """Block i's backward from the gradient of its output ("dy") to that of its input ("dy"
    again); with checkpointing its recompute first."""
    p, B, S, n, mixed, stream = dims(s, spec)
    embd, attn_p, resid = opts.dropout
    lt = t.scope(f"layer {i}: ")
    h, f, w = s.h, s.ffn, qkv_width(s)
    ck, c1 = spec.checkpointing, kind.conv1d

    def copies(k: str) -> tuple[str, ...]:
        return (f"{k} weight copy", f"{k} input cast") if mixed else ()

    if mixed:
        lt.alloc("d mlp dropout out", p * n * h)
    if ck:
        block_forward(t, i, s, spec, opts, kind)
    g, frees = "/dy", ()
    if mixed:
        g, frees = "d mlp dropout out", ("d mlp dropout out",)
    if resid > 0:
        g = dropout_backward(lt, "mlp dropout", g, n * h, p, frees)
        frees = (g,)
    linear_backward(lt, "mlp c_proj", f * h, "d gelu", n * f, p, mixed, frees, bias=h,
                    saved=("gelu",) + (("mlp c_proj weight copy",) if mixed else ()), recomputed=ck, conv1d=c1)
    kind.act_backward(lt, opts, n * f, p)
    linear_backward(lt, "c_fc", h * f, "d ln_2 out", n * h, p, mixed, ("d fc",), cast_input=mixed, bias=f,
                    saved=copies("c_fc") if mixed else ("ln_2: out",), recomputed=ck, conv1d=c1)
    layernorm_backward(lt, "ln_2", "d ln_2 out", n, h, stream, stream, "/dy")

    g, frees = "/dy", ()
    if mixed:
        lt.alloc("d attn dropout out", p * n * h)
        g, frees = "d attn dropout out", ("d attn dropout out",)
    if resid > 0:
        g = dropout_backward(lt, "attn dropout", g, n * h, p, frees)
        frees = (g,)
    linear_backward(lt, "attn c_proj", h * h, "d attn out", n * h, p, mixed, frees, bias=h,
                    saved=(("attn c_proj weight copy",) if mixed else ()) + (("attn out",) if spec.attn == "eager" else ()),
                    recomputed=ck, conv1d=c1)
    if spec.attn == "sdpa":
        kv = n * s.kv_heads * s.head_dim
        for x, e in (("dq", n * h), ("dk", kv), ("dv", kv)):
            lt.alloc(x, p * e)
        lt.free("d attn out", "qkv", "logsumexp", "attn out")
        lt.alloc("d qkv", p * n * w)  # the split's backward: one cat of the three
        lt.free("dq", "dk", "dv")
    else:
        kind.eager_backward(lt, s, spec, opts)
    linear_backward(lt, "c_attn", h * w, "d ln_1 out", n * h, p, mixed, ("d qkv",), cast_input=mixed, bias=w,
                    saved=copies("c_attn") if mixed else ("ln_1: out",), recomputed=ck, conv1d=c1)
    frame = ("/attention mask",) if ck and i == 0 and spec.attn == "eager" else ()  # the recompute's inputs go with the first block
    layernorm_backward(lt, "ln_1", "d ln_1 out", n, h, stream, stream, "/dy", frame=frame)


def eager_backward(lt, s, spec, opts: Options) -> None:
    """GPT-2's eager attention from the gradient of its re-merged output ("d attn out") to that of
    the fused qkv ("d qkv"): probs·v and q·kᵀ back through their batched matmuls (p·B·a·S² for
    the probabilities' gradient, then the dropout's, the softmax's and the scaling's), and the
    gradients of q, kᵀ and v re-laid out and concatenated (3p·nh). With one sequence (B = 1) the
    operands were views of the fused output, and so are some of the gradients."""
    p, B, S, n, mixed, stream = dims(s, spec)
    h, a = s.h, s.heads
    sq = B * a * S * S
    attn_drop = opts.dropout[1] > 0
    heads = "d attn out"
    if B > 1:
        lt.alloc("d heads", p * n * h)
        lt.free("d attn out")
        heads = "d heads"
    lt.alloc("dv", p * n * h)
    lt.alloc("d probs", p * sq)
    lt.free(heads, *(("v",) if B > 1 else ()))
    if attn_drop:
        lt.free("probs")
        lt.alloc("d probs in", p * sq)
        lt.free("d probs", "probs mask")
        lt.rename("d probs in", "d probs")
    elif mixed:
        lt.free("softmax cast")
    if mixed:  # back through the cast after autocast's fp32 softmax, and the fp32 masked scores' cast
        lt.alloc("d probs fp32", FP32 * sq)
        lt.free("d probs")
        lt.rename("d probs fp32", "d probs")
    lt.alloc("d softmax", (FP32 if mixed else p) * sq)
    lt.free("d probs", "softmax")
    if mixed:
        lt.alloc("d masked cast", p * sq)
        lt.free("d softmax")
        lt.rename("d masked cast", "d softmax")
    lt.alloc("d scores", p * sq)
    lt.free("d softmax")
    lt.alloc("dkᵀ", p * n * h)
    lt.alloc("dq", p * n * h)
    lt.free("d scores", *(("kᵀ", "q") if B > 1 else ("qkv",)))
    for x in ("dq", "dv"):
        lt.alloc(x + " laid out", p * n * h)
        lt.free(x)
    lt.alloc("d qkv", 3 * p * n * h)
    lt.free("dq laid out", "dkᵀ", "dv laid out")


GPT2 = Block(conv1d=True, eager_forward=eager_forward, eager_backward=eager_backward, act_forward=gelu_new_forward,
             act_backward=gelu_new_backward)


def layer_forward(t, i: int, s, spec, opts: Options) -> None:
    """GPT-2's block forward (`block_forward`)."""
    block_forward(t, i, s, spec, opts, GPT2)


def layer_backward(t, i: int, s, spec, opts: Options) -> None:
    """GPT-2's block backward (`block_backward`)."""
    block_backward(t, i, s, spec, opts, GPT2)


def embedding_backward(t, s, spec) -> None:
    """Below the first block: the embedding dropout's backward, the positions' gradient (summed
    over the batch first, p·S·h, then N·h·p_w) and the token embedding's (V·h·p_w; tied: added
    to the head's out of place)."""
    p, B, S, n, mixed, stream = dims(s, spec)
    g = "dy"
    if t.live.get("embedding dropout mask") is not None:
        g = dropout_backward(t, "embedding dropout", "dy", n * s.h, stream, ("dy",))
    if B > 1:  # the positions' output was broadcast over the batch: its gradient is summed over it first
        t.alloc("d positions", stream * S * s.h)
    t.alloc(GRAD + "positions", stream * s.max_positions * s.h)
    t.free(*(("d positions",) if B > 1 else ()), "position ids")
    token_embedding_backward(t, g, s.tied, stream * s.V * s.h)


def options(config) -> Options:
    """GPT-2's dropout: embd_pdrop, attn_pdrop, resid_pdrop."""
    return Options(dropout=tuple(float(getattr(config, k, 0.0) or 0.0) for k in ("embd_pdrop", "attn_pdrop", "resid_pdrop")))


TRAINING = Training(layer_forward, outside_saved, layernorm_head_backward, layer_backward, embedding_backward, forward_end,
                    options=options)


# --- generation and the no-grad forward (verify/families/generation.py) ---------------------------


def block_moments(s, r, q: int, step, layer: int, qkv_width: int, softmax_fp32: bool) -> dict[str, dict[str, int]]:
    """The highest points of one GPT-2-style block's no-grad forward (GPT-2, GPT-BigCode: LayerNorm,
    a fused qkv projection of `qkv_width` outputs, learned positions, a plain MLP) on q query
    positions, each with the cache as it stands then (`step`: the cache's update in this forward,
    None without a cache). X = p·B·q·h, Q = p·B·a·q·d, F = p·B·q·f. q, k and v are views of the fused
    projection's output (p·B·q·qkv_width), alive until the attention module returns; the block's
    input (the residual) lives throughout.

    update: the fused output beside the cache at its highest (generation.cache_at_update).
    attention: sdpa: its output (Q) and fp32 logsumexp (4·B·a·q). eager: scores, scaled and masked
      in p, then softmax: in p (GPT-2: the masked scores and the softmax live, 2p·B·a·q·keys) or in
      fp32 cast back (GPT-BigCode: its CPU kernel copies the scores to fp32 first, (p + 8)·B·a·q·keys;
      8 in fp32); then the weights times v (for B > 1 with one key/value head matmul copies v broadcast
      to a heads) and the heads merged (a copy, X, for q > 1).
    c_proj: the merged attention output and its projection (X each), eager's weights beside them.
    MLP: the block input, the attention output (kept by the block until it returns), the residual
      after attention, the second LayerNorm's output, and the activation's working set
      (generation.ACTIVATION_TENSORS: 2F for one op, 4F for gelu_new); eager attention's weights
      (p·B·a·q·keys) live until the block returns."""
    from verify.families import generation as G

    p, B, a, g, d = r.p, r.B, s.heads, s.kv_heads, s.head_dim
    X, Q, F = p * B * q * s.h, p * B * a * q * d, p * B * q * s.ffn
    keys = step.keys if step else q
    fused = {"fused qkv p·B·q·(h+2gd)": p * B * q * qkv_width}
    base = {"block input X": X, "LayerNorm output X": X}
    after = G.cache_before_update(s, r, step, layer + 1) if step else {}
    if r.attn == "eager":
        weights = {"attention weights p·B·a·q·keys": p * B * a * q * keys, "output Q": Q}
        scores = ((p + FP32 + (FP32 if p < FP32 else 0)) if softmax_fp32 else 2 * p) * B * a * q * keys
        attention = G.largest({
            "softmax": {"scores and softmax": scores},
            "weights @ v": {**weights, "v broadcast to a heads (MQA) p·B·a·keys·d": p * B * a * keys * d if g == 1 < a and B > 1 else 0},
            "heads merged": {**weights, "merged copy X": X if q > 1 else 0},
        })
    else:
        attention = {"SDPA output Q": Q, "logsumexp 4·B·a·q": FP32 * B * a * q}
    eager_weights = {"attention weights p·B·a·q·keys": p * B * a * q * keys} if r.attn == "eager" else {}
    c_proj = {**eager_weights, "attention output (heads merged) X": X, "c_proj output X": X}
    mlp = {"block input X": X, "attention output X": X, "residual X": X, "LayerNorm output X": X,
           f"{s.activation} working set {G.ACTIVATION_TENSORS[s.activation]}F": G.ACTIVATION_TENSORS[s.activation] * F}
    if r.attn == "eager":
        mlp["attention weights p·B·a·q·keys"] = p * B * a * q * keys
    return {
        "cache update": {**base, **fused, **G.cache_at_update(s, r, step, layer)} if step else {},
        "attention": {**base, **fused, **attention, **after},
        "c_proj": {**base, **fused, **c_proj, **after},
        "MLP": {**mlp, **after},
    }


def inference_moments(s, spec, qkv_width: int, softmax_fp32: bool) -> dict[str, dict[str, int]]:
    """The candidate peaks of a GPT-2-style model's greedy generation (mode generate) or no-grad
    forward (mode forward) beyond the weights, each as named terms (block_moments inside the last
    block, or the first where a window cache shrinks; the logits; generation.py for what lies
    outside the blocks). The token and the position embeddings (X each) live through the forward;
    their sum is the first block's input. Generation reads the position ids generate() builds
    (B × q); the forward, the 1 × S ones the model makes (8S), and so its position embeddings are
    p·S·h."""
    from verify.families import generation as G

    r = G.run_of(s, spec)
    if spec.mode == "forward":
        n = r.B * r.S
        ids = {"input ids 8n": INDEX_BYTES * n}
        outside = {**ids, "token embeddings p·nh": r.p * n * s.h, "position ids 8S": INDEX_BYTES * r.S,
                   "position embeddings p·S·h": r.p * r.S * s.h, **G.model_mask(r, r.S, r.S)}
        out = {f"forward: last block's {k}": {**outside, **v}
               for k, v in block_moments(s, r, r.S, None, s.L - 1, qkv_width, softmax_fp32).items() if v}
        out["forward: logits"] = {**ids, "final LayerNorm output p·nh": r.p * n * s.h, "logits p·nV": r.p * n * s.V}
        return out

    def outside(q: int, keys: int, t: int) -> dict[str, int]:
        step_inputs = G.prefill_inputs(r) if t == 0 else G.decode_inputs(r, t, s.V)
        return {**G.generate_state(r), **step_inputs, "token and position embeddings 2·p·B·q·h": 2 * r.p * r.B * q * s.h,
                **G.model_mask(r, q, keys)}

    out = {}
    prefill = G.prefill_cache(r)
    for name, terms in block_moments(s, r, r.S, prefill, s.L - 1, qkv_width, softmax_fp32).items():
        if terms:
            out[f"prefill: last block's {name}"] = {**outside(r.S, prefill.keys, 0), **terms}
    for name, terms in G.logits_moments(r, s.V, 0).items():
        out[f"prefill: {name}"] = {**G.generate_state(r), **G.cache_after(s, r, prefill), **terms}
    if r.decodes:
        step = G.decode_cache(r, r.N - 1)
        for name, terms in block_moments(s, r, 1, step, s.L - 1, qkv_width, softmax_fp32).items():
            if terms:
                out[f"decode: last step, last block's {name}"] = {**outside(1, step.keys, r.N - 1), **terms}
        for name, terms in G.logits_moments(r, s.V, r.N - 1).items():
            out[f"decode: last step's {name}"] = {**G.generate_state(r), **G.cache_after(s, r, step), **terms}
    return out


def generation_moments(s, spec) -> dict[str, dict[str, int]]:
    """GPT-2's generation moments (inference_moments): c_attn is h × 3h; softmax runs in p."""
    return inference_moments(s, spec, 3 * s.h, softmax_fp32=False)


def forward_moments(s, spec) -> dict[str, dict[str, int]]:
    """GPT-2's no-grad forward moments (inference_moments)."""
    return inference_moments(s, spec, 3 * s.h, softmax_fp32=False)
