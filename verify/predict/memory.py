"""The corrected predictor: the memory of a training step or a generation, term by term, as the
fake-backend measurements support it. Pure arithmetic on a Shape and a MemorySpec (no torch).

Persistent categories are exact (params, grads, optimizer state, KV cache; buffers as the
model's family states them). Training is played on a tape (verify/families/tape.py), tensor by
tensor, in the order the fake backend's trace allocates and frees them: the activations are what
the forward keeps at the forward/backward boundary (the family's layer and outside terms, the
loss's); the peak is the highest of the moments the step passes through: the forward's end (the
logits beside everything kept), the start of backward (the loss's gradients), each layer's
backward (under checkpointing with its recompute), the embedding's backward and the foreach
optimizer step. `Prediction.moments` holds each moment's total, `peak_moment` names the highest.

Training is covered for the families with derived terms: the LLaMA family (llama, mistral with
its sliding window, qwen2), GPT-2, GPT-BigCode, GPT-J, GPT-NeoX, OPT, BLOOM, Falcon and Mixtral;
in pure precision (fp32, fp16, bf16) and under autocast over fp32 weights, eager and SDPA
attention, with and without activation checkpointing, AdamW, Adam, SGD and no optimizer, the
cross-entropy loss and a sum of the logits, tied and untied heads. Each family names what its
terms are not derived for (its `gaps`), and `covered` / `peak_covered` say so rather than guess:
Mixtral outside bf16 pure precision (the fake backend traces its grouped experts in bf16 only)
or with the auxiliary loss (output_router_logits); eager attention with attention dropout in the
LLaMA family and Mixtral; BLOOM and GPT-J under SDPA (transformers has none for them), or with
dropout; GPT-J with an activation other than gelu_new; OPT's eager attention with dropout and
activations other than ReLU; GPT-NeoX with dropout or activations other than GELU and
gelu_fast; GPT-BigCode without multi-query attention or with an activation other than a
one-kernel GELU; Falcon with ALiBi, biases, the sequential block, the fused 3h qkv, dropout or
another activation. Not covered either: families without derived terms (Phi, Gemma),
model_types the registry does not cover.

Generation (mode generate) and the no-grad forward (mode forward): the KV cache a generation ends
with is exact (dynamic and static caches, sliding windows); the peak is the largest of the
candidate moments the family gives (verify/families/generation.py and each family's
generation_moments / forward_moments), each the weights plus named terms: inside the prefill's
last layer (RoPE, the cache update, attention by kind, the output projection, the post-attention
norm, the MLP), at the prefill's logits and the end of its step, the same inside and after the
last decode step (the cache at its longest), the first decode step where a window cache shrinks;
the forward's last layer and its logits (B·S·V). Derived for the LLaMA family (llama, mistral,
qwen2), Gemma, GPT-2, GPT-BigCode and Falcon with RoPE, eager and SDPA attention; within 0.04 % of
the trace on shapes the terms were not read from (tests/test_predict_generation.py; the few 8-byte
special-token scalars generate() keeps are not counted). Not covered, and said so by
`peak_covered`: the other families (BLOOM, OPT, GPT-J, GPT-NeoX, Phi, Mixtral), Falcon with ALiBi
or multi-query under SDPA (torch's math kernel), --attn flash, activations other than the one-op
ones and gelu_new. With gpu_terms, one cuBLAS workspace (no autograd thread).

The terms follow what the fake backend traces on the CPU device: where the CPU's kernels differ
from CUDA's (SDPA falls back to its math path in fp32 for Falcon's single key/value head, the
fused CPU kernel elsewhere), the predictor follows the CPU's.

Symbols: n = B·S tokens, h hidden, V vocabulary, p bytes of the compute dtype, p_w bytes of a
stored weight (4 under autocast); fp32 tensors are 4 bytes whatever p is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from verify.families import FAMILIES, family_of, not_in_registry
from verify.families.tape import Options, Tape
from verify.formulas import cuda as C
from verify.formulas import memory as M
from verify.units import FP32, INDEX_BYTES, dtype_bytes, weight_bytes
from verify.formulas.params import exact, total


def loss_saved(s, spec) -> dict[str, int]:
    """What the loss keeps at the forward/backward boundary. Cross-entropy (transformers'
    ForCausalLMLoss on logits cast to fp32): the fp32 log-probabilities (4nV; the logits
    themselves are not kept), the labels (padded by one position and shifted: a view of the
    8·(S+1) padded row when B = 1, a contiguous 8·B·S copy when B > 1), the loss and its total
    weight (fp32 scalars). A sum of the logits: the sum alone, in the logits' dtype (p)."""
    n = spec.batch * spec.seq
    if spec.loss == "sum":
        return {"loss": dtype_bytes(spec.dtype)}
    return {"log-probs": FP32 * n * s.V, "labels": INDEX_BYTES * (spec.seq + 1 if spec.batch == 1 else n),
            "loss": FP32, "total weight": FP32}


def logits_transient(s, spec) -> dict[str, int]:
    """What the forward's end holds for a moment beside what it keeps: the logits (p·nV) and,
    for cross-entropy, their fp32 copy (4nV; none when p = 4) and the padded labels
    (8·B·(S+1), when B > 1: with B = 1 the labels are a view of them)."""
    p, B, S = dtype_bytes(spec.dtype), spec.batch, spec.seq
    out = {"logits": p * B * S * s.V}
    if spec.loss == "ce":
        if p != FP32:
            out["logits fp32"] = FP32 * B * S * s.V
        if B > 1:
            out["padded labels"] = INDEX_BYTES * B * (S + 1)
    return out


def loss_backward(t: Tape, s, spec) -> None:
    """From the loss to the logits' gradient ("grad logits"). Cross-entropy: the gradient of the
    log-probabilities and of the fp32 logits (4nV each, both live for a moment: the start of
    backward), then the cast to the logits' dtype (p·nV). A sum: the gradient of every logit is a
    broadcast view of one scalar (no bytes)."""
    p, n = dtype_bytes(spec.dtype), spec.batch * spec.seq
    t.alloc("grad loss", FP32 if spec.loss == "ce" else p)
    if spec.loss == "sum":
        t.alloc("grad logits", 0)
        return
    t.alloc("grad log-probs", FP32 * n * s.V)
    t.free("labels", "total weight")
    t.alloc("grad logits fp32", FP32 * n * s.V)
    t.free("grad log-probs", "log-probs")
    if p == FP32:
        t.rename("grad logits fp32", "grad logits")
    else:
        t.alloc("grad logits", p * n * s.V)
        t.free("grad logits fp32")


def optimizer_transient(N: int, p: int, optimizer: str, shapes: list[tuple[int, ...]] | None = None) -> dict[str, int]:
    """The temporaries of one optimizer step at their highest, beside the state and the grads, for
    N trainable parameters of p bytes (`shapes`: the trainable tensors' shapes in registration
    order, needed by adafactor; one device and dtype assumed).

    adam, adamw: torch's foreach step holds one temporary per parameter, the sqrt of exp_avg_sq
      (torch/optim/adam.py, _multi_tensor_adam: torch._foreach_sqrt), p bytes.
    adamw-fused: none (_fused_adam runs torch._fused_adamw_ in place per device and dtype).
    adamw-8bit: none (bitsandbytes' blockwise 8-bit kernel updates p, state and absmax in place:
      bitsandbytes/optim/optimizer.py, Optimizer2State.update_step).
    sgd, sgd-momentum: none (foreach mul_ / add_ in place).
    adafactor (torch/optim/_adafactor.py, _multi_tensor_adafactor): tensors are grouped into
      matrices and 1-D tensors, in the order their kinds first appear. A matrix group holds its
      full variance estimates row_var @ col_var (n·p each) and the row_var means (one element
      each); a 1-D group holds grad² and then a clone of the variance (n·p each). The estimates of
      the group before stay referenced (`var_estimates`, `updates`) until the next group rebinds
      them.
    """
    if optimizer in ("adam", "adamw"):
        return {"foreach sqrt(v) N·p": N * p}
    if optimizer != "adafactor":
        return {}
    if shapes is None:
        raise ValueError("adafactor's step temporaries depend on each tensor's shape; no shapes were given")
    matrices = sum(M.numel(s) for s in shapes if len(s) > 1) * p
    means = sum(1 for s in shapes if len(s) > 1) * p
    vectors = sum(M.numel(s) for s in shapes if len(s) <= 1) * p
    if not vectors or not matrices:
        return {"var estimates n·p": matrices + vectors, "row_var means p per matrix": means if matrices else 0}
    if len(shapes[0]) > 1:  # matrices first: their estimates stay while the 1-D group's grad² (then clones) exist
        if vectors >= means:
            return {"matrix var estimates n·p": matrices, "1-D grad² n·p": vectors}
        return {"matrix var estimates n·p": matrices, "row_var means p per matrix": means}
    return {"1-D var estimates n·p": vectors, "matrix var estimates n·p": matrices, "row_var means p per matrix": means}


def layer_stretch(i: int, L: int, checkpointing: bool) -> str:
    """The name of the moment layer i's backward is part of."""
    where = "last layer's" if i == L - 1 else "first layer's" if i == 0 else "middle layers'"
    return f"{where} recompute and backward" if checkpointing else f"{where} backward"


def train_tape(s, spec, state: int, N: int, opts: Options) -> Tape:
    """The training step of `spec` played on a tape from the forward/backward boundary to the
    optimizer step: `state` bytes of params, buffers and optimizer state throughout, the family's
    and the loss's tensors at the boundary (with checkpointing each layer keeps its input and the
    CPU RNG state alone, and its backward starts by making again what it kept), the logits at the forward's end, then
    the loss's, head's, layers', embedding's backward and the foreach step. Its `highest` holds
    the moments of the peak."""
    tr = family_of(s.model_type).training
    layer = layer_saved(s, spec, opts)
    t = Tape({"state": state}, stretch="forward end")
    for i in range(s.L):
        kept = checkpointed(s, spec) if spec.checkpointing else layer
        for k, v in kept.items():
            t.alloc(f"layer {i}: {k}", v)
    for k, v in {**tr.outside_saved(s, spec, opts), **loss_saved(s, spec)}.items():
        t.alloc(k, v)
    logits = {**logits_transient(s, spec), **(tr.forward_end(s, spec) if tr.forward_end else {})}
    for k, v in logits.items():
        t.alloc(k, v)
    t.free(*logits)
    t.enter("start of backward")
    loss_backward(t, s, spec)
    tr.head_backward(t, s, spec)
    for i in reversed(range(s.L)):
        t.enter(layer_stretch(i, s.L, spec.checkpointing))
        tr.layer_backward(t, i, s, spec, opts)
        if spec.checkpointing:
            t.free(*(k for k in (f"layer {i}: layer input", f"layer {i}: CPU RNG state") if k in t.live))
    t.enter("embedding backward")
    tr.embedding_backward(t, s, spec)
    t.free("grad loss", "loss")
    if spec.optimizer != "none":
        t.enter("optimizer step")
        pw = weight_bytes(spec.dtype, spec.precision)
        for k, v in optimizer_transient(N, pw, spec.optimizer).items():
            t.alloc(k, v)
    return t


def checkpointed(s, spec) -> dict[str, int]:
    """What a checkpointed layer keeps from its forward to its recompute: its input (n·h in the
    residual stream's dtype) and the CPU RNG state torch.utils.checkpoint saves to replay it (host
    memory on a GPU: add_gpu_terms takes it off)."""
    stream = FP32 if spec.precision == "mixed" else dtype_bytes(spec.dtype)
    return {"layer input": spec.batch * spec.seq * s.h * stream, "CPU RNG state": M.CPU_RNG_STATE_BYTES}


def layer_saved(s, spec, opts: Options) -> dict[str, int]:
    """What one decoder layer keeps for backward without checkpointing, tensor by tensor: what its
    forward (the family's `layer_forward`) leaves live, its input aside (kept, where it is, by
    the layer's first norm)."""
    n = spec.batch * spec.seq
    stream = FP32 if spec.precision == "mixed" else dtype_bytes(spec.dtype)
    t = Tape({"layer 0: layer input": n * s.h * stream})
    family_of(s.model_type).training.layer_forward(t, 0, s, spec, opts)
    return {k.removeprefix("layer 0: "): v for k, v in t.live.items() if k != "layer 0: layer input"}


def activations(s, spec, opts: Options) -> dict[str, int]:
    """Bytes live at the forward/backward boundary beyond the persistent state (training): each
    layer's kept tensors (with checkpointing its input alone, n·h in the residual stream's
    dtype), the family's others and the loss's."""
    tr = family_of(s.model_type).training
    layer = checkpointed(s, spec) if spec.checkpointing else layer_saved(s, spec, opts)
    return {**{f"L × {k}": s.L * v for k, v in layer.items()}, **tr.outside_saved(s, spec, opts), **loss_saved(s, spec)}


def covered(s, spec, opts: Options = Options()) -> str | None:
    """None if the predictor covers this run (with the config's `opts`: dropout, activation);
    otherwise why not (one line)."""
    if spec.mode in INFERENCE_MODES:
        return inference_covered(s, spec)
    family = family_of(s.model_type)
    if family is None:
        return not_in_registry(s.model_type)
    if family.training is None:
        derived = ", ".join(f.label for f in FAMILIES if f.training)
        return f"training terms are derived for {derived}; not for {family.label} ({s.model_type})"
    return family.training.gaps(s, spec, opts) if family.training.gaps else None


def peak_covered(s, spec, opts: Options = Options()) -> str | None:
    """None if the predictor also gives the peak; otherwise why not."""
    if spec.mode in INFERENCE_MODES:
        return inference_covered(s, spec)
    if spec.mode != "train":
        return f"the {spec.mode} peak beyond the persistent terms is not derived"
    return covered(s, spec, opts)


@dataclass
class Prediction:
    """What the corrected predictor says of one run: bytes by category, term by term, and the peak."""

    terms: dict[str, dict[str, int]]  # category (params, buffers, grads, optimizer, activations, kv_cache) -> named terms in bytes
    moments: dict[str, int] = field(default_factory=dict)  # candidate peak moment -> total bytes live then
    peak_bytes: int | None = None  # the largest moment; None where peak_not_covered says why
    peak_moment: str | None = None  # the moment the peak is at
    not_covered: str | None = None  # why the activations are not predicted for this run (None: they are)
    peak_not_covered: str | None = None  # why the peak is not predicted for this run (None: it is)
    cuda_terms: dict[str, int] = field(default_factory=dict)  # what a GPU adds at the peak moment (gpu_terms), in the moments
    traced_peak_bytes: int | None = None  # the peak of the trace alone (what the CPU allocator sees), without cuda_terms
    moment_terms: dict[str, dict[str, int]] = field(default_factory=dict)  # generate, forward: each moment's named terms
    # beyond the weights and buffers (the moments hold their sum plus params and buffers, and the CUDA terms with gpu_terms)

    def total(self, category: str) -> int | None:
        """The bytes of one category, or None where it is not predicted."""
        return total(self.terms[category]) if category in self.terms else None


def predict(s, spec, T: int, opts: Options = Options()) -> Prediction:
    """The Prediction for the run `spec` on Shape `s`; T = parameter tensors (Adam's step counters);
    opts = what the config says beyond the Shape (`options_of`: dropout, activation; none and the
    default by default). Activation and peak terms only where `covered` / `peak_covered` is None;
    a model_type the registry does not cover has no closed form (ValueError)."""
    family = family_of(s.model_type)
    N = total(exact(s))
    pw = weight_bytes(spec.dtype, spec.precision)
    out = Prediction(terms={"params": M.weights(N, pw), "buffers": family.buffers(s, pw)},
                     not_covered=covered(s, spec, opts), peak_not_covered=peak_covered(s, spec, opts))
    terms = out.terms
    if spec.mode == "train":
        terms["grads"] = M.gradients(N, pw)
        terms["optimizer"] = {} if spec.optimizer == "none" else M.optimizer_state(N, T, pw, spec.optimizer)
        if out.not_covered is None:
            terms["activations"] = activations(s, spec, opts)
        if out.peak_not_covered is None:
            state = out.total("params") + out.total("buffers") + out.total("optimizer")
            out.moments = dict(train_tape(s, spec, state, N, opts).highest)
    elif spec.mode in INFERENCE_MODES:
        add_inference(out, s, spec, family)
    if out.moments:
        out.traced_peak_bytes = max(out.moments.values())
        if spec.gpu_terms and spec.backend != "cpu":
            add_gpu_terms(out, s, spec)
        out.peak_moment = max(out.moments, key=out.moments.get)
        out.peak_bytes = out.moments[out.peak_moment]
    return out


def add_gpu_terms(pred: Prediction, s, spec) -> None:
    """Add to each training moment what `torch.cuda.max_memory_allocated` counts beyond the traced
    tensors, as verify/formulas/cuda.py derives it (the fake backend books the same terms op by op):
    the cuBLAS workspaces of the main and the autograd thread, at every moment; less Adam's step
    counters, host-resident on a GPU; and, for the layers whose saved tensors are still live at a
    moment (all of them until the last layer's backward, all but the last through the middle
    layers', one through the first layer's), LayerNorm's fp32 statistics in half precision and,
    less, checkpointing's CPU RNG states (host memory on a GPU). The allocator's 512-byte
    rounding (a few hundred KB at most over a step's live tensors) is not predicted.

    Generation and the no-grad forward (no autograd thread): one cuBLAS workspace, allocated at the
    first matmul (layer 0's first projection, before every moment); no moment falls inside a
    LayerNorm, whose statistics no-grad frees at once."""
    gpu = C.ARCHS[spec.gpu_arch]
    if spec.mode in INFERENCE_MODES:  # no autograd thread: one workspace, from the first projection on
        workspace = C.blas_workspaces(gpu.sm[0], threads=1)
        for moment in pred.moments:
            pred.moments[moment] += total(workspace)
        pred.cuda_terms = dict(workspace)
        return
    steps = pred.terms["optimizer"].get("step 4·T", 0) // M.STEP_BYTES
    always = {**C.blas_workspaces(gpu.sm[0], threads=2), **(C.host_optimizer_scalars(steps) if steps else {})}
    per_layer = s.norms_per_layer if s.norm == "layernorm" else 0
    outside = int(bool(s.final_norm)) + int(bool(s.embed_norm)) if s.norm == "layernorm" else 0
    p = dtype_bytes(spec.dtype) if spec.precision == "pure" else FP32  # autocast runs layer_norm in fp32

    def live_terms(layers: int, norms_outside: int) -> dict[str, int]:
        terms = C.layernorm_stats(spec.batch * spec.seq, p, layers * per_layer + norms_outside)
        if spec.checkpointing:
            terms[f"CPU RNG states of {layers} checkpointed layers, host memory on a GPU"] = -layers * M.CPU_RNG_STATE_BYTES
        return {k: v for k, v in terms.items() if v}

    def layers_live(moment: str) -> tuple[int, int]:
        if moment.startswith("middle layers'"):
            return s.L - 1, 0
        if moment.startswith("first layer's"):
            return 1, 0
        if moment in ("embedding backward", "optimizer step"):
            return 0, 0
        return s.L, outside  # forward end, start of backward, the last layer's backward

    extra = {moment: {**always, **live_terms(*layers_live(moment))} for moment in pred.moments}
    for moment, terms in extra.items():
        pred.moments[moment] += total(terms)
    pred.cuda_terms = extra[max(pred.moments, key=pred.moments.get)]


# --- generation and the no-grad forward -------------------------------------------------------

INFERENCE_MODES = ("generate", "forward")  # the modes whose moments the families give (generation.py)


def inference_covered(s, spec) -> str | None:
    """None if the predictor gives the peak of this generation or no-grad forward; otherwise why not."""
    from verify.families import generation as G

    family = family_of(s.model_type)
    if family is None:
        return not_in_registry(s.model_type)
    moments = family.generation_moments if spec.mode == "generate" else family.forward_moments
    if moments is None:
        derived = ", ".join(f.label for f in FAMILIES if (f.generation_moments if spec.mode == "generate" else f.forward_moments))
        return f"the {spec.mode} peak is derived for {derived}, not {s.model_type}"
    if spec.attn not in ("eager", "sdpa"):
        return f"the {spec.mode} peak is derived for eager and sdpa attention, not {spec.attn}"
    if spec.quant != "none":
        return f"the {spec.mode} peak is derived for unquantized weights, not --quant {spec.quant}"
    return G.activation_gap(s) or (family.inference_gaps(s, spec) if family.inference_gaps else None)


def add_inference(out: Prediction, s, spec, family) -> None:
    """The terms and moments of a generation or a no-grad forward: the KV cache the generation ends
    with (exact: every layer's storage, verify/families/generation.py final_cache_positions: S + N − 1
    positions, W for a sliding window once decoding starts, a static cache's preallocated length),
    and, where inference_covered is None, the family's moments plus the weights and buffers."""
    from verify.families import generation as G

    r = G.run_of(s, spec)
    if spec.mode == "generate":
        out.terms["kv_cache"] = M.kv_cache(s.L, r.B, G.final_cache_positions(r), s.kv_cache_heads, s.head_dim, r.p)
    if out.peak_not_covered is not None:
        return
    moments = (family.generation_moments if spec.mode == "generate" else family.forward_moments)(s, spec)
    weights = out.total("params") + out.total("buffers")
    out.moment_terms = {name: {k: v for k, v in terms.items() if v} for name, terms in moments.items()}
    out.moments = {name: weights + total(terms) for name, terms in moments.items()}


def inputs_for(model: str) -> tuple:
    """(Shape, T parameter tensors, Options) of a bundled model or config path: what
    `predict` needs besides the spec. T comes from a meta build (no memory)."""
    from verify.build import build
    from verify.configs import load_config, shape

    config = load_config(model)
    T = len(list(build(config, device="meta").parameters()))
    return shape(config), T, options_of(config)


def options_of(config) -> Options:
    """What the config says beyond its Shape that the training terms read (dropout, activation),
    as its family's modules apply it."""
    family = family_of(config.model_type)
    if family is not None and family.training is not None and family.training.options is not None:
        return family.training.options(config)
    return Options()


def prediction_for(spec) -> Prediction:
    """`predict` for a MemorySpec, its inputs gathered from spec.model (attention: the one the run
    builds, transformers' choice where spec.attn is None)."""
    from dataclasses import replace

    from verify.measure.memory import attention_used

    s, T, opts = inputs_for(spec.model)
    if spec.attn is None:
        spec = replace(spec, attn=attention_used(spec))
    return predict(s, spec, T, opts)
