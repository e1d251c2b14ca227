"""Mixtral (mixtral): the LLaMA block with the MLP replaced by E SwiGLU experts (gate, up h×f
and down f×h each, fused into two tensors per layer) and a router h×E choosing k of them per
token; no biases; RoPE; an untied head unless the config ties it.

The training terms were read off the fake backend's trace tensor by tensor (tiny-mixtral with
distinct widths was the derivation): attention as in the LLaMA family (llama.py), then the
router (logits, fp32 softmax, top-k, renormalized weights) and the experts as transformers 5.23
runs them by default, grouped_mm over the n·k (token, expert) pairs sorted by expert: every
tensor sized by n·k, not by how tokens happen to be routed. The fake backend traces MoE in bf16
pure precision only (torch's fake grouped_mm takes bf16 only), so that is what is derived, with
and without checkpointing. The auxiliary load-balancing loss is computed only with
output_router_logits (false in the releases and by default): not derived, a named gap.

Symbols: n = B·S tokens, h hidden, f expert MLP size, E experts, k experts per token, p bytes
of the compute dtype.
"""

from __future__ import annotations

from verify.units import INDEX_BYTES, dtype_bytes

from verify.families import llama
from verify.families.blocks import FP32, attention, rope_inv_freq
from verify.families.tape import GRAD, Options, Training, add_into, rmsnorm_backward, rmsnorm_forward

MODEL_TYPES = ("mixtral",)


def fields(config) -> dict:
    """What a Mixtral config says about its blocks, as Shape fields."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return {
        "gated_mlp": True, "positions": "rope", "norm": "rmsnorm",
        "attn_bias": False, "o_bias": False, "mlp_bias": False, "embed_norm": False,
        "norms_per_layer": 2, "final_norm": True, "fused_qkv": False, "parallel_attn": False,
        "position_rows": 0, "rotary_dim": head_dim, "head_bias": False, "embed_dim": config.hidden_size,
        "qk_norm": False, "sliding_window": config.sliding_window, "ffn": config.intermediate_size,
        "experts": config.num_local_experts, "experts_per_token": config.num_experts_per_tok,
    }


def params(s) -> dict[str, int]:
    """Embedding V·h; per layer attention h·q + 2h·kv + q·h, E experts of 3·h·f, the router h·E
    and two RMSNorms h; a final RMSNorm h; an untied head V·h."""
    q, kv = s.heads * s.head_dim, s.kv_heads * s.head_dim
    return {
        "embedding Vh": s.V * s.h,
        "positions Nh": 0,
        "attention": s.L * attention(s.h, q, kv, False, False),
        "mlp": s.L * s.experts * 3 * s.h * s.ffn,
        "router": s.L * s.h * s.experts,
        "norms": (2 * s.L + 1) * s.h,
        "output head": 0 if s.tied else s.V * s.h,
    }


def buffers(s, p: int) -> dict[str, int]:
    """RoPE's inverse frequencies over the whole head."""
    return rope_inv_freq(s.head_dim)


# --- training: what the forward keeps for backward, and the backward on a tape ----------------


def options(config) -> Options:
    """The LLaMA family's options, and whether the forward returns the router logits (then the
    training forward computes the auxiliary load-balancing loss)."""
    base = llama.options(config)
    return Options(dropout=base.dropout, variant="router logits" if getattr(config, "output_router_logits", False) else "")


def gaps(s, spec, opts: Options) -> str | None:
    """Mixtral's experts are derived in bf16 pure precision only (what the fake backend traces),
    without the auxiliary loss."""
    if spec.mode == "train" and (spec.dtype != "bf16" or spec.precision != "pure"):
        return "MoE experts are derived in bf16 pure precision only (the fake backend's grouped_mm takes bf16)"
    if spec.mode == "train" and opts.variant == "router logits":
        return "the auxiliary load-balancing loss (output_router_logits true) is not derived"
    if spec.mode == "train" and spec.attn == "eager" and opts.dropout[1] > 0:
        return "eager attention with attention_dropout > 0 is not derived"
    return None


def layer_forward(t, i: int, s, spec, opts: Options) -> None:
    """Layer i's forward: the LLaMA family's attention half, then the sparse MoE block to its
    last kept tensor (`moe_forward`)."""
    lt = t.scope(f"layer {i}: ")
    llama.attention_forward(lt, s, spec)
    moe_forward(lt, s, spec)


def moe_forward(lt, s, spec) -> None:
    """The MoE block on "x2": the RMSNorm; the router's logits (p·nE, not kept), their fp32
    softmax (4nE, kept), the top-k weights and experts (4nk and 8nk) and the weights divided by
    their sum in place (the sum 4n and a copy 4nk kept); the n·k pairs sorted by expert (order,
    token of each pair 8nk each, kept), each pair's input row (p·nk·h) and weight (4nk), the
    offsets per expert, the grouped gate_up (p·nk·2f), act(gate) and act·up (p·nk·f each), the
    grouped down projection (p·nk·h), all kept; the pairs weighted in fp32 (4nk·h) and the
    inverse order (8nk, kept), where a checkpointed recompute stops."""
    p, n = dtype_bytes(spec.dtype), spec.batch * spec.seq
    h, f, E, k = s.h, s.ffn, s.experts, s.experts_per_token
    nk = n * k
    rmsnorm_forward(lt, "mlp norm", "x2", n, h, p, False)
    lt.alloc("router logits", p * n * E)
    lt.alloc("router logits fp32", FP32 * n * E)
    lt.alloc("router probs", FP32 * n * E)
    lt.free("router logits fp32")
    lt.alloc("top-k weights", FP32 * nk)
    lt.alloc("top-k experts", INDEX_BYTES * nk)
    lt.alloc("top-k sum", FP32 * n)
    lt.alloc("top-k weights kept", FP32 * nk)
    for name, nbytes in (("expert of pair", INDEX_BYTES * nk), ("pair order", INDEX_BYTES * nk), ("token of pair", INDEX_BYTES * nk),
                         ("pair input", p * nk * h), ("pair weight", FP32 * nk), ("histc input", FP32 * nk),
                         ("pairs per expert", FP32 * E), ("offsets", FP32 * E), ("gate_up", p * nk * 2 * f),
                         ("act", p * nk * f), ("act·up", p * nk * f), ("down out", p * nk * h), ("weighted", FP32 * nk * h),
                         ("inverse order", INDEX_BYTES * nk), ("arange", INDEX_BYTES * nk)):
        lt.alloc(name, nbytes)
    lt.free("arange")
    # what the block holds past its last kept tensor (freed by the residual add, or where a recompute stops)
    lt.free("weighted", "expert of pair", "histc input", "pairs per expert", "router logits", "top-k weights",
            *(("x2",) if p != FP32 else ()))


def layer_backward(t, i: int, s, spec, opts: Options) -> None:
    """Layer i's backward: the MoE block's (`moe_backward`), then the LLaMA family's attention."""
    lt = t.scope(f"layer {i}: ")
    moe_backward(lt, s, spec, lambda: layer_forward(t, i, s, spec, opts))
    llama.attention_backward(lt, i, s, spec)


def moe_backward(lt, s, spec, recompute) -> None:
    """The MoE block's backward from dy: back through the fp32 sum over each token's pairs
    (4nh, then a 4nk·h copy and the reordering's 4nk·h), the weighting (4nk·h twice, the pairs'
    gradient cast to p), the grouped down and gate_up projections (the experts' weight gradients
    E·h·f·p and E·2f·h·p), act·up, the scatter back to tokens (p·nh), the top-k renormalization,
    top-k and softmax (n·k and n·E sized) and the router (E·h·p), then the RMSNorm. With
    checkpointing `recompute` plays the recompute where the first kept tensor is needed (after
    the sum's backward, which needs none)."""
    p, n = dtype_bytes(spec.dtype), spec.batch * spec.seq
    h, f, E, k = s.h, s.ffn, s.experts, s.experts_per_token
    nk, ck = n * k, spec.checkpointing
    lt.alloc("d moe out fp32", FP32 * n * h)
    lt.alloc("d pairs", FP32 * nk * h)
    lt.free("d moe out fp32")
    if ck:
        recompute()
    lt.alloc("d weighted zeros", FP32 * nk * h)
    lt.alloc("d weighted", FP32 * nk * h)
    lt.free("d weighted zeros", "d pairs", "inverse order")
    lt.alloc("d down out fp32", FP32 * nk * h)
    lt.alloc("d pair weight h", FP32 * nk * h)
    if ck:  # recomputed tensors go before the node's dtype cast and sum
        lt.free("pair weight", "down out")
    lt.alloc("d down out", p * nk * h)
    lt.free("d down out fp32")
    lt.alloc("d pair weight", FP32 * nk)
    lt.free("d pair weight h", "d weighted", *(() if ck else ("pair weight", "down out")))
    lt.alloc(GRAD + "experts down", p * E * h * f)
    lt.alloc("d act·up", p * nk * f)
    lt.free("d down out", "act·up")
    lt.alloc("d act", p * nk * f)
    lt.alloc("d up", p * nk * f)
    lt.free("d act·up", "act")
    lt.alloc("d gate", p * nk * f)
    lt.free("d act", "gate_up")
    lt.alloc("d gate_up", p * nk * 2 * f)
    lt.free("d gate", "d up")
    lt.alloc(GRAD + "experts gate_up", p * E * 2 * f * h)
    lt.alloc("d pair input", p * nk * h)
    lt.free("d gate_up", "offsets", "pair input")
    lt.alloc("d pair weight zeros", FP32 * nk)
    lt.alloc("d top-k weights", FP32 * nk)
    lt.free("d pair weight zeros", "d pair weight", "pair order")
    lt.alloc("d tokens zeros", p * n * h)
    lt.alloc("d mlp norm out", p * n * h)
    lt.free("d tokens zeros", "d pair input", "token of pair")
    # the in-place renormalization w / Σw
    for x in ("w/Σ", "w/Σ²", "-w/Σ²", "d·(-w/Σ²)"):
        lt.alloc(f"renorm: {x}", FP32 * nk)
    lt.free("renorm: -w/Σ²", "renorm: w/Σ²", "renorm: w/Σ")
    lt.alloc("renorm: d/Σ", FP32 * nk)
    kept = ("top-k sum", "top-k weights kept")
    if ck:  # recomputed tensors go before the sum over the broadcast Σ
        lt.free(*kept)
    lt.alloc("renorm: d Σ", FP32 * n)
    lt.free("renorm: d·(-w/Σ²)", "d top-k weights", *(() if ck else kept))
    lt.alloc("d top-k values", FP32 * nk)
    lt.free("renorm: d/Σ", "renorm: d Σ")
    lt.alloc("d probs zeros", FP32 * n * E)
    lt.alloc("d router probs", FP32 * n * E)
    lt.free("d probs zeros", "d top-k values", "top-k experts")
    lt.alloc("d router logits fp32", FP32 * n * E)
    lt.free("d router probs", "router probs")
    lt.alloc("d router logits", p * n * E)
    lt.free("d router logits fp32")
    lt.alloc(GRAD + "router", p * E * h)
    lt.alloc("dx router", p * n * h)
    lt.free("d router logits", "mlp norm: × weight")
    add_into(lt, "d mlp norm out", "dx router", p * n * h)
    rmsnorm_backward(lt, "mlp norm", "d mlp norm out", n, h, p, p, p == FP32, "/dy", ck)


TRAINING = Training(layer_forward, llama.outside_saved, llama.head_backward, layer_backward, llama.embedding_backward,
                    llama.forward_end, gaps, options)
