"""GPT-NeoX (gpt_neox, Pythia): per block two LayerNorms, a fused query_key_value (h × 3h) and
dense (h × h), biased unless attention_bias is false, the MLP dense_h_to_4h (h × f) and
dense_4h_to_h (f × h) with biases, attention and MLP in parallel with use_parallel_residual;
RoPE on rotary_pct of each head; a final LayerNorm; an untied embed_out head unless the config
ties it.

The training terms were read off the fake backend's trace tensor by tensor (tiny-neox with
distinct widths was the derivation): the parallel residual (both norms read the layer's input)
and the sequential one, RoPE on rotary_pct of each head (rotated part, then concatenated back),
GELU (exact, one kernel) or gelu_fast (written out), eager and SDPA attention, pure precision and
autocast, with and without checkpointing. Non-zero dropout (0 in Pythia and NeoX-20B) is not
derived.

Symbols: n = B·S tokens, h hidden, f MLP size, a heads, d head dim, r rotated dims, V
vocabulary, p bytes of the compute dtype.
"""

from __future__ import annotations

from verify.units import INDEX_BYTES, dtype_bytes

from verify.families.blocks import FP32, attention, mlp, norm, rope_inv_freq
from verify.families.tape import (Options, Training, add_into, dims, embedding_backward, gelu_fast_backward,
                                  gelu_fast_forward, layernorm_backward, layernorm_forward, layernorm_head_backward,
                                  layernorm_head_saved, layernorm_stats, linear_backward, linear_forward,
                                  partial_rope_backward, partial_rope_forward, softmax_backward, softmax_forward)

MODEL_TYPES = ("gpt_neox",)


def fields(config) -> dict:
    """What a GPT-NeoX config says about its blocks, as Shape fields."""
    head_dim = config.hidden_size // config.num_attention_heads
    share = (getattr(config, "rope_parameters", None) or {}).get("partial_rotary_factor", 1.0)
    bias = bool(config.attention_bias)
    return {
        "gated_mlp": False, "positions": "rope", "norm": "layernorm",
        "attn_bias": bias, "o_bias": bias, "mlp_bias": True, "embed_norm": False,
        "norms_per_layer": 2, "final_norm": True, "fused_qkv": True, "parallel_attn": bool(config.use_parallel_residual),
        "position_rows": 0, "rotary_dim": int(head_dim * share), "head_bias": False, "embed_dim": config.hidden_size,
        "qk_norm": False, "sliding_window": None, "ffn": config.intermediate_size,
    }


def params(s) -> dict[str, int]:
    """Embedding V·h; per layer attention 4h² (+ 4h biases), the MLP 2·h·f + f + h and two
    LayerNorms 2h; a final LayerNorm 2h; an untied head V·h."""
    return {
        "embedding Vh": s.V * s.h,
        "positions Nh": 0,
        "attention": s.L * attention(s.h, s.h, s.h, s.attn_bias, s.o_bias),
        "mlp": s.L * mlp(s.h, s.ffn, 2, True),
        "router": 0,
        "norms": (2 * s.L + 1) * norm(s.h, "layernorm"),
        "output head": 0 if s.tied else s.V * s.h,
    }


def buffers(s, p: int) -> dict[str, int]:
    """RoPE's inverse frequencies over the rotated share of the head."""
    return rope_inv_freq(s.rotary_dim)


# --- training: what the forward keeps for backward, and the backward on a tape ----------------


def options(config) -> Options:
    """GPT-NeoX's dropout (hidden_dropout on each branch and the embedding, attention_dropout) and
    its MLP activation."""
    hidden = float(getattr(config, "hidden_dropout", 0.0) or 0.0)
    return Options(dropout=(hidden, float(getattr(config, "attention_dropout", 0.0) or 0.0), hidden),
                   activation=config.hidden_act)


def gaps(s, spec, opts: Options) -> str | None:
    """Dropout and activations other than GELU and gelu_fast are not derived."""
    if spec.mode != "train":
        return None
    if any(opts.dropout):
        return "GPT-NeoX's training terms are derived without dropout (hidden_dropout, attention_dropout 0)"
    if opts.activation not in ("gelu", "gelu_fast"):
        return f"GPT-NeoX's training terms are derived for gelu and gelu_fast, not {opts.activation}"
    return None


def act_forward(lt, opts: Options, e: int, p: int) -> None:
    """The MLP's activation on "fc": GELU (one kernel keeping its input) or gelu_fast."""
    if opts.activation == "gelu_fast":
        gelu_fast_forward(lt, "fc", "act", e, p)
    else:
        lt.alloc("act", p * e)


def act_backward(lt, opts: Options, e: int, p: int) -> None:
    if opts.activation == "gelu_fast":
        gelu_fast_backward(lt, "fc", "act", "d act", e, p)
    else:
        lt.alloc("d fc", p * e)
        lt.free("d act", "fc")


def layer_forward(t, i: int, s, spec, opts: Options) -> None:
    """Layer i's forward from its input to its last kept tensor. Kept: the norms' input (the
    layer's input, read by both norms with the parallel residual; the sum after attention with
    the sequential one), mean, 1/std and (pure precision) output; the fused qkv (3p·nh: v is a
    view of it), q and k with RoPE on their first r dims (p·nh each, contiguous); SDPA's output
    and fp32 logsumexp, or eager attention's fp32 softmax (4·B·a·S²), its cast and a copy of v;
    the re-merged heads (p·nh); the MLP's h→f output and the activation's (GELU: its output;
    gelu_fast: six intermediates and its output, p·nf each); under autocast each projection's
    weight copy and input cast."""
    p, B, S, n, mixed, stream = dims(s, spec)
    lt = t.scope(f"layer {i}: ")
    h, f, a, r = s.h, s.ffn, s.heads, s.rotary_dim
    sq = B * a * S * S
    hb = h if s.attn_bias else 0
    layernorm_forward(lt, "ln_1", "layer input", n, h, stream)
    linear_forward(lt, "qkv", "qkv", h * 3 * h, n * 3 * h, n * h, p, mixed, cast_input=mixed, bias=3 * hb)
    partial_rope_forward(lt, B * a * S * r, n * h, p, mixed, cat=True)
    if mixed:  # attention casts the fp32 concatenations
        lt.alloc("q", p * n * h)
        lt.alloc("k", p * n * h)
    if spec.attn == "sdpa":
        lt.alloc("sdpa out", p * n * h)
        lt.alloc("logsumexp", FP32 * B * a * S)
        lt.alloc("attn out", p * n * h)  # the heads re-merged, contiguous
    else:
        eager_core_forward(lt, B, n, h, sq, p, mixed, stream)
    linear_forward(lt, "dense", "attn dense", h * h, n * h, n * h, p, mixed, bias=hb)
    if spec.attn == "eager" and B > 1:  # v was copied: the fused output is not kept
        lt.free("qkv")
    if mixed:  # the attention's fp32 concatenations and ln_1's fp32 output, not kept
        lt.free("q cat", "k cat", "ln_1: out")
    if s.parallel_attn:
        layernorm_stats(lt, "ln_2", n, h, stream)
    else:
        lt.alloc("x2", stream * n * h)
        lt.free("attn dense")
        layernorm_forward(lt, "ln_2", "x2", n, h, stream)
    linear_forward(lt, "h_to_4h", "fc", h * f, n * f, n * h, p, mixed, cast_input=mixed, bias=f)
    act_forward(lt, opts, n * f, p)
    # 4h→h keeps the layer's last kept tensor: a checkpointed recompute stops before its output
    linear_forward(lt, "4h_to_h", None, f * h, n * h, n * f, p, mixed, bias=h)
    lt.free(*(("attn dense",) if s.parallel_attn else ()), *(("ln_2: out",) if mixed else ()),
            *((f"{k} bias copy" for k in ("qkv", "dense")) if mixed and hb else ()),
            *((f"{k} bias copy" for k in ("h_to_4h", "4h_to_h")) if mixed else ()))


def eager_core_forward(lt, B: int, n: int, h: int, sq: int, p: int, mixed: bool, stream: int) -> None:
    """Eager attention on q, k (contiguous) and v (a view of the fused qkv): q·kᵀ and its scaling
    (p·B·a·S²), the mask added (stream's dtype), the fp32 softmax (an fp32 copy of its input
    first in half precision; kept, 4·B·a·S²) and its cast (kept), v copied for the batched
    matmul (B > 1), probs·v and the heads re-merged (kept)."""
    lt.alloc("scores", p * sq)
    softmax_forward(lt, p, sq, mixed, stream, late_cast=True)
    if B > 1:
        lt.alloc("v", p * n * h)
    lt.alloc("probs·v", p * n * h)
    lt.alloc("attn out", p * n * h)
    lt.free("probs·v")


def outside_saved(s, spec, opts: Options) -> dict[str, int]:
    """Outside the layers: the final LayerNorm's input, mean, 1/std and (pure precision) output,
    under autocast the head's cast of it and its weight copy; RoPE's cos and sin (S·r each, in
    the compute dtype; fp32 under autocast); the input ids; with checkpointing the position ids
    and, for eager attention, the B×S×S mask every recompute reads."""
    p, B, S, n, mixed, stream = dims(s, spec)
    out = layernorm_head_saved(s, spec)
    out.update({"cos": stream * S * s.rotary_dim, "sin": stream * S * s.rotary_dim, "input ids": INDEX_BYTES * n})
    if spec.checkpointing:
        out["position ids"] = INDEX_BYTES * S
        if spec.attn == "eager":
            out["attention mask"] = B * S * S * stream
    return out


def forward_end(s, spec) -> dict[str, int]:
    """Under autocast ln_f's fp32 output lives until the forward returns, autocast's cached bias
    copies until it exits; with checkpointing its weight copies too."""
    if spec.precision != "mixed":
        return {}
    p, n, h, f = dtype_bytes(spec.dtype), spec.batch * spec.seq, s.h, s.ffn
    out = {"ln_f output fp32": FP32 * n * h, "L × bias copies": s.L * p * ((4 * h if s.attn_bias else 0) + f + h)}
    if spec.checkpointing:
        out["L × weight copies"] = s.L * p * (4 * h * h + 2 * h * f)
    return out


def layer_backward(t, i: int, s, spec, opts: Options) -> None:
    """Layer i's backward from its output's gradient ("dy") to its input's ("dy")."""
    p, B, S, n, mixed, stream = dims(s, spec)
    lt = t.scope(f"layer {i}: ")
    h, f, a, r = s.h, s.ffn, s.heads, s.rotary_dim
    sq = B * a * S * S
    hb, ck, par = (h if s.attn_bias else 0), spec.checkpointing, s.parallel_attn

    def copies(k: str) -> tuple[str, ...]:
        return (f"{k} weight copy", f"{k} input cast") if mixed else ()

    # under autocast the sum's fp32 gradient is cast for the compute-dtype branches: once for the
    # parallel residual (attention and MLP are summed first), for the MLP alone otherwise
    branch = ("d branches" if par else "d mlp out") if mixed else None
    if mixed:
        lt.alloc(branch, p * n * h)
    if ck:
        layer_forward(t, i, s, spec, opts)
    linear_backward(lt, "4h_to_h", f * h, "d act", n * f, p, mixed, (branch,) if mixed and not par else (), bias=h,
                    saved=(("4h_to_h weight copy",) if mixed else ()) + ("act",), recomputed=ck)
    act_backward(lt, opts, n * f, p)
    linear_backward(lt, "h_to_4h", h * f, "d ln_2 out", n * h, p, mixed, ("d fc",), cast_input=mixed, bias=f,
                    saved=copies("h_to_4h") if mixed else ("ln_2: out",), recomputed=ck)
    if par and not mixed:  # the layer's input gets dy and this, summed out of place: dy stays, attention's too
        g = layernorm_backward(lt, "ln_2", "d ln_2 out", n, h, stream, stream, None, frees_input=False)
        lt.alloc("dx", stream * n * h)
        lt.free(g)
    else:
        layernorm_backward(lt, "ln_2", "d ln_2 out", n, h, stream, stream, "/dy", frees_input=not par)
    if mixed and not par:
        lt.alloc("d attn dense", p * n * h)
    dense_frees = ("d branches",) if mixed and par else ("d attn dense",) if mixed else ("/dy",) if par else ()
    linear_backward(lt, "dense", h * h, "d attn out", n * h, p, mixed, dense_frees, bias=hb,
                    saved=(("dense weight copy",) if mixed else ()) + ("attn out",), recomputed=ck)
    if spec.attn == "sdpa":
        for x in ("dq", "dk", "dv"):
            lt.alloc(x, p * n * h)
        lt.free("d attn out", "q", "k", "qkv", "logsumexp", "sdpa out")
    else:  # eager
        eager_core_backward(lt, B, n, h, sq, p)
    partial_rope_backward(lt, B * a * S * r, n * h, p, mixed, last=i == 0 and not ck)
    lt.alloc("d qkv heads", 3 * p * n * h)  # the chunk's backward: one cat, then laid out as qkv's output
    lt.free("dq", "dk", "dv")
    lt.alloc("d qkv", 3 * p * n * h)
    lt.free("d qkv heads")
    linear_backward(lt, "qkv", h * 3 * h, "d ln_1 out", n * h, p, mixed, ("d qkv",), cast_input=mixed, bias=3 * hb,
                    saved=copies("qkv") if mixed else ("ln_1: out",), recomputed=ck)
    # with checkpointing what every recompute reads goes with the first layer's input
    frame = (("/cos", "/sin", "/position ids") + (("/attention mask",) if spec.attn == "eager" else ())) if ck and i == 0 else ()
    if par and not mixed:
        g = layernorm_backward(lt, "ln_1", "d ln_1 out", n, h, stream, stream, None, frame=frame)
        add_into(lt, "dx", g, stream * n * h)
        lt.rename("dx", "/dy")
    else:
        layernorm_backward(lt, "ln_1", "d ln_1 out", n, h, stream, stream, "/dy", frame=frame)


def eager_core_backward(lt, B: int, n: int, h: int, sq: int, p: int) -> None:
    """The backward of `eager_core_forward` from "d attn out" to "dq", "dk", "dv"."""
    g = "d attn out"
    if B > 1:
        lt.alloc("d heads", p * n * h)
        lt.free("d attn out")
        g = "d heads"
    lt.alloc("dv", p * n * h)
    lt.alloc("d probs", p * sq)
    lt.free(g, "v" if B > 1 else "qkv")
    softmax_backward(lt, p, sq, "d masked")
    lt.alloc("d scores", p * sq)
    lt.free("d softmax")
    lt.alloc("dkᵀ", p * n * h)
    lt.alloc("dq", p * n * h)
    lt.free("d scores", "k", "q")
    lt.rename("dkᵀ", "dk")


TRAINING = Training(layer_forward, outside_saved, layernorm_head_backward, layer_backward, embedding_backward, forward_end,
                    gaps, options)
