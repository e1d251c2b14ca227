"""Benchmark of the fake backend: how long a training step of LLaMA-7B and Llama-2-70B takes to
trace on this CPU, and how much host memory the trace needs (issue 5: 7B in at most 20 s and
2 GB; 70B in under 3 minutes).

Each model runs in a fresh Python process so that its peak resident set size is its own.
"""

from __future__ import annotations

import json
import subprocess
import sys

CASES = (  # (model, dtype, optimizer, batch, seq): the benchmark runs
    ("llama-7b", "bf16", "adamw", 1, 2048),
    ("llama2-70b", "bf16", "adamw", 1, 2048),
)

_CHILD = """
import json, resource, sys, time
t0 = time.perf_counter()
from verify.measure.fake import measure
from verify.measure.memory import MemorySpec
t_import = time.perf_counter() - t0
model, dtype, optimizer, batch, seq = sys.argv[1:6]
r = measure(MemorySpec(model=model, dtype=dtype, optimizer=optimizer, batch=int(batch), seq=int(seq)))
print(json.dumps({"model": model, "dtype": dtype, "optimizer": optimizer, "batch": int(batch), "seq": int(seq),
                  "import_s": round(t_import, 3), "build_s": r.extra["build_s"], "trace_s": r.extra["trace_s"],
                  "total_s": round(time.perf_counter() - t0, 3),
                  "host_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "peak_bytes": r.peak_bytes, "activations_bytes": r.activations_bytes}))
"""


def bench_fake(cases=CASES, timeout_s: int = 600) -> list[dict]:
    """Trace each case's training step (two steps: the first creates the optimizer state) in a
    child process; return per case: seconds to import, build and trace, the child's peak RSS in
    bytes, and the measured peak device bytes."""
    out = []
    for model, dtype, optimizer, batch, seq in cases:
        p = subprocess.run([sys.executable, "-c", _CHILD, model, dtype, optimizer, str(batch), str(seq)],
                           capture_output=True, text=True, timeout=timeout_s)
        if p.returncode != 0:
            raise RuntimeError(f"bench_fake {model}: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.returncode}")
        out.append(json.loads(p.stdout.strip().splitlines()[-1]))
    return out
