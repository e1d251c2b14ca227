"""Plot for the report: per-GPU (per-rank) memory against the number of GPUs N, one line per
sharding strategy, the GPU sizes as horizontal lines. Data: verify.measure.shard.shard_sweep."""

from __future__ import annotations

from pathlib import Path

GPU_LINES_GB = (24, 40, 80, 141)  # RTX 4090, A100-40GB, A100/H100-80GB, H200


def plot_per_gpu_memory(rows: list[dict], path: Path | str, gpu_sizes_gb=GPU_LINES_GB, title: str | None = None) -> Path:
    """Write a PNG of rows from `shard_sweep` (model, strategy, world_size, peak_bytes, measured,
    total_params): per-rank peak in GB (1e9 bytes) against N on log-log axes, measured points
    filled, extrapolated ones (exact persistent part carried from the measured N) hollow; the
    seed's T6 rule as per-GPU memory (P_B·18·1.25 GB / N) dotted; the GPU sizes as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    path = Path(path)
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
    for gb in gpu_sizes_gb:
        ax.axhline(gb, color="grey", lw=0.8, ls="--")
        ax.annotate(f"{gb} GB", xy=(1.0, gb), xycoords=("axes fraction", "data"), xytext=(3, 0),
                    textcoords="offset points", va="center", fontsize=8, color="grey")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ys = [r["peak_bytes"] / 1e9 for r in rows] + list(gpu_sizes_gb) + [y for line in ax.get_lines() for y in line.get_ydata()]
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
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
