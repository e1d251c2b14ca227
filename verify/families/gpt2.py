"""GPT-2 (gpt2): LayerNorm before attention and before the MLP, a fused c_attn (h × 3h) and
c_proj (h × h), the MLP c_fc (h × f) and c_proj (f × h) with GELU, every projection biased
(Conv1D), learned positions (n_positions × h), a final LayerNorm, and a head tied to the
embedding unless the config says otherwise.

The activation terms were counted tensor by tensor from what autograd saves in these modules
(tiny-gpt2 was the derivation), for eager and SDPA attention, in pure precision without
checkpointing, with the dropout masks of one byte the CUDA kernels keep.

Symbols: n = B·S tokens, h hidden, f MLP inner size, a heads, V vocabulary, L layers, p bytes of
the compute dtype.
"""

from __future__ import annotations

from verify.units import INDEX_BYTES, dtype_bytes

from verify.families.blocks import FP32, attention, mlp, norm

MODEL_TYPES = ("gpt2",)


def fields(config) -> dict:
    """What a GPT-2 config says about its blocks, as Shape fields."""
    h = config.n_embd
    return {
        "gated_mlp": False, "positions": "learned", "norm": "layernorm",
        "attn_bias": True, "o_bias": True, "mlp_bias": True, "embed_norm": False,
        "norms_per_layer": 2, "final_norm": True, "fused_qkv": True, "parallel_attn": False,
        "position_rows": config.n_positions, "rotary_dim": 0, "head_bias": False, "embed_dim": h,
        "qk_norm": False, "sliding_window": None, "ffn": config.n_inner or 4 * h,
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


def activations(s, spec, dropout: tuple[float, float, float]) -> dict[str, int]:
    """Bytes live at the forward/backward boundary beyond the persistent state (training): L
    blocks and what lies outside them; dropout = the config's (embd_pdrop, attn_pdrop,
    resid_pdrop)."""
    p = dtype_bytes(spec.dtype)
    B, S = spec.batch, spec.seq
    embd, attn_p, resid = dropout
    layer = gpt2_layer_saved(B, S, s.h, s.ffn, s.heads, p, spec.attn, attn_p > 0, resid > 0)
    return {**{f"L × {k}": s.L * v for k, v in layer.items()}, **gpt2_head_saved(B, S, s.h, s.V, p, embd > 0)}


def activation_gaps(s, spec) -> str | None:
    """Where `activations` is not derived: autocast and checkpointing."""
    if spec.mode == "train" and (spec.precision == "mixed" or spec.checkpointing):
        return "GPT-2 activations are derived for pure precision without checkpointing"
    return None


def gpt2_layer_saved(B: int, S: int, h: int, f: int, a: int, p: int, attn: str, attn_drop: bool, resid_drop: bool) -> dict[str, int]:
    """One GPT-2 block (LayerNorm, fused qkv, GELU-tanh MLP, dropout with 1-byte masks as on CUDA):
    the inputs and outputs of its two LayerNorms (p·nh each) and their mean and 1/std per token
    (p·n each: this backend's LayerNorm keeps them in the input dtype), the fused qkv output
    (3p·nh), attention by kind, the re-merged heads (eager), the GELU's five n·f tensors (the
    c_fc output and four intermediates of 0.5·x·(1 + tanh(...))) and the residual-dropout masks."""
    n = B * S
    out = {"2 LayerNorm inputs 2p·nh": 2 * p * n * h, "2 LayerNorm outputs 2p·nh": 2 * p * n * h,
           "LayerNorm mean, 1/std 4p·n": 4 * p * n, "fused qkv 3p·nh": 3 * p * n * h}
    if attn == "sdpa":
        out.update({"SDPA output p·nh": p * n * h, "logsumexp 4·B·a·S": FP32 * B * a * S})
    else:
        out.update({"softmax p·B·a·S²": p * B * a * S * S, "merged heads p·nh": p * n * h})
        if attn_drop:
            out.update({"attention dropout output p·B·a·S²": p * B * a * S * S, "attention dropout mask B·a·S²": B * a * S * S})
    out["GELU-tanh MLP 5p·nf"] = 5 * p * n * f
    if resid_drop:
        out["2 residual dropout masks 2nh"] = 2 * n * h
    return out


def gpt2_head_saved(B: int, S: int, h: int, V: int, p: int, embd_drop: bool) -> dict[str, int]:
    """Outside GPT-2's blocks: the final LayerNorm's input and output and its statistics, the
    embedding-dropout mask, log-probs, token and position ids, labels and loss."""
    n = B * S
    out = {"final LayerNorm input, output 2p·nh": 2 * p * n * h, "final LayerNorm mean, 1/std 2p·n": 2 * p * n,
           "log-probs 4nV": FP32 * n * V, "input ids 8n": INDEX_BYTES * n, "position ids 8S": INDEX_BYTES * S,
           "labels 8(S+1) or 8BS": INDEX_BYTES * (S + 1 if B == 1 else B * S), "loss, total weight 2·4": 2 * FP32}
    if embd_drop:
        out["embedding dropout mask nh"] = n * h
    return out
