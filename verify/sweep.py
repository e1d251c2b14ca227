"""The ground-truth sweep: runs measured on this machine's ground truth — `torch.cuda`'s
max_memory_allocated on a GPU (the cuda backend), the CPU allocator's own peak elsewhere (the cpu
backend) — each beside the fake backend's trace of the same run and the corrected predictor's
figure. One code path from the run list to the summary and results.json, whatever the hardware,
so a GPU box never runs this code for the first time.

Each row is appended to a JSONL file as it comes (resumed only by the same code and machine, as
the ledger is), and an out-of-memory run is a recorded result, not a crash.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path

from verify.measure.memory import MemorySpec
from verify.formulas import total
from verify.units import rel_error

# targets of the issue on ground truth: the corrected predictor, and the fake trace against the
# ground truth (relative on a GPU, where allocator rounding and workspaces are modelled; absolute
# bytes on the CPU, where the allocator counts exactly the tensors the trace counts)
TARGETS = {"predictor worst": 0.02, "predictor median": 0.01, "fake vs cuda": 0.02, "fake vs cpu allocator bytes": 4096}


def _train(model: str, backend: str, dtype: str = "bf16", precision: str = "mixed", **kw) -> MemorySpec:
    """A training run of the sweep; attention sdpa unless `kw` names another."""
    return MemorySpec(model=model, mode="train", backend=backend, dtype=dtype, precision=precision, **{"attn": "sdpa", **kw})


def _gen(model: str, backend: str, **kw) -> MemorySpec:
    """A generation run of the sweep: bf16 and sdpa unless `kw` names others."""
    return MemorySpec(model=model, mode="generate", backend=backend, **{"dtype": "bf16", "attn": "sdpa", **kw})


# The ground-truth runs of `make verify` on one 80 GB GPU: (name, spec). Training covers fp32 AdamW,
# bf16 with fp32 master weights, pure bf16, eager vs sdpa, checkpointing, and a batch/sequence sweep;
# generation covers MHA and GQA models, prefill and decode. Each fits one H100 at these sizes.
GPU_RUNS: tuple[tuple[str, MemorySpec], ...] = (
    ("gpt2-train-fp32-adamw-b8-s1024", _train("gpt2", "cuda", "fp32", "pure", batch=8, seq=1024)),
    ("gpt2-train-mixed-b8-s1024", _train("gpt2", "cuda", batch=8, seq=1024)),
    ("gpt2-train-bf16-pure-b8-s1024-eager", _train("gpt2", "cuda", precision="pure", batch=8, seq=1024, attn="eager")),
    ("gpt2-train-mixed-b8-s256", _train("gpt2", "cuda", batch=8, seq=256)),
    ("gpt2-train-mixed-b8-s512", _train("gpt2", "cuda", batch=8, seq=512)),
    ("gpt2-train-mixed-b2-s1024", _train("gpt2", "cuda", batch=2, seq=1024)),
    ("gpt2-train-mixed-b8-s1024-eager", _train("gpt2", "cuda", batch=8, seq=1024, attn="eager")),
    ("gpt2-train-sgd-fp32-b4-s1024", _train("gpt2", "cuda", "fp32", "pure", optimizer="sgd", batch=4, seq=1024)),
    ("gpt2-medium-train-mixed-b4-s1024", _train("gpt2-medium", "cuda", batch=4, seq=1024)),
    ("gpt2-medium-train-mixed-b4-s1024-ckpt", _train("gpt2-medium", "cuda", batch=4, seq=1024, checkpointing=True)),
    ("qwen2-0.5b-train-mixed-b4-s1024", _train("qwen2-0.5b", "cuda", batch=4, seq=1024)),
    ("tinyllama-1.1b-train-mixed-b2-s2048", _train("tinyllama-1.1b", "cuda", batch=2, seq=2048)),
    ("tinyllama-1.1b-train-bf16-pure-b2-s2048-eager", _train("tinyllama-1.1b", "cuda", precision="pure", batch=2, seq=2048, attn="eager")),
    ("llama2-7b-generate-b1-s2048-n128", _gen("llama2-7b", "cuda", batch=1, seq=2048, new_tokens=128)),
    ("llama2-7b-generate-b8-s1024-n64", _gen("llama2-7b", "cuda", batch=8, seq=1024, new_tokens=64)),
    ("tinyllama-1.1b-generate-gqa-b16-s1024-n128", _gen("tinyllama-1.1b", "cuda", batch=16, seq=1024, new_tokens=128)),
    ("qwen2-0.5b-generate-gqa-b32-s512-n64", _gen("qwen2-0.5b", "cuda", batch=32, seq=512, new_tokens=64)),
    ("gpt2-medium-generate-mha-b32-s512-n128", _gen("gpt2-medium", "cuda", batch=32, seq=512, new_tokens=128)),
)

# The ground-truth runs of `make verify` on a machine without a GPU: the CPU allocator's own peak, sized
# for 2 cores (about 3 minutes in all). Every bundled family; training in fp32, bf16 with fp32 master
# weights and pure bf16, AdamW and SGD, eager and sdpa, checkpointing; generation through transformers'
# generate() with MHA, GQA and MQA, a sliding window, dynamic and static caches. GPT-2 itself (124M,
# vocabulary 50,257) for the regime where the logits and the optimizer state weigh; the tiny-* configs
# (h = 64, 2 layers) at batch and sequence sizes where activations lead. Under checkpointing the CPU
# allocator also holds the CPU RNG state torch.utils.checkpoint keeps per layer until its recompute
# (5,056 bytes each): host memory beside a GPU, so the fake trace, whose target is device memory,
# leaves it out.
CPU_RUNS: tuple[tuple[str, MemorySpec], ...] = (
    ("gpt2-train-fp32-adamw-b1-s128", _train("gpt2", "cpu", "fp32", "pure", batch=1, seq=128)),
    ("gpt2-generate-mha-fp32-b4-s128-n16", _gen("gpt2", "cpu", dtype="fp32", batch=4, seq=128, new_tokens=16)),
    ("tiny-llama-train-mixed-adamw-b4-s128", _train("tiny-llama", "cpu", batch=4, seq=128)),
    ("tiny-llama-train-fp32-sgd-b4-s128-eager-ckpt", _train("tiny-llama", "cpu", "fp32", "pure", optimizer="sgd", batch=4, seq=128,
                                                            attn="eager", checkpointing=True)),
    ("tiny-llama-gqa-train-bf16-pure-adamw-b4-s128-eager", _train("tiny-llama-gqa", "cpu", precision="pure", batch=4, seq=128, attn="eager")),
    ("tiny-qwen2-train-bf16-pure-sgd-b4-s128", _train("tiny-qwen2", "cpu", precision="pure", optimizer="sgd", batch=4, seq=128)),
    ("tiny-mistral-train-mixed-adamw-b4-s128", _train("tiny-mistral", "cpu", batch=4, seq=128)),
    ("tiny-gpt2-train-fp32-adamw-b8-s64-ckpt", _train("tiny-gpt2", "cpu", "fp32", "pure", batch=8, seq=64, checkpointing=True)),
    ("tiny-opt-train-fp32-sgd-b4-s128-eager", _train("tiny-opt", "cpu", "fp32", "pure", optimizer="sgd", batch=4, seq=128, attn="eager")),
    ("tiny-bloom-train-bf16-pure-adamw-b4-s128-eager", _train("tiny-bloom", "cpu", precision="pure", batch=4, seq=128, attn="eager")),
    ("tiny-neox-train-mixed-adamw-b4-s128", _train("tiny-neox", "cpu", batch=4, seq=128)),
    ("tiny-falcon-new-train-mixed-adamw-b4-s128", _train("tiny-falcon-new", "cpu", batch=4, seq=128)),
    ("tiny-bigcode-train-fp32-adamw-b4-s128", _train("tiny-bigcode", "cpu", "fp32", "pure", batch=4, seq=128)),
    ("tiny-mixtral-train-bf16-pure-adamw-b4-s128", _train("tiny-mixtral", "cpu", precision="pure", batch=4, seq=128)),
    ("tiny-llama-generate-mha-b8-s96-n32", _gen("tiny-llama", "cpu", batch=8, seq=96, new_tokens=32)),
    ("tiny-qwen2-generate-gqa-b8-s96-n32", _gen("tiny-qwen2", "cpu", batch=8, seq=96, new_tokens=32)),
    ("tiny-gemma-generate-mqa-b8-s96-n32", _gen("tiny-gemma", "cpu", batch=8, seq=96, new_tokens=32)),
    ("tiny-bigcode-generate-mqa-fp32-b8-s96-n32", _gen("tiny-bigcode", "cpu", dtype="fp32", batch=8, seq=96, new_tokens=32)),
    ("tiny-falcon-generate-mqa-b8-s96-n32-eager", _gen("tiny-falcon", "cpu", batch=8, seq=96, new_tokens=32, attn="eager")),
    ("tiny-mistral-generate-window-b8-s96-n32", _gen("tiny-mistral", "cpu", batch=8, seq=96, new_tokens=32)),
    ("tiny-mistral-generate-window-static-b8-s96-n32", _gen("tiny-mistral", "cpu", batch=8, seq=96, new_tokens=32, cache="static")),
    ("tiny-llama-gqa-generate-static-b8-s96-n32", _gen("tiny-llama-gqa", "cpu", batch=8, seq=96, new_tokens=32, cache="static")),
)


def measure_or_oom(spec: MemorySpec) -> dict:
    """The ground-truth measurement of `spec` as a dict with "status": "ok"; a device that ran out
    of memory gives {"status": "oom", "error": ...} instead of an exception, and a cpu run refused
    up front for want of host memory {"status": "refused", "error": ...}."""
    import gc

    import torch

    from verify.measure.cpu import HostMemoryError
    from verify.measure.memory import measure

    try:
        return {"status": "ok", **measure(spec).as_dict()}
    except HostMemoryError as e:
        return {"status": "refused", "spec": spec.as_dict(), "error": str(e)}
    except torch.OutOfMemoryError as e:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return {"status": "oom", "spec": spec.as_dict(), "error": str(e).splitlines()[0][:300]}


def measure_row(name: str, spec: MemorySpec) -> dict:
    """One row: the ground truth (spec.backend); the fake trace of the same run, `fake_peak_bytes` the
    trace alone and, for a GPU ground truth, `fake_gpu_peak_bytes` with the modelled CUDA terms (what
    the fake backend compares with torch.cuda); and the corrected predictor's peak (with the CUDA
    terms on a GPU) and the moment it picks (None where it says it does not cover the run, with the
    reason)."""
    from verify.measure.fake import measure as fake_measure
    from verify.predict.memory import prediction_for

    t0 = time.perf_counter()
    row = {"name": name, "mode": spec.mode, "backend": spec.backend, **measure_or_oom(spec)}
    if row["status"] == "ok":
        row["measured_peak_bytes"] = row["peak_bytes"]
    try:
        fake = fake_measure(dataclasses.replace(spec, backend="fake", gpu_terms=spec.backend == "cuda"))
        row["fake_peak_bytes"] = fake.traced_peak_bytes
        if spec.backend == "cuda":
            row["fake_gpu_peak_bytes"] = fake.peak_bytes
            row["fake_cuda_terms"] = fake.cuda_terms
        row["fake"] = {k: v for k, v in fake.as_dict().items() if k.endswith("_bytes")}
        if row.get("measured_peak_bytes") is not None:
            row["fake_minus_measured_bytes"] = fake_compared(row) - row["measured_peak_bytes"]
    except (ValueError, RuntimeError) as e:
        row["fake_peak_bytes"] = None
        row["fake_error"] = str(e).splitlines()[0]
    pred = prediction_for(spec)
    row.update(predicted_peak_bytes=pred.peak_bytes, predicted_moment=pred.peak_moment, predictor_not_covered=pred.peak_not_covered,
               predicted={k: total(v) for k, v in pred.terms.items()})
    row["seconds"] = round(time.perf_counter() - t0, 2)
    return row


def sweep(runs, jsonl: Path, progress=None) -> list[dict]:
    """Every (name, spec) of `runs` measured by `measure_row`, appended to `jsonl` as it comes; rows
    an interrupted sweep of the same code and machine left there are reused."""
    from verify import jsonl as jsonl_file
    from verify.provenance import fingerprint, hardware, utc_now

    fp = fingerprint(hardware())
    done = {row["name"]: row for row in jsonl_file.read(jsonl) if row.get("fingerprint") == fp}
    rows = []
    for i, (name, spec) in enumerate(runs, 1):
        row = done.get(name)
        if row is None:
            row = {**measure_row(name, spec), "measured_at": utc_now(), "fingerprint": fp}
            jsonl_file.append(jsonl, row)
        rows.append(row)
        if progress:
            progress(i, len(runs), row)
    return rows


def fake_compared(row: dict) -> int | None:
    """The fake figure a row's ground truth is compared with: the trace alone against the CPU
    allocator, the trace with the modelled CUDA terms against torch.cuda."""
    return row.get("fake_gpu_peak_bytes") if row.get("backend") == "cuda" else row.get("fake_peak_bytes")


def fake_within_target(row: dict) -> bool:
    """Whether a row's fake peak meets its backend's target: within TARGETS["fake vs cpu allocator bytes"]
    of the CPU allocator, within TARGETS["fake vs cuda"] (relative) of torch.cuda."""
    gap = fake_compared(row) - row["measured_peak_bytes"]
    if row.get("backend") == "cpu":
        return abs(gap) <= TARGETS["fake vs cpu allocator bytes"]
    return abs(gap) <= TARGETS["fake vs cuda"] * row["measured_peak_bytes"]


def summary(rows: list[dict]) -> dict:
    """Worst and median |predicted − measured| / measured of the corrected predictor, and of the fake
    trace against the ground truth (relative, and in bytes, with the runs that miss their target),
    over the runs that have both figures."""

    def compared(figure) -> list[tuple[dict, int]]:
        return [(r, figure(r)) for r in rows if r.get("status") == "ok" and figure(r) is not None and r.get("measured_peak_bytes")]

    out = {"runs": len(rows), **{k: sum(r.get("status") == k for r in rows) for k in ("ok", "oom", "refused")}}
    for figure, label in ((lambda r: r.get("predicted_peak_bytes"), "predictor"), (fake_compared, "fake")):
        both = compared(figure)
        rel = [abs(rel_error(f, r["measured_peak_bytes"])) for r, f in both]
        out[label] = {"compared": len(both), "worst_rel_error": max(rel) if rel else None,
                      "median_rel_error": statistics.median(rel) if rel else None,
                      "worst_abs_bytes": max(abs(f - r["measured_peak_bytes"]) for r, f in both) if both else None}
    out["fake"]["missed_target"] = sorted(r["name"] for r, _ in compared(fake_compared) if not fake_within_target(r))
    out["not_predicted"] = sorted(r["name"] for r in rows if r.get("status") == "ok" and r.get("predicted_peak_bytes") is None)
    out["targets"] = TARGETS
    return out


def write_results(out_dir: Path, hw: dict, command: str, rows: list[dict], **extra) -> Path:
    """results.json: hardware, command, the summary against the targets, every row, and `extra`."""
    import json

    from verify.provenance import fingerprint, git_commit

    path = Path(out_dir) / "results.json"
    path.write_text(json.dumps({"hardware": hw, "command": command, "commit": git_commit(), "fingerprint": fingerprint(hw),
                                "summary": summary(rows), "runs": rows, **extra}, indent=2, default=str) + "\n")
    return path
