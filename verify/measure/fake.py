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
whose memory can differ and grows the cache through the others.

What a GPU adds (spec.gpu_terms, on by default off the GPU): the trace alone is `traced_peak_bytes`;
the tracker also books what `torch.cuda.max_memory_allocated` would count on spec.gpu_arch (cuda_ops:
the allocator's 512-byte rounding, cuBLAS workspaces and its copies of strided operands, LayerNorm's fp32 statistics, the SDPA
kernel CUDA picks, flash and embedding-backward scratch, Adam's host-resident step counters;
verify/formulas/cuda.py cites the source of each), and `peak_bytes` is the peak of that total,
`cuda_terms` its terms at that moment. Not modelled: the cuDNN SDPA workspace (cuDNN sizes it at
run time; counted in extra["cuda_not_modelled"]), cub's sort scratch, and the up-to-1-MiB whole
blocks of a reused cache (bounded in extra["allocator_whole_block_bound_bytes"]).

`--attn flash` is flash-attn 2 as transformers' flash_attention_2 calls it, emulated
(FLASH_ATTENTION): no mask for causal unpadded batches, and exactly the tensors flash-attn 2
allocates, saves and frees.
"""

from __future__ import annotations

import contextlib
import time

import torch

from verify.formulas import cuda as C
from verify.formulas.params import total
from verify.measure.memory import Category, MemoryResult, MemorySpec
from verify.measure.quant import as_on_cuda, bitsandbytes, bnb_state_tensors, cuda_bnb
from verify.measure.steps import (Hooks, autocast_context, cache_tensors, forward_step, generate_greedy, generate_hf, prepare_training,
                                  train_step)
from verify.measure.tracker import Tracker
from verify.torchapi import TorchDispatchMode, is_fake, storage_bytes


FLASH_ATTENTION = "fa2_emulated"  # our name in transformers' AttentionInterface ("flash" in it would make
# transformers import the flash_attn package)


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
    from verify.build import LoraSettings, build
    from verify.configs import load_config, shape
    from verify.torchapi import fake_mode
    from verify.units import torch_dtype, weight_dtype

    if device not in ("fake", "cpu", "cuda"):
        raise ValueError(f"device {device!r}: choose fake, cpu or cuda")
    config = config if config is not None else load_config(spec.model)
    compute = torch_dtype(spec.dtype)
    lora = spec.mode == "lora"
    quant = spec.quant != "none"  # a LoRA base or inference weights quantized by bitsandbytes
    weights = compute if lora else weight_dtype(spec.dtype, spec.precision)  # a frozen LoRA base needs no fp32 master copy
    if device == "fake" and shape(config).experts > 1 and weights != torch.bfloat16:
        raise TraceError(f"{spec.model}: MoE experts run torch grouped_mm, whose fake-tensor kernel takes bf16 only; "
                         "use --dtype bf16 --precision pure")
    if lora or quant or spec.optimizer == "adamw-8bit":
        bitsandbytes()  # imported now: its module-level lookup tables must be real tensors, made outside the trace
    mode = fake_mode() if device == "fake" else contextlib.nullcontext()
    t0 = time.perf_counter()
    try:
        model = build(config, device=device, dtype=weights, attn=spec.attn, fake_mode=mode if device == "fake" else None,
                      lora=LoraSettings(spec.lora_rank, spec.lora_targets, spec.quant) if lora else None,
                      quant="none" if lora else spec.quant)
    except ValueError as e:
        if "attention implementation" in str(e):
            raise TraceError(f"{spec.model}: transformers has no {spec.attn} attention for {config.model_type}; use --attn eager") from e
        raise
    try:
        t_build = time.perf_counter() - t0
        kernels = contextlib.nullcontext() if device == "cuda" else CudaKernelChoices()
        bnb_kernels = cuda_bnb() if quant and device != "cuda" else contextlib.nullcontext()
        if quant and device != "cuda":
            as_on_cuda(model)
        tracker = tracker if tracker is not None else Tracker()
        gpu = spec.gpu_terms and device == "fake"  # real CPU and GPU runs measure, not model
        arch = C.ARCHS[spec.gpu_arch]
        notes: dict[str, int] = {}
        if gpu:
            tracker.model_gpu(cuda_ops(arch, notes))
        with mode, _as_real_runs(device), kernels, tracker, bnb_kernels:
            tracker.add(list(model.buffers()), Category.BUFFERS)
            tracker.add(list(model.parameters()), Category.PARAMS)
            quant_state = bnb_state_tensors(model) if quant else []
            tracker.add(quant_state, Category.PARAMS)  # absmax, codes, scales: storage of the quantized weights
            ids = torch.randint(0, config.vocab_size, (spec.batch, spec.seq), dtype=torch.long,
                                device=next(model.parameters()).device)
            if spec.mode in ("train", "lora"):
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
    extra = {"device": device, "build_s": round(t_build, 3), "trace_s": round(t_total - t_build, 3)}
    at_peak = {k: v for k, v in tracker.at_peak.items() if v}
    trainable = [p for p in model.parameters() if p.requires_grad] if spec.mode in ("train", "lora") else []
    if lora:
        extra["lora"] = {"adapter_bytes": storage_bytes(trainable),
                         "frozen_bytes": storage_bytes(p for p in model.parameters() if not p.requires_grad),
                         "quant_state_bytes": storage_bytes(quant_state)}
    peak, peak_phase, terms = tracker.peak, tracker.peak_phase, {}
    if gpu:
        at = tracker.gpu_peak_at
        terms = {k: v for k, v in at["terms"].items() if v}
        at_peak = {k: v for k, v in at["categories"].items() if v}
        at_peak["cuda_terms"] = sum(terms.values())
        if at["trace"] != tracker.peak:  # the modelled peak came at another moment than the trace's own
            terms["trace below its own peak at this moment"] = at["trace"] - tracker.peak
        peak, peak_phase = tracker.gpu_peak, at["phase"]
        extra.update(gpu=arch.name, cuda_not_modelled=dict(notes),
                     allocator_whole_block_bound_bytes=total(C.whole_block_bound(at["large_storages"])))
    return MemoryResult(
        spec=spec.as_dict(),
        params_bytes=tracker.bytes(Category.PARAMS),
        buffers_bytes=tracker.bytes(Category.BUFFERS),
        peak_bytes=peak,
        traced_peak_bytes=tracker.peak,
        cuda_terms=terms,
        transient_bytes=at_peak.get(Category.TRANSIENT.value, 0),
        at_peak=at_peak,
        peak_phase=peak_phase,
        phases=dict(tracker.phase_peaks),
        snapshots=dict(tracker.snapshots),
        extra=extra,
        trainable_params=sum(p.numel() for p in trainable),
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


@contextlib.contextmanager
def _rng_states_seen(tracker: Tracker):
    """torch.utils.checkpoint keeps the CPU RNG state (torch.get_rng_state(): a 5,056-byte tensor the
    CPU allocator holds) from each checkpointed layer's forward to its recompute; it is made in C++,
    outside any dispatch mode. Count it as the CPU allocator does, and as host memory in the GPU
    model (a GPU run keeps it in host memory too)."""
    original = torch.get_rng_state

    def get_rng_state():
        state = original()
        tracker.add(state, tracker.default_category())
        tracker.host(state)
        return state

    torch.get_rng_state = get_rng_state
    try:
        yield
    finally:
        torch.get_rng_state = original


def _train(model, spec: MemorySpec, compute: torch.dtype, ids, tracker: Tracker, emulate: bool = True) -> dict:
    with _rng_states_seen(tracker) if spec.checkpointing and emulate else contextlib.nullcontext():
        return _train_steps(model, spec, compute, ids, tracker, emulate)


def _train_steps(model, spec: MemorySpec, compute: torch.dtype, ids, tracker: Tracker, emulate: bool) -> dict:
    # the recompute of checkpointed layers runs inside backward, outside the function mode: give it its own
    context_fn = (lambda: (contextlib.nullcontext(), CudaKernelChoices())) if emulate else None
    optimizer = prepare_training(model, spec.optimizer, spec.checkpointing, context_fn=context_fn)
    optimizer = _ScalarsAnswered.around(optimizer) if emulate else optimizer
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.register_post_accumulate_grad_hook(lambda p: tracker.relabel(p.grad, Category.GRADS))
    tracker.add(ids, Category.ACTIVATIONS)
    device_type = params[0].device.type

    # step 1 creates the optimizer state; step 2 is the one measured
    train_step(model, optimizer, ids, autocast_context(spec.precision, compute, device_type), Hooks(mark=tracker.mark), loss=spec.loss)
    if optimizer is not None:
        tracker.relabel([t for s in optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)], Category.OPTIMIZER)
        tracker.host([s["step"] for s in optimizer.state.values() if "step" in s])  # C.host_optimizer_scalars
    tracker.reset_peak()
    grads = {}

    def after_step():
        tracker.snapshot("steady")
        grads["bytes"] = tracker.bytes(Category.GRADS)

    def forward_end(loss):
        snap = tracker.snapshot("forward_end")
        if tracker.gpu_ops is not None:
            snap["cuda_terms"] = tracker.gpu_delta  # what the modelled GPU books beyond the trace then

    train_step(model, optimizer, ids, autocast_context(spec.precision, compute, device_type),
               Hooks(mark=tracker.mark, after_forward=forward_end, after_step=after_step), loss=spec.loss)
    boundary = tracker.snapshots["forward_end"]
    persistent = sum(boundary.get(c.value, 0) for c in (Category.PARAMS, Category.GRADS, Category.OPTIMIZER, Category.BUFFERS))
    return {
        "grads_bytes": grads["bytes"],
        "optimizer_bytes": tracker.bytes(Category.OPTIMIZER),
        "activations_bytes": boundary["total"] - persistent,
        "kv_cache_bytes": 0,
    }


class _ScalarsAnswered(TorchDispatchMode):
    """On fake tensors a scalar read (`.item()`: aten._local_scalar_dense) has no value. torch's
    Adafactor reads its step counters and the norms of parameters and updates that way, only to
    compute its step sizes, which decide no allocation: inside an optimizer step such a read of a
    fake tensor answers 1 (real tensors answer as usual)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default and is_fake(args[0]):
            return True if args[0].dtype == torch.bool else 1.0 if args[0].dtype.is_floating_point else 1
        return func(*args, **(kwargs or {}))

    @staticmethod
    def around(optimizer):
        """`optimizer` (or None) with its step run under this mode."""
        if optimizer is None:
            return None
        step = optimizer.step

        def answered_step(*args, **kwargs):
            with _ScalarsAnswered():
                return step(*args, **kwargs)

        optimizer.step = answered_step
        return optimizer


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


# --- what a GPU adds: the tracker's op handlers --------------------------------------------------


def cuda_ops(gpu: C.Gpu, notes: dict[str, int]) -> dict:
    """Handlers (tracker, args, kwargs, out) that book, after each of these aten ops, what the same
    op books on `gpu` beyond the traced storages (verify/formulas/cuda.py cites each source).
    `notes` counts the calls whose CUDA memory is not modelled (cuDNN attention)."""
    aten = torch.ops.aten
    threads: set[str] = set()

    def matmul(tr, args, kwargs, out):  # C.blas_workspaces: one per thread, from its first matmul on
        thread = "autograd thread" if tr.phase == "backward" else "main thread"
        if thread not in threads:
            threads.add(thread)
            tr.add_term(f"cuBLAS workspace ({thread})", C.cublas_workspace(gpu.sm[0]) + C.cublaslt_workspace(gpu.sm[0]))

    def mm(tr, args, kwargs, out):  # mm(mat1, mat2) / addmm(bias, mat1, mat2): C.cublas_operand_copies
        matmul(tr, args, kwargs, out)
        mats = args[:2] if len(args) == 2 else args[1:3]
        tr.spike(C.cublas_operand_copies([(tuple(t.shape), tuple(t.stride()), t.element_size()) for t in mats]))

    def layer_norm(tr, args, kwargs, out):  # C.layernorm_stats
        p = args[0].element_size()
        if p < 4:
            for stat in out[1:3]:
                tr.attach(stat, "LayerNorm fp32 statistics", stat.numel() * (4 - p))

    def backend(q, dropout, mask) -> str:
        choice = C.sdpa_backend(q.element_size(), q.shape[-1], mask is not None, dropout, gpu)
        if choice == "cudnn":
            notes["cuDNN SDPA calls (workspace sized by cuDNN)"] = notes.get("cuDNN SDPA calls (workspace sized by cuDNN)", 0) + 1
        return choice

    def sdpa_forward(tr, args, kwargs, out):  # _scaled_dot_product_flash_attention_for_cpu(q, k, v, dropout_p, is_causal, attn_mask, scale)
        q = args[0]
        dropout = args[3] if len(args) > 3 else kwargs.get("dropout_p", 0.0)
        choice = backend(q, dropout, kwargs.get("attn_mask", args[5] if len(args) > 5 else None))
        if choice == "flash":
            tr.attach(out[1], "SDPA flash rng_state + offset", total(C.sdpa_flash_forward(1)))
        elif choice == "efficient":
            B, H, S = q.shape[0], q.shape[1], q.shape[2]
            tr.attach(out[1], "SDPA efficient logsumexp padding", total(C.efficient_lse_padding(B, H, S)))

    def sdpa_backward(tr, args, kwargs, out):  # (grad_out, q, k, v, out, logsumexp, dropout_p, is_causal, attn_mask, scale)
        q, k = args[1], args[2]
        dropout = args[6] if len(args) > 6 else kwargs.get("dropout_p", 0.0)
        if backend(q, dropout, kwargs.get("attn_mask", args[8] if len(args) > 8 else None)) == "flash":
            B, H, S_q, d = q.shape
            terms = C.flash_backward_temporaries(B, H, k.shape[1], S_q, k.shape[2], d, q.element_size())
            tr.spike({f"SDPA flash backward {k}": v for k, v in terms.items()})

    def embedding_backward(tr, args, kwargs, out):  # embedding_dense_backward(grad, indices, num_weights, ...)
        grad, indices, num_weights = args[0], args[1], args[2]
        tr.spike(C.embedding_backward_temporaries(indices.numel(), num_weights, grad.shape[-1], grad.element_size(), gpu))

    def host_scalar(tr, args, kwargs, out):  # torch.tensor(1.0, device="cpu") in _multi_tensor_adam
        if tr.phase == "optimizer":
            tr.host(out)

    return {
        aten.mm.default: mm, aten.addmm.default: mm, aten.bmm.default: matmul, aten.baddbmm.default: matmul,
        aten.native_layer_norm.default: layer_norm,
        aten._scaled_dot_product_flash_attention_for_cpu.default: sdpa_forward,
        aten._scaled_dot_product_flash_attention_for_cpu_backward.default: sdpa_backward,
        aten.embedding_dense_backward.default: embedding_backward,
        aten.lift_fresh.default: host_scalar,
    }


# --- --attn flash: flash-attn 2 as transformers calls it, emulated -------------------------------


class FlashAttnFunc(torch.autograd.Function):
    """flash_attn.flash_attn_interface.FlashAttnFunc (Dao-AILab/flash-attention 0251105a2fb1,
    flash_attn 2.8.4) on any tensors, allocating what it allocates and nothing else.

    forward: q, k, v (B, S, heads, d) padded to a multiple of 8 in d if needed (F.pad copies);
    `mha_fwd` (csrc/flash_attn/flash_api.cpp) allocates out (empty_like q), softmax_lse
    (B, heads, S_q) fp32 and rng_state (2,) int64; `ctx.save_for_backward(q, k, v, out_padded,
    softmax_lse, rng_state)`. The output is not attention: each query row gets its group's value
    row (a broadcast copy into `out`, no temporaries), finite and cheap.
    backward: dq, dk, dv = empty_like(q, k, v) (the interface's `_flash_attn_backward` call), then
    `mha_bwd` allocates softmax_d (B, heads, ⌈S_q/128⌉·128) fp32 (returned, then dropped),
    dq_accum (B, ⌈S_q/128⌉·128, heads, d_r) fp32 and, for GQA/MQA, dk_expanded and dv_expanded
    (B, S_k, heads, d), freed when it returns (formulas.cuda.flash_backward_temporaries)."""

    @staticmethod
    def forward(ctx, q, k, v, softmax_scale, causal, window_size, dropout_p):
        d = q.shape[-1]
        if d % 8:
            q, k, v = (torch.nn.functional.pad(t, [0, 8 - d % 8]) for t in (q, k, v))
        B, S_q, H, dp = q.shape
        H_kv = k.shape[2]
        out = torch.empty_like(q)
        if S_q == k.shape[1]:
            out.view(B, S_q, H_kv, H // H_kv, dp).copy_(v.unsqueeze(3))
        else:
            out.view(B, S_q, H_kv, H // H_kv, dp).copy_(v[:, -S_q:].unsqueeze(3))
        softmax_lse = torch.empty(B, H, S_q, dtype=torch.float32, device=q.device)
        rng_state = torch.empty(2, dtype=torch.int64, device=q.device)
        ctx.save_for_backward(q, k, v, out, softmax_lse, rng_state)
        ctx.head_dim = d
        return out[..., :d] if d % 8 else out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, softmax_lse, rng_state = ctx.saved_tensors
        d = ctx.head_dim
        if d % 8:
            dout = torch.nn.functional.pad(dout, [0, 8 - d % 8])
        elif dout.stride(-1) != 1:
            dout = dout.contiguous()
        dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        B, S_q, H, dp = q.shape
        S_k, H_kv = k.shape[1], k.shape[2]
        s_r, d_r = C.round_up(S_q, 128), C.round_up(dp, 32 if dp <= 128 else 64)
        softmax_d = torch.empty(B, H, s_r, dtype=torch.float32, device=q.device)
        dq_accum = torch.empty(B, s_r, H, d_r, dtype=torch.float32, device=q.device)
        expanded = [torch.empty(B, S_k, H, dp, dtype=q.dtype, device=q.device) for _ in range(2)] if H_kv != H else []
        del dq_accum, expanded, softmax_d
        if d % 8:
            dq, dk, dv = dq[..., :d], dk[..., :d], dv[..., :d]
        return dq, dk, dv, None, None, None, None


def flash_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, sliding_window=None,
                    softcap=None, is_causal=None, **kwargs):
    """transformers' flash_attention_2 path (integrations/flash_attention.py `flash_attention_forward`
    and modeling_flash_attention_utils.py `_flash_attention_forward`) for a causal, unpadded batch,
    with FlashAttnFunc in place of flash_attn_func: (B, heads, S, d) in, (B, S, heads, d) out."""
    from transformers.integrations.flash_attention import get_target_dtype
    from transformers.modeling_flash_attention_utils import fa_peft_integration_check

    if attention_mask is not None:
        raise ValueError("--attn flash emulates unpadded batches only (transformers passes a mask for padded ones)")
    if softcap:
        raise ValueError("--attn flash does not emulate soft-capped attention")
    q, k, v = (t.transpose(1, 2) for t in (query, key, value))
    q, k, v = fa_peft_integration_check(q, k, v, get_target_dtype(q, module))
    if q.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError("flash-attn 2 runs fp16 and bf16 only; use --dtype fp16/bf16 or --precision mixed")
    causal = module.is_causal if is_causal is None else is_causal
    window = (sliding_window - 1, sliding_window - 1) if sliding_window is not None and k.shape[1] > sliding_window else (-1, -1)
    out = FlashAttnFunc.apply(q, k, v, scaling, causal and q.shape[1] > 1, window, dropout)
    return out, None


def register_flash() -> str:
    """Register the emulated flash-attn 2 with transformers (attention and its mask function, the
    one flash_attention_2 uses: None for an unpadded batch) and return the name to build with."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, flash_attention_mask

    AttentionInterface.register(FLASH_ATTENTION, flash_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(FLASH_ATTENTION, flash_attention_mask)
    return FLASH_ATTENTION


@contextlib.contextmanager
def _peak_kept(tracker: Tracker):
    """Around the work that stands in for decode steps not traced: what it leaves live counts from
    then on; the peaks (overall, per phase, and the modelled GPU peak) are those from before it, as
    no real step holds its temporaries."""
    kept = tracker.peak, dict(tracker.at_peak), tracker.peak_phase, dict(tracker.phase_peaks), tracker.gpu_peak, tracker.gpu_peak_at
    yield
    tracker.peak, tracker.at_peak, tracker.peak_phase, tracker.phase_peaks, tracker.gpu_peak, tracker.gpu_peak_at = kept
