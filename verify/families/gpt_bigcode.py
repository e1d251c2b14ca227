"""GPT-BigCode (gpt_bigcode: SantaCoder, StarCoder): the GPT-2 block with multi-query attention
(one key/value head when multi_query: c_attn is h × (h + 2·d_head)), nn.Linear projections with
biases, learned positions, a final LayerNorm, a head tied to the embedding unless the config
says otherwise, and a boolean causal mask of N × N kept as a buffer.

The training terms are GPT-2's block (verify/families/gpt2.py: `block_forward`, `block_backward`)
with nn.Linear projections, the fused qkv h + 2·kv·d wide, transformers' eager attention (k and v
broadcast to every head, the softmax in fp32 and cast back, then the attention dropout) and a
one-kernel GELU; they were read off the fake backend's trace (tiny-bigcode with distinct widths
was the derivation), with the dropouts the bundled configs keep (0.1 each).

Symbols: n = B·S tokens, h hidden, f MLP inner size, a heads, d head dim, kv key/value heads,
p bytes of the compute dtype.
"""

from __future__ import annotations


from verify.families import gpt2
from verify.families.blocks import FP32, attention, mlp, norm
from verify.families.tape import (Options, Training, dims, dropout_backward, dropout_forward, layernorm_head_backward,
                                  softmax_forward)

MODEL_TYPES = ("gpt_bigcode",)


def fields(config) -> dict:
    """What a GPT-BigCode config says about its blocks, as Shape fields: GPT-2's, with one k and v
    head under multi-query attention."""
    return {**gpt2.fields(config), "kv_heads": 1 if config.multi_query else config.n_head}


def params(s) -> dict[str, int]:
    """Embedding V·h, positions N·h; per layer attention 2h² + 2h·kv + the biases h + 2kv + h,
    the MLP 2·h·f + f + h and two LayerNorms 2h; a final LayerNorm 2h; an untied head V·h if
    not tied."""
    return {
        "embedding Vh": s.V * s.h,
        "positions Nh": s.max_positions * s.h,
        "attention": s.L * attention(s.h, s.h, s.kv_heads * s.head_dim, True, True),
        "mlp": s.L * mlp(s.h, s.ffn, 2, True),
        "router": 0,
        "norms": (2 * s.L + 1) * norm(s.h, "layernorm"),
        "output head": 0 if s.tied else s.V * s.h,
    }


def buffers(s, p: int) -> dict[str, int]:
    """The causal mask: N × N booleans, one byte each."""
    return {"causal mask N²·1": s.max_positions * s.max_positions}


# --- training: GPT-2's block with this family's attention and activation ---------------------


def options(config) -> Options:
    """GPT-BigCode's dropout (embd_pdrop, attn_pdrop, resid_pdrop) and MLP activation."""
    return Options(dropout=tuple(float(getattr(config, k, 0.0) or 0.0) for k in ("embd_pdrop", "attn_pdrop", "resid_pdrop")),
                   activation=config.activation_function)


ONE_KERNEL = ("gelu", "gelu_pytorch_tanh")  # activations that are one kernel keeping their input


def gaps(s, spec, opts: Options) -> str | None:
    """What the terms are not derived for."""
    if spec.mode != "train":
        return None
    if s.kv_heads != 1:
        return "GPT-BigCode's training terms are derived for multi-query attention (multi_query true)"
    if opts.activation not in ONE_KERNEL:
        return f"GPT-BigCode's training terms are derived for {' and '.join(ONE_KERNEL)}, not {opts.activation}"
    return None


def eager_forward(lt, s, spec, opts: Options) -> None:
    """transformers' eager attention on the fused qkv with one k and v head: q and kᵀ (broadcast to
    every head) as (B·a)×S×d operands, contiguous copies (p·nh each, kept; strided views of the
    fused output when B = 1), the scores and their scaling (p·B·a·S²), the mask added (the
    stream's dtype), the softmax in fp32 (4·B·a·S², kept; an fp32 copy of its input first in
    half precision) cast back to p (kept without attention dropout), the dropped probabilities
    (p·B·a·S², kept) with their 1-byte mask, v broadcast (B > 1, a copy, kept), probs·v and the
    heads re-merged (p·nh, kept)."""
    p, B, S, n, mixed, stream = dims(s, spec)
    h, a = s.h, s.heads
    sq = B * a * S * S
    if B > 1:
        lt.alloc("q", p * n * h)
        lt.alloc("kᵀ", p * n * h)
    lt.alloc("scores", p * sq)
    softmax_forward(lt, p, sq, mixed, stream, fp32="softmax", cast="softmax cast")
    probs = "softmax cast" if p != FP32 else "softmax"
    if opts.dropout[1] > 0:
        dropout_forward(lt, "probs", probs, sq, p)
        if p != FP32:
            lt.free("softmax cast")
    if B > 1:
        lt.alloc("v", p * n * h)
    lt.alloc("probs·v", p * n * h)
    lt.alloc("attn out", p * n * h)
    lt.free("probs·v")


def eager_backward(lt, s, spec, opts: Options) -> None:
    """The backward of `eager_forward` from "d attn out" to "d qkv": probs·v and q·kᵀ back through
    their batched matmuls, the dropout, the cast, the fp32 softmax (4·B·a·S²) and the scaling;
    k's and v's gradients summed over the heads they were broadcast to (p·n·d each), q's re-laid
    out (p·nh), the three concatenated (p·n·w)."""
    p, B, S, n, mixed, stream = dims(s, spec)
    h, a, d = s.h, s.heads, s.head_dim
    sq = B * a * S * S
    heads = "d attn out"
    if B > 1:
        lt.alloc("d heads", p * n * h)
        lt.free("d attn out")
        heads = "d heads"
    lt.alloc("dv exp", p * n * h)
    lt.alloc("d dropped", p * sq)
    kept = "probs" if opts.dropout[1] > 0 else "softmax cast" if p != FP32 else None  # what probs·v kept
    lt.free(heads, *(("v",) if B > 1 else ()), *((kept,) if kept else ()))
    g = "d dropped"
    if opts.dropout[1] > 0:
        g = dropout_backward(lt, "probs", g, sq, p, (g,))
    if p != FP32:
        lt.alloc("d probs fp32", FP32 * sq)
        lt.free(g)
        g = "d probs fp32"
    lt.alloc("d softmax", FP32 * sq)
    lt.free(g, "softmax")
    g = "d softmax"
    if p != FP32:  # to p: the fp32 copy's (or, under autocast, the mask's promotion's) backward
        lt.alloc("d masked", p * sq)
        lt.free(g)
        g = "d masked"
    lt.alloc("d scores", p * sq)
    lt.free(g)
    lt.alloc("dkᵀ exp", p * n * h)
    lt.alloc("dq", p * n * h)
    lt.free("d scores", *(("kᵀ", "q") if B > 1 else ("qkv",)))
    lt.alloc("dv", p * n * d)
    lt.free("dv exp")
    lt.alloc("dk", p * n * d)
    lt.free("dkᵀ exp")
    lt.alloc("dq laid out", p * n * h)
    lt.free("dq")
    lt.alloc("d qkv", p * n * gpt2.qkv_width(s))
    lt.free("dq laid out", "dv", "dk")


def act_forward(lt, opts: Options, e: int, p: int) -> None:
    """GELU in one kernel (exact or tanh): its output (p·e), its input kept."""
    lt.alloc("gelu", p * e)


def act_backward(lt, opts: Options, e: int, p: int) -> None:
    lt.alloc("d fc", p * e)
    lt.free("d gelu", "fc")


BIGCODE = gpt2.Block(conv1d=False, eager_forward=eager_forward, eager_backward=eager_backward,
                     act_forward=act_forward, act_backward=act_backward)


def layer_forward(t, i: int, s, spec, opts: Options) -> None:
    """GPT-2's block forward with this family's parts (`gpt2.block_forward`)."""
    gpt2.block_forward(t, i, s, spec, opts, BIGCODE)


def layer_backward(t, i: int, s, spec, opts: Options) -> None:
    """GPT-2's block backward with this family's parts (`gpt2.block_backward`)."""
    gpt2.block_backward(t, i, s, spec, opts, BIGCODE)


TRAINING = Training(layer_forward, gpt2.outside_saved, layernorm_head_backward, layer_backward, gpt2.embedding_backward,
                    gpt2.forward_end, gaps, options)


# --- generation and the no-grad forward: the GPT-2 block's (gpt2.py) ------------------------------


def generation_moments(s, spec) -> dict[str, dict[str, int]]:
    """GPT-BigCode's generation moments (gpt2.inference_moments): c_attn is h × (h + 2·g·d) (one
    key/value head under multi-query); eager attention's softmax runs in fp32 and is cast back."""
    from verify.families.gpt2 import inference_moments

    return inference_moments(s, spec, s.h + 2 * s.kv_heads * s.head_dim, softmax_fp32=True)


def forward_moments(s, spec) -> dict[str, dict[str, int]]:
    """GPT-BigCode's no-grad forward moments (generation_moments' blocks)."""
    return generation_moments(s, spec)
