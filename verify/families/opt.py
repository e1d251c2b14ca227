"""OPT (opt): token embedding V × e (e = word_embed_proj_dim) with project_in (e → h) and
project_out (h → e) when e ≠ h, learned positions of max_position_embeddings + 2 rows (OPT
offsets position ids by 2), per block attention q, k, v, out_proj (h × h each) and the MLP fc1
(h × f), fc2 (f × h), biased unless enable_bias is false, two LayerNorms (before the sublayers
with do_layer_norm_before, after them otherwise); a final LayerNorm only with
do_layer_norm_before (OPT-350M has none); a head V × e tied to the embedding unless the config
says otherwise.

The training terms were read off the fake backend's trace tensor by tensor (tiny-opt with
distinct widths, post-LN with project_in/out like OPT-350M, and pre-LN like OPT-1.3B, was the
derivation): ReLU, residual dropout (config.dropout, 0.1 in the releases) with 1-byte masks,
eager and SDPA attention, pure precision and autocast, with and without checkpointing.
Attention dropout (0 in the releases) under eager attention is not derived.

Symbols: n = B·S tokens, h hidden, e embedding width, f MLP size, a heads, V vocabulary, N
positions, p bytes of the compute dtype.
"""

from __future__ import annotations

from verify.units import INDEX_BYTES, dtype_bytes

from verify.families.blocks import FP32, attention, mlp, norm
from verify.families.tape import (GRAD, Options, Training, dims, dropout_backward, dropout_forward, layernorm_backward,
                                  layernorm_forward, linear_backward, linear_forward, softmax_backward,
                                  softmax_forward, token_embedding_backward)

MODEL_TYPES = ("opt",)
POSITION_OFFSET = 2  # OPTLearnedPositionalEmbedding holds max_position_embeddings + 2 rows


def fields(config) -> dict:
    """What an OPT config says about its blocks, as Shape fields."""
    bias = bool(config.enable_bias)
    return {
        "gated_mlp": False, "positions": "learned",
        "norm": "layernorm" if config.layer_norm_elementwise_affine else "layernorm-no-affine",
        "attn_bias": bias, "o_bias": bias, "mlp_bias": bias, "embed_norm": False,
        "norms_per_layer": 2, "final_norm": bool(config.do_layer_norm_before and not config._remove_final_layer_norm),
        "fused_qkv": False, "parallel_attn": False,
        "position_rows": config.max_position_embeddings + POSITION_OFFSET, "rotary_dim": 0, "head_bias": False,
        "embed_dim": config.word_embed_proj_dim, "qk_norm": False, "sliding_window": None, "ffn": config.ffn_dim,
    }


def params(s) -> dict[str, int]:
    """Embedding V·e, positions (N+2)·h, project_in and project_out e·h each when e ≠ h; per layer
    attention 4h² (+ 4h biases), the MLP 2·h·f (+ f + h biases) and two LayerNorms 2h; a final
    LayerNorm 2h when there is one; an untied head V·e if not tied."""
    e = s.embed_dim
    return {
        "embedding Vh": s.V * e,
        "positions Nh": (s.max_positions + POSITION_OFFSET) * s.h,
        "embedding projections": 2 * e * s.h if e != s.h else 0,
        "attention": s.L * attention(s.h, s.h, s.h, s.attn_bias, s.o_bias),
        "mlp": s.L * mlp(s.h, s.ffn, 2, s.mlp_bias),
        "router": 0,
        "norms": (2 * s.L + (1 if s.final_norm else 0)) * norm(s.h, s.norm),
        "output head": 0 if s.tied else s.V * e,
    }


def buffers(s, p: int) -> dict[str, int]:
    """OPT keeps no buffers."""
    return {}


# --- training: what the forward keeps for backward, and the backward on a tape ----------------


def options(config) -> Options:
    """OPT's dropout: none on the embeddings, attention_dropout on the attention probabilities,
    dropout after attention and after the MLP; its activation (ReLU in the releases)."""
    return Options(dropout=(0.0, float(config.attention_dropout or 0.0), float(config.dropout or 0.0)),
                   activation=config.activation_function)


def gaps(s, spec, opts: Options) -> str | None:
    """Attention dropout under eager attention is not derived (OPT's releases set it to 0)."""
    if spec.mode == "train" and spec.attn == "eager" and opts.dropout[1] > 0:
        return "OPT with attention_dropout > 0 under eager attention is not derived"
    if spec.mode == "train" and opts.activation not in ("relu", ""):
        return f"OPT's training terms are derived for ReLU, not {opts.activation}"
    return None


def layer_forward(t, i: int, s, spec, opts: Options) -> None:
    """Layer i's forward from its input to its last kept tensor. Pre-LN (OPT-1.3B and most): the
    LayerNorms' inputs (the stream), mean and 1/std, their outputs kept by the projections (pure
    precision); post-LN (OPT-350M): the LayerNorms come after each residual add and the layer's
    input itself is kept by q, k and v (pure precision). Attention: q scaled (p·nh), k, v
    (SDPA: as they are, its output and an fp32 logsumexp; eager: contiguous q, kᵀ, v, the fp32
    softmax 4·B·a·S² and its cast, the re-merged output), ReLU's output (p·nf), the residual
    dropouts' 1-byte masks; under autocast each projection's weight copy and input cast."""
    p, B, S, n, mixed, stream = dims(s, spec)
    resid = opts.dropout[2]
    lt = t.scope(f"layer {i}: ")
    h, f, a = s.h, s.ffn, s.heads
    pre, b = s.final_norm, s.attn_bias
    hb, fb = (h if b else 0), (f if b else 0)
    if pre:
        layernorm_forward(lt, "ln_1", "layer input", n, h, stream)
    elif not mixed:  # under autocast the projections cast the fp32 input: it is not kept
        lt.rename("layer input", "input")  # kept by q, k and v
    linear_forward(lt, "q", "q proj", h * h, n * h, n * h, p, mixed, cast_input=mixed, bias=hb)
    lt.alloc("q", p * n * h)  # q times the scaling
    lt.free("q proj")
    linear_forward(lt, "k", "k", h * h, n * h, n * h, p, mixed, cast_input=mixed, bias=hb)
    linear_forward(lt, "v", "v", h * h, n * h, n * h, p, mixed, cast_input=mixed, bias=hb)
    if spec.attn == "sdpa":
        lt.alloc("attn out", p * n * h)
        lt.alloc("logsumexp", FP32 * B * a * S)
    else:
        eager_core_forward(lt, B, S, a, n, h, p, mixed, stream)
    linear_forward(lt, "out_proj", "attn proj", h * h, n * h, n * h, p, mixed, bias=hb)
    if spec.attn == "eager" and B > 1:  # q, k and v were copied for the batched matmuls
        lt.free("q", "k", "v")
    if pre and mixed:
        lt.free("ln_1: out")
    if resid > 0:
        dropout_forward(lt, "attn dropout", "attn proj", n * h, p)
        lt.free("attn proj")
    else:
        lt.rename("attn proj", "attn dropout")
    lt.alloc("x2", stream * n * h)
    lt.free("attn dropout")
    if pre:
        layernorm_forward(lt, "ln_2", "x2", n, h, stream)
    else:
        layernorm_forward(lt, "ln_1", "x2", n, h, stream)  # its output is the MLP's input and residual
    linear_forward(lt, "fc1", "fc1 out", h * f, n * f, n * h, p, mixed, cast_input=mixed, bias=fb)
    if pre and mixed:  # ln_2's fp32 output goes once fc1 has cast it
        lt.free("ln_2: out")
    lt.alloc("relu", p * n * f)
    lt.free("fc1 out")
    last = "fc2 out" if resid > 0 or not pre else None  # without dropout pre-LN stops once fc2 keeps its input
    linear_forward(lt, "fc2", last, f * h, n * h, n * f, p, mixed, bias=hb)
    if resid > 0:
        dropout_forward(lt, "mlp dropout", "fc2 out", n * h, p)
        lt.free("fc2 out")
    elif last:
        lt.rename("fc2 out", "mlp dropout")
    if not pre:  # post-LN: the residual add and the LayerNorm making the layer's output
        lt.alloc("x3", stream * n * h)
        lt.free("mlp dropout")
        layernorm_forward(lt, "ln_2", "x3", n, h, stream)
        lt.free("ln_2: out", *(("ln_1: out",) if mixed else ()))  # the output is the next layer's input
    else:
        lt.free(*(("mlp dropout",) if resid > 0 else ()))
    if mixed:
        lt.free(*(f"{k} bias copy" for k in ("q", "k", "v", "out_proj", "fc1", "fc2") if b))


def eager_core_forward(lt, B: int, S: int, a: int, n: int, h: int, p: int, mixed: bool, stream: int) -> None:
    """transformers' eager attention on "q", "k", "v" (n·h each): contiguous copies of q and kᵀ
    (views when B = 1), their product and its scaling (p·B·a·S²), the mask added (in the
    stream's dtype), the softmax in fp32 (an fp32 copy of its input first in half precision,
    its output kept, 4·B·a·S²) cast back (p·B·a·S², kept), a contiguous v, probs·v and the
    re-merged output (p·nh, kept)."""
    sq = B * a * S * S
    if B > 1:
        lt.alloc("q copy", p * n * h)
        lt.alloc("kᵀ copy", p * n * h)
    lt.alloc("scores", p * sq)
    softmax_forward(lt, p, sq, mixed, stream)
    if B > 1:
        lt.alloc("v copy", p * n * h)
    lt.alloc("probs·v", p * n * h)
    lt.alloc("attn out", p * n * h)
    lt.free("probs·v")


def eager_core_backward(lt, B: int, S: int, a: int, n: int, h: int, p: int, mixed: bool) -> None:
    """The backward of `eager_core_forward` from "d attn out" to "dq", "dk", "dv" (n·h each, as
    the batched matmuls give them: each is laid out again for its projection, `laid_out`)."""
    sq = B * a * S * S
    g = "d attn out"
    if B > 1:
        lt.alloc("d heads", p * n * h)
        lt.free("d attn out")
        g = "d heads"
    lt.alloc("dv", p * n * h)
    lt.alloc("d probs", p * sq)
    lt.free(g, "v copy" if B > 1 else "v")
    softmax_backward(lt, p, sq, "d masked")
    lt.alloc("d scores", p * sq)
    lt.free("d softmax")
    lt.alloc("dkᵀ", p * n * h)
    lt.alloc("dq", p * n * h)
    lt.free("d scores", *(("kᵀ copy", "q copy") if B > 1 else ("k", "q")))
    lt.rename("dkᵀ", "dk")


def outside_saved(s, spec, opts: Options) -> dict[str, int]:
    """Outside the layers: the final LayerNorm's input, mean and 1/std (pre-LN), the input of
    project_out (h→e, when e ≠ h) and of the head (under autocast their casts and weight
    copies), the embedding output kept by project_in (e ≠ h), the input ids and the position
    ids (8n: positions are per sequence); with checkpointing the unshifted position ids the
    layers are given (8n) and, for eager attention, the B×S×S float mask."""
    p, B, S, n, mixed, stream = dims(s, spec)
    h, e = s.h, s.embed_dim
    out = {}
    x = "last layer output"  # the tensor the final norm or projection reads
    if s.final_norm:
        out.update({"ln_f: input": stream * n * h, "ln_f: mean": stream * n, "ln_f: rstd": stream * n})
        if not mixed:
            out["ln_f: out"] = p * n * h
    elif not mixed:
        out[x] = p * n * h
    if e != h:
        out.update({"project_out input cast": p * n * h, "project_out weight copy": p * e * h} if mixed else {})
        out["project_out out"] = p * n * e  # the head's input (already in the compute dtype under autocast)
    elif mixed:
        out["head input cast"] = p * n * e
    if mixed:
        out["head weight copy"] = p * s.V * e
    if e != h:
        out.update({"project_in input cast": p * n * e, "project_in weight copy": p * h * e} if mixed else {"embedding out": p * n * e})
    out.update({"input ids": INDEX_BYTES * n, "position ids": INDEX_BYTES * n})
    if spec.checkpointing:  # what every layer's recompute reads: the unshifted position ids and, for eager, the mask
        out["layers' position ids"] = INDEX_BYTES * n
        if spec.attn == "eager":
            out["attention mask"] = B * S * S * stream
    return out


def forward_end(s, spec) -> dict[str, int]:
    """Under autocast the fp32 tensor the head (or project_out) casts lives until the forward
    returns, autocast's cached bias copies until it exits; with checkpointing its weight copies."""
    if spec.precision != "mixed":
        return {}
    p, n, h, f = dtype_bytes(spec.dtype), spec.batch * spec.seq, s.h, s.ffn
    b = 5 * h + f if s.attn_bias else 0
    out = {"last hidden state fp32": FP32 * n * h, "L × bias copies": s.L * p * b}
    if spec.checkpointing:
        out["L × weight copies"] = s.L * p * (4 * h * h + 2 * h * f)
    return out


def head_backward(t, s, spec) -> None:
    """From the logits' gradient to the last layer's output's ("dy"): the head (V×e, tied: the
    embedding's first gradient), project_out (e ≠ h) and the final LayerNorm (pre-LN)."""
    p, B, S, n, mixed, stream = dims(s, spec)
    h, e = s.h, s.embed_dim
    below = ("ln_f: out" if not mixed else None) if s.final_norm else ("last layer output" if not mixed else None)
    if e != h:
        head_saved = ("head weight copy",) * mixed + ("project_out out",)
    else:
        head_saved = ("head weight copy", "head input cast") if mixed else (below,)
    linear_backward(t, "embedding" if s.tied else "head", s.V * e, "d head in", n * e, p, mixed, ("grad logits",),
                    cast_input=mixed and e == h, saved=head_saved)
    g = "d head in"
    if e != h:
        linear_backward(t, "project_out", e * h, "d project_out in", n * h, p, mixed, (g,), cast_input=mixed,
                        saved=("project_out weight copy", "project_out input cast") if mixed else (below,))
        g = "d project_out in"
    if s.final_norm:
        g = layernorm_backward(t, "ln_f", g, n, h, stream, stream, None, s.norm == "layernorm")
    t.rename(g, "dy")


def layer_backward(t, i: int, s, spec, opts: Options) -> None:
    """Layer i's backward from its output's gradient ("dy") to its input's ("dy"); with
    checkpointing the recompute first."""
    p, B, S, n, mixed, stream = dims(s, spec)
    resid = opts.dropout[2]
    lt = t.scope(f"layer {i}: ")
    h, f = s.h, s.ffn
    pre, affine, ck = s.final_norm, s.norm == "layernorm", spec.checkpointing
    hb, fb = (h if s.attn_bias else 0), (f if s.attn_bias else 0)

    def copies(k: str) -> tuple[str, ...]:
        return (f"{k} weight copy", f"{k} input cast") if mixed else ()

    def branch(name: str, g: str) -> tuple[str, tuple[str, ...]]:
        """The gradient reaching a residual branch's dropout, back through it: (gradient, frees)."""
        frees = ()
        if mixed:  # the add casts the fp32 stream's gradient to the branch's dtype
            lt.alloc(f"d {name} out", p * n * h)
            g, frees = f"d {name} out", (f"d {name} out",)
        if resid > 0:
            g = dropout_backward(lt, name, g, n * h, p, frees)
            frees = (g,)
        return g, frees

    if pre:
        if mixed:
            lt.alloc("d mlp dropout out", p * n * h)
        if ck:
            layer_forward(t, i, s, spec, opts)
        g, frees = "/dy", ()
        if mixed:
            g, frees = "d mlp dropout out", ("d mlp dropout out",)
        if resid > 0:
            g = dropout_backward(lt, "mlp dropout", g, n * h, p, frees)
            frees = (g,)
        r = "/dy"
    else:
        if ck:
            layer_forward(t, i, s, spec, opts)
        r = layernorm_backward(lt, "ln_2", "/dy", n, h, stream, stream, None, affine)  # the gradient of the residual sum
        g, frees = branch("mlp dropout", r)
    mlp_in = "ln_2: out" if pre else "ln_1: out"
    linear_backward(lt, "fc2", f * h, "d relu", n * f, p, mixed, frees, bias=hb,
                    saved=("fc2 weight copy",) if mixed else (), recomputed=ck)
    lt.alloc("d fc1 out", p * n * f)
    lt.free("d relu", "relu")
    linear_backward(lt, "fc1", h * f, "dx fc1", n * h, p, mixed, ("d fc1 out",), cast_input=mixed, bias=fb,
                    into=None if pre else r, saved=copies("fc1") if mixed else (mlp_in,), recomputed=ck)
    if pre:
        layernorm_backward(lt, "ln_2", "dx fc1", n, h, stream, stream, "/dy", affine)
        g, frees = branch("attn dropout", "/dy")
        x_grad = None
    else:
        r = layernorm_backward(lt, "ln_1", r, n, h, stream, stream, None, affine)  # the gradient of x2
        g, frees = branch("attn dropout", r)
        x_grad = r
    linear_backward(lt, "out_proj", h * h, "d attn out", n * h, p, mixed, frees, bias=hb,
                    saved=(("out_proj weight copy",) if mixed else ()) + (("attn out",) if spec.attn == "eager" else ()),
                    recomputed=ck)
    if spec.attn == "sdpa":
        for x in ("dq", "dk", "dv"):
            lt.alloc(x, p * n * h)
        lt.free("d attn out", "v", "q", "k", "logsumexp", "attn out")
    else:
        eager_core_backward(lt, B, S, s.heads, n, h, p, mixed)
    # the layer's input: pre-LN kept by ln_1, post-LN by q, k, v in pure precision (no recomputed
    # tensor: a checkpoint's input), under autocast only by a checkpoint; the first layer's
    # checkpoint also holds what every recompute reads, freed with it
    frame = (("/layers' position ids",) + (("/attention mask",) if spec.attn == "eager" else ())) if ck and i == 0 else ()
    inp = ("ln_1: out",) if pre else (() if mixed else ("input",))
    if not pre and mixed and ck:
        inp = ("layer input",)
    for x in ("v", "k", "q"):
        d = "d" + x
        if spec.attn == "eager" and (B > 1 or x != "k"):  # the batched matmul's gradient laid out for the projection
            lt.alloc(d + " laid out", p * n * h)
            lt.free(d)
            lt.rename(d + " laid out", d)
        if x == "q":  # the scaling's backward
            lt.alloc("dq scaled", p * n * h)
            lt.free("dq")
            d = "dq scaled"
        if pre and x == "v":
            into = None
        else:
            into = x_grad if not pre else "dx v"
        last = inp if x == "q" and not (pre and mixed) else ()
        linear_backward(lt, x, h * h, f"dx {x}" if into is not None or not pre else "dx v", n * h, p, mixed,
                        (d,) + ((last + frame) if not pre and x == "q" else ()), cast_input=mixed, bias=hb, into=into,
                        saved=copies(x) + (last if pre else ()), recomputed=ck)
    if pre:
        layernorm_backward(lt, "ln_1", "dx v", n, h, stream, stream, "/dy", affine, frame=frame)
    else:
        t.rename(lt.name(x_grad), "dy")


def embedding_backward(t, s, spec) -> None:
    """Below the first layer: project_in (e ≠ h), the positions' gradient ((N+2)·h·p_w, from the
    per-sequence position ids) and the token embedding's (V·e·p_w; tied: added to the head's)."""
    p, B, S, n, mixed, stream = dims(s, spec)
    h, e = s.h, s.embed_dim
    g = "dy"
    if e != h:
        frees = ()
        if mixed:  # the add casts the fp32 gradient for project_in's compute-dtype output
            t.alloc("d project_in out", p * n * h)
            frees = ("d project_in out",)
        linear_backward(t, "project_in", h * e, "d embedding out", n * e, p, mixed, frees, cast_input=mixed,
                        saved=("project_in weight copy", "project_in input cast") if mixed else ("embedding out",))
        g = "d embedding out"
    t.alloc(GRAD + "positions", stream * (s.max_positions + POSITION_OFFSET) * h)
    t.free(*(("dy",) if e != h else ()), "position ids")
    token_embedding_backward(t, g, s.tied, stream * s.V * e)


TRAINING = Training(layer_forward, outside_saved, head_backward, layer_backward, embedding_backward, forward_end,
                    gaps, options)
