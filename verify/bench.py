"""`python -m verify.bench`: the speed and memory targets of the issues, measured and printed.

- params: counting a 405B config costs at most 1.5x the time of importing torch and the
  transformers model class, and allocates no weight memory. Each leg runs in a fresh interpreter,
  so import caches do not flatter either side.
- fake: the fake-tensor training step of LLaMA-7B (<= 20 s, <= 2 GB host memory) and Llama-2-70B
  (< 3 min), from verify.bench_fake.
- fit: `python -m verify fit llama-7b --gpu H100-SXM --seq 2048`, the largest batch, answered in well
  under a minute (target < 60 s wall clock, the interpreter's start included), in a fresh process.
- generate: Llama-2-7B's generation after a 1024-token prompt traced with 512 new tokens in at most
  twice the time of 1 (the decode steps between the first and the last are not traced one by one).
"""

from __future__ import annotations

import json
import subprocess
import sys

IMPORT_ONLY = """
import json, resource, time
t = time.perf_counter()
import torch
from transformers import LlamaForCausalLM
print(json.dumps({"seconds": time.perf_counter() - t}))
"""

COUNT_405B = """
import json, resource, time
import torch
from transformers import LlamaForCausalLM
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
t = time.perf_counter()
from verify.configs import load_config
from verify.build import build
from verify.measure.params import count
model = build(load_config("llama3-405b"), device="meta")
pc = count(model)
seconds = time.perf_counter() - t
rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": seconds, "total": pc.total, "all_meta": all(p.is_meta for p in model.parameters()),
                  "host_peak_growth_bytes": rss1 - rss0}))
"""


def _run(code: str) -> dict:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def bench_params(repeats: int = 3) -> dict:
    """Median seconds of (import torch + LlamaForCausalLM) and of counting llama3-405b after it."""
    imports = sorted(_run(IMPORT_ONLY)["seconds"] for _ in range(repeats))
    counts = [_run(COUNT_405B) for _ in range(repeats)]
    median = sorted(counts, key=lambda c: c["seconds"])[repeats // 2]
    return {
        "import_seconds": imports[repeats // 2],
        "count_405b_seconds": median["seconds"],
        "ratio": median["seconds"] / imports[repeats // 2],
        "target_ratio": 1.5,
        "total_params": median["total"],
        "weights_allocated": not median["all_meta"],
        "host_peak_growth_bytes": median["host_peak_growth_bytes"],
    }


FIT_7B = ("llama-7b", "--gpu", "H100-SXM", "--seq", "2048")
FIT_TARGET_S = 60


def bench_fit(argv=FIT_7B) -> dict:
    """Wall-clock seconds of `python -m verify fit ... --json` in a fresh interpreter, and its answer."""
    import time

    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "verify", "fit", *argv, "--json"], capture_output=True, text=True, check=True)
    return {"seconds": time.perf_counter() - t, "argv": argv, **json.loads(r.stdout)}


def main() -> int:
    from verify.units import fmt_bytes

    p = bench_params()
    print("params: count llama3-405b on the meta device")
    print(f"  import torch + LlamaForCausalLM: {p['import_seconds']:.2f} s (median of 3, fresh interpreters)")
    print(f"  build + count {p['total_params']:,} parameters: {p['count_405b_seconds']:.2f} s "
          f"= {p['ratio']:.2f}x the import (target <= {p['target_ratio']}x): {'MET' if p['ratio'] <= p['target_ratio'] else 'MISSED'}")
    print(f"  weight memory allocated: {'yes' if p['weights_allocated'] else 'none (all parameters on meta)'}; "
          f"host peak RSS growth {fmt_bytes(p['host_peak_growth_bytes'], 'MB', 1)}")
    from verify.bench_fake import bench_fake

    print()
    print("fake: training step traced on fake tensors (two steps; the second is measured), fresh interpreter each")
    targets = {"llama-7b": "trace <= 20 s, host <= 2 GB", "llama2-70b": "whole run < 180 s"}
    for r in bench_fake():
        met = (r["trace_s"] <= 20 and r["host_peak_rss_bytes"] <= 2e9) if r["model"] == "llama-7b" else r["total_s"] < 180
        print(f"  {r['model']} {r['dtype']} {r['optimizer']} B={r['batch']} S={r['seq']}: import {r['import_s']:.1f} s, "
              f"build {r['build_s']:.1f} s, trace {r['trace_s']:.1f} s, total {r['total_s']:.1f} s; host peak RSS "
              f"{fmt_bytes(r['host_peak_rss_bytes'], 'GB')}; measured device peak {fmt_bytes(r['peak_bytes'], 'GB')} "
              f"(target {targets.get(r['model'], '-')}: {'MET' if met else 'MISSED'})")
    f = bench_fit()
    print()
    print("fit: python -m verify fit " + " ".join(f["argv"]) + " (fresh interpreter, wall clock)")
    print(f"  largest batch {f['max_batch']}: peak {fmt_bytes(f['peak_bytes_at_max'], 'GB')} at it, "
          f"{fmt_bytes(f['peak_bytes_above'], 'GB')} at one more, usable {fmt_bytes(f['usable_bytes'], 'GB')}; "
          f"{f['runs']} fake-tensor runs in {f['seconds']:.1f} s (target < {FIT_TARGET_S} s: "
          f"{'MET' if f['seconds'] < FIT_TARGET_S else 'MISSED'})")
    from verify.bench_fake import bench_generate

    print()
    print("generate: generation traced on fake tensors (median of 3 fresh interpreters each)")
    runs = bench_generate()
    for r in runs:
        print(f"  {r['model']} {r['dtype']} B={r['batch']} prompt {r['seq']}, {r['new_tokens']} new tokens: import {r['import_s']:.1f} s, "
              f"build {r['build_s']:.1f} s, trace {r['trace_s']:.2f} s, total {r['total_s']:.1f} s; measured peak "
              f"{fmt_bytes(r['peak_bytes'], 'GB')}, KV cache {fmt_bytes(r['kv_cache_bytes'], 'GB')}")
    one, most = min(runs, key=lambda r: r["new_tokens"]), max(runs, key=lambda r: r["new_tokens"])
    ratio = most["trace_s"] / one["trace_s"]
    print(f"  {most['new_tokens']} new tokens traced in {ratio:.2f}x the time of {one['new_tokens']} (target <= 2x): "
          f"{'MET' if ratio <= 2 else 'MISSED'}; the whole run {most['total_s'] / one['total_s']:.2f}x (the prefill and the last "
          "decode step are traced, the steps between stood in for by growing the cache)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
