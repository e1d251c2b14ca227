"""BLOOM (bloom): a LayerNorm right after the embedding, then per block a LayerNorm, a fused
query_key_value (h × 3h) and dense (h × h), a LayerNorm and the MLP h → 4h → h (GELU), every
projection biased; ALiBi (no position parameters, no buffers); a final LayerNorm; a head tied to
the embedding unless the config says otherwise.

The training terms were read off the fake backend's trace tensor by tensor (tiny-bloom with
distinct widths was the derivation), for eager attention (transformers has no SDPA path for
BLOOM), pure precision and autocast, with and without checkpointing; the dropouts BLOOM's
releases set to zero (hidden_dropout, attention_dropout) are not derived when non-zero.

Symbols: n = B·S tokens, h hidden, f = 4h MLP size, a heads, d = h/a, V vocabulary, p bytes of
the compute dtype.
"""

from __future__ import annotations

from verify.units import INDEX_BYTES, dtype_bytes

from verify.families.blocks import FP32, attention, mlp, norm
from verify.families.tape import (Options, Training, add_into, dims, layernorm_backward, layernorm_forward,
                                  layernorm_head_backward, layernorm_head_saved, linear_backward, linear_forward,
                                  token_embedding_backward)

MODEL_TYPES = ("bloom",)


def fields(config) -> dict:
    """What a BLOOM config says about its blocks, as Shape fields; the MLP is 4h whatever the
    config holds, and ALiBi sets no maximum length."""
    return {
        "gated_mlp": False, "positions": "alibi", "norm": "layernorm",
        "attn_bias": True, "o_bias": True, "mlp_bias": True, "embed_norm": True,
        "norms_per_layer": 2, "final_norm": True, "fused_qkv": True, "parallel_attn": False,
        "position_rows": 0, "rotary_dim": 0, "head_bias": False, "embed_dim": config.hidden_size,
        "qk_norm": False, "sliding_window": None, "ffn": 4 * config.hidden_size, "max_positions": 0,
    }


def params(s) -> dict[str, int]:
    """Embedding V·h; per layer attention 4h² + 4h, the MLP 8h² + 5h and two LayerNorms 2h; the
    embedding LayerNorm and a final one 2h each; an untied head V·h if not tied."""
    return {
        "embedding Vh": s.V * s.h,
        "positions Nh": 0,
        "attention": s.L * attention(s.h, s.h, s.h, True, True),
        "mlp": s.L * mlp(s.h, 4 * s.h, 2, True),
        "router": 0,
        "norms": (2 * s.L + 2) * norm(s.h, "layernorm"),
        "output head": 0 if s.tied else s.V * s.h,
    }


def buffers(s, p: int) -> dict[str, int]:
    """BLOOM keeps no buffers (ALiBi slopes and the mask are built per call)."""
    return {}


# --- training: what the forward keeps for backward, and the backward on a tape ----------------


def options(config) -> Options:
    """BLOOM's dropout: attention_dropout on the probabilities, hidden_dropout on the residual
    branches, none on the embedding."""
    return Options(dropout=(0.0, float(config.attention_dropout or 0.0), float(config.hidden_dropout or 0.0)))


def gaps(s, spec, opts: Options) -> str | None:
    """Non-zero dropout is not derived for BLOOM (its releases train with none); transformers has
    no SDPA path for it."""
    if spec.mode == "train" and spec.attn != "eager":
        return "BLOOM has only eager attention in transformers (no SDPA path)"
    if spec.mode == "train" and any(opts.dropout):
        return "BLOOM's training terms are derived without dropout (attention_dropout and hidden_dropout 0)"
    return None


def gelu_forward(t, x: str, out: str, e: int, p: int) -> None:
    """BLOOM's GeLUFunction: x·0.5·(1 + tanh(0.79788456·x·(1 + 0.044715·x·x))) computed without
    autograd on `x` (e elements, kept as the function's only saved tensor): up to four p·e
    temporaries beside x, then the output `out` (p·e)."""
    pe = p * e
    for k in ("x·0.5", "0.79788456·x", "0.044715·x"):
        t.alloc(f"{out}: {k}", pe)
    t.alloc(out + ": 0.044715·x·x", pe)
    t.free(out + ": 0.044715·x")
    t.alloc(out + ": 1 + …", pe)
    t.free(out + ": 0.044715·x·x")
    t.alloc(out + ": tanh in", pe)
    t.free(out + ": 0.79788456·x", out + ": 1 + …")
    t.alloc(out + ": tanh", pe)
    t.free(out + ": tanh in")
    t.alloc(out + ": 1 + tanh", pe)
    t.free(out + ": tanh")
    t.alloc(out, pe)
    t.free(out + ": x·0.5", out + ": 1 + tanh")


def gelu_backward(t, x: str, gy: str, e: int, p: int) -> str:
    """bloom_gelu_back from the gradient of the output `gy` and x (kept): tanh recomputed and the
    derivative 0.5·x·((1 - tanh²)·(0.79788456 + 0.1070322243·x²)) + 0.5·(1 + tanh) built from up
    to five p·e temporaries beside gy and x, times gy: the gradient of x (returned as `d x`)."""
    pe = p * e
    steps = [  # (new, operands freed after it): the formula evaluated left to right
        ("a", ()), ("b", ()), ("c", ("b",)), ("e", ("c",)), ("f", ("a", "e")), ("tanh", ("f",)),
        ("g", ()), ("tanh²", ()), ("i", ("tanh²",)), ("j", ()), ("k", ("j",)), ("l", ("k",)), ("m", ("i", "l")),
        ("o", ("m", "g")), ("q", ()), ("r", ("q",)), ("ff", ("r", "o")),
    ]
    for new, gone in steps:
        t.alloc(f"{x}: bw {new}", pe)
        t.free(*(f"{x}: bw {k}" for k in gone))
    t.alloc("d " + x, pe)
    t.free(x + ": bw tanh", x + ": bw ff", gy, x)
    return "d " + x


def layer_forward(t, i: int, s, spec, opts: Options) -> None:
    """Block i's forward from its input to its last kept tensor. Kept: both LayerNorms' input,
    mean and 1/std; the fused qkv's q, k and v as contiguous copies (p·nh each); ALiBi's
    baddbmm needs no saved bias; the fp32 softmax (4·B·a·S²) and its cast (p·B·a·S², the
    softmax itself in fp32 training); the re-merged heads (p·nh); the MLP's h→4h output, kept
    by BLOOM's GeLU function, and the GeLU's output (p·nf each); in pure precision the norms'
    outputs, under autocast each projection's weight copy and input cast. The scores and the
    masked scores (p·B·a·S² and the stream's dtype) live until the attention returns."""
    p, B, S, n, mixed, stream = dims(s, spec)
    lt = t.scope(f"layer {i}: ")
    h, f, a = s.h, s.ffn, s.heads
    sq = B * a * S * S
    layernorm_forward(lt, "ln_1", "layer input", n, h, stream)
    linear_forward(lt, "qkv", "fused qkv", h * 3 * h, n * 3 * h, n * h, p, mixed, cast_input=mixed, bias=3 * h)
    if B > 1:  # q, k and v as batched-matmul operands: copies (with one sequence, views of the fused output)
        for x in ("q", "k", "v"):
            lt.alloc(x, p * n * h)
    if mixed:  # ALiBi is fp32 under autocast: baddbmm casts it
        lt.alloc("alibi cast", p * B * a * S)
    lt.alloc("scores", p * sq)
    if mixed:
        lt.free("alibi cast")
    lt.alloc("masked", stream * sq)
    if p != FP32 and not mixed:  # softmax(dtype=fp32) upcasts first
        lt.alloc("masked fp32", FP32 * sq)
        lt.alloc("softmax fp32", FP32 * sq)
        lt.free("masked fp32")
    else:
        lt.alloc("softmax fp32", FP32 * sq)
    if p != FP32:
        lt.alloc("probs", p * sq)
    lt.alloc("probs·v", p * n * h)
    lt.alloc("attn out", p * n * h)
    lt.free("probs·v")
    linear_forward(lt, "dense", "dense out", h * h, n * h, n * h, p, mixed, bias=h)
    lt.alloc("x2", stream * n * h)
    lt.free("dense out", *(("fused qkv",) if B > 1 else ()), "scores", "masked")
    layernorm_forward(lt, "ln_2", "x2", n, h, stream)
    if mixed:
        lt.free("ln_1: out")
    linear_forward(lt, "h_to_4h", "fc", h * f, n * f, n * h, p, mixed, cast_input=mixed, bias=f)
    gelu_forward(lt, "fc", "gelu", n * f, p)
    # 4h→h keeps the block's last kept tensors: a checkpointed recompute stops before its output
    linear_forward(lt, "4h_to_h", None, f * h, n * h, n * f, p, mixed, bias=h)
    if mixed:
        lt.free("ln_2: out", *(f"{k} bias copy" for k in ("qkv", "dense", "h_to_4h", "4h_to_h")))


def outside_saved(s, spec, opts: Options) -> dict[str, int]:
    """Outside the blocks: the embedding LayerNorm's input (the embedding's output), mean and
    1/std, ln_f's (and its output, kept by the head, in pure precision; under autocast the head's
    cast of it and its weight copy, V·h·p), the input ids; with checkpointing the ALiBi bias
    (B·a×S in the stream's dtype) and the B×S×S float mask every block's recompute reads."""
    p, B, S, n, mixed, stream = dims(s, spec)
    out = {"embedding norm: input": stream * n * s.h, "embedding norm: mean": stream * n, "embedding norm: rstd": stream * n,
           **layernorm_head_saved(s, spec)}
    out["input ids"] = INDEX_BYTES * n
    if spec.checkpointing:
        out.update({"alibi": stream * B * s.heads * S, "attention mask": stream * B * S * S})
    return out


def forward_end(s, spec) -> dict[str, int]:
    """Under autocast ln_f's fp32 output (4nh) lives until the forward returns, autocast's cached
    bias copies until it exits; with checkpointing its weight copies too."""
    if spec.precision != "mixed":
        return {}
    p, n, h, f = dtype_bytes(spec.dtype), spec.batch * spec.seq, s.h, s.ffn
    out = {"ln_f output fp32": FP32 * n * h, "L × bias copies": s.L * p * (3 * h + h + f + h)}
    if spec.checkpointing:
        out["L × weight copies"] = s.L * p * (4 * h * h + 2 * h * f)
    return out


def layer_backward(t, i: int, s, spec, opts: Options) -> None:
    """Block i's backward from its output's gradient ("dy") to its input's ("dy"); with
    checkpointing the recompute first."""
    p, B, S, n, mixed, stream = dims(s, spec)
    lt = t.scope(f"layer {i}: ")
    h, f, a = s.h, s.ffn, s.heads
    sq = B * a * S * S
    ck = spec.checkpointing

    def copies(k: str, cast: bool = True) -> tuple[str, ...]:
        return ((f"{k} weight copy",) + ((f"{k} input cast",) if cast else ())) if mixed else ()

    if mixed:  # the residual add's gradient for the p-byte branch
        lt.alloc("d mlp out", p * n * h)
    if ck:
        layer_forward(t, i, s, spec, opts)
    linear_backward(lt, "4h_to_h", f * h, "d gelu", n * f, p, mixed, ("d mlp out",) if mixed else (), bias=h,
                    saved=("gelu",) + copies("4h_to_h", False), recomputed=ck)
    gelu_backward(lt, "fc", "d gelu", n * f, p)
    linear_backward(lt, "h_to_4h", h * f, "d ln_2 out", n * h, p, mixed, ("d fc",), cast_input=mixed, bias=f,
                    saved=copies("h_to_4h") if mixed else ("ln_2: out",), recomputed=ck)
    layernorm_backward(lt, "ln_2", "d ln_2 out", n, h, stream, stream, "/dy")
    if mixed:
        lt.alloc("d attn dense", p * n * h)
    linear_backward(lt, "dense", h * h, "d attn out", n * h, p, mixed, ("d attn dense",) if mixed else (), bias=h,
                    saved=("attn out",) + copies("dense", False), recomputed=ck)
    heads = "d attn out"
    if B > 1:  # the merged heads' gradient is laid out again for the batched matmuls (a view when B = 1)
        lt.alloc("d heads", p * n * h)
        lt.free("d attn out")
        heads = "d heads"
    lt.alloc("dv", p * n * h)
    lt.alloc("d probs", p * sq)
    lt.free(heads, *(("v",) if B > 1 else ()), *(("probs",) if p != FP32 else ()))
    if p != FP32:
        lt.alloc("d probs fp32", FP32 * sq)
        lt.free("d probs")
        lt.rename("d probs fp32", "d probs")
    lt.alloc("d softmax", FP32 * sq)
    lt.free("d probs", "softmax fp32")
    if p != FP32:  # back to the scores' dtype (the upcast's backward; under autocast the mask add's)
        lt.alloc("d scores", p * sq)
        lt.free("d softmax")
        lt.rename("d scores", "d softmax")
    for x, raw in (("dq", "dq raw"), ("dkᵀ", "dkᵀ raw")):  # baddbmm: α·(grad·k), α·(qᵀ·grad)
        lt.alloc(raw, p * n * h)
        lt.alloc(x, p * n * h)
        lt.free(raw)
    lt.free("d softmax", *(("k", "q") if B > 1 else ("fused qkv",)))
    lt.alloc("d qkv", 3 * p * n * h)  # each of q, k, v goes back into the fused layout, summed
    lt.free("dv")
    for x in ("dkᵀ", "dq"):
        lt.alloc(f"d qkv from {x}", 3 * p * n * h)
        lt.free(x)
        add_into(lt, "d qkv", f"d qkv from {x}", 3 * p * n * h)
    linear_backward(lt, "qkv", h * 3 * h, "d ln_1 out", n * h, p, mixed, ("d qkv",), cast_input=mixed, bias=3 * h,
                    saved=copies("qkv") if mixed else ("ln_1: out",), recomputed=ck)
    frame = ("/alibi", "/attention mask") if ck and i == 0 else ()  # the recompute's inputs go with the first block
    layernorm_backward(lt, "ln_1", "d ln_1 out", n, h, stream, stream, "/dy", frame=frame)


def embedding_backward(t, s, spec) -> None:
    """Below the first block: the embedding LayerNorm's backward, then the embedding's gradient
    (V·h·p_w; tied: added to the head's out of place)."""
    p, B, S, n, mixed, stream = dims(s, spec)
    g = layernorm_backward(t, "embedding norm", "dy", n, s.h, stream, stream, None)
    token_embedding_backward(t, g, s.tied, stream * s.V * s.h)


TRAINING = Training(layer_forward, outside_saved, layernorm_head_backward, layer_backward, embedding_backward, forward_end,
                    gaps, options)
