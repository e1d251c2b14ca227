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
