"""PNG plots of the report (matplotlib, Agg). Each function takes measured data and a path."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def param_formula_errors(rows: list[dict], path: Path) -> Path:
    """Signed error of the seed's total formulas against the measured count, one bar pair per model."""
    plt = _pyplot()
    rows = sorted(rows, key=lambda r: r["measured"])
    labels = [f"{r['model']} ({r['measured'] / 1e9:.3g}B)" for r in rows]
    full = [100 * r["seed_rel_error"] for r in rows]
    approx = [100 * r["12Lh^2+Vh_rel_error"] for r in rows]
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(rows) + 1.6))
    y = range(len(rows))
    ax.barh([i + 0.2 for i in y], full, height=0.4, label="L(12h²+4h)+Vh+2h")
    ax.barh([i - 0.2 for i in y], approx, height=0.4, label="12Lh²+Vh")
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(list(y), labels)
    ax.set_xlabel("(formula − measured) / measured  [%]   (exact closed form: 0 for every model)")
    ax.set_title("P7: seed parameter formulas against the counted module (meta device)")
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def model_state_stacked(t1_evidence: dict, path: Path) -> Path:
    """T1: weights, gradients and optimizer state of one model, stacked per training setup, with
    the seed's (x+y+12)N beside each bar."""
    plt = _pyplot()
    cases = t1_evidence["cases"]
    labels = list(cases)
    gb = lambda key: [cases[c][key] / 1e9 for c in labels]  # noqa: E731
    fig, ax = plt.subplots(figsize=(8, 4.6))
    x = range(len(labels))
    bottom = [0.0] * len(labels)
    for key, label in (("weights", "weights"), ("grads", "gradients"), ("optimizer", "optimizer state")):
        ax.bar(x, gb(key), bottom=bottom, label=label, width=0.6)
        bottom = [b + v for b, v in zip(bottom, gb(key))]
    ax.scatter(x, gb("seed (x+y+12)N"), marker="_", s=900, color="black", zorder=3, label="seed (x+y+12)·N")
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set_ylabel("GB (10^9 bytes)")
    ax.set_title(f"T1: model state of {t1_evidence['model']} ({t1_evidence['N'] / 1e9:.2f}B params), measured on fake tensors")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def activations_vs_seq(t5_evidence: dict, shape, dtype_bytes: int, path: Path) -> Path:
    """T4/T5: measured activations against S (eager, SDPA, SDPA + checkpointing) with the seeds'
    formulas T4 (right side) and T3 (M_act) drawn as lines for the same shape."""
    from verify.formulas import memory as M
    from verify.formulas.params import total

    plt = _pyplot()
    L = t5_evidence["num_hidden_layers"]
    fig, ax = plt.subplots(figsize=(8, 4.6))
    seqs = []
    for label in ("eager", "sdpa", "sdpa + checkpointing"):
        pts = t5_evidence.get(label, {}).get("points", [])
        if pts:
            seqs = sorted({*seqs, *(p[0] for p in pts)})
            ax.plot([p[0] for p in pts], [p[1] / 1e9 for p in pts], "o", label=f"measured, {label}")
    if seqs:
        grid = list(range(seqs[0], seqs[-1] + 1, max(1, (seqs[-1] - seqs[0]) // 50)))
        t4 = [total(M.t4_right(L, shape.heads, 1, s, shape.h, dtype_bytes)) / 1e9 for s in grid]
        t3 = [total(M.t3_activations(L, 1, s, shape.h, shape.V)) / 1e9 for s in grid]
        ax.plot(grid, t4, "-", label="seed 003 (T4): Lbshp[16+2/p+(as/h)(2+1/p)]")
        ax.plot(grid, t3, "--", label="seed 001 (T3): L(14E+4BSS)+6BSV")
    ax.set_xlabel("sequence length S (batch 1)")
    ax.set_ylabel("activations, GB (10^9 bytes)")
    ax.set_title(f"T4/T5: activations of {shape.name} cut to {L} layers, bf16, against S")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def claim_plots(claims, out_dir: Path) -> list[Path]:
    """Every plot the ledger's evidence supports; a plot whose claim did not run is skipped."""
    by_id = {c.id: c for c in claims}
    paths = []
    p7 = by_id.get("P7")
    if p7 is not None and p7.evidence.get("rows"):
        paths.append(param_formula_errors(p7.evidence["rows"], out_dir / "params_formula_vs_measured.png"))
    t1 = by_id.get("T1")
    if t1 is not None and t1.evidence.get("cases"):
        paths.append(model_state_stacked(t1.evidence, out_dir / "model_state_stacked.png"))
    t5 = by_id.get("T5")
    if t5 is not None and t5.evidence.get("model"):
        from verify.configs import load_config, shape

        from verify.formulas.memory import BYTES

        s = shape(load_config(t5.evidence["model"]))
        paths.append(activations_vs_seq(t5.evidence, s, BYTES[t5.evidence["dtype"]], out_dir / "activations_vs_seq.png"))
    return paths
