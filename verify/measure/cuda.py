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


def _train(model: str, dtype: str = "bf16", precision: str = "mixed", **kw) -> MemorySpec:
    return MemorySpec(model=model, mode="train", backend="cuda", dtype=dtype, precision=precision, **kw)


def _gen(model: str, **kw) -> MemorySpec:
    return MemorySpec(model=model, mode="generate", backend="cuda", dtype="bf16", **kw)


# The ground-truth runs of `make verify` on one 80 GB GPU: (name, spec). Training covers fp32 AdamW,
# bf16 with fp32 master weights, pure bf16, eager vs sdpa, checkpointing, and a batch/sequence sweep;
# generation covers MHA and GQA models, prefill and decode. Each fits one H100 at these sizes.
GPU_RUNS: tuple[tuple[str, MemorySpec], ...] = (
    ("gpt2-train-fp32-adamw-b8-s1024", _train("gpt2", "fp32", "pure", batch=8, seq=1024)),
    ("gpt2-train-mixed-b8-s1024", _train("gpt2", batch=8, seq=1024)),
    ("gpt2-train-bf16-pure-b8-s1024-eager", _train("gpt2", precision="pure", batch=8, seq=1024, attn="eager")),
    ("gpt2-train-mixed-b8-s256", _train("gpt2", batch=8, seq=256)),
    ("gpt2-train-mixed-b8-s512", _train("gpt2", batch=8, seq=512)),
    ("gpt2-train-mixed-b2-s1024", _train("gpt2", batch=2, seq=1024)),
    ("gpt2-train-mixed-b8-s1024-eager", _train("gpt2", batch=8, seq=1024, attn="eager")),
    ("gpt2-train-sgd-fp32-b4-s1024", _train("gpt2", "fp32", "pure", optimizer="sgd", batch=4, seq=1024)),
    ("gpt2-medium-train-mixed-b4-s1024", _train("gpt2-medium", batch=4, seq=1024)),
    ("gpt2-medium-train-mixed-b4-s1024-ckpt", _train("gpt2-medium", batch=4, seq=1024, checkpointing=True)),
    ("qwen2-0.5b-train-mixed-b4-s1024", _train("qwen2-0.5b", batch=4, seq=1024)),
    ("tinyllama-1.1b-train-mixed-b2-s2048", _train("tinyllama-1.1b", batch=2, seq=2048)),
    ("tinyllama-1.1b-train-bf16-pure-b2-s2048-eager", _train("tinyllama-1.1b", precision="pure", batch=2, seq=2048, attn="eager")),
    ("llama2-7b-generate-b1-s2048-n128", _gen("llama2-7b", batch=1, seq=2048, new_tokens=128)),
    ("llama2-7b-generate-b8-s1024-n64", _gen("llama2-7b", batch=8, seq=1024, new_tokens=64)),
    ("tinyllama-1.1b-generate-gqa-b16-s1024-n128", _gen("tinyllama-1.1b", batch=16, seq=1024, new_tokens=128)),
    ("qwen2-0.5b-generate-gqa-b32-s512-n64", _gen("qwen2-0.5b", batch=32, seq=512, new_tokens=64)),
    ("gpt2-medium-generate-mha-b32-s512-n128", _gen("gpt2-medium", batch=32, seq=512, new_tokens=128)),
)


def run_or_oom(spec: MemorySpec) -> dict:
    """measure(spec) as a dict; an out-of-memory run is a recorded result, not a crash."""
    try:
        return {"status": "ok", **measure(spec).as_dict()}
    except torch.cuda.OutOfMemoryError as e:
        gc.collect()
        torch.cuda.empty_cache()
        return {"status": "oom", "spec": spec.as_dict(), "error": str(e).splitlines()[0][:300]}


def sweep(jsonl, progress=None) -> list[dict]:
    """Every GPU_RUNS entry on the GPU, each beside the fake backend's figure and the corrected
    predictor's, appended to `jsonl` as it comes; entries already in `jsonl` are not re-run."""
    import dataclasses

    from verify import jsonl as jsonl_file
    from verify.measure import fake
    from verify.predict.memory import prediction_for

    done = {row["name"]: row for row in jsonl_file.read(jsonl)}
    rows = []
    for i, (name, spec) in enumerate(GPU_RUNS, 1):
        if name in done:
            row = done[name]
        else:
            t0 = time.perf_counter()
            row = {"name": name, "mode": spec.mode, **run_or_oom(spec)}
            fake_spec = dataclasses.replace(spec, backend="fake")
            try:
                fake_result = fake.measure(fake_spec)
                row["fake_peak_bytes"] = fake_result.peak_bytes
                row["fake"] = {k: v for k, v in fake_result.as_dict().items() if k.endswith("_bytes")}
            except (ValueError, RuntimeError) as e:
                row["fake_peak_bytes"] = None
                row["fake_error"] = str(e).splitlines()[0]
            pred = prediction_for(spec)
            row["predicted_peak_bytes"] = pred.get("peak")
            row["predicted"] = pred
            if row["status"] == "ok":
                row["measured_peak_bytes"] = row["peak_bytes"]
            row["seconds"] = round(time.perf_counter() - t0, 2)
            jsonl_file.append(jsonl, row)
        rows.append(row)
        if progress:
            progress(i, len(GPU_RUNS), row)
    return rows


WEIGHT_RUNS = (("llama2-7b", "fp32", None), ("llama2-7b", "fp16", None), ("llama2-7b", "bf16", None),
               ("llama2-7b", "bf16", "int8"), ("llama2-7b", "bf16", "int4"))  # (model, dtype, quanto weights)


def weights_on_gpu(model: str, dtype: str, quant: str | None = None) -> dict:
    """Allocated bytes of `model`'s weights on the GPU in `dtype`, or quantized by optimum-quanto
    (int8 / int4 weights, scales and shifts included) after freezing; versus the closed form."""
    from verify.build import build, parse_dtype
    from verify.configs import load_config
    from verify.measure.quant import quantize

    require_cuda()
    gc.collect()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    try:
        m = build(load_config(model), device="cuda", dtype=parse_dtype(dtype))
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
