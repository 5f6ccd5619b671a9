"""The cross-task figures of the report (matplotlib Figure API, returned as PNG data: URIs)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from rsbench.report.analysis import AggEntry, TaskNorm
from rsbench.report.plots import COLOR_BASELINE, COLOR_BEST, COLOR_RUN, _label, to_data_uri
from rsbench.report.pretrain_runs import RunInfo

PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974", "#64B5CD"]


def _clean(ax) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=8)


def colors_for(names: Sequence[str]) -> dict[str, str]:
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}


def aggregate_plot(entries: Sequence[AggEntry]) -> str:
    n = max(len(entries), 1)
    fig = Figure(figsize=(7.5, 1.5 + 0.42 * n), dpi=110)
    ax = fig.add_subplot()
    ys = np.arange(len(entries))[::-1]
    means = np.array([e.mean for e in entries])
    err = np.array([[e.mean - e.lo for e in entries], [e.hi - e.mean for e in entries]])
    colors = [COLOR_BASELINE if e.baseline else COLOR_BEST if i == 0 else COLOR_RUN for i, e in enumerate(entries)]
    bars = ax.barh(
        ys,
        means,
        xerr=err,
        color=colors,
        height=0.65,
        capsize=3,
        zorder=2,
        error_kw={"elinewidth": 1, "ecolor": "#333333"},
    )
    for bar, e in zip(bars, entries):
        if e.baseline:
            bar.set_hatch("//")
            bar.set_edgecolor("#808080")
    for y, e in zip(ys, entries):
        ax.text(max(e.hi, e.mean, 0) + 2, y, f"{e.mean:.1f}", va="center", fontsize=8, color="#333333")
    ax.axvline(0, color="#999999", lw=0.8)
    ax.axvline(100, color="#999999", lw=0.8, ls=":")
    ax.set_yticks(
        ys,
        [
            _label(f"{e.init}" + ("" if e.tasks == max(x.tasks for x in entries) else f" ({e.tasks} tasks)"))
            for e in entries
        ],
        fontsize=9,
    )
    ax.set_xlabel("normalized score (random init = 0, perfect = 100), mean over tasks, 95% interval", fontsize=8)
    ax.grid(axis="x", color="#E5E5E5", zorder=0)
    _clean(ax)
    return to_data_uri(fig)


def heatmap_plot(tasks: Sequence[TaskNorm], inits: Sequence[str]) -> str:
    fig = Figure(figsize=(max(5.0, 1.6 + 1.25 * len(tasks)), 1.2 + 0.42 * len(inits)), dpi=110)
    ax = fig.add_subplot()
    norm = np.full((len(inits), len(tasks)), np.nan)
    raw = np.full_like(norm, np.nan)
    for j, t in enumerate(tasks):
        for i, init in enumerate(inits):
            vals = t.per_seed.get(init)
            if vals:
                raw[i, j] = np.mean(list(vals.values()))
                norm[i, j] = (raw[i, j] - t.zero) / (t.best - t.zero) * 100
    im = ax.imshow(np.clip(norm, -50, 100), cmap="viridis", vmin=-50, vmax=100, aspect="auto")
    for i in range(len(inits)):
        for j in range(len(tasks)):
            if not np.isnan(raw[i, j]):
                dark = norm[i, j] < 40
                ax.text(
                    j, i, f"{raw[i, j]:.3f}", ha="center", va="center", fontsize=8, color="white" if dark else "#111111"
                )
    ax.set_xticks(range(len(tasks)), [_label(t.title, 28) for t in tasks], rotation=20, ha="right", fontsize=8)
    ax.set_yticks(range(len(inits)), [_label(i) for i in inits], fontsize=8)
    cb = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    cb.set_label("normalized score", fontsize=8)
    cb.ax.tick_params(labelsize=7)
    return to_data_uri(fig)


def rank_plot(ranks: dict[str, tuple[float, int]], baselines: set[str]) -> str:
    items = sorted(ranks.items(), key=lambda kv: kv[1][0])
    fig = Figure(figsize=(6.0, 1.4 + 0.38 * max(len(items), 1)), dpi=110)
    ax = fig.add_subplot()
    ys = np.arange(len(items))[::-1]
    ax.barh(
        ys,
        [r for _, (r, _) in items],
        height=0.6,
        zorder=2,
        color=[COLOR_BASELINE if n in baselines else COLOR_RUN for n, _ in items],
    )
    for y, (_, (r, _)) in zip(ys, items):
        ax.text(r + 0.05, y, f"{r:.2f}", va="center", fontsize=8)
    ax.set_yticks(ys, [_label(n) for n, _ in items], fontsize=8)
    ax.set_xlabel("average rank over tasks (1 = best)", fontsize=8)
    ax.grid(axis="x", color="#E5E5E5", zorder=0)
    _clean(ax)
    return to_data_uri(fig)


def paired_plot(paired: Sequence[dict], reference: str) -> str:
    fig = Figure(figsize=(7.0, 1.6 + 0.42 * max(len(paired), 1)), dpi=110)
    ax = fig.add_subplot()
    ys = np.arange(len(paired))[::-1]
    for y, d in zip(ys, paired):
        color = "#2E7D32" if d["lo"] > 0 else "#C62828" if d["hi"] < 0 else "#555555"
        ax.plot([d["lo"], d["hi"]], [y, y], color=color, lw=2, solid_capstyle="round")
        ax.plot([d["mean"]], [y], "o", color=color, ms=6)
        ax.text(
            d["hi"], y + 0.22, f" {d['won']} won / {d['tied']} tied / {d['lost']} lost", fontsize=7, color="#444444"
        )
    ax.axvline(0, color="#999999", lw=1)
    ax.set_ylim(-0.7, len(paired) - 0.1)
    ax.set_yticks(ys, [_label(d["init"]) for d in paired], fontsize=8)
    ax.set_xlabel(
        f"difference to {_label(reference)} (normalized points; paired 95% interval, test set + seeds)", fontsize=8
    )
    ax.grid(axis="x", color="#E5E5E5")
    _clean(ax)
    return to_data_uri(fig)


def efficiency_plot(group: dict, colors: dict[str, str]) -> str:
    fig = Figure(figsize=(6.4, 3.6), dpi=110)
    ax = fig.add_subplot()
    for init, pts in sorted(group["lines"].items()):
        x, m, lo, hi = (np.array(v) for v in zip(*pts))
        ax.plot(x, m, "o-", color=colors.get(init, "#333333"), label=_label(init, 30), lw=1.6, ms=4)
        ax.fill_between(x, lo, hi, color=colors.get(init, "#333333"), alpha=0.15, lw=0)
    ax.set_xscale("log")
    ax.set_xlabel("label fraction of the training split", fontsize=8)
    ax.set_ylabel(f"{group['metric']} (mean, 95% CI)", fontsize=8)
    ax.set_title(_label(group["title"], 60), fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    ax.grid(color="#EEEEEE")
    _clean(ax)
    return to_data_uri(fig)


def pareto_plot(
    points: Sequence[dict], front: Sequence[int], progress: dict[str, list[tuple[float, float]]], colors: dict[str, str]
) -> str:
    """points: {name, cost, score, baseline}; progress: run -> [(cost, score)] over its checkpoints."""
    fig = Figure(figsize=(6.8, 4.0), dpi=110)
    ax = fig.add_subplot()
    for name, pts in progress.items():
        xs, ys = zip(*pts)
        ax.plot(xs, ys, "-", color=colors.get(name, "#777777"), lw=1, alpha=0.6, marker=".", ms=4)
    if front:
        fx, fy = [points[i]["cost"] for i in front], [points[i]["score"] for i in front]
        ax.step(
            fx, fy, where="post", color="#222222", lw=1.0, ls="--", label="Pareto front", zorder=1
        )  # not a run colour
    for i, p in enumerate(points):
        ax.scatter(
            [p["cost"]],
            [p["score"]],
            s=60 if i in front else 35,
            zorder=3,
            color=COLOR_BASELINE if p["baseline"] else colors.get(p["name"], COLOR_RUN),
            edgecolors="#222222" if i in front else "none",
        )
        ax.annotate(
            _label(p["name"], 26), (p["cost"], p["score"]), textcoords="offset points", xytext=(5, 4), fontsize=7
        )
    ax.set_xlabel("pretraining device-hours (GPU-hours on GPU)", fontsize=8)
    ax.set_ylabel("normalized score (mean over tasks)", fontsize=8)
    ax.grid(color="#EEEEEE")
    if front:
        ax.legend(fontsize=7, frameon=False, loc="lower right")
    _clean(ax)
    return to_data_uri(fig)


def progress_plot(progress: dict[str, list[tuple[int, float]]], colors: dict[str, str]) -> str:
    fig = Figure(figsize=(6.4, 3.4), dpi=110)
    ax = fig.add_subplot()
    for name, pts in sorted(progress.items()):
        x, y = zip(*pts)
        ax.plot(x, y, "o-", color=colors.get(name, "#333333"), lw=1.6, ms=4, label=_label(name, 30))
    ax.set_xlabel("pretraining step", fontsize=8)
    ax.set_ylabel("normalized score", fontsize=8)
    ax.legend(fontsize=7, frameon=False)
    ax.grid(color="#EEEEEE")
    _clean(ax)
    return to_data_uri(fig)


def curves_plot(runs: Sequence[RunInfo], colors: dict[str, str]) -> str | None:
    keys = [("train/loss", "SSL loss"), ("train/std_l2", "std of L2-normalized embeddings (0 = collapsed)")]
    present = [(k, t) for k, t in keys if any(r.curves.get(k) for r in runs)]
    if not present:
        return None
    fig = Figure(figsize=(6.4 * len(present), 3.4), dpi=110)
    for n, (key, title) in enumerate(present, start=1):
        ax = fig.add_subplot(1, len(present), n)
        for r in runs:
            pts = r.curves.get(key)
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, color=colors.get(r.name, "#333333"), lw=1.2, label=_label(r.name, 30))
        ax.set_xlabel("step", fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.grid(color="#EEEEEE")
        _clean(ax)
        if n == 1:
            ax.legend(fontsize=7, frameon=False)
    return to_data_uri(fig)


def image_grid(images: Sequence[np.ndarray], titles: Sequence[str]) -> str:
    """Quicklook mosaic of C x H x W arrays: 8-bit images as they are, others (first three bands)
    with a 2-98 percentile stretch per image."""
    cols = min(8, len(images))
    rows = -(-len(images) // cols)
    fig = Figure(figsize=(1.3 * cols, 1.45 * rows), dpi=100)
    for i, (img, title) in enumerate(zip(images, titles)):
        ax = fig.add_subplot(rows, cols, i + 1)
        arr = np.asarray(img, dtype=np.float64)[:3]
        arr = np.repeat(arr, 3, axis=0) if arr.shape[0] == 1 else arr[:3] if arr.shape[0] >= 3 else arr[:1].repeat(3, 0)
        eight_bit = np.issubdtype(np.asarray(img).dtype, np.integer) and arr.min() >= 0 and arr.max() <= 255
        lo, hi = (0.0, 255.0) if eight_bit else np.percentile(arr, [2, 98])
        ax.imshow(np.clip((arr.transpose(1, 2, 0) - lo) / ((hi - lo) or 1.0), 0, 1))
        ax.set_title(_label(title, 16), fontsize=6)
        ax.axis("off")
    return to_data_uri(fig)
