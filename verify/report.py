"""Text tables for the CLI, and the written report (Markdown + JSON + PNG)."""

from __future__ import annotations

from verify.units import fmt_bytes, fmt_count, fmt_rel, rel_error


def _bytes_rows(d: dict) -> list[tuple[str, str, str, str]]:
    return [
        (k.removesuffix("_bytes"), f"{v:,}", fmt_bytes(v, "GB"), fmt_bytes(v, "GiB"))
        for k, v in d.items()
        if k.endswith("_bytes") and isinstance(v, int)
    ]


def _b(n) -> str:
    return "-" if n is None else f"{n:,.0f}"


def memory_table(out: dict) -> str:
    """`verify memory` output (MemoryResult dict + "predictions") as text tables."""
    from tabulate import tabulate

    spec = out["spec"]
    head = " ".join(f"{k}={v}" for k, v in spec.items())
    parts = [head, "", tabulate(_bytes_rows(out), headers=["category", "bytes", "GB", "GiB"], colalign=("left", "right", "right", "right"))]
    if out.get("phases"):
        parts += ["", tabulate([(k, f"{v:,}", fmt_bytes(v, "GB")) for k, v in out["phases"].items()],
                               headers=["phase", "peak bytes", "GB"], colalign=("left", "right", "right"))]
    preds = out.get("predictions") or {}
    if preds:
        rows = [(name, p.get("claim", ""), _b(p.get("predicted")), _b(p.get("measured")), fmt_rel(p.get("rel_error")))
                for name, p in preds.items()]
        parts += ["", tabulate(rows, headers=["seed prediction", "claim", "predicted bytes", "measured bytes", "error"],
                               colalign=("left", "left", "right", "right", "right"))]
    corrected = out.get("corrected") or {}
    if corrected.get("totals"):
        rows = [(k, _b(t["predicted"]), _b(t["measured"]), fmt_rel(t["rel_error"])) for k, t in corrected["totals"].items()]
        parts += ["", tabulate(rows, headers=["corrected predictor (verify/predict.py)", "predicted bytes", "measured bytes", "error"],
                               colalign=("left", "right", "right", "right"))]
    if corrected.get("not_covered"):
        parts.append(f"not predicted here: {corrected['not_covered']}")
    return "\n".join(parts)


def shard_table(result: dict) -> str:
    """`verify shard` output as a text table: one row per rank-level category."""
    from tabulate import tabulate

    head = " ".join(f"{k}={v}" for k, v in result.get("spec", {}).items())
    per_rank = result.get("per_rank", result)
    parts = [head, "", tabulate(_bytes_rows(per_rank), headers=["per rank", "bytes", "GB", "GiB"], colalign=("left", "right", "right", "right"))]
    extra = {k: v for k, v in result.items() if k not in ("spec", "per_rank") and not isinstance(v, (dict, list))}
    if extra:
        parts += ["", tabulate(list(extra.items()), headers=["", ""])]
    return "\n".join(parts)


# --- claims ---------------------------------------------------------------------------------


def fmt_value(value, unit: str) -> str:
    """A predicted or measured figure in its unit: exact counts, bytes in GB and GiB."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if unit == "params":
        return fmt_count(value)
    if unit == "bytes":
        return f"{fmt_bytes(value, 'GB')} ({fmt_bytes(value, 'GiB')})"
    if unit in ("x", "ratio"):
        return f"{value:.3g}×" if unit == "x" else f"{value:.4g}"
    return f"{value:,.6g} {unit}".strip()


def claims_table(claims) -> str:
    """One row per claim: id, verdict, predicted, measured, error, and the explanation."""
    from tabulate import tabulate

    rows = [(c.id, c.verdict, fmt_value(c.predicted, c.unit), fmt_value(c.measured, c.unit), fmt_rel(c.rel_error),
             c.explanation) for c in claims]
    return tabulate(rows, headers=["id", "verdict", "seed says", "measured", "error", "why"], maxcolwidths=[None, None, 24, 24, None, 70])


def verdict_counts(claims) -> dict[str, int]:
    from verify.claims import Verdict

    counts = {v.value: 0 for v in Verdict}
    for c in claims:
        counts[c.verdict] += 1
    return {k: v for k, v in counts.items() if v}


def hardware() -> dict:
    """What ran the measurements: GPU (if any), CPU, memory, library versions."""
    import os
    import platform

    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        pass
    hw = {
        "gpu": None,
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "host_memory_bytes": mem,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        hw["gpu"] = props.name
        hw["gpu_memory_bytes"] = props.total_memory
        hw["cuda_driver"] = _nvidia_driver()
    return hw


def _nvidia_driver() -> str | None:
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def hardware_slug(hw: dict) -> str:
    import re

    if hw.get("gpu"):
        return re.sub(r"[^a-z0-9]+", "-", hw["gpu"].lower()).strip("-")
    return "cpu"


def git_commit() -> str:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "verify", "models"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() + ("+uncommitted" if dirty.stdout.strip() else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def header_lines(hw: dict, command: str, backend: str) -> list[str]:
    import datetime

    gpu = f"{hw['gpu']} ({fmt_bytes(hw.get('gpu_memory_bytes'), 'GiB', 1)}), CUDA {hw['cuda']}, driver {hw.get('cuda_driver')}" if hw["gpu"] else "none (CPU backends only: meta, fake, cpu)"
    return [
        f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- command: `{command}` (backend {backend})",
        f"- git commit: {git_commit()}",
        f"- GPU: {gpu}",
        f"- CPU: {hw['cpu']}, {hw['cpu_cores']} cores, {fmt_bytes(hw['host_memory_bytes'], 'GiB', 1)} host memory",
        f"- versions: Python {hw['python']}, torch {hw['torch']}, transformers {hw['transformers']}",
        "- units: GB = 10^9 bytes, GiB = 2^30 bytes; parameter counts are exact integers with a short form in brackets",
    ]


def claims_markdown(claims, hw: dict, command: str, backend: str, plots: list[str]) -> str:
    from tabulate import tabulate

    from verify.claims.catalog import GROUPS

    out = ["# Claims ledger: every claim of CLAIMS.md against a measurement", ""]
    out += header_lines(hw, command, backend)
    out += ["", "## Verdicts", "", tabulate(list(verdict_counts(claims).items()), headers=["verdict", "claims"], tablefmt="github"), ""]
    out += ["Verdicts: CONFIRMED = within the claim's tolerance; APPROXIMATE = within the looser bound; REFUTED = outside both; "
            "NOT TESTABLE HERE = cannot be measured here (why is given); PENDING = needs a backend this run did not have. "
            "Error = (seed − measured) / measured.", ""]
    for key, title in GROUPS.items():
        group = [c for c in claims if c.group == key]
        if not group:
            continue
        out += [f"## {title}", ""]
        rows = [(c.id, c.seed, c.quote, fmt_value(c.predicted, c.unit), fmt_value(c.measured, c.unit), fmt_rel(c.rel_error),
                 _tol(c), f"**{c.verdict}**") for c in group]
        out += [tabulate(rows, headers=["id", "seed", "what the seed says", "seed's figure", "measured", "error", "tolerance", "verdict"],
                         tablefmt="github"), ""]
        for c in group:
            out.append(f"- **{c.id}** ({c.backend}): {c.explanation}")
            if c.inconsistency:
                out.append(f"  - Inconsistent in itself: {c.inconsistency}")
            if c.corrected:
                corr = fmt_value(c.corrected_value, c.unit) if c.corrected_value is not None else ""
                err = f", {fmt_rel(c.corrected_rel_error)} against the measurement" if c.corrected_rel_error is not None else ""
                out.append(f"  - Corrected: {c.corrected}" + (f" = {corr}{err}" if corr else ""))
            if c.command:
                out.append(f"  - Reproduce: `{c.command}`")
        out.append("")
    if plots:
        out += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    return "\n".join(out)


def _tol(c) -> str:
    if c.tolerance is None:
        return "-"
    t = "exact" if c.tolerance == 0 else f"±{c.tolerance:.0%}" if c.tolerance >= 0.01 else f"±{c.tolerance:.1%}"
    return t + (f" (≈ ±{c.loose:.0%})" if c.loose else "")


def write(out_dir=None, backend: str = "auto", only: str | None = None, fresh: bool = False, progress=None,
          command: str = "python -m verify report") -> list:
    """Run the ledger and write CLAIMS.md, claims.json and the plots; returns the written paths.

    Results are appended to claims.jsonl in the output folder as they come, so an interrupted run
    resumes where it stopped (--fresh starts over)."""
    import json
    from pathlib import Path

    from verify import plots
    from verify.claims import ledger

    hw = hardware()
    out_dir = Path(out_dir) if out_dir else Path(__file__).resolve().parent.parent / "reports" / hardware_slug(hw)
    out_dir.mkdir(parents=True, exist_ok=True)
    jsonl = out_dir / "claims.jsonl"
    if fresh and jsonl.exists():
        jsonl.unlink()
    claims = ledger.run(backend=backend, only=only, jsonl=jsonl, progress=progress)
    written = []
    pngs = plots.claim_plots(claims, out_dir)
    (out_dir / "claims.json").write_text(json.dumps({"hardware": hw, "command": command, "claims": [c.as_dict() for c in claims]},
                                                    indent=2, default=str) + "\n")
    (out_dir / "CLAIMS.md").write_text(claims_markdown(claims, hw, command, backend, [p.name for p in pngs]))
    written += [out_dir / "CLAIMS.md", out_dir / "claims.json", jsonl, *pngs]
    if hw["gpu"] and backend in ("auto", "cuda") and not only:
        written.append(write_gpu_results(out_dir, hw, command, fresh, progress))
    return written


def gpu_summary(rows: list[dict]) -> dict:
    """Worst and median |predicted - measured| / measured of the corrected predictor, and of the
    fake backend against CUDA, over the runs that have both figures."""
    import statistics

    def errors(key: str) -> list[float]:
        return [abs(rel_error(r[key], r["measured_peak_bytes"])) for r in rows
                if r.get("status") == "ok" and r.get(key) is not None and r.get("measured_peak_bytes")]

    out = {"runs": len(rows), "ok": sum(r.get("status") == "ok" for r in rows), "oom": sum(r.get("status") == "oom" for r in rows)}
    for key, label in (("predicted_peak_bytes", "predictor"), ("fake_peak_bytes", "fake")):
        e = errors(key)
        out[label] = {"compared": len(e), "worst_rel_error": max(e) if e else None,
                      "median_rel_error": statistics.median(e) if e else None}
    out["targets"] = {"predictor worst": 0.02, "predictor median": 0.01, "fake vs cuda": 0.02}
    return out


def write_gpu_results(out_dir, hw: dict, command: str, fresh: bool, progress=None):
    """Run the GPU sweep (verify.measure.cuda.GPU_RUNS) and write results.json: hardware, every run
    with measured (CUDA), fake and predicted peaks, and the summary against the targets."""
    import json
    import sys

    from verify.measure import cuda

    jsonl = out_dir / "gpu_runs.jsonl"
    if fresh and jsonl.exists():
        jsonl.unlink()

    def show(i, n, row):
        if progress:
            print(f"[gpu {i}/{n}] {row['name']}: {row.get('status')} peak {fmt_bytes(row.get('measured_peak_bytes'), 'GB')}",
                  file=sys.stderr, flush=True)

    rows = cuda.sweep(jsonl, progress=show)
    weights = [cuda.weights_on_gpu(*w) for w in cuda.WEIGHT_RUNS]
    path = out_dir / "results.json"
    path.write_text(json.dumps({"hardware": hw, "command": command, "summary": gpu_summary(rows), "runs": rows,
                                "weights": weights},
                               indent=2, default=str) + "\n")
    return path
