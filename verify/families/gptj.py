"""GPT-J (gptj): per block one LayerNorm feeding attention and the MLP in parallel, attention
q, k, v, out_proj (h × h each, no biases) with RoPE on the first rotary_dim dimensions of each
head, the MLP fc_in (h × f) and fc_out (f × h) with biases; a final LayerNorm; an untied lm_head
V × h with a bias of V.

The training terms were read off the fake backend's trace tensor by tensor (tiny-gptj with
distinct widths was the derivation): eager attention (transformers has no SDPA path for GPT-J)
computed in fp32, RoPE on the first rotary_dim dimensions of each head with each block's own
sin/cos gathered per call, gelu_new written out, pure precision and autocast, with and without
checkpointing. Non-zero dropout (0 in GPT-J's config) is not derived.

Symbols: n = B·S tokens, h hidden, f MLP size, a heads, d head dim, r rotary_dim, N positions, V
vocabulary, p bytes of the compute dtype.
"""

from __future__ import annotations

from verify.units import INDEX_BYTES, dtype_bytes

from verify.families.blocks import FP32, attention, mlp, norm
from verify.families.tape import (Options, Training, dims, embedding_backward, gelu_tanh_backward, gelu_tanh_forward,
                                  layernorm_backward, layernorm_forward, layernorm_head_backward, layernorm_head_saved,
                                  linear_backward, linear_forward)

MODEL_TYPES = ("gptj",)


def fields(config) -> dict:
    """What a GPT-J config says about its blocks, as Shape fields."""
    h = config.n_embd
    return {
        "gated_mlp": False, "positions": "rope", "norm": "layernorm",
        "attn_bias": False, "o_bias": False, "mlp_bias": True, "embed_norm": False,
        "norms_per_layer": 1, "final_norm": True, "fused_qkv": False, "parallel_attn": True,
        "position_rows": 0, "head_bias": True, "embed_dim": h,
        "rotary_dim": config.rotary_dim or h,  # the width of its sin/cos table (h without rotary_dim)
        "qk_norm": False, "sliding_window": None, "ffn": config.n_inner or 4 * h,
    }


def params(s) -> dict[str, int]:
    """Embedding V·h; per layer attention 4h², the MLP 2·h·f + f + h and one LayerNorm 2h; a final
    LayerNorm 2h; the head V·h (unless tied) plus its bias V."""
    return {
        "embedding Vh": s.V * s.h,
        "positions Nh": 0,
        "attention": s.L * attention(s.h, s.h, s.h, False, False),
        "mlp": s.L * mlp(s.h, s.ffn, 2, True),
        "router": 0,
        "norms": (s.L + 1) * norm(s.h, "layernorm"),
        "output head": (0 if s.tied else s.V * s.h) + s.V,
    }


def buffers(s, p: int) -> dict[str, int]:
    """Every attention block keeps its own sin/cos table: N positions × rotary_dim, fp32."""
    return {"L × sin, cos table N·rotary_dim·4": s.L * s.max_positions * s.rotary_dim * FP32}


# --- training: what the forward keeps for backward, and the backward on a tape ----------------


def options(config) -> Options:
    """GPT-J's dropout (embd_pdrop, attn_pdrop, resid_pdrop) and MLP activation."""
    return Options(dropout=tuple(float(getattr(config, k, 0.0) or 0.0) for k in ("embd_pdrop", "attn_pdrop", "resid_pdrop")),
                   activation=config.activation_function)


def gaps(s, spec, opts: Options) -> str | None:
    """What the terms are not derived for."""
    if spec.mode != "train":
        return None
    if spec.attn != "eager":
        return "GPT-J has only eager attention in transformers (no SDPA path)"
    if any(opts.dropout):
        return "GPT-J's training terms are derived without dropout (embd_pdrop, attn_pdrop, resid_pdrop 0)"
    if opts.activation != "gelu_new":
        return f"GPT-J's training terms are derived for gelu_new, not {opts.activation}"
    if s.rotary_dim >= s.head_dim:
        return "GPT-J's training terms are derived for RoPE on part of each head (rotary_dim < head dim)"
    return None


def layer_forward(t, i: int, s, spec, opts: Options) -> None:
    """Block i's forward from its input to its last kept tensor. Kept: ln_1's input (the block's
    input), mean, 1/std and (pure precision) output; for each of k and q, RoPE's sin and cos
    interleaved to r (p·S·r each); attention's operands (`_attention_forward`); the MLP's fc_in
    output and gelu_new's four intermediates and output (`gelu_tanh_forward`, p·nf each); under
    autocast each projection's weight copy and input cast."""
    p, B, S, n, mixed, stream = dims(s, spec)
    lt = t.scope(f"layer {i}: ")
    h, f = s.h, s.ffn
    layernorm_forward(lt, "ln_1", "layer input", n, h, stream)
    for x in ("q", "k", "v"):
        linear_forward(lt, x + "_proj", x, h * h, n * h, n * h, p, mixed, cast_input=mixed)
    _attention_forward(lt, s, spec)
    linear_forward(lt, "fc_in", "fc", h * f, n * f, n * h, p, mixed, cast_input=mixed, bias=f)
    gelu_tanh_forward(lt, "fc", "gelu", n * f, p)
    # fc_out keeps the block's last kept tensor: a checkpointed recompute stops before its output
    linear_forward(lt, "fc_out", None, f * h, n * h, n * f, p, mixed, bias=h)
    lt.free("attn proj", *(("ln_1: out", "fc_in bias copy", "fc_out bias copy") if mixed else ()))


def _attention_forward(lt, s, spec) -> None:
    """From q, k, v (p·nh each) to out_proj's output ("attn proj"). The block's sin/cos: the
    fp32 table repeated (4·N·r), position ids repeated (8·S·r), gathered (4·S·r) and cast to p;
    for k, then q: sin and cos interleaved (p·S·r each, kept), RoPE on the first r dims (x·cos,
    a negated half, the stack, ·sin, the sum: p·n·a·r), concatenated with the rest (p·nh).
    Attention in fp32: q and k cast to fp32 (4nh each; under autocast the matmul casts them back
    to p), contiguous copies of q and kᵀ (B > 1; kept), the scores and their scaling
    (4·B·a·S²; p under autocast), the mask added and the fp32 softmax (kept), cast to p (kept),
    v re-laid out (B > 1; kept), probs·v and the heads re-merged (p·nh, kept)."""
    p, B, S, n, mixed, stream = dims(s, spec)
    h, a, r, N = s.h, s.heads, s.rotary_dim, s.max_positions
    sq = B * a * S * S
    e = n * a * r
    lt.alloc("sincos table", FP32 * N * r)
    lt.alloc("gather ids", INDEX_BYTES * S * r)
    lt.alloc("sincos fp32", FP32 * S * r)
    if p != FP32:
        lt.alloc("sincos", p * S * r)
        lt.free("sincos fp32")
    for x in ("k", "q"):
        lt.alloc(x + " sin", p * S * r)
        lt.alloc(x + " cos", p * S * r)
        lt.alloc(x + "·cos", p * e)
        lt.alloc(x + " neg", p * e // 2)
        lt.alloc(x + " stack", p * e)
        lt.free(x + " neg")
        lt.alloc(x + " rot·sin", p * e)
        lt.free(x + " stack")
        lt.alloc(x + " roped", p * e)
        lt.free(x + " rot·sin", x + "·cos")
    for x in ("k", "q"):
        lt.alloc(x + " cat", p * n * h)
    clone = B > 1
    up = p != FP32
    if up:
        lt.alloc("q fp32", FP32 * n * h)
        lt.alloc("k fp32", FP32 * n * h)
    c = p if mixed else FP32  # the scores' dtype: autocast runs the matmul in p
    if mixed:
        lt.alloc("kᵀ cast", p * n * h)
        lt.alloc("q cast", p * n * h)
    if clone:
        lt.alloc("q clone", c * n * h)
        lt.alloc("kᵀ clone", c * n * h)
    lt.alloc("scores", c * sq)
    if mixed and clone:
        lt.free("q cast", "kᵀ cast")
    lt.alloc("scaled", c * sq)
    lt.free("scores")
    lt.alloc("masked", FP32 * sq)
    lt.free("scaled")
    lt.alloc("softmax", FP32 * sq)
    lt.free("masked")
    if up:
        lt.alloc("probs", p * sq)
    if clone:
        lt.alloc("v clone", p * n * h)
    lt.alloc("probs·v", p * n * h)
    if up and (clone or mixed):
        lt.free("q fp32", "k fp32")
    lt.alloc("attn out", p * n * h)
    lt.free("probs·v")
    linear_forward(lt, "out_proj", "attn proj", h * h, n * h, n * h, p, mixed)
    # what attention's matmuls took as they are (B = 1) stays; the rest goes as the attention returns
    kept = set() if clone else {"v"} | ({"q cast", "kᵀ cast"} if mixed else {"q fp32", "k fp32"} if up else {"q cat", "k cat"})
    lt.free(*(x for x in ("q cat", "k cat", "v") if x not in kept), "sincos table", "gather ids",
            "sincos" if up else "sincos fp32", "k roped", "k", "q roped", "q")


def outside_saved(s, spec, opts: Options) -> dict[str, int]:
    """Outside the blocks: ln_f's input, mean, 1/std and (pure precision) output, under autocast
    the head's cast of it and its weight copy; the input ids; with checkpointing the position
    ids and the B×S×S float mask every recompute reads."""
    p, B, S, n, mixed, stream = dims(s, spec)
    out = layernorm_head_saved(s, spec)
    out["input ids"] = INDEX_BYTES * n
    if spec.checkpointing:
        out["position ids"] = INDEX_BYTES * S
        out["attention mask"] = B * S * S * stream
    return out


def forward_end(s, spec) -> dict[str, int]:
    """Under autocast ln_f's fp32 output lives until the forward returns, autocast's cached bias
    copies (the MLP's, the head's) until autocast exits; with checkpointing its weight copies too."""
    if spec.precision != "mixed":
        return {}
    p, n, h, f = dtype_bytes(spec.dtype), spec.batch * spec.seq, s.h, s.ffn
    out = {"ln_f output fp32": FP32 * n * h, "L × bias copies": s.L * p * (f + h), "head bias copy": p * s.V}
    if spec.checkpointing:
        out["L × weight copies"] = s.L * p * (4 * h * h + 2 * h * f)
    return out


def head_backward(t, s, spec) -> None:
    """From the logits' gradient to the last block's output's ("dy"): the biased head and ln_f."""
    layernorm_head_backward(t, s, spec, bias=s.V)


def layer_backward(t, i: int, s, spec, opts: Options) -> None:
    """Block i's backward from its output's gradient ("dy") to its input's: the MLP, attention,
    the three projections (their input gradients summed into ln_1's), ln_1 (added into dy)."""
    p, B, S, n, mixed, stream = dims(s, spec)
    lt = t.scope(f"layer {i}: ")
    h, f, a, r = s.h, s.ffn, s.heads, s.rotary_dim
    sq = B * a * S * S
    e = n * a * r
    ck = spec.checkpointing
    clone, up = B > 1, p != FP32

    def copies(k: str) -> tuple[str, ...]:
        return (f"{k} weight copy", f"{k} input cast") if mixed else ()

    if mixed:  # the fp32 gradient cast once for the two compute-dtype branches
        lt.alloc("d branches", p * n * h)
    if ck:
        layer_forward(t, i, s, spec, opts)
    linear_backward(lt, "fc_out", f * h, "d gelu", n * f, p, mixed, bias=h,
                    saved=(("fc_out weight copy",) if mixed else ()) + ("gelu",), recomputed=ck)
    gelu_tanh_backward(lt, "fc", "gelu", "d gelu", n * f, p)
    linear_backward(lt, "fc_in", h * f, "d ln_1 out", n * h, p, mixed, ("d fc",), cast_input=mixed, bias=f,
                    saved=copies("fc_in"), recomputed=ck)
    linear_backward(lt, "out_proj", h * h, "d attn out", n * h, p, mixed, ("d branches",) if mixed else (),
                    saved=(("out_proj weight copy",) if mixed else ()) + ("attn out",), recomputed=ck)
    # attention, back to the gradients of q, k (through RoPE and the cat) and v
    if clone:
        lt.alloc("d heads", p * n * h)
        lt.free("d attn out")
    else:
        lt.rename("d attn out", "d heads")
    lt.alloc("dv", p * n * h)
    lt.alloc("d probs", p * sq)
    lt.free("d heads", "v clone" if clone else "v", *(("probs",) if up else ()))
    if up:
        lt.alloc("d probs fp32", FP32 * sq)
        lt.free("d probs")
        lt.rename("d probs fp32", "d probs")
    lt.alloc("d softmax", FP32 * sq)
    lt.free("d probs", "softmax")
    c = p if mixed else FP32
    if mixed:  # the mask's promotion back to p
        lt.alloc("d scaled in", p * sq)
        lt.free("d softmax")
        lt.rename("d scaled in", "d softmax")
    lt.alloc("d scores", c * sq)
    lt.free("d softmax")
    lt.alloc("dkᵀ", c * n * h)
    lt.alloc("dq", c * n * h)
    kept = (("kᵀ clone", "q clone") if clone else ("kᵀ cast", "q cast") if mixed else ("k fp32", "q fp32") if up
            else ("k cat", "q cat"))
    lt.free("d scores", *kept)
    lt.rename("dkᵀ", "dk")
    if mixed:  # back through the matmul's autocast casts (q's, then k's) to fp32
        for x in ("dq", "dk"):
            lt.alloc(x + " fp32", FP32 * n * h)
            lt.free(x)
            lt.rename(x + " fp32", x)
    if up:  # back through the casts to fp32 (k's, then q's) to p
        for x in ("dk", "dq"):
            lt.alloc(x + " cast", p * n * h)
            lt.free(x)
            lt.rename(x + " cast", x)
    for x in ("q", "k"):  # RoPE on the rotated part (a view of the gradient)
        lt.alloc(f"d{x}·sin", p * e)
        lt.free(f"{x} sin")
        lt.alloc(f"d{x} neg", p * e // 2)
        lt.alloc(f"d{x} slice 1", p * e)
        lt.free(f"d{x} neg")
        lt.alloc(f"d{x} slice 2", p * e)
        lt.free(f"d{x}·sin")
        lt.alloc(f"d{x} rotated", p * e)
        lt.free(f"d{x} slice 1", f"d{x} slice 2")
        lt.alloc(f"d{x}·cos", p * e)
        lt.free(f"{x} cos")
        lt.alloc(f"d{x} rot", p * e)
        lt.free(f"d{x} rotated", f"d{x}·cos")
    for x in ("q", "k"):  # the cat's backward: each part scattered to full size, summed
        lt.alloc(f"d{x} pass full", p * n * h)
        lt.free(f"d{x}")
        lt.alloc(f"d{x} rot full", p * n * h)
        lt.free(f"d{x} rot")
        lt.alloc(f"d{x} sum", p * n * h)
        lt.free(f"d{x} pass full", f"d{x} rot full")
    lt.alloc("dv laid out", p * n * h)
    lt.free("dv")
    for x, g in (("v", "dv laid out"), ("k", "dk sum"), ("q", "dq sum")):
        linear_backward(lt, x + "_proj", h * h, f"d ln_1 out ({x})", n * h, p, mixed, (g,), cast_input=mixed,
                        saved=copies(x + "_proj") + (("ln_1: out",) if x == "q" and not mixed else ()),
                        into="d ln_1 out", recomputed=ck)
    frame = ("/position ids", "/attention mask") if ck and i == 0 else ()
    layernorm_backward(lt, "ln_1", "d ln_1 out", n, h, stream, stream, "/dy", frame=frame)




TRAINING = Training(layer_forward, outside_saved, head_backward, layer_backward, embedding_backward, forward_end,
                    gaps, options)
