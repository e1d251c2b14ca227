"""Benchmark of the fake backend: how long a training step of LLaMA-7B and Llama-2-70B takes to
trace on this CPU, and how much host memory the trace needs (issue 5: 7B in at most 20 s and
2 GB; 70B in under 3 minutes); and how long Llama-2-7B's generation after a 1024-token prompt
takes to trace with 1 and with 512 new tokens (issue 14.4: 512 in at most twice the time of 1).

Each case runs in a fresh Python process so that its peak resident set size is its own.
"""

from __future__ import annotations

import json
import subprocess
import sys

CASES = (  # (model, dtype, optimizer, batch, seq): the training benchmark runs
    ("llama-7b", "bf16", "adamw", 1, 2048),
    ("llama2-70b", "bf16", "adamw", 1, 2048),
)
GENERATE_CASES = (  # (model, dtype, batch, prompt, new tokens): issue 14.4, the same prompt with 1 and 512 new tokens
    ("llama2-7b", "bf16", 1, 1024, 1),
    ("llama2-7b", "bf16", 1, 1024, 512),
)

_CHILD = """
import json, resource, sys, time
t0 = time.perf_counter()
from verify.measure.fake import measure
from verify.measure.memory import MemorySpec
t_import = time.perf_counter() - t0
spec = MemorySpec(**json.loads(sys.argv[1]))
r = measure(spec)
print(json.dumps({**spec.as_dict(), "import_s": round(t_import, 3), "build_s": r.extra["build_s"], "trace_s": r.extra["trace_s"],
                  "total_s": round(time.perf_counter() - t0, 3),
                  "host_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "peak_bytes": r.peak_bytes, "activations_bytes": r.activations_bytes, "kv_cache_bytes": r.kv_cache_bytes}))
"""


def _child(spec: dict, timeout_s: int) -> dict:
    p = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(spec)], capture_output=True, text=True, timeout=timeout_s)
    if p.returncode != 0:
        raise RuntimeError(f"bench_fake {spec['model']}: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.returncode}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def bench_fake(cases=CASES, timeout_s: int = 600) -> list[dict]:
    """Trace each case's training step (two steps: the first creates the optimizer state) in a
    child process; return per case: seconds to import, build and trace, the child's peak RSS in
    bytes, and the measured peak device bytes."""
    return [_child({"model": model, "dtype": dtype, "optimizer": optimizer, "batch": batch, "seq": seq}, timeout_s)
            for model, dtype, optimizer, batch, seq in cases]


def bench_generate(cases=GENERATE_CASES, repeats: int = 3, timeout_s: int = 600) -> list[dict]:
    """Trace each case's generation (prefill, then the decode steps) in `repeats` child processes,
    the cases interleaved; per case the run with the median trace time: the same figures as
    bench_fake, and the KV cache's bytes."""
    specs = [{"model": model, "mode": "generate", "dtype": dtype, "batch": batch, "seq": seq, "new_tokens": n}
             for model, dtype, batch, seq, n in cases]
    runs = [[] for _ in specs]
    for _ in range(repeats):
        for i, spec in enumerate(specs):
            runs[i].append(_child(spec, timeout_s))
    return [sorted(r, key=lambda x: x["trace_s"])[len(r) // 2] for r in runs]
