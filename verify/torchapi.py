"""Every private or internal PyTorch API this project relies on, in one place.

torch gives no public way to: intercept every op (TorchDispatchMode), flatten a pytree, build a
module on fake tensors (FakeTensorMode) or step out of that mode for a moment, identify a storage
(UntypedStorage._cdata), reach a DTensor's local shard, follow FSDP2's storage resizes, run
collectives on one process (the fake process group), read FSDP2's unsharded parameter buffers,
wrap a model in FSDP2's DDP (`replicate`), or read the CPU allocator's running total from the
profiler's event tree. Each is reached through a function here, so a torch release that moves one breaks
one module, with one clear message. TESTED_TORCH lists the releases the test suite has passed on
(pyproject.toml's [tool.verify] says the same; a test keeps the two equal).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: F401  (re-exported: the tracker's base)
from torch.utils._pytree import tree_leaves  # noqa: F401  (re-exported)

TESTED_TORCH = ("2.13.0",)  # torch releases the whole test suite passed on


def tested_note() -> str | None:
    """None on a tested torch release; otherwise one line saying this one is not among them."""
    version = torch.__version__.split("+")[0]
    if version in TESTED_TORCH:
        return None
    return f"torch {version} is not among the releases this tool was tested with ({', '.join(TESTED_TORCH)})"


def fake_mode():
    """A FakeTensorMode that also accepts real and meta tensors as inputs (to_empty reads meta ones)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    return FakeTensorMode(allow_non_fake_inputs=True)


def is_fake(t) -> bool:
    """Whether `t` is a FakeTensor (shapes and dtypes, no values)."""
    from torch._subclasses.fake_tensor import FakeTensor

    return isinstance(t, FakeTensor)


@contextmanager
def outside_fake_mode():
    """Leave the active FakeTensorMode (if any) for the block: tensors made inside are real (a
    library that builds a lookup table with .tolist() at construction needs real values)."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    with unset_fake_temporarily():
        yield


def storage_key(storage) -> int:
    """An id for an UntypedStorage that is the same for every tensor viewing it."""
    return storage._cdata


def local_tensor(t):
    """A DTensor's shard on this rank; any other tensor itself."""
    return getattr(t, "_local_tensor", t)


def storages(t) -> list:
    """The UntypedStorages behind tensor `t`: its own, its local shard's (DTensor), or those of the
    inner tensors of another wrapper subclass."""
    t = local_tensor(t)
    try:
        return [t.untyped_storage()]
    except (RuntimeError, NotImplementedError):
        from torch.distributed._tools.common_utils import get_untyped_storages

        return list(get_untyped_storages(t))


def storage_bytes(tensors) -> int:
    """Bytes of the distinct storages behind `tensors` (DTensors count their local shard; None entries are skipped)."""
    seen: dict[int, int] = {}
    for t in tensors:
        if t is None:
            continue
        for st in storages(t):
            seen[storage_key(st)] = st.nbytes()
    return sum(seen.values())


@contextmanager
def follow_storage_resizes(callback):
    """Call `callback(storage)` after every UntypedStorage.resize_ inside the block (FSDP2 frees and
    re-allocates unsharded parameters by resizing their storage, which no dispatch mode sees)."""
    original = torch.UntypedStorage.resize_

    def resize_(st, size):
        out = original(st, size)
        callback(st)
        return out

    torch.UntypedStorage.resize_ = resize_
    try:
        yield
    finally:
        torch.UntypedStorage.resize_ = original


@contextmanager
def fake_process_group(world_size: int):
    """torch.distributed initialised with the fake backend (collectives return at once; this process
    is rank 0 of `world_size`) and a 1-D CPU device mesh over it; torn down on exit."""
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


def fsdp_unsharded_buffers(model) -> list:
    """The all-gathered (unsharded) parameter tensors FSDP2 holds now, over every FSDP module."""
    from torch.distributed.fsdp import FSDPModule

    bufs = []
    for m in model.modules():
        if isinstance(m, FSDPModule):
            for group in m._get_fsdp_state()._fsdp_param_groups:
                for fp in group.fsdp_params:
                    bufs.extend(fp.all_gather_outputs)
    return bufs


def replicate(module, **kwargs):
    """torch's FSDP2-based DDP (`replicate`, still under torch.distributed._composable)."""
    from torch.distributed._composable.replicate_with_fsdp import replicate as _replicate

    return _replicate(module, **kwargs)


@contextmanager
def allocator_profile():
    """A torch.profiler session around the block that records CPU ops and every allocation and free
    of the CPU allocator (profile_memory); read it with `allocator_events` after the block. Kineto's
    two log lines at start and stop (written to file descriptor 2 by C++) are kept off stderr."""
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _stderr_silenced():
        prof.start()
    try:
        yield prof
    finally:
        with _stderr_silenced():
            prof.stop()


@contextmanager
def _stderr_silenced():
    import os
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def span(name: str):
    """A record_function range named `name`, entered with __enter__ and ended with __exit__ (also
    from another function than the one that entered it); its times come back in `allocator_events`."""
    return torch.profiler.record_function(name)


def allocator_events(prof, device: str = "cpu", prefix: str = "") -> tuple[list[tuple[int, int, int]], list[tuple[str, int, int]]]:
    """From a stopped `allocator_profile`: the allocator's events on `device` as (time ns, bytes:
    + allocated / - freed, running total of live bytes the allocator reports after it), sorted by
    time; and the record_function ranges whose names start with `prefix` as (name, start ns, end ns).
    Both from the kineto results' experimental event tree (private: the public API aggregates the
    allocations by op and drops the running total). The running total counts the blocks allocated
    while profiling; a block allocated before and freed during profiling is not subtracted."""
    from torch._C._profiler import _EventType

    allocs, spans, stack = [], [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        ev = stack.pop()
        stack.extend(ev.children)
        if ev.tag == _EventType.Allocation:
            f = ev.extra_fields
            if f.device.type == device:
                allocs.append((ev.start_time_ns, f.alloc_size, f.total_allocated))
        elif prefix and ev.name.startswith(prefix):
            spans.append((ev.name, ev.start_time_ns, ev.end_time_ns))
    allocs.sort(key=lambda a: a[0])
    spans.sort(key=lambda s: s[1])
    return allocs, spans
