"""Text tables for the CLI, and the written report (Markdown + JSON + PNG)."""

from __future__ import annotations

from verify.units import fmt_bytes, fmt_count, fmt_gb_gib, fmt_rel


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
    if out.get("cuda_terms"):
        gpu = (out.get("extra") or {}).get("gpu", "a GPU")
        rows = [("trace (traced_peak)", out["traced_peak_bytes"])] + [(f"+ {k}", v) for k, v in out["cuda_terms"].items()]
        rows.append(("= peak", out["peak_bytes"]))
        parts += ["", f"modelled GPU: {gpu} (verify/formulas/cuda.py)",
                  tabulate([(k, f"{v:,}", fmt_bytes(v, "GB")) for k, v in rows],
                           headers=["peak = trace + CUDA terms", "bytes", "GB"], colalign=("left", "right", "right"))]
        missing = (out.get("extra") or {}).get("cuda_not_modelled")
        if missing:
            parts.append("not modelled: " + "; ".join(f"{k}: {v}" for k, v in missing.items()))
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
    if corrected.get("peak_moment"):
        parts.append(f"predicted peak at: {corrected['peak_moment']}")
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
        return fmt_gb_gib(value)
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


def header_lines(hw: dict, command: str, backend: str, claims) -> list[str]:
    """The report's header: what produced it, on which machine, at which commit; with no GPU, which
    links of the chain of trust the figures rest on."""
    from collections import Counter

    from verify.provenance import fingerprint

    measured = [c for c in claims if c.measured_at]
    when = sorted(c.measured_at for c in measured)
    commits = Counter(c.commit for c in measured if not c.stale)
    stale = Counter(c.commit for c in measured if c.stale)
    gpu = (f"{hw['gpu']} ({hw['gpu_memory_bytes']:,} bytes = {fmt_bytes(hw.get('gpu_memory_bytes'), 'GiB', 2)} as the driver "
           f"reports it), CUDA {hw['cuda']}, driver {hw.get('cuda_driver')}") if hw["gpu"] else \
        "none: the figures rest on meta and fake tensors traced on the CPU and on real CPU tensors; no CUDA run is shown"
    lines = [
        f"- measured: {when[0]} to {when[-1]} (UTC)" if when else "- measured: nothing yet",
        f"- command: `{command}` (backend {backend})",
        "- code: measured at commit " + ", ".join(f"{k} ({v} claims)" for k, v in commits.items()) if commits else "- code: -",
        f"- fingerprint of this code, versions and hardware: {fingerprint(hw)}",
        f"- GPU: {gpu}",
        f"- CPU: {hw['cpu']}, {hw['cpu_cores']} cores, {fmt_bytes(hw['host_memory_bytes'], 'GiB', 1)} host memory",
        f"- versions: Python {hw['python']}, torch {hw['torch']}, transformers {hw['transformers']}",
        "- units: GB = 10^9 bytes, GiB = 2^30 bytes; parameter counts are exact integers with a short form in brackets",
    ]
    from verify.torchapi import tested_note

    if tested_note():
        lines.append(f"- note: {tested_note()}")
    if stale:
        lines.append("- **stale**: " + ", ".join(f"{v} claims measured at {k}" for k, v in stale.items())
                     + " by other code, versions or hardware, marked (stale) below; `make verify` measures them again")
    return lines


def claims_markdown(claims, hw: dict, command: str, backend: str, plots: list[str]) -> str:
    from tabulate import tabulate

    from verify.claims.catalog import GROUPS

    out = ["# Claims ledger: every claim of the catalogue (verify/claims/CATALOGUE.md) against a measurement", ""]
    out += header_lines(hw, command, backend, claims)
    out += ["", "## Verdicts", "", tabulate(list(verdict_counts(claims).items()), headers=["verdict", "claims"], tablefmt="github"), ""]
    out += ["Verdicts: CONFIRMED = within the claim's tolerance; APPROXIMATE = within the looser bound; REFUTED = outside both; "
            "NOT TESTABLE HERE = cannot be measured here (why is given); PENDING = needs a backend this run did not have, "
            "or not measured yet. Error = (seed − measured) / measured.", ""]
    for key, title in GROUPS.items():
        group = [c for c in claims if c.group == key]
        if not group:
            continue
        out += [f"## {title}", ""]
        rows = [(c.id, c.seed, c.quote, fmt_value(c.predicted, c.unit), fmt_value(c.measured, c.unit), fmt_rel(c.rel_error),
                 _tol(c), f"**{c.verdict}**" + (" (stale)" if c.stale else "")) for c in group]
        out += [tabulate(rows, headers=["id", "seed", "what the seed says", "seed's figure", "measured", "error", "tolerance", "verdict"],
                         tablefmt="github"), ""]
        for c in group:
            out.append(f"- **{c.id}** ({c.backend}{', stale: measured at ' + str(c.commit) + ' by other code' if c.stale else ''}): "
                       f"{c.explanation}")
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


def whole(measured, previous: list, fp: str) -> list:
    """Every catalogued claim once, in catalogue order: the one measured now where there is one;
    otherwise the previous report's entry, marked stale unless its fingerprint is `fp`; otherwise
    a PENDING entry that says it was not measured yet. The report never shrinks."""
    from verify.claims import Verdict, placeholder
    from verify.claims.catalog import catalog

    now = {c.id: c for c in measured}
    before = {c.id: c for c in previous}
    out = []
    for e in catalog():
        if e.id in now:
            out.append(now[e.id])
        elif e.id in before:
            c = before[e.id]
            c.stale = c.fingerprint != fp
            out.append(c)
        else:
            out.append(placeholder(e.id, Verdict.PENDING, "not measured yet: run `make verify`", e.needs))
    return out


def read_claims(path) -> list:
    """The claims of a written claims.json (none if there is no file)."""
    import json

    from verify.claims.ledger import from_dict

    if not path.exists():
        return []
    return [from_dict(d) for d in json.loads(path.read_text()).get("claims", [])]


def write(out_dir=None, backend: str = "auto", only: str | None = None, fresh: bool = False, progress=None,
          command: str = "python -m verify report") -> list:
    """Measure the claims (all, or those `only` names) and write CLAIMS.md, claims.json and the
    plots of the whole catalogue; returns the written paths.

    Each result is appended to claims.jsonl in the output folder as it comes; an interrupted run
    resumes from it (results of the same code, versions, hardware and backend only), and a run
    that completes removes it, so the next run measures afresh (`fresh` ignores it). Claims not
    measured now keep the previous report's entry, marked stale when other code measured it."""
    import json
    from pathlib import Path

    from verify import plots
    from verify.claims import ledger
    from verify.provenance import ROOT, fingerprint, hardware, hardware_slug

    hw = hardware()
    fp = fingerprint(hw)
    out_dir = Path(out_dir) if out_dir else ROOT / "reports" / hardware_slug(hw)
    out_dir.mkdir(parents=True, exist_ok=True)
    jsonl = out_dir / "claims.jsonl"
    if fresh:
        jsonl.unlink(missing_ok=True)
    measured = ledger.run(backend=backend, only=only, jsonl=jsonl, progress=progress)
    claims = whole(measured, read_claims(out_dir / "claims.json"), fp)
    for old in out_dir.glob("*.png"):  # a plot of other code's evidence must not stay beside this report
        old.unlink()
    pngs = plots.claim_plots([c for c in claims if c.measured_at and not c.stale], out_dir)
    (out_dir / "claims.json").write_text(json.dumps(
        {"hardware": hw, "command": command, "fingerprint": fp, "claims": [c.as_dict() for c in claims]},
        indent=2, default=str) + "\n")
    (out_dir / "CLAIMS.md").write_text(claims_markdown(claims, hw, command, backend, [p.name for p in pngs]))
    jsonl.unlink(missing_ok=True)  # the run is complete: its results are in claims.json
    written = [out_dir / "CLAIMS.md", out_dir / "claims.json", *pngs]
    if hw["gpu"] and backend in ("auto", "cuda") and not only:
        written.append(write_gpu_results(out_dir, hw, command, fresh, progress))
    elif not hw["gpu"] and backend == "auto" and not only:
        written.append(write_sweep_results(out_dir, hw, command, fresh, progress, "cpu"))
    return written


def write_sweep_results(out_dir, hw: dict, command: str, fresh: bool, progress=None, backend: str = "cpu", extra=None):
    """Run the ground-truth sweep of `backend` (verify.sweep.CPU_RUNS or GPU_RUNS) and write results.json:
    hardware, every run with measured (the CPU allocator or torch.cuda), fake and predicted peaks, the
    summary against the targets, and what `extra()` returns, called after the sweep. Rows go to a
    JSONL file in `out_dir` as they come; an interrupted sweep resumes from it."""
    import sys

    from verify import sweep

    runs = {"cpu": sweep.CPU_RUNS, "cuda": sweep.GPU_RUNS}[backend]
    jsonl = out_dir / ("gpu_runs.jsonl" if backend == "cuda" else f"{backend}_runs.jsonl")
    if fresh:
        jsonl.unlink(missing_ok=True)

    def show(i, n, row):
        if progress:
            gap = row.get("fake_minus_measured_bytes")
            print(f"[{backend} {i}/{n}] {row['name']}: {row.get('status')} peak {fmt_bytes(row.get('measured_peak_bytes'), 'GB')}"
                  + ("" if gap is None else f", fake {gap:+,} bytes") + f" ({row.get('seconds', 0):.0f} s)", file=sys.stderr, flush=True)

    rows = sweep.sweep(runs, jsonl, progress=show)
    path = sweep.write_results(out_dir, hw, command, rows, **(extra() if extra else {}))
    jsonl.unlink(missing_ok=True)
    return path


def write_gpu_results(out_dir, hw: dict, command: str, fresh: bool, progress=None):
    """The GPU sweep (verify.sweep.GPU_RUNS) and results.json, with the weights of
    verify.measure.cuda.WEIGHT_RUNS as allocated on the GPU."""
    from verify.measure import cuda

    return write_sweep_results(out_dir, hw, command, fresh, progress, "cuda",
                               extra=lambda: {"weights": [cuda.weights_on_gpu(*w) for w in cuda.WEIGHT_RUNS]})
