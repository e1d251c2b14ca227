"""The fake backend: a training step or a generation traced under FakeTensorMode on the CPU, every
storage counted by the Tracker, nothing real allocated; any model size on any machine.

`run(spec, device="cpu", tracker=...)` runs the very same code on real CPU tensors, which is what
the cpu backend (cpu.py: the CPU allocator's own peak) calls and how the tests check the fake
figures against reality; `run(spec, device="cuda", tracker=...)` is what the cuda backend calls. Off the GPU, two adjustments make the trace count what a GPU step keeps:
transformers is given the answer a real run gets to a data-dependent mask question
(`_as_real_runs`), and CUDA's kernel choices are taken where the CPU's keep other tensors
(`CudaKernelChoices`: dropout masks, SDPA with dropout).

Measured: the second training step (the first creates the optimizer state), or a generation of
new_tokens tokens (the prefill and new_tokens - 1 decode steps): transformers' generate() on real
tensors, its written-out loop on fake ones (steps.generate_greedy), which traces the decode steps
whose memory can differ and grows the cache through the others. Known differences from a CUDA run that remain: buffers allocated
inside a kernel are not tensors the tracker sees (cuBLAS and flash workspaces, CUDA's
embedding-backward partial sums), and LayerNorm's mean and 1/std are kept in the input dtype
here (fp32 on CUDA: 2·n bytes more per LayerNorm in half precision).
"""

from __future__ import annotations

import contextlib
import time

import torch

from verify.measure.memory import Category, MemoryResult, MemorySpec
from verify.measure.steps import (Hooks, autocast_context, cache_tensors, forward_step, generate_greedy, generate_hf, prepare_training,
                                  train_step)
from verify.measure.tracker import Tracker


class TraceError(RuntimeError):
    """The tracer cannot run this architecture or step; the message says why in one line."""


def measure(spec: MemorySpec) -> MemoryResult:
    """Trace `spec` on fake tensors and return bytes by category."""
    return run(spec, device="fake")


def run(spec: MemorySpec, device: str = "fake", config=None, tracker: Tracker | None = None, every_step: bool = False) -> MemoryResult:
    """Run `spec` on `device` ("fake": FakeTensorMode on the CPU; "cpu": real CPU tensors, for the cpu
    backend; "cuda": real GPU tensors, for the cuda backend) under `tracker` (a fresh Tracker if None).
    `config`: a transformers config to use instead of loading `spec.model` (sweeps over L, h).
    On fake and cpu tensors CUDA's kernel choices are taken (CudaKernelChoices). Generation runs
    transformers' generate() on real tensors and its written-out loop on fake ones, which traces the
    prefill, the first and the last decode step only (`every_step`: every one of them). Raises
    TraceError (one line) where the model cannot be traced."""
    from verify.build import build
    from verify.configs import load_config, shape
    from verify.torchapi import fake_mode
    from verify.units import torch_dtype, weight_dtype

    if device not in ("fake", "cpu", "cuda"):
        raise ValueError(f"device {device!r}: choose fake, cpu or cuda")
    config = config if config is not None else load_config(spec.model)
    compute = torch_dtype(spec.dtype)
    weights = weight_dtype(spec.dtype, spec.precision)
    if device == "fake" and shape(config).experts > 1 and weights != torch.bfloat16:
        raise TraceError(f"{spec.model}: MoE experts run torch grouped_mm, whose fake-tensor kernel takes bf16 only; "
                         "use --dtype bf16 --precision pure")
    mode = fake_mode() if device == "fake" else contextlib.nullcontext()
    t0 = time.perf_counter()
    try:
        model = build(config, device=device, dtype=weights, attn=spec.attn, fake_mode=mode if device == "fake" else None)
    except ValueError as e:
        if "attention implementation" in str(e):
            raise TraceError(f"{spec.model}: transformers has no {spec.attn} attention for {config.model_type}; use --attn eager") from e
        raise
    try:
        t_build = time.perf_counter() - t0
        kernels = contextlib.nullcontext() if device == "cuda" else CudaKernelChoices()
        tracker = tracker if tracker is not None else Tracker()
        with mode, _as_real_runs(device), kernels, tracker:
            tracker.add(list(model.buffers()), Category.BUFFERS)
            tracker.add(list(model.parameters()), Category.PARAMS)
            ids = torch.randint(0, config.vocab_size, (spec.batch, spec.seq), dtype=torch.long,
                                device=next(model.parameters()).device)
            if spec.mode == "train":
                fields = _train(model, spec, compute, ids, tracker, emulate=device != "cuda")
            elif spec.mode == "forward":
                fields = _forward(model, ids, tracker)
            else:
                fields = _generate(model, spec, ids, tracker, device, every_step)
    except torch.OutOfMemoryError:
        raise  # a real device ran out: the caller records it as a result
    except (NotImplementedError, RuntimeError, TypeError, AttributeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TraceError(f"{spec.model}: cannot trace a {spec.mode} step on {device} tensors ({type(e).__name__}: {first[:200]})") from e
    t_total = time.perf_counter() - t0
    at_peak = {k: v for k, v in tracker.at_peak.items() if v}
    return MemoryResult(
        spec=spec.as_dict(),
        params_bytes=tracker.bytes(Category.PARAMS),
        buffers_bytes=tracker.bytes(Category.BUFFERS),
        peak_bytes=tracker.peak,
        transient_bytes=at_peak.get(Category.TRANSIENT.value, 0),
        at_peak=at_peak,
        peak_phase=tracker.peak_phase,
        phases=dict(tracker.phase_peaks),
        snapshots=dict(tracker.snapshots),
        extra={"device": device, "build_s": round(t_build, 3), "trace_s": round(t_total - t_build, 3)},
        **fields,
    )


@contextlib.contextmanager
def _as_real_runs(device: str):
    """Make transformers take, on fake tensors, the path it takes on real ones.

    transformers' mask code asks whether the position ids describe several packed sequences, a
    data-dependent question it does not ask of fake tensors (it then builds a full B x S x S mask
    instead of letting SDPA run causal). Our inputs are one unpacked sequence per row, so the
    answer a real run gets is "not packed" (None); the fake run is given that answer.
    """
    if device != "fake":
        yield
        return
    from unittest import mock

    from transformers import masking_utils

    with mock.patch.object(masking_utils, "find_packed_sequence_indices", lambda position_ids: None):
        yield


class CudaKernelChoices(torch.overrides.TorchFunctionMode):
    """Where torch's CPU kernels keep different tensors than its CUDA kernels, take the CUDA choice,
    so that the CPU-device trace counts what a GPU step keeps (the target of this backend).

    - dropout: on CPU `F.dropout` multiplies by a mask in the input's dtype and autograd keeps
      that mask; CUDA runs the fused `native_dropout`, which keeps a 1-byte bool mask.
    - SDPA with dropout: on CPU it falls back to the math kernel, which keeps the a·S·S
      probabilities; CUDA's flash kernel applies dropout inside and keeps only its log-sum-exp
      and RNG state, the same tensors as without dropout.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.dropout:
            x, p = args[0], kwargs.get("p", args[1] if len(args) > 1 else 0.5)
            training = kwargs.get("training", args[2] if len(args) > 2 else True)
            inplace = kwargs.get("inplace", args[3] if len(args) > 3 else False)
            if training and 0 < p < 1 and not inplace and x.numel() > 0:
                return torch.native_dropout(x, p, True)[0]
        if func is torch.nn.functional.scaled_dot_product_attention and kwargs.get("dropout_p", 0.0):
            kwargs = {**kwargs, "dropout_p": 0.0}
        return func(*args, **kwargs)


def _train(model, spec: MemorySpec, compute: torch.dtype, ids, tracker: Tracker, emulate: bool = True) -> dict:
    # the recompute of checkpointed layers runs inside backward, outside the function mode: give it its own
    context_fn = (lambda: (contextlib.nullcontext(), CudaKernelChoices())) if emulate else None
    optimizer = prepare_training(model, spec.optimizer, spec.checkpointing, context_fn=context_fn)
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.register_post_accumulate_grad_hook(lambda p: tracker.relabel(p.grad, Category.GRADS))
    tracker.add(ids, Category.ACTIVATIONS)
    device_type = params[0].device.type

    # step 1 creates the optimizer state; step 2 is the one measured
    train_step(model, optimizer, ids, autocast_context(spec.precision, compute, device_type), Hooks(mark=tracker.mark), loss=spec.loss)
    if optimizer is not None:
        tracker.relabel([t for s in optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)], Category.OPTIMIZER)
    tracker.reset_peak()
    grads = {}

    def after_step():
        tracker.snapshot("steady")
        grads["bytes"] = tracker.bytes(Category.GRADS)

    train_step(model, optimizer, ids, autocast_context(spec.precision, compute, device_type),
               Hooks(mark=tracker.mark, after_forward=lambda loss: tracker.snapshot("forward_end"), after_step=after_step),
               loss=spec.loss)
    boundary = tracker.snapshots["forward_end"]
    persistent = sum(boundary.get(c.value, 0) for c in (Category.PARAMS, Category.GRADS, Category.OPTIMIZER, Category.BUFFERS))
    return {
        "grads_bytes": grads["bytes"],
        "optimizer_bytes": tracker.bytes(Category.OPTIMIZER),
        "activations_bytes": boundary["total"] - persistent,
        "kv_cache_bytes": 0,
    }


def _forward(model, ids, tracker: Tracker) -> dict:
    model.eval()
    tracker.add(ids, Category.ACTIVATIONS)
    tracker.reset_peak()
    logits = forward_step(model, ids, Hooks(mark=tracker.mark))
    weights = tracker.bytes(Category.PARAMS) + tracker.bytes(Category.BUFFERS)
    del logits
    return {"grads_bytes": 0, "optimizer_bytes": 0, "activations_bytes": tracker.peak - weights, "kv_cache_bytes": 0}


def _generate(model, spec: MemorySpec, ids, tracker: Tracker, device: str, every_step: bool = False) -> dict:
    model.eval()
    mask = torch.ones_like(ids)  # the attention mask a tokenizer returns beside the ids
    tracker.add([ids, mask], Category.ACTIVATIONS)

    def label(cache):
        tracker.relabel(cache_tensors(cache), Category.KV_CACHE)

    hooks = Hooks(mark=tracker.mark, after_prefill=label, after_token=label, skip=lambda: _peak_kept(tracker))
    tracker.reset_peak()
    if device == "fake":
        cache = generate_greedy(model, ids, spec.new_tokens, hooks, attention_mask=mask, cache=spec.cache, every_step=every_step)
    else:
        cache = generate_hf(model, ids, mask, spec.new_tokens, hooks, cache=spec.cache)
    label(cache)
    kv = tracker.bytes(Category.KV_CACHE)
    weights = tracker.bytes(Category.PARAMS) + tracker.bytes(Category.BUFFERS)
    return {  # activations: what the peak holds beyond the weights and the final KV cache
        "grads_bytes": 0,
        "optimizer_bytes": 0,
        "activations_bytes": max(tracker.peak - weights - kv, 0),
        "kv_cache_bytes": kv,
    }


@contextlib.contextmanager
def _peak_kept(tracker: Tracker):
    """Around the work that stands in for decode steps not traced: what it leaves live counts from
    then on; the peaks (overall, per phase) are those from before it, as no real step holds its
    temporaries."""
    kept = tracker.peak, dict(tracker.at_peak), tracker.peak_phase, dict(tracker.phase_peaks)
    yield
    tracker.peak, tracker.at_peak, tracker.peak_phase, tracker.phase_peaks = kept
