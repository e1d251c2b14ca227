"""The cpu backend: the very same steps as the fake backend (steps.py, run by fake.run with its
Tracker) on real CPU tensors, with the CPU allocator's own figures read by torch's profiler: the
ground truth a machine without a GPU can give.

peak_bytes is defined as the cuda backend defines its reading: the highest total the allocator
held during the measured step (the second training step, the whole generation) minus what it held
before the model existed. The profiler's memory events carry the allocator's running total of live
bytes; phases are record_function ranges opened at each of the Tracker's phase marks, so the
allocator's peak per phase comes out too. The Tracker's peak of the same run rides along
(extra["tracker_peak_bytes"]), as on the cuda backend. Generation runs transformers' generate().

What the allocator sees and the Tracker does not: buffers a kernel allocates for itself (the
flash-attention CPU kernel's per-thread scratch, oneDNN's), which live only inside that op.

A run whose fake trace says it would not fit in this host's available memory is refused before
anything real is allocated (`check_host_memory`).
"""

from __future__ import annotations

import gc
import time

from verify.measure.memory import MemoryResult, MemorySpec
from verify.measure.tracker import Tracker
from verify.units import GiB

SPAN = "verify::"  # prefix of the record_function ranges this backend opens
HOST_MARGIN_BYTES = 2 * GiB  # beside the run's own peak: the interpreter, torch and transformers, the profiler's records
HOST_MARGIN_FRACTION = 0.10  # and this share of the peak again: allocator rounding, fragmentation, the build's temporaries


class HostMemoryError(ValueError):
    """The run would not fit in the host memory available now; the message says so in one line."""


class CpuTracker(Tracker):
    """The Tracker, with each phase opened as a record_function range ("verify::phase::<i>::<name>") and
    the start of the measured step (reset_peak) as an empty one ("verify::measured"), so that the
    profiler's allocation events can be cut by phase."""

    def __init__(self):
        super().__init__()
        self._range = None

    def _close_range(self) -> None:
        if self._range is not None:
            self._range.__exit__(None, None, None)
            self._range = None

    def mark(self, phase: str) -> None:
        from verify.torchapi import span

        self._close_range()
        super().mark(phase)
        self._range = span(f"{SPAN}phase::{len(self.phase_starts)}::{phase}")
        self._range.__enter__()

    def reset_peak(self) -> None:
        from verify.torchapi import span

        super().reset_peak()
        with span(f"{SPAN}measured"):
            pass

    def __exit__(self, *exc):
        self._close_range()
        return super().__exit__(*exc)


def available_host_bytes() -> int | None:
    """MemAvailable of /proc/meminfo (what the kernel can give without swapping), else the free
    physical pages; None where neither can be read."""
    import os

    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def weights_bytes(spec: MemorySpec, config=None) -> int:
    """Bytes of the model's parameters in the run's weight dtype, from a build on the meta device."""
    from verify.build import build
    from verify.configs import load_config
    from verify.units import weight_dtype

    model = build(config if config is not None else load_config(spec.model), device="meta", dtype=weight_dtype(spec.dtype, spec.precision))
    return sum(p.numel() * p.element_size() for p in model.parameters())


def with_margin(peak: int) -> int:
    """Host bytes a run whose device peak is `peak` needs: HOST_MARGIN_FRACTION more, and HOST_MARGIN_BYTES."""
    return int(peak * (1 + HOST_MARGIN_FRACTION)) + HOST_MARGIN_BYTES


def host_bytes_needed(spec: MemorySpec, config=None) -> int:
    """What the run needs of host memory: the fake trace's peak of the same spec `with_margin`. Where
    the fake backend cannot trace the run (MoE experts off bf16), the weights' bytes stand in for
    its peak."""
    import dataclasses

    from verify.measure.fake import TraceError, run

    try:
        peak = run(dataclasses.replace(spec, backend="fake"), device="fake", config=config).peak_bytes
    except TraceError:
        peak = weights_bytes(spec, config)
    return with_margin(peak)


def check_host_memory(spec: MemorySpec, config=None) -> tuple[int, int | None]:
    """Raise HostMemoryError (one line) if the run needs more host memory than is available now
    (first the weights alone, from a meta build, then the fake trace's peak); otherwise return
    (bytes needed, bytes available)."""
    from verify.units import fmt_bytes

    have = available_host_bytes()
    if have is None:
        return host_bytes_needed(spec, config), None
    for what, estimate, instead in (("its weights", lambda: with_margin(weights_bytes(spec, config)), ""),
                                    ("its fake trace's peak", lambda: host_bytes_needed(spec, config), ", or a smaller --batch / --seq")):
        need = estimate()
        if need > have:
            raise HostMemoryError(
                f"{spec.model}: this {spec.mode} run on real CPU tensors needs about {fmt_bytes(need, 'GiB', 1)} of host memory "
                f"({what} + {HOST_MARGIN_FRACTION:.0%} + {fmt_bytes(HOST_MARGIN_BYTES, 'GiB', 0)}) and {fmt_bytes(have, 'GiB', 1)} "
                f"is available; use --backend fake{instead}")
    return need, have


def allocator_peaks(allocs: list[tuple[int, int, int]], spans: list[tuple[str, int, int]]) -> dict:
    """The allocator's figures of a profiled run (torchapi.allocator_events with CpuTracker's ranges):
    "baseline" (its total when profiling started), "peak" (its highest total from the start of the
    measured step to the end, minus the baseline), "phases" (phase -> the same within that phase's
    ranges of the measured step), "events" (allocation events counted)."""
    import bisect

    times = [t for t, _, _ in allocs]
    baseline = allocs[0][2] - allocs[0][1] if allocs else 0

    def total_at(t: int) -> int:
        i = bisect.bisect_right(times, t)
        return allocs[i - 1][2] if i else baseline

    def highest(start: int, end: int) -> int:
        lo, hi = bisect.bisect_left(times, start), bisect.bisect_right(times, end)
        return max([total_at(start)] + [allocs[i][2] for i in range(lo, hi)]) - baseline

    starts = [s for name, s, _ in spans if name == f"{SPAN}measured"]
    phases = [(name.split("::")[-1], s, e) for name, s, e in spans if name.startswith(f"{SPAN}phase::")]
    measured_from = starts[-1] if starts else (times[0] if times else 0)
    end = max([e for _, _, e in phases] or times[-1:] or [measured_from])  # the last phase ends when the tracker exits
    per_phase: dict[str, int] = {}
    for name, s, e in phases:
        if e >= measured_from:
            per_phase[name] = max(per_phase.get(name, 0), highest(max(s, measured_from), e))
    return {"baseline": baseline, "peak": highest(measured_from, end), "phases": per_phase, "events": len(allocs)}


def measure(spec: MemorySpec, config=None, check_memory: bool = True) -> MemoryResult:
    """Run `spec` on real CPU tensors under the profiler; peak_bytes is the CPU allocator's highest
    total during the measured step minus its total before the model existed. `config`: a
    transformers config to build instead of loading spec.model. Refuses (HostMemoryError) a run
    that would not fit in the host memory available (`check_memory`)."""
    from verify.measure.fake import run
    from verify.torchapi import allocator_events, allocator_profile

    need, have = check_host_memory(spec, config) if check_memory else (None, None)
    gc.collect()
    tracker = CpuTracker()
    t0 = time.perf_counter()
    with allocator_profile() as prof:
        result = run(spec, device="cpu", config=config, tracker=tracker)
    seconds = time.perf_counter() - t0
    figures = allocator_peaks(*allocator_events(prof, device="cpu", prefix=SPAN))
    result.extra.update({
        "tracker_peak_bytes": result.peak_bytes,
        "allocator_phase_peaks": figures["phases"],
        "allocator_events": figures["events"],
        "host_bytes_needed": need,  # the estimate the run was let through on (fake trace's peak + margin)
        "host_bytes_available": have,
        "seconds": round(seconds, 3),
    })
    result.peak_bytes = figures["peak"]
    gc.collect()
    return result
