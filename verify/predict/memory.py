"""The corrected predictor: the memory of a training step, a generation or a no-grad forward, term
by term, as the fake-backend measurements support it. Pure arithmetic on a Shape and a MemorySpec
(no torch).

Persistent categories are exact (params, grads, optimizer state, KV cache; buffers as the
model's family states them). Activations come from the family (verify/families): counted tensor
by tensor from what autograd saves in the LLaMA family's modules (llama.py: RMSNorm, RoPE, gated
MLP, no dropout; eager and SDPA attention, pure precision, autocast, checkpointing) and GPT-2's
(gpt2.py). The peak is the largest of three moments the measurements show (the start of
backward, the embedding's backward, the foreach optimizer step). A fourth moment is not
modelled: the backward of the first layer's input norm, with all grads but the embedding's and
that layer's fp32 temporaries live; it can top the others by a little (Llama-2-70B bf16 SGD,
S = 4096: the prediction is 0.15 % low). Not covered, and said so by `covered` /
`peak_covered` rather than guessed: families without derived activation terms (BLOOM, OPT, MoE
routing, ...), model_types the registry does not cover, the gaps a family names (GPT-2 under
autocast), and the peak under checkpointing (the recompute inside backward).

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

Symbols: n = B·S tokens, h hidden, V vocabulary, p bytes of the compute dtype; fp32 tensors are
4 bytes whatever p is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from verify.families import FAMILIES, family_of, not_in_registry
from verify.families.blocks import FP32
from verify.formulas import cuda as C
from verify.formulas import memory as M
from verify.units import INDEX_BYTES, dtype_bytes
from verify.formulas.params import exact, total


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


def covered(s, spec) -> str | None:
    """None if the predictor covers this run; otherwise why not (one line)."""
    if spec.mode in INFERENCE_MODES:
        return inference_covered(s, spec)
    family = family_of(s.model_type)
    if family is None:
        return not_in_registry(s.model_type)
    if family.activations is None:
        derived = " and ".join(f"{f.label} ({', '.join(f.model_types)})" if len(f.model_types) > 1 else f.label
                               for f in FAMILIES if f.activations)
        return f"activations are derived for {derived}, not {s.model_type}"
    return family.activation_gaps(s, spec) if family.activation_gaps else None


def peak_covered(s, spec) -> str | None:
    """None if the predictor also gives the peak; otherwise why not."""
    if spec.mode == "train" and spec.checkpointing:
        return "the peak under checkpointing (recompute inside backward) is not derived"
    if spec.mode in INFERENCE_MODES:
        return inference_covered(s, spec)
    if spec.mode != "train":
        return f"the {spec.mode} peak beyond the persistent terms is not derived"
    return covered(s, spec)


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


def predict(s, spec, T: int, dropout: tuple[float, float, float] = (0.1, 0.1, 0.1)) -> Prediction:
    """The Prediction for the run `spec` on Shape `s`; T = parameter tensors (Adam's step counters);
    dropout = GPT-2's (embedding, attention, residual) probabilities (its config's embd_pdrop,
    attn_pdrop, resid_pdrop). Activation and peak terms only where `covered` / `peak_covered` is
    None; a model_type the registry does not cover has no closed form (ValueError)."""
    family = family_of(s.model_type)
    N = total(exact(s))
    p = dtype_bytes(spec.dtype)
    pw = FP32 if spec.precision == "mixed" else p
    B, S = spec.batch, spec.seq
    out = Prediction(terms={"params": M.weights(N, pw), "buffers": family.buffers(s, pw)},
                     not_covered=covered(s, spec), peak_not_covered=peak_covered(s, spec))
    terms = out.terms
    if spec.mode == "train":
        terms["grads"] = M.gradients(N, pw)
        terms["optimizer"] = M.optimizer_state(N, T, pw, spec.optimizer)
        if out.not_covered is None:
            terms["activations"] = family.activations(s, spec, dropout)
        if out.peak_not_covered is None:
            state = out.total("params") + out.total("buffers") + out.total("optimizer")
            ids = INDEX_BYTES * B * S
            out.moments = {
                "start of backward": state + out.total("activations") + total(backward_start(s, spec)),
                "embedding backward": state + out.total("grads") + ids + total(embedding_backward(s, spec)),
                "optimizer step": state + out.total("grads") + total(optimizer_transient(N, pw, spec.optimizer)) + ids,
            }
    elif spec.mode in INFERENCE_MODES:
        add_inference(out, s, spec, family)
    if out.moments:
        out.traced_peak_bytes = max(out.moments.values())
        if spec.gpu_terms and spec.backend != "cpu":
            add_gpu_terms(out, s, spec)
        out.peak_moment = max(out.moments, key=out.moments.get)
        out.peak_bytes = out.moments[out.peak_moment]
    return out


def add_gpu_terms(pred: Prediction, s, spec, gpu=C.DEFAULT_GPU) -> None:
    """Add to each training moment what `torch.cuda.max_memory_allocated` counts beyond the traced
    tensors, as verify/formulas/cuda.py derives it (the fake backend books the same terms op by op):
    the cuBLAS workspaces of the main and the autograd thread, at every moment; LayerNorm's fp32
    statistics in half precision while the forward's saved tensors live (the start of backward);
    less Adam's step counters, which live in host memory on a GPU. The allocator's 512-byte
    rounding (a few hundred KB at most over a step's live tensors) is not predicted.

    Generation and the no-grad forward (no autograd thread): one cuBLAS workspace, allocated at the
    first matmul (layer 0's first projection, before every moment); no moment falls inside a
    LayerNorm, whose statistics no-grad frees at once. Rounding: not predicted either (a few KB
    over the live tensors of the tiny configurations, whose peak the 32 MiB workspace dominates)."""
    if spec.mode in INFERENCE_MODES:
        workspace = C.blas_workspaces(gpu.sm[0], threads=1)
        for moment in pred.moments:
            pred.moments[moment] += total(workspace)
        pred.cuda_terms = dict(workspace)
        return
    steps = pred.terms["optimizer"].get("step 4·T", 0) // M.STEP_BYTES  # Adam's step counters: host-resident on a GPU
    workspaces = {**C.blas_workspaces(gpu.sm[0], threads=2), **(C.host_optimizer_scalars(steps) if steps else {})}
    layernorms = s.L * s.norms_per_layer + int(bool(s.final_norm)) + int(bool(s.embed_norm)) if s.norm == "layernorm" else 0
    p = dtype_bytes(spec.dtype) if spec.precision == "pure" else FP32  # autocast runs layer_norm in fp32
    stats = C.layernorm_stats(spec.batch * spec.seq, p, layernorms)
    for moment in pred.moments:
        pred.moments[moment] += total(workspaces) + (total(stats) if moment == "start of backward" else 0)
    peak = max(pred.moments, key=pred.moments.get)
    pred.cuda_terms = {**workspaces, **(stats if peak == "start of backward" and total(stats) else {})}


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
    """(Shape, T parameter tensors, GPT-2 dropout probabilities) of a bundled model or config path:
    what `predict` needs besides the spec. T comes from a meta build (no memory)."""
    from verify.build import build
    from verify.configs import load_config, shape

    config = load_config(model)
    T = len(list(build(config, device="meta").parameters()))
    dropout = tuple(getattr(config, k, 0.0) or 0.0 for k in ("embd_pdrop", "attn_pdrop", "resid_pdrop"))
    return shape(config), T, dropout


def prediction_for(spec) -> Prediction:
    """`predict` for a MemorySpec, its inputs gathered from spec.model (attention: the one the run
    builds, transformers' choice where spec.attn is None)."""
    from dataclasses import replace

    from verify.measure.memory import attention_used

    s, T, dropout = inputs_for(spec.model)
    if spec.attn is None:
        spec = replace(spec, attn=attention_used(spec))
    return predict(s, spec, T, dropout)
