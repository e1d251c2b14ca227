"""PNG plots of the report (matplotlib, Agg). Each function takes measured data and a path."""

from __future__ import annotations

from pathlib import Path


def _save(plt, fig, path: Path, dpi: int = 110) -> Path:
    """Lay out, write the PNG, and free the figure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


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
    return _save(plt, fig, path)


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
    return _save(plt, fig, path)


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
    return _save(plt, fig, path)


def plot_per_gpu_memory(rows: list[dict], path: Path | str, gpu_sizes_gb=(), title: str | None = None, gpu_lines=()) -> Path:
    """Write a PNG of rows from verify.predict.shard.sweep_rows (model, strategy, world_size, peak_bytes, measured,
    total_params): per-rank peak in GB (1e9 bytes) against N on log-log axes, measured points
    filled, extrapolated ones (exact persistent part carried from the measured N) hollow; the
    seed's T6 rule as per-GPU memory (P_B·18·1.25 GB / N) dotted; the GPU sizes as lines: `gpu_lines`
    (name, usable bytes) of real cards, or bare `gpu_sizes_gb`."""
    plt = _pyplot()
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    for i, strategy in enumerate(strategies):
        pts = sorted((r["world_size"], r["peak_bytes"] / 1e9, r["measured"]) for r in rows if r["strategy"] == strategy)
        color, line, marker = f"C{i}", ("-", "--", "-.", ":")[i % 4], "osD^"[i % 4]  # overlapping lines stay visible
        ax.plot([p[0] for p in pts], [p[1] for p in pts], line, color=color, label=strategy)
        ax.plot([p[0] for p in pts if not p[2]], [p[1] for p in pts if not p[2]], marker, mfc="none", color=color)
        ax.plot([p[0] for p in pts if p[2]], [p[1] for p in pts if p[2]], marker, color=color)
    train = [r for r in rows if r.get("mode", "train") == "train" and r.get("total_params")]
    if train:  # the seed's rule as a per-GPU figure: P_B·18·1.25 GB spread over N GPUs
        from verify.formulas.shard import t6_training_gpus

        ns = sorted({r["world_size"] for r in train})
        per_gpu = t6_training_gpus(train[0]["total_params"], 1.0)["P_B·18·1.25 (GB)"]
        ax.plot(ns, [per_gpu / n for n in ns], color="black", lw=1, ls=(0, (1, 1)), label="T6 rule: P_B·18·1.25 / N")
    lines = [(name, b / 1e9) for name, b in gpu_lines] or [(f"{gb} GB", gb) for gb in gpu_sizes_gb]
    for label, gb in lines:
        ax.axhline(gb, color="grey", lw=0.8, ls="--")
        ax.annotate(label, xy=(1.0, gb), xycoords=("axes fraction", "data"), xytext=(3, 0),
                    textcoords="offset points", va="center", fontsize=8, color="grey")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ys = [r["peak_bytes"] / 1e9 for r in rows] + [gb for _, gb in lines] + [y for line in ax.get_lines() for y in line.get_ydata()]
    ax.set_yticks([t for t in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560) if min(ys) / 1.5 <= t <= max(ys) * 1.5])
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("GPUs (data-parallel ranks) N")
    ax.set_ylabel("per-GPU peak memory (GB = 1e9 bytes)")
    r0 = rows[0]
    setting = f"{r0.get('mode', 'train')}, batch {r0.get('batch', '?')} × seq {r0.get('seq', '?')}" + (
        ", checkpointed" if r0.get("checkpointing") else "")
    models = ", ".join(sorted({r["model"] for r in rows}))
    ax.set_title(title or f"{models} ({setting}): per-GPU peak vs N (filled: measured, hollow: extrapolated)", fontsize=9)
    ax.legend(title="strategy", fontsize=8)
    ax.grid(True, which="major", alpha=0.3)
    return _save(plt, fig, path, dpi=120)


def fit_plot(points: dict[int, int], usable_bytes: int, total_bytes: int, xlabel: str, title: str, path: Path | str,
             predicted: dict[int, int] | None = None, predicted_label: str = "predicted") -> Path:
    """`fit`: the measured peak (GB) at each value the search ran, fitting points filled and the
    others hollow, with the GPU's usable bytes (solid) and its total (dotted) as lines, and the
    prediction that started the search (dashed, not measured) where there is one."""
    import matplotlib.ticker

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    if predicted:
        px = sorted(predicted)
        ax.plot(px, [predicted[x] / 1e9 for x in px], "--", color="grey", lw=1, label=f"{predicted_label} (not measured)")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    xs = sorted(points)
    ax.plot(xs, [points[x] / 1e9 for x in xs], "-", color="C0", lw=0.8, alpha=0.6)
    fit = [x for x in xs if points[x] <= usable_bytes]
    over = [x for x in xs if points[x] > usable_bytes]
    ax.plot(fit, [points[x] / 1e9 for x in fit], "o", color="C0", label="measured peak, fits")
    ax.plot(over, [points[x] / 1e9 for x in over], "o", mfc="none", color="C3", label="measured peak, does not fit")
    ax.axhline(usable_bytes / 1e9, color="black", lw=1, label=f"usable {usable_bytes / 1e9:.3f} GB")
    if total_bytes != usable_bytes:
        ax.axhline(total_bytes / 1e9, color="grey", lw=0.8, ls=":", label=f"total {total_bytes / 1e9:.3f} GB")
    if fit:
        best = max(fit)
        ax.annotate(f"{best}", xy=(best, points[best] / 1e9), xytext=(4, -12), textcoords="offset points", fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("peak memory, GB (10^9 bytes)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    return _save(plt, fig, path)


def claim_plots(claims, out_dir: Path) -> list[Path]:
    """Every plot the ledger's evidence supports, drawn from what the ledger recorded (nothing is
    measured here); a plot whose claim did not run is skipped."""
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

        from verify.units import dtype_bytes

        s = shape(load_config(t5.evidence["model"]))
        paths.append(activations_vs_seq(t5.evidence, s, dtype_bytes(t5.evidence["dtype"]), out_dir / "activations_vs_seq.png"))
    t6 = by_id.get("T6")
    if t6 is not None and t6.evidence.get("per_gpu_sweep"):
        gpus = t6.evidence.get("gpus") or {}
        lines = [(f"{g['gpu']} ({g['usable_bytes'] / 1e9:.1f} GB usable)", g["usable_bytes"]) for g in gpus.values()]
        paths.append(plot_per_gpu_memory(t6.evidence["per_gpu_sweep"], out_dir / "shard_per_gpu_memory.png",
                                         t6.evidence.get("gpu_sizes_gb", ()), gpu_lines=lines))
    return paths
