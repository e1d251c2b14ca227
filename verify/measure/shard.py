"""Per-rank memory of sharded training and inference, measured by running PyTorch's own
data-parallel engines on one CPU process.

How: `torch.distributed` is initialised with the "fake" process group (collectives return at
once, every rank is simulated by rank 0; verify.torchapi.fake_process_group), the model is built on the meta device, wrapped by FSDP2
(`torch.distributed.fsdp.fully_shard`, one group per decoder layer plus the root) or by the
FSDP2-based DDP (`replicate`), and then
materialized as FakeTensors, so a 405B model over 1024 ranks allocates nothing. One training
step (forward, loss, backward, optimizer step) or one inference (the prefill of a prompt)
runs through the real sharding code: all-gathers into unsharded buffers, reshard after
forward, reduce-scatter of gradients, the optimizer on the local shards.

What is measured on rank 0 (the largest shard when a dimension does not divide evenly):
  params/grads/optimizer: the bytes of the distinct storages behind the sharded parameters'
      local tensors, their gradients and the optimizer state, read from the tensors (exact);
  activations: bytes live at the end of forward beyond what was live before it, less the
      unsharded parameter buffers FSDP still holds then;
  peak: the highest total of live storage bytes during the step, from the project's one
      allocation tracker (verify.measure.tracker) following DTensor shards and FSDP's storage
      resizes; inputs and persistent state count from the start.

Measurement only: carrying a measured step to other N, and searching for the smallest N that
fits a GPU, are predictions (verify.predict.shard).

Strategies (ZeRO stage <-> FSDP2 setting):
  ddp    replicate() (torch's FSDP2-based DDP): every rank holds all parameters, gradients and
         optimizer state. Unlike torch.nn.parallel.DistributedDataParallel it also keeps a
         gathered copy of the parameters in the compute dtype from forward to backward (it
         behaves as zero2 at N = 1); under mixed precision that copy stands for autocast's casts.
  fsdp   fully_shard() with its defaults: layers reshard after forward, the root does not.
  zero3  fully_shard(reshard_after_forward=True) on every group, root included.
  zero2  fully_shard(reshard_after_forward=False): gathered parameters stay until backward
         is done; gradients and optimizer state sharded.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

from verify.measure.memory import Category, common_checks, raise_first
from verify.measure.tracker import Tracker
from verify.torchapi import fake_mode, fake_process_group, fsdp_unsharded_buffers, local_tensor, replicate, storage_bytes
from verify.units import DEFAULT_PRECISION, torch_dtype, weight_dtype

STRATEGIES = ("ddp", "fsdp", "zero2", "zero3")
MODES = ("train", "infer")
MAX_WORLD_SIZE = 1 << 20  # far beyond any real cluster; keeps a typo from building a billion ranks


@dataclass(frozen=True)
class ShardSpec:
    """One per-rank measurement to run."""

    model: str  # bundled name or config.json path
    world_size: int  # N: data-parallel ranks
    strategy: str = "fsdp"  # ddp | fsdp | zero2 | zero3 (see the module docstring)
    mode: str = "train"  # "train": one optimizer step; "infer": prefill of a `seq`-token prompt into the KV cache
    dtype: str = "bf16"  # compute dtype (and weight dtype under precision="pure" and for inference)
    precision: str = DEFAULT_PRECISION  # "pure": all in dtype; "mixed": fp32 sharded master weights, compute in dtype, fp32 gradient reduce
    optimizer: str = "adamw"  # adamw | adam | sgd (plain SGD: no state); training only
    batch: int = 1  # sequences per rank (micro-batch)
    seq: int = 2048  # tokens per sequence (training), prompt length (inference)
    checkpointing: bool = False  # activation checkpointing of every decoder layer (training only)

    def as_dict(self) -> dict:
        return asdict(self)


def validate_shard(spec: ShardSpec, shape) -> None:
    """Raise ValueError with one clear line for a spec that cannot run."""
    checks = [
        (isinstance(spec.world_size, int) and 0 < spec.world_size <= MAX_WORLD_SIZE,
         f"world size must be a positive integer up to {MAX_WORLD_SIZE}, got {spec.world_size}"),
        (spec.strategy in STRATEGIES, f"strategy {spec.strategy!r} is not one of {', '.join(STRATEGIES)}"),
        (spec.mode in MODES, f"mode {spec.mode!r} is not one of {', '.join(MODES)}"),
        *common_checks(spec),
        (not (spec.checkpointing and spec.mode != "train"), "--checkpointing applies to training only (--mode train)"),
    ]
    raise_first(checks)
    if shape.max_positions and spec.seq > shape.max_positions:
        raise ValueError(f"{shape.name} accepts at most {shape.max_positions} positions; got seq {spec.seq}")


# --- reading the sharded state --------------------------------------------------------------


def param_shapes(model) -> list[tuple[int, ...]]:
    """Shapes of the distinct parameters (tied ones once), in registration order."""
    return [tuple(p.shape) for p in model.parameters()]


# --- the run --------------------------------------------------------------------------------


def decoder_layers(model) -> list:
    """The modules FSDP wraps one by one: those whose class transformers names in
    `_no_split_modules` (the decoder blocks), as accelerate's transformer auto-wrap does."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise ValueError(f"{type(model).__name__} names no decoder-layer class in _no_split_modules; cannot wrap per layer")
    return layers


def apply_strategy(model, mesh, spec: ShardSpec) -> None:
    """Wrap `model` (on the meta device) in place with the engine `spec.strategy` names."""
    import torch
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    compute = torch_dtype(spec.dtype)
    if spec.mode == "train" and spec.precision == "mixed":
        mp = MixedPrecisionPolicy(param_dtype=compute, reduce_dtype=torch.float32)
    else:
        mp = MixedPrecisionPolicy()
    if spec.strategy == "ddp":
        for layer in decoder_layers(model):
            replicate(layer, mesh=mesh, mp_policy=mp)
        replicate(model, mesh=mesh, mp_policy=mp)
        return
    reshard = {"fsdp": None, "zero3": True, "zero2": False}[spec.strategy]  # None: True for layers, False for the root
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard)
    fully_shard(model, mesh=mesh, mp_policy=mp, reshard_after_forward=reshard)


def measure_shard(spec: ShardSpec, local_optimizer_step: bool = True) -> dict:
    """Run `spec` on a fake process group with fake tensors; return the per-rank bytes (rank 0).
    local_optimizer_step: see `LocalShardStep` (same bytes, tested; far faster for big models)."""
    t0 = time.perf_counter()
    with fake_process_group(spec.world_size) as mesh:
        result = run_rank(spec, mesh, "cpu", fake_mode(), local_optimizer_step)  # fake_mode reads the meta shards
    result.update(backend="fake", seconds=round(time.perf_counter() - t0, 2))
    return result


def run_rank(spec: ShardSpec, mesh, device: str, mode=None, local_optimizer_step: bool = False) -> dict:
    """This rank's part of `spec` on `mesh`: build on meta, wrap (apply_strategy), materialize on
    `device` (under the FakeTensorMode `mode` if given), initialise the optimizer state, then one tracked
    training step or inference. The step is the project's device-agnostic one
    (verify.measure.steps: train_step; generate_greedy with new_tokens=1, i.e. the prefill). Real ranks
    (verify.measure.shard_ranks) call this very function with mode=None."""
    import contextlib

    import torch

    from verify.build import build
    from verify.configs import load_config
    from verify.measure import steps

    config = load_config(spec.model)
    weights = weight_dtype(spec.dtype, spec.precision if spec.mode == "train" else "pure")
    model = build(config, device="meta", dtype=weights)  # transformers picks sdpa where the architecture has it
    shapes = param_shapes(model)
    tracker = Tracker(timeline=True, follow_resizes=True)
    seen: dict[str, int] = {}
    apply_strategy(model, mesh, spec)
    with mode or contextlib.nullcontext():
        model.to_empty(device=device)
        ids = torch.randint(0, config.vocab_size, (spec.batch, spec.seq), device=device)
        params = list(model.parameters())
        seen["params"] = storage_bytes(params)
        before_forward = {}

        def after_forward(_loss_or_cache=None):
            # beyond what was live before forward: saved activations (or KV cache), less the
            # gathered parameters FSDP still holds at this point
            seen["activations"] = tracker.total - before_forward["total"] - storage_bytes(fsdp_unsharded_buffers(model))

        def mark(phase: str) -> None:
            if phase in ("forward", "prefill"):
                before_forward["total"] = tracker.total
            tracker.mark(phase)

        tracker.add(params, Category.PARAMS)
        tracker.add(ids, Category.ACTIVATIONS)
        if spec.mode == "train":
            opt = steps.prepare_training(model, spec.optimizer, spec.checkpointing)  # train mode, checkpointing, optimizer
            _init_optimizer_state(opt, params)
            seen["optimizer"] = _optimizer_state_bytes(opt)
            tracker.add([list(s.values()) for s in opt.state.values()], Category.OPTIMIZER)

            def after_backward():
                grads = [p.grad for p in params if p.grad is not None]
                seen["grads"] = storage_bytes(grads)
                tracker.relabel(grads, Category.GRADS)
                # when each gradient's storage was allocated (they live until zero_grad)
                seen["grad_allocs"] = sorted(((tracker.allocated_at(p.grad) or 0), tuple(p.shape))
                                             for p in params if p.grad is not None)

            hooks = steps.Hooks(mark=mark, after_forward=after_forward, after_backward=after_backward)
            with tracker:
                steps.train_step(model, LocalShardStep(opt) if local_optimizer_step else opt, ids, contextlib.nullcontext(), hooks)
        else:
            def after_prefill(cache):
                kv = steps.cache_tensors(cache)
                seen["kv_cache"] = storage_bytes(kv)
                tracker.relabel(kv, Category.KV_CACHE)
                after_forward()
                seen["activations"] -= seen["kv_cache"]

            hooks = steps.Hooks(mark=mark, after_prefill=after_prefill)
            with tracker:
                steps.generate_greedy(model, ids, new_tokens=1, hooks=hooks)  # the prefill: its peak is the one that counts
    after_step = ("idle", "zero_grad")  # after the step: nothing new, and the next step starts lower
    for phase in after_step:
        tracker.phase_peaks.pop(phase, None)
    per_rank = {
        "params_bytes": seen["params"],
        "grads_bytes": seen.get("grads", 0),
        "optimizer_bytes": seen.get("optimizer", 0),
        "activations_bytes": seen["activations"],
        "kv_cache_bytes": seen.get("kv_cache", 0),
        "peak_bytes": tracker.peak,
        "peak_phase": tracker.peak_phase,
        "at_peak": {k: v for k, v in tracker.at_peak.items() if v},
        "phase_peaks": dict(tracker.phase_peaks),
        "phase_seconds": dict(tracker.phase_seconds),  # where the run's time went
        # the profile verify.predict.shard.extrapolated_peak reads: the peak of each stretch between
        # phase changes and gradient allocations, and the shapes of the parameters in the order
        # their gradients came
        "segments": [seg for seg in tracker.segments([op for op, _ in seen.get("grad_allocs", [])])
                     if seg["phase"] not in after_step],
        "grad_order": [shape for _, shape in seen.get("grad_allocs", [])],
    }
    return {
        "spec": spec.as_dict(),
        "per_rank": per_rank,
        "total_params": sum(math.prod(s) for s in shapes),
        "param_shapes": shapes,
        "persistent_bytes": per_rank["params_bytes"] + per_rank["grads_bytes"] + per_rank["optimizer_bytes"],
        "tracker": "verify.measure.tracker.Tracker (follows DTensor shards and FSDP2 storage resizes)",
    }


def _init_optimizer_state(opt, params) -> None:
    """Materialize the optimizer state (one step on zero gradients, then drop the gradients), so
    the measured step is a steady-state step rather than the first one. The step runs
    per tensor (foreach off), which builds the same state and is faster on DTensors."""
    import torch

    for p in params:
        p.grad = torch.zeros_like(p)
    foreach = [g.get("foreach") for g in opt.param_groups]
    for g in opt.param_groups:
        g["foreach"] = False
    opt.step()
    for g, f in zip(opt.param_groups, foreach):
        g["foreach"] = f
    opt.zero_grad(set_to_none=True)


class LocalShardStep:
    """The optimizer step run by torch's own optimizer class (same hyperparameters, foreach) on
    the parameters' local shards, their local gradients and the local tensors of the very same
    state, instead of on the DTensors. Element-wise optimizers on Shard(0)/Replicate DTensors do
    exactly this under DTensor's dispatch, so the bytes allocated are the same (a test compares
    the two); what is skipped is DTensor's sharding propagation for every foreach call over
    hundreds of tensors, 27 of the 44 seconds of a 405B fake step."""

    def __init__(self, opt):
        self.opt = opt

    def step(self) -> None:
        groups, locals_ = [], []
        for g in self.opt.param_groups:
            mine = [local_tensor(p) for p in g["params"] if p.grad is not None]
            for p, lp in zip([p for p in g["params"] if p.grad is not None], mine):
                lp.grad = local_tensor(p.grad)
            groups.append({**{k: v for k, v in g.items() if k != "params"}, "params": mine})
            locals_ += mine
        local_opt = type(self.opt)(groups)
        for g in self.opt.param_groups:
            for p in g["params"]:
                if p.grad is not None and p in self.opt.state:
                    local_opt.state[local_tensor(p)] = {k: local_tensor(v) for k, v in self.opt.state[p].items()}
        local_opt.step()
        for lp in locals_:
            lp.grad = None

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.opt.zero_grad(set_to_none=set_to_none)


def _optimizer_state_bytes(opt) -> int:
    """Bytes of the optimizer's state tensors except step counters (host-side scalars on CUDA)."""
    return storage_bytes(local_tensor(v) for s in opt.state.values() for k, v in s.items() if k != "step")


def model_facts(model_name: str) -> dict:
    """Parameter shapes (tied once), total parameters and DeepSpeed's "largest layer" (the module
    with the most parameters of its own, as deepspeed's model_to_params counts it), from a meta build."""
    from verify.build import build
    from verify.configs import load_config

    model = build(load_config(model_name), device="meta")
    shapes = param_shapes(model)
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    return {"param_shapes": shapes, "total_params": sum(math.prod(s) for s in shapes), "largest_layer_params": largest}
