"""The CUDA backend: the very same steps as the fake backend (steps.py, run by fake.run with its
Tracker) on real GPU tensors, with torch.cuda's allocator statistics around every phase.

The ground truth is `torch.cuda.max_memory_allocated()` minus the baseline before the model
existed, taken over the measured (second) training step or the whole generation; the Tracker's
per-category bytes ride along so each category compares with the fake backend run by run.
The CUDA context and the caching allocator's reserve are reported apart (they are not tensors).
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass

import torch

from verify.measure.memory import MemoryResult, MemorySpec
from verify.measure.tracker import Tracker


class NoCudaError(ValueError):
    """The cuda backend was asked for where no CUDA GPU is visible."""


def require_cuda() -> None:
    if not torch.cuda.is_available():
        raise NoCudaError("--backend cuda needs a CUDA GPU and none is visible (torch.cuda.is_available() is False); "
                          "use --backend fake for the same measurement on fake tensors")


class CudaTracker(Tracker):
    """The Tracker, plus torch.cuda's peak allocated bytes per phase (reset at each phase start)."""

    def __init__(self, baseline: int):
        super().__init__()
        self.baseline = baseline  # bytes allocated before the model existed
        self.cuda_phase_peaks: dict[str, int] = {}  # phase -> max_memory_allocated - baseline within it
        self.cuda_measured_peak = 0  # max over the phases since the last reset_peak (the measured step)

    def _close_phase(self) -> None:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - self.baseline
        self.cuda_phase_peaks[self.phase] = max(self.cuda_phase_peaks.get(self.phase, 0), peak)
        self.cuda_measured_peak = max(self.cuda_measured_peak, peak)
        torch.cuda.reset_peak_memory_stats()

    def mark(self, phase: str) -> None:
        self._close_phase()
        super().mark(phase)

    def reset_peak(self) -> None:
        super().reset_peak()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        self.cuda_phase_peaks = {}
        self.cuda_measured_peak = torch.cuda.memory_allocated() - self.baseline

    def __exit__(self, *exc):
        self._close_phase()
        return super().__exit__(*exc)


@dataclass
class DeviceState:
    """What the GPU holds outside PyTorch's tensors, read with mem_get_info and memory_stats."""

    total_bytes: int  # the card's memory
    free_bytes: int  # free as the driver sees it
    reserved_bytes: int  # held by PyTorch's caching allocator (allocated + cached)
    allocated_bytes: int  # held by live tensors

    @property
    def outside_torch_bytes(self) -> int:
        """CUDA context, cuBLAS/cuDNN handles and anything else not in the caching allocator."""
        return self.total_bytes - self.free_bytes - self.reserved_bytes


def device_state() -> DeviceState:
    torch.cuda.synchronize()
    free, total = torch.cuda.mem_get_info()
    return DeviceState(total, free, torch.cuda.memory_reserved(), torch.cuda.memory_allocated())


def measure(spec: MemorySpec, config=None) -> MemoryResult:
    """Run `spec` on the GPU; peak_bytes is torch.cuda.max_memory_allocated minus the baseline.
    `config`: a transformers config to build instead of loading spec.model."""
    from verify.measure.fake import run

    require_cuda()
    torch.cuda.init()
    gc.collect()
    torch.cuda.empty_cache()
    before = device_state()
    tracker = CudaTracker(baseline=before.allocated_bytes)
    t0 = time.perf_counter()
    result = run(spec, device="cuda", config=config, tracker=tracker)
    seconds = time.perf_counter() - t0
    after = device_state()
    result.extra.update({
        "tracker_peak_bytes": result.peak_bytes,
        "cuda_phase_peaks": dict(tracker.cuda_phase_peaks),
        "cuda_context_bytes": before.outside_torch_bytes,
        "reserved_after_bytes": after.reserved_bytes,
        "max_reserved_bytes": torch.cuda.max_memory_reserved(),
        "allocator_stats": {k: v for k, v in torch.cuda.memory_stats().items()
                            if k in ("num_alloc_retries", "num_ooms", "allocated_bytes.all.peak", "reserved_bytes.all.peak")},
        "gpu": torch.cuda.get_device_name(0),
        "seconds": round(seconds, 3),
    })
    result.traced_peak_bytes = result.peak_bytes  # the tracker's figure; cuda_terms stay empty: the GPU measures them
    result.peak_bytes = tracker.cuda_measured_peak
    gc.collect()
    torch.cuda.empty_cache()
    return result


WEIGHT_RUNS = (("llama2-7b", "fp32", None), ("llama2-7b", "fp16", None), ("llama2-7b", "bf16", None),
               ("llama2-7b", "bf16", "int8"), ("llama2-7b", "bf16", "int4"))  # (model, dtype, quanto weights)


def weights_on_gpu(model: str, dtype: str, quant: str | None = None) -> dict:
    """Allocated bytes of `model`'s weights on the GPU in `dtype`, or quantized by optimum-quanto
    (int8 / int4 weights, scales and shifts included) after freezing; versus the closed form."""
    from verify.build import build
    from verify.configs import load_config
    from verify.measure.quant import quantize
    from verify.units import torch_dtype

    require_cuda()
    gc.collect()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    try:
        m = build(load_config(model), device="cuda", dtype=torch_dtype(dtype))
        n = sum(p.numel() for p in m.parameters())
        if quant:
            quantize(m, quant)
        gc.collect()
        torch.cuda.synchronize()
        allocated = torch.cuda.memory_allocated() - base
        state = sum(t.numel() * t.element_size() for t in m.state_dict().values() if isinstance(t, torch.Tensor))
        del m
        return {"model": model, "dtype": dtype, "quant": quant, "status": "ok", "params": n,
                "allocated_bytes": allocated, "state_dict_bytes": state, "bytes_per_param": allocated / n}
    except torch.cuda.OutOfMemoryError as e:
        return {"model": model, "dtype": dtype, "quant": quant, "status": "oom", "error": str(e).splitlines()[0][:300]}
    finally:
        gc.collect()
        torch.cuda.empty_cache()
