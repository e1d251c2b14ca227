"""The corrected predictor: the memory of a training step or a generation, term by term, as the
fake-backend measurements support it. Pure arithmetic on a Shape and a MemorySpec (no torch).

Persistent categories are exact (params, grads, optimizer state, KV cache). Activations are
counted tensor by tensor from what autograd saves in a transformers decoder of the LLaMA family
(RMSNorm, RoPE, gated MLP, no dropout: llama, mistral, qwen2), for eager and SDPA attention, in
pure precision, under autocast (mixed) and with activation checkpointing; the peak is the
largest of three moments the measurements show (the start of backward, the embedding's
backward, the foreach optimizer step). A fourth moment is not modelled: the backward of the
first layer's input norm, with all grads but the embedding's and that layer's fp32 temporaries
live; it can top the others by a little (Llama-2-70B bf16 SGD, S = 4096: the prediction is
0.15 % low). Not covered, and said so by `covered` / `peak_covered`
rather than guessed: other families (GPT-2 and BLOOM with dropout and LayerNorm, MoE routing)
and the peak under checkpointing (the recompute inside backward).

Symbols: n = B·S tokens, h hidden, f MLP inner size, a heads, g key/value heads, d head dim,
V vocabulary, L layers, p bytes of the compute dtype; fp32 tensors are 4 bytes whatever p is.
"""

from __future__ import annotations

from verify.formulas import memory as M
from verify.units import INDEX_BYTES, dtype_bytes
from verify.formulas.params import exact, total

FP32 = 4  # bytes of the tensors RMSNorm, softmax and the loss keep in fp32
LLAMA_FAMILY = {"llama", "mistral", "qwen2"}
GPT2_FAMILY = {"gpt2"}


def rmsnorm_saved(n: int, h: int, p: int) -> dict[str, int]:
    """One RMSNorm (transformers computes it in fp32): its fp32 input (4nh), the fp32 1/rms per
    token (4n), the normalized tensor cast to the compute dtype and its product with the weight
    (p·nh each; in fp32 the cast is the normalized product itself)."""
    return {"fp32 input 4nh": FP32 * n * h, "1/rms 4n": FP32 * n, "normalized p·nh": p * n * h, "× weight p·nh": p * n * h}


def attention_saved(B: int, S: int, h: int, a: int, g: int, d: int, p: int, attn: str) -> dict[str, int]:
    """One attention block. SDPA saves q and k after RoPE, v, its output and an fp32 logsumexp per
    head and token (4·B·a·S): linear in S. Eager saves the fp32 softmax (4·B·a·S²), its cast to
    the compute dtype (p·B·a·S², none when p = 4), q, k and v (k and v repeated to a heads for
    GQA) and the re-laid-out output: quadratic in S."""
    n = B * S
    if attn == "sdpa":
        return {"q after RoPE n·a·d·p": n * a * d * p, "k after RoPE n·g·d·p": n * g * d * p, "v n·g·d·p": n * g * d * p,
                "output n·a·d·p": n * a * d * p, "logsumexp 4·B·a·S": FP32 * B * a * S}
    kv_heads = g if g == a else a  # repeat_kv materializes a-head copies of k and v under GQA
    return {
        "q after RoPE n·a·d·p": n * a * d * p,
        "k n·kv·d·p": n * kv_heads * d * p,
        "v n·kv·d·p": n * kv_heads * d * p,
        "softmax fp32 4·B·a·S²": FP32 * B * a * S * S,
        "softmax cast p·B·a·S²": 0 if p == FP32 else p * B * a * S * S,
        "output n·a·d·p": n * a * d * p,
    }


def gated_mlp_saved(n: int, f: int, p: int) -> dict[str, int]:
    """SwiGLU MLP: gate and up projections, the activation of the gate and the product (p·nf each)."""
    return {"gate n·f·p": n * f * p, "up n·f·p": n * f * p, "act(gate) n·f·p": n * f * p, "act·up n·f·p": n * f * p}


def head_saved(B: int, S: int, h: int, d: int, V: int, p: int) -> dict[str, int]:
    """Outside the layers: the final RMSNorm, RoPE's cos and sin (one row of positions shared by
    the batch: p·S·d each), the fp32 log-probabilities of the loss (4nV; the logits themselves
    are not kept), the int64 input ids (8n), the labels the loss keeps (padded by one position
    and shifted: a view of the 8·(S+1) padded row when B = 1, a contiguous 8·B·S copy when B > 1)
    and the loss with its total weight (2 fp32 scalars)."""
    n = B * S
    return {
        **{f"final norm {k}": v for k, v in rmsnorm_saved(n, h, p).items()},
        "cos, sin 2·S·d·p": 2 * S * d * p,
        "log-probs 4nV": FP32 * n * V,
        "input ids 8n": INDEX_BYTES * n,
        "labels 8(S+1) or 8BS": INDEX_BYTES * (S + 1 if B == 1 else B * S),
        "loss, total weight 2·4": 2 * FP32,
    }


def rmsnorm_saved_autocast(n: int, h: int, p: int, consumers: int) -> dict[str, int]:
    """One RMSNorm under autocast (fp32 weights, fp32 residual stream): its fp32 input (4nh), 1/rms
    (4n), the fp32 normalized tensor (4nh), and one cast to the compute dtype (p·nh) for each
    projection that reads the output (autocast casts activations per call; only weights are
    cached): 3 after the attention norm (q, k, v), 2 after the MLP norm (gate, up), 1 at the end."""
    return {"fp32 input 4nh": FP32 * n * h, "1/rms 4n": FP32 * n, "normalized fp32 4nh": FP32 * n * h,
            f"{consumers} casts c·p·nh": consumers * p * n * h}


def layer_matrices(s) -> int:
    """Elements of the weight matrices of one decoder layer (q, k, v, o and the gated MLP)."""
    q, kv = s.heads * s.head_dim, s.kv_heads * s.head_dim
    return s.h * q + 2 * s.h * kv + q * s.h + 3 * s.h * s.ffn


def activations(s, spec, dropout: tuple[float, float, float] = (0.1, 0.1, 0.1)) -> dict[str, int]:
    """Bytes live at the forward/backward boundary beyond the persistent state (training).

    Pure precision: per layer 2 RMSNorms, attention by kind, the gated MLP. Mixed precision
    (autocast, fp32 weights): the norms keep fp32 tensors plus per-projection casts, and each
    layer keeps the cached compute-dtype copy of its weight matrices (p per element), the head
    its own (V·h·p); attention and MLP keep the same tensors as in pure precision. Checkpointing:
    each layer keeps only its input (n·h in the residual stream's dtype); the position ids (8S)
    and, for eager attention, the B×S×S mask in the stream's dtype are kept for the recompute."""
    p = dtype_bytes(spec.dtype)
    B, S = spec.batch, spec.seq
    n = B * S
    if s.model_type in GPT2_FAMILY:
        embd, attn_p, resid = dropout
        layer = gpt2_layer_saved(B, S, s.h, s.ffn, s.heads, p, spec.attn, attn_p > 0, resid > 0)
        return {**{f"L × {k}": s.L * v for k, v in layer.items()}, **gpt2_head_saved(B, S, s.h, s.V, p, embd > 0)}
    mixed = spec.precision == "mixed"
    stream = FP32 if mixed else p  # bytes of the residual stream between layers
    if spec.checkpointing:
        layer = {"layer input n·h": n * s.h * stream}
        extra = {"position ids 8S": INDEX_BYTES * S}
        if spec.attn == "eager":  # eager gets an explicit mask, a checkpoint input like the rest
            extra["attention mask B·S²·p_stream"] = B * S * S * stream
    elif mixed:
        layer = {
            **{f"attention norm: {k}": v for k, v in rmsnorm_saved_autocast(n, s.h, p, 3).items()},
            **{f"MLP norm: {k}": v for k, v in rmsnorm_saved_autocast(n, s.h, p, 2).items()},
            **attention_saved(B, S, s.h, s.heads, s.kv_heads, s.head_dim, p, spec.attn),
            **gated_mlp_saved(n, s.ffn, p),
            "weight copies p·(matrices)": p * layer_matrices(s),
        }
        extra = {}
    else:
        layer = {
            **{f"2 norms: {k}": 2 * v for k, v in rmsnorm_saved(n, s.h, p).items()},
            **attention_saved(B, S, s.h, s.heads, s.kv_heads, s.head_dim, p, spec.attn),
            **gated_mlp_saved(n, s.ffn, p),
        }
        extra = {}
    head = head_saved(B, S, s.h, s.head_dim, s.V, p)
    if mixed:
        head = {k: v for k, v in head.items() if not k.startswith(("final norm", "cos, sin"))}
        head = {**{f"final norm {k}": v for k, v in rmsnorm_saved_autocast(n, s.h, p, 1).items()},
                "head weight copy V·h·p": p * s.V * s.h, "cos, sin 2·S·d·4": 2 * S * s.head_dim * FP32, **head}
    return {**{f"L × {k}": s.L * v for k, v in layer.items()}, **extra, **head}


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


def backward_start(s, spec) -> dict[str, int]:
    """What the first backward ops add on top of the forward's end: while log_softmax's backward
    runs, its saved output, the fp32 gradient of the log-probabilities and the fp32 gradient of
    the logits are all live (4nV each beyond the forward's end); both saved and incoming buffers
    are freed before the cast to the compute dtype, so later moments are lower."""
    n = spec.batch * spec.seq
    return {"grad log-probs 4nV": FP32 * n * s.V, "grad logits fp32 4nV": FP32 * n * s.V}


def embedding_backward(s, spec) -> dict[str, int]:
    """The last backward op, when every other grad exists. Untied: the embedding's grad is the
    last of the grads and the gradient flowing into it (p·nh) is still held. Tied: the
    embedding's V×h grad arrives beside the head's and AccumulateGrad adds the two out of place
    (two more V·h·p_w; the incoming gradient is gone by then)."""
    p = dtype_bytes(spec.dtype)
    pw = FP32 if spec.precision == "mixed" else p
    if s.tied:
        return {"embedding grad V·h·p_w": pw * s.V * s.h, "out-of-place sum V·h·p_w": pw * s.V * s.h}
    return {"grad of the embedding output p·nh": p * spec.batch * spec.seq * s.h}


def optimizer_transient(N: int, p: int, optimizer: str) -> dict[str, int]:
    """torch's foreach Adam(W) step holds one temporary per parameter (sqrt of exp_avg_sq, p bytes);
    foreach SGD updates in place."""
    return {"foreach sqrt(v) N·p": N * p} if optimizer in ("adam", "adamw") else {}


def rope_buffers(s) -> dict[str, int]:
    """RoPE's inverse frequencies, kept twice (inv_freq and original_inv_freq), fp32, d/2 each;
    families without RoPE keep none here."""
    return {"inv_freq, original_inv_freq 2·(d/2)·4": 2 * (s.head_dim // 2) * FP32} if s.positions == "rope" else {}


def covered(s, spec) -> str | None:
    """None if the predictor covers this run; otherwise why not (one line)."""
    if s.model_type in GPT2_FAMILY:
        if spec.mode == "train" and (spec.precision == "mixed" or spec.checkpointing):
            return "GPT-2 activations are derived for pure precision without checkpointing"
        return None
    if s.model_type not in LLAMA_FAMILY or s.experts > 1:
        return f"activations are derived for the LLaMA family ({', '.join(sorted(LLAMA_FAMILY))}) and GPT-2, not {s.model_type}"
    return None


def peak_covered(s, spec) -> str | None:
    """None if the predictor also gives the peak; otherwise why not."""
    if spec.mode == "train" and spec.checkpointing:
        return "the peak under checkpointing (recompute inside backward) is not derived"
    return covered(s, spec)


def predict(s, spec, T: int, dropout: tuple[float, float, float] = (0.1, 0.1, 0.1)) -> dict[str, dict[str, int]]:
    """Category -> named terms in bytes for the run `spec` on Shape `s`; T = parameter tensors
    (Adam's step counters); dropout = GPT-2's (embedding, attention, residual) probabilities
    (its config's embd_pdrop, attn_pdrop, resid_pdrop). Activation and peak terms only where
    `covered` / `peak_covered` is None."""
    N = total(exact(s))
    p = dtype_bytes(spec.dtype)
    pw = FP32 if spec.precision == "mixed" else p
    B, S = spec.batch, spec.seq
    out: dict[str, dict[str, int]] = {"params": M.weights(N, pw), "buffers": rope_buffers(s)}
    if spec.mode == "train":
        out["grads"] = M.gradients(N, pw)
        out["optimizer"] = M.optimizer_state(N, T, pw, spec.optimizer)
        if covered(s, spec) is None:
            out["activations"] = activations(s, spec, dropout)
        if peak_covered(s, spec) is None:
            state = total(out["params"]) + total(out["buffers"]) + total(out["optimizer"])
            fwd_end = state + total(out["activations"])
            step = state + total(out["grads"]) + total(optimizer_transient(N, pw, spec.optimizer)) + INDEX_BYTES * B * S
            grads_done = state + total(out["grads"]) + INDEX_BYTES * B * S
            moments = {"start of backward": fwd_end + total(backward_start(s, spec)),
                       "embedding backward": grads_done + total(embedding_backward(s, spec)),
                       "optimizer step": step}
            out["peak"] = {max(moments, key=moments.get): max(moments.values())}
    else:
        T_kv = M.cached_positions(S, spec.new_tokens)
        out["kv_cache"] = M.kv_cache(s.L, B, T_kv, s.kv_heads, s.head_dim, p)
    return out


def inputs_for(model: str) -> tuple:
    """(Shape, T parameter tensors, GPT-2 dropout probabilities) of a bundled model or config path:
    what `predict` needs besides the spec. T comes from a meta build (no memory)."""
    from verify.build import build
    from verify.configs import load_config, shape

    config = load_config(model)
    T = len(list(build(config, device="meta").parameters()))
    dropout = tuple(getattr(config, k, 0.0) or 0.0 for k in ("embd_pdrop", "attn_pdrop", "resid_pdrop"))
    return shape(config), T, dropout


def prediction_for(spec) -> dict[str, dict[str, int]]:
    """`predict` for a MemorySpec, its inputs gathered from spec.model."""
    s, T, dropout = inputs_for(spec.model)
    return predict(s, spec, T, dropout)


def predicted_peak(spec) -> tuple[int | None, str | None, str | None]:
    """(peak bytes, the moment it is at, None) for the run `spec`; (None, None, why not) where the
    predictor does not cover the peak of this run."""
    s, T, dropout = inputs_for(spec.model)
    why_not = peak_covered(s, spec)
    if why_not is not None:
        return None, None, why_not
    (moment, peak), = predict(s, spec, T, dropout)["peak"].items()
    return peak, moment, None
