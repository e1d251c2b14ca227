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


def claim_plots(claims, out_dir: Path) -> list[Path]:
    """Every plot the ledger's evidence supports; a plot whose claim did not run is skipped."""
    by_id = {c.id: c for c in claims}
    paths = []
    p7 = by_id.get("P7")
    if p7 is not None and p7.evidence.get("rows"):
        paths.append(param_formula_errors(p7.evidence["rows"], out_dir / "params_formula_vs_measured.png"))
    return paths
