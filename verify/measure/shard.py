"""Per-rank memory of sharded training and inference, measured by running PyTorch's own
data-parallel engines on one CPU process.

How: `torch.distributed` is initialised with the "fake" process group
(torch.testing._internal.distributed.fake_pg: collectives return at once, every rank is
simulated by rank 0), the model is built on the meta device, wrapped by FSDP2
(`torch.distributed.fsdp.fully_shard`, one group per decoder layer plus the root) or by the
FSDP2-based DDP (`torch.distributed._composable.replicate_with_fsdp.replicate`), and then
materialized as FakeTensors, so a 405B model over 1024 ranks allocates nothing. One training
step (forward, loss, backward, optimizer step) or one inference (the prefill of a prompt)
runs through the real sharding code: all-gathers into unsharded buffers, reshard after
forward, reduce-scatter of gradients, the optimizer on the local shards.

What is measured on rank 0 (the largest shard when a dimension does not divide evenly):
  params/grads/optimizer: the bytes of the distinct storages behind the sharded parameters'
      local tensors, their gradients and the optimizer state, read from the tensors (exact);
  activations: bytes live at the end of forward beyond what was live before it, less the
      unsharded parameter buffers FSDP still holds then;
  peak: the highest total of live storage bytes during the step, from a small allocation
      tracker (`LiveBytes`, below) that sees every tensor an op returns and FSDP's storage
      resizes; inputs and persistent state count from the start.

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
import weakref
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from verify.measure.memory import common_checks, raise_first

STRATEGIES = ("ddp", "fsdp", "zero2", "zero3")
MODES = ("train", "infer")
MAX_WORLD_SIZE = 1 << 20  # far beyond any real cluster; keeps a typo from building a billion ranks
GB = 10**9


@dataclass(frozen=True)
class ShardSpec:
    """One per-rank measurement to run."""

    model: str  # bundled name or config.json path
    world_size: int  # N: data-parallel ranks
    strategy: str = "fsdp"  # ddp | fsdp | zero2 | zero3 (see the module docstring)
    mode: str = "train"  # "train": one optimizer step; "infer": prefill of a `seq`-token prompt into the KV cache
    dtype: str = "bf16"  # compute dtype (and weight dtype under precision="pure" and for inference)
    precision: str = "mixed"  # "mixed": fp32 sharded master weights, compute in dtype, fp32 gradient reduce; "pure": all in dtype
    optimizer: str = "adamw"  # adamw | adam | sgd (plain SGD: no state); training only
    batch: int = 1  # sequences per rank (micro-batch)
    seq: int = 2048  # tokens per sequence (training), prompt length (inference)
    gpu_gb: float = 80.0  # GPU memory in GB (1e9 bytes) the per-rank peak is compared with
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
        (spec.gpu_gb > 0 and math.isfinite(spec.gpu_gb), f"GPU size must be a positive number of GB, got {spec.gpu_gb}"),
        (not (spec.checkpointing and spec.mode != "train"), "--checkpointing applies to training only (--mode train)"),
    ]
    raise_first(checks)
    if shape.max_positions and spec.seq > shape.max_positions:
        raise ValueError(f"{shape.name} accepts at most {shape.max_positions} positions; got seq {spec.seq}")


# --- the allocation tracker -----------------------------------------------------------------


class LiveBytes:
    """Live storage bytes and their peak: every tensor an op returns is registered once by its
    storage (a DTensor by its local shard), and a weak reference to the storage drops its bytes
    when it dies. Storage resizes, with which FSDP2 frees and re-allocates the unsharded
    parameters (`UntypedStorage.resize_`, which no dispatch mode sees), are followed by wrapping
    that method while tracking.

    Why not verify.measure.tracker.Tracker: it reads `untyped_storage()` of each output, which a
    DTensor does not have, and does not see resizes, so under FSDP2 it would keep counting freed
    unsharded parameters. This one keeps a total, a peak, per-phase peaks and when each live
    storage was allocated (an op counter), so that what was live at a peak can be asked later.
    """

    def __init__(self):
        self._live: dict[int, list] = {}  # storage key -> [bytes counted, weakref, op count at allocation]
        self.ops = 0  # ops seen so far
        self.live = 0  # bytes live now
        self.peak = 0  # highest `live` seen
        self.phase = "setup"  # current phase, set with `set_phase`
        self.phase_peaks: dict[str, int] = {}  # phase -> highest `live` seen in it
        self.phase_starts: list[tuple[int, str]] = []  # (op count, phase) at each set_phase
        self.timeline: list[tuple[int, int]] = []  # (op count, live) after every increase
        self.phase_seconds: dict[str, float] = {}  # phase -> wall seconds spent in it
        self._since = (time.perf_counter(), "setup")

    def _add_storage(self, st) -> None:
        key = st._cdata
        if key in self._live:
            return
        n = st.nbytes()
        self._live[key] = [n, weakref.ref(st, lambda _r, k=key: self._free(k)), self.ops]
        self.live += n

    def _free(self, key: int) -> None:
        entry = self._live.pop(key, None)
        if entry is not None:
            self.live -= entry[0]

    def _add_tensor(self, t) -> None:
        local = getattr(t, "_local_tensor", None)  # DTensor: its shard on this rank
        if local is not None:
            t = local
        try:
            self._add_storage(t.untyped_storage())
        except (RuntimeError, NotImplementedError):  # another wrapper subclass: its inner tensors
            from torch.distributed._tools.common_utils import get_untyped_storages

            for st in get_untyped_storages(t):
                self._add_storage(st)

    def track(self, obj) -> None:
        """Register every storage behind the tensors in `obj` (a tensor or a nested structure)."""
        import torch
        from torch.utils._pytree import tree_leaves

        for t in tree_leaves(obj):
            if isinstance(t, torch.Tensor):
                self._add_tensor(t)
        self._update()

    def _resized(self, st) -> None:
        entry = self._live.get(st._cdata)
        if entry is None:
            return
        n = st.nbytes()
        self.live += n - entry[0]
        entry[0] = n
        self._update()

    def _update(self) -> None:
        if self.live > self.peak:
            self.peak = self.live
        if self.live > self.phase_peaks.get(self.phase, 0):
            self.phase_peaks[self.phase] = self.live
        self.timeline.append((self.ops, self.live))

    def set_phase(self, name: str) -> None:
        now = time.perf_counter()
        self.phase_seconds[self._since[1]] = round(self.phase_seconds.get(self._since[1], 0) + now - self._since[0], 3)
        self._since = (now, name)
        self.phase = name
        self.phase_starts.append((self.ops, name))
        self.phase_peaks[name] = max(self.phase_peaks.get(name, 0), self.live)
        self.timeline.append((self.ops, self.live))

    def segments(self, events: list[int]) -> list[dict]:
        """The peak of `live` in each stretch of the step between phase changes and the op counts
        in `events` (sorted): [{"phase", "events_before" (how many events came before the
        stretch), "peak"}]."""
        out: dict[tuple[str, int], int] = {}
        starts, p, k, phase = self.phase_starts, 0, 0, "setup"
        for op, live in self.timeline:
            while p < len(starts) and starts[p][0] <= op:
                phase = starts[p][1]
                p += 1
            while k < len(events) and events[k] <= op:
                k += 1
            key = (phase, k)
            if live > out.get(key, -1):
                out[key] = live
        return [{"phase": ph, "events_before": n, "peak": v} for (ph, n), v in out.items()]

    def allocated_at(self, t) -> int | None:
        """Op count at which the storage behind tensor `t` (a DTensor: its shard) was registered,
        or None if it is not tracked."""
        entry = self._live.get(_local(t).untyped_storage()._cdata)
        return entry[2] if entry else None

    @contextmanager
    def tracking(self):
        """Register op outputs and storage resizes inside the block."""
        import torch
        from torch.utils._python_dispatch import TorchDispatchMode

        tracker = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                tracker.ops += 1
                if isinstance(out, torch.Tensor):
                    tracker._add_tensor(out)
                    tracker._update()
                else:
                    tracker.track(out)
                return out

        orig_resize = torch.UntypedStorage.resize_

        def resize_(st, size):
            ret = orig_resize(st, size)
            tracker._resized(st)
            return ret

        torch.UntypedStorage.resize_ = resize_
        try:
            with _Mode():
                yield self
        finally:
            torch.UntypedStorage.resize_ = orig_resize


# --- reading the sharded state --------------------------------------------------------------


def _storage_bytes(tensors) -> int:
    """Bytes of the distinct storages behind `tensors` (DTensors count their local shard)."""
    from torch.distributed._tools.common_utils import get_untyped_storages

    seen: dict[int, int] = {}
    for t in tensors:
        if t is None:
            continue
        for st in get_untyped_storages(t):
            seen[st._cdata] = st.nbytes()
    return sum(seen.values())


def _local(t):
    return getattr(t, "_local_tensor", t)


def _unsharded_param_bytes(model) -> int:
    """Bytes FSDP2 holds in unsharded (all-gathered) parameter buffers right now."""
    from torch.distributed.fsdp import FSDPModule

    bufs = []
    for m in model.modules():
        if isinstance(m, FSDPModule):
            for group in m._get_fsdp_state()._fsdp_param_groups:
                for fp in group.fsdp_params:
                    bufs.extend(fp.all_gather_outputs)
    return _storage_bytes(bufs)


def param_shapes(model) -> list[tuple[int, ...]]:
    """Shapes of the distinct parameters (tied ones once), in registration order."""
    return [tuple(p.shape) for p in model.parameters()]


# --- the run --------------------------------------------------------------------------------


@contextmanager
def fake_world(world_size: int):
    """A fake process group of `world_size` ranks on this one process (this process is rank 0),
    and a 1-D CPU device mesh over it; torn down on exit."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.testing._internal.distributed.fake_pg import FakeStore

    if dist.is_initialized():
        raise RuntimeError("a process group is already initialised in this process; the fake one needs its own")
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=world_size)
    try:
        yield init_device_mesh("cpu", (world_size,), mesh_dim_names=("dp",))
    finally:
        dist.destroy_process_group()


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

    from verify.build import parse_dtype

    compute = parse_dtype(spec.dtype)
    if spec.mode == "train" and spec.precision == "mixed":
        mp = MixedPrecisionPolicy(param_dtype=compute, reduce_dtype=torch.float32)
    else:
        mp = MixedPrecisionPolicy()
    if spec.strategy == "ddp":
        from torch.distributed._composable.replicate_with_fsdp import replicate

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
    from torch._subclasses.fake_tensor import FakeTensorMode

    t0 = time.perf_counter()
    with fake_world(spec.world_size) as mesh:
        # allow_non_fake_inputs lets to_empty read the meta shards
        result = run_rank(spec, mesh, "cpu", FakeTensorMode(allow_non_fake_inputs=True), local_optimizer_step)
    result.update(backend="fake", seconds=round(time.perf_counter() - t0, 2))
    return result


def run_rank(spec: ShardSpec, mesh, device: str, fake_mode=None, local_optimizer_step: bool = False) -> dict:
    """This rank's part of `spec` on `mesh`: build on meta, wrap (apply_strategy), materialize on
    `device` (under `fake_mode` if given), initialise the optimizer state, then one tracked
    training step or inference. The step is the project's device-agnostic one
    (verify.measure.steps: train_step; generate_greedy with new_tokens=1, i.e. the prefill). Real ranks
    (verify.measure.shard_ranks) call this very function with fake_mode=None."""
    import contextlib

    import torch

    from verify.build import build
    from verify.configs import load_config
    from verify.measure import steps

    config = load_config(spec.model)
    model = build(config, device="meta", dtype=weight_dtype(spec))  # transformers picks sdpa where the architecture has it
    shapes = param_shapes(model)
    tracker = LiveBytes()
    seen: dict[str, int] = {}
    apply_strategy(model, mesh, spec)
    with fake_mode or contextlib.nullcontext():
        model.to_empty(device=device)
        ids = torch.randint(0, config.vocab_size, (spec.batch, spec.seq), device=device)
        params = list(model.parameters())
        seen["params"] = _storage_bytes(_local(p) for p in params)
        before_forward = {}

        def after_forward(_loss_or_cache=None):
            # beyond what was live before forward: saved activations (or KV cache), less the
            # gathered parameters FSDP still holds at this point
            seen["activations"] = tracker.live - before_forward["live"] - _unsharded_param_bytes(model)

        def mark(phase: str) -> None:
            if phase in ("forward", "prefill"):
                before_forward["live"] = tracker.live
            tracker.set_phase(phase)

        if spec.mode == "train":
            opt = steps.prepare_training(model, spec.optimizer, spec.checkpointing)  # train mode, checkpointing, optimizer
            _init_optimizer_state(opt, params)
            seen["optimizer"] = _optimizer_state_bytes(opt)
            tracker.track([params, ids, [list(s.values()) for s in opt.state.values()]])

            def after_backward():
                seen["grads"] = _storage_bytes(_local(p.grad) for p in params if p.grad is not None)
                # when each gradient's storage was allocated (they live until zero_grad)
                seen["grad_allocs"] = sorted(((tracker.allocated_at(p.grad) or 0), tuple(p.shape))
                                             for p in params if p.grad is not None)

            hooks = steps.Hooks(mark=mark, after_forward=after_forward, after_backward=after_backward)
            with tracker.tracking():
                steps.train_step(model, LocalShardStep(opt) if local_optimizer_step else opt, ids, contextlib.nullcontext(), hooks)
        else:
            tracker.track([params, ids])

            def after_prefill(cache):
                seen["kv_cache"] = _storage_bytes(steps.cache_tensors(cache))
                after_forward()
                seen["activations"] -= seen["kv_cache"]

            hooks = steps.Hooks(mark=mark, after_prefill=after_prefill)
            with tracker.tracking():
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
        "phase_peaks": dict(tracker.phase_peaks),
        "phase_seconds": dict(tracker.phase_seconds),  # where the run's time went
        # the profile extrapolated_peak reads: the peak of each stretch between phase changes and
        # gradient allocations, and the shapes of the parameters in the order their gradients came
        "segments": [seg for seg in tracker.segments([op for op, _ in seen.get("grad_allocs", [])])
                     if seg["phase"] not in after_step],
        "grad_order": [shape for _, shape in seen.get("grad_allocs", [])],
    }
    persistent = per_rank["params_bytes"] + per_rank["grads_bytes"] + per_rank["optimizer_bytes"]
    gpu_bytes = int(spec.gpu_gb * GB)
    return {
        "spec": spec.as_dict(),
        "per_rank": per_rank,
        "total_params": sum(math.prod(s) for s in shapes),
        "persistent_bytes": persistent,
        "closed_form_persistent": closed_form_persistent(spec, shapes),
        "gpu_bytes": gpu_bytes,
        "fits": tracker.peak <= gpu_bytes,
        "headroom_bytes": gpu_bytes - tracker.peak,
        "tracker": "verify.measure.shard.LiveBytes (follows DTensor shards and FSDP storage resizes)",
    }


def weight_dtype(spec: ShardSpec):
    """dtype the model is built in: fp32 master weights for mixed-precision training, else spec.dtype."""
    import torch

    from verify.build import parse_dtype

    return torch.float32 if (spec.mode == "train" and spec.precision == "mixed") else parse_dtype(spec.dtype)


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
            mine = [_local(p) for p in g["params"] if p.grad is not None]
            for p, lp in zip([p for p in g["params"] if p.grad is not None], mine):
                lp.grad = _local(p.grad)
            groups.append({**{k: v for k, v in g.items() if k != "params"}, "params": mine})
            locals_ += mine
        local_opt = type(self.opt)(groups)
        for g in self.opt.param_groups:
            for p in g["params"]:
                if p.grad is not None and p in self.opt.state:
                    local_opt.state[_local(p)] = {k: _local(v) for k, v in self.opt.state[p].items()}
        local_opt.step()
        for lp in locals_:
            lp.grad = None

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.opt.zero_grad(set_to_none=set_to_none)


def _optimizer_state_bytes(opt) -> int:
    """Bytes of the optimizer's state tensors except step counters (host-side scalars on CUDA)."""
    return _storage_bytes(_local(v) for s in opt.state.values() for k, v in s.items() if k != "step")


# --- from one measurement to any N -----------------------------------------------------------


def model_facts(model_name: str) -> dict:
    """Parameter shapes (tied once), total parameters and DeepSpeed's "largest layer" (the module
    with the most parameters of its own, as deepspeed's model_to_params counts it), from a meta build."""
    from verify.build import build
    from verify.configs import load_config

    model = build(load_config(model_name), device="meta")
    shapes = param_shapes(model)
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    return {"param_shapes": shapes, "total_params": sum(math.prod(s) for s in shapes), "largest_layer_params": largest}


def closed_form_persistent(spec: ShardSpec, shapes: list[tuple[int, ...]], world_size: int | None = None) -> dict:
    """Rank 0's exact persistent bytes (terms params, grads, optimizer) for `spec` at `world_size`."""
    from verify.build import parse_dtype
    from verify.formulas import shard as F

    return F.persistent_per_rank(
        shapes, world_size or spec.world_size, spec.strategy, mode=spec.mode, precision=spec.precision,
        dtype_bytes=parse_dtype(spec.dtype).itemsize, optimizer=spec.optimizer,
    )


# phases whose remainder is per shard: the optimizer step, where activations are gone and what
# is left beyond the state is the foreach optimizer's intermediate lists, one entry per shard
PHASE_PER_SHARD = ("optimizer",)


def extrapolated_peak(result: dict, shapes: list[tuple[int, ...]], world_size: int) -> int:
    """Per-rank peak at `world_size` from a measurement at another N.

    The measured step is cut into stretches between phase changes and gradient allocations
    (per_rank["segments"]). In each, the peak is split into its exactly known persistent part,
    recomputed at `world_size` by the closed form the tests prove exact (parameters, optimizer
    state, and the gradients allocated so far, by their shapes in per_rank["grad_order"]), and
    a remainder R. Outside the optimizer step R (activations, gathered layers and their
    unsharded gradients, KV cache) does not depend on N and is kept; in the optimizer step R is
    the foreach temporaries, which are per shard, and is scaled with the shard size. Equal to
    the measurement at its own N; `min_world_size` confirms the N this gives by measuring it."""
    spec = ShardSpec(**result["spec"])
    pr = result["per_rank"]
    order = [tuple(s) for s in pr["grad_order"]]

    def persistent(n: int, grads_live: int) -> int:
        terms = closed_form_persistent(spec, shapes, n)
        grads = closed_form_persistent(spec, order[:grads_live], n)["grads"] if grads_live else 0
        return terms["params"] + terms["optimizer"] + grads

    ratio = closed_form_persistent(spec, shapes, world_size)["params"] / max(1, closed_form_persistent(spec, shapes)["params"])
    best = 0
    for seg in pr["segments"]:
        rest = seg["peak"] - persistent(spec.world_size, seg["events_before"])
        if seg["phase"] in PHASE_PER_SHARD:
            rest = math.ceil(rest * ratio)
        best = max(best, persistent(world_size, seg["events_before"]) + rest)
    return best


def min_world_size(spec: ShardSpec, reference_n: int = 2, max_n: int = 1024, confirm: bool = True, max_confirm_runs: int = 4,
                   reference: dict | None = None) -> dict:
    """Smallest N whose per-rank peak fits `spec.gpu_gb`.

    One measurement at `reference_n` gives the per-rank peak; the exact persistent part is
    extrapolated to every N in 1..max_n (`extrapolated_peak`) to find a candidate N*; with
    `confirm`, N* is then measured, and N*-1 too, stepping while the measurement disagrees
    (at most `max_confirm_runs` extra runs). `min_world_size` is measured when `confirmed`.
    `reference`: a measure_shard result of the same spec at some N, reused instead of a new run.
    """
    from dataclasses import replace

    from verify.formulas.shard import smallest_fitting

    shapes = model_facts(spec.model)["param_shapes"]
    gpu_bytes = int(spec.gpu_gb * GB)
    ref = reference or measure_shard(replace(spec, world_size=reference_n))
    reference_n = ref["spec"]["world_size"]
    measured = {reference_n: ref["per_rank"]["peak_bytes"]}
    predicted_n = smallest_fitting(lambda n: extrapolated_peak(ref, shapes, n), gpu_bytes, max_n)
    out = {"spec": spec.as_dict(), "gpu_bytes": gpu_bytes, "reference_n": reference_n, "predicted_min": predicted_n,
           "min_world_size": predicted_n, "confirmed": False, "measured_peaks": measured,
           "extrapolated_peak_at_min": extrapolated_peak(ref, shapes, predicted_n) if predicted_n else None}
    if not confirm or predicted_n is None:
        return out

    def fits(n: int) -> bool:
        if n not in measured:
            measured[n] = measure_shard(replace(spec, world_size=n))["per_rank"]["peak_bytes"]
        return measured[n] <= gpu_bytes

    n, runs = predicted_n, 0
    while runs < max_confirm_runs:
        runs += 1
        if not fits(n):
            if n >= max_n:
                out["min_world_size"] = None
                return out
            n += 1
            continue
        if n == 1 or not fits(n - 1):
            out.update(min_world_size=n, confirmed=True)
            return out
        n -= 1
    out["min_world_size"] = n
    return out


def shard_sweep(model: str, strategies=STRATEGIES, world_sizes=(1, 2, 4, 8, 16, 32, 64, 128), reference_n: int = 2, **spec_fields) -> list[dict]:
    """Per-rank peak against N, one measured run per strategy at `reference_n`, the exact
    persistent part extrapolated to the other N (`extrapolated_peak`). Rows: model, strategy,
    world_size, mode, total_params, batch, seq, checkpointing, peak_bytes, persistent_bytes,
    measured (True only for the measured point). `spec_fields`: other ShardSpec fields (seq, batch, checkpointing, ...)."""
    facts = model_facts(model)
    shapes = facts["param_shapes"]
    rows = []
    for strategy in strategies:
        spec = ShardSpec(model=model, world_size=reference_n, strategy=strategy, **spec_fields)
        ref = measure_shard(spec)
        for n in world_sizes:
            rows.append({
                "model": model, "strategy": strategy, "world_size": n, "mode": spec.mode, "total_params": facts["total_params"],
                "batch": spec.batch, "seq": spec.seq, "checkpointing": spec.checkpointing,
                "peak_bytes": ref["per_rank"]["peak_bytes"] if n == reference_n else extrapolated_peak(ref, shapes, n),
                "persistent_bytes": sum(closed_form_persistent(spec, shapes, n).values()), "measured": n == reference_n,
            })
    return rows
