"""Leaderboard bar plots, returned as base64 PNG `data:` URIs so the page stays self-contained."""

from __future__ import annotations

import base64
import io

# The object-oriented Figure API renders through Agg without touching pyplot's global backend,
# so importing this module cannot change plotting behaviour elsewhere in the process.
from matplotlib.figure import Figure

from rsbench.report.aggregate import Section

COLOR_RUN = "#4C72B0"
COLOR_BEST = "#DD8452"
COLOR_BASELINE = "#B0B0B0"


def _label(text: str, limit: int = 38) -> str:
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    # A user's "$" would otherwise switch matplotlib into mathtext (garbled label or a parse error).
    return text.replace("$", r"\$")


def primary_metric_plot(section: Section) -> str:
    """Horizontal bars (mean of the primary metric per init, best on top), std error bars, seed dots."""
    metric = section.primary_metric
    entries = [e for e in section.entries if e.cells.get(metric) is not None]
    n = max(len(entries), 1)
    fig = Figure(figsize=(7.5, 1.2 + 0.42 * n), dpi=110)
    ax = fig.add_subplot()
    ys = list(range(len(entries)))[::-1]  # first entry (rank 1) drawn at the top
    means = [e.cells[metric].mean for e in entries]
    stds = [e.cells[metric].std for e in entries]
    colors = [COLOR_BASELINE if e.baseline else COLOR_BEST if e.best else COLOR_RUN for e in entries]
    bars = ax.barh(
        ys,
        means,
        xerr=stds,
        color=colors,
        height=0.65,
        capsize=3,
        error_kw={"elinewidth": 1, "ecolor": "#333333"},
        zorder=2,
    )
    for bar, e in zip(bars, entries):
        if e.baseline:
            bar.set_hatch("//")
            bar.set_edgecolor("#808080")
    for y, e in zip(ys, entries):
        vals = e.cells[metric].values
        # Individual seeds show what a mean ± std over 2-3 seeds hides.
        ax.scatter(vals, [y] * len(vals), s=10, color="#222222", zorder=3, linewidths=0)
    tops = [max(m + s, *e.cells[metric].values) for m, s, e in zip(means, stds, entries)]
    bottoms = [min(m - s, *e.cells[metric].values) for m, s, e in zip(means, stds, entries)]
    lo = min([0.0, *bottoms])
    hi = max([0.0, *tops])
    # Fraction-like metrics (accuracy, IoU, F1) read best on a fixed 0..1 axis.
    if lo >= 0.0 and 0.0 < hi <= 1.0:
        hi = 1.0
    span = (hi - lo) or 1.0
    ax.set_xlim(lo, hi + 0.14 * span)  # headroom for the value labels, without ticks or axis line
    ax.set_xticks([t for t in ax.get_xticks() if lo - 1e-9 <= t <= hi + 1e-9])
    ax.spines["bottom"].set_bounds(lo, hi)
    for y, m, top in zip(ys, means, tops):
        ax.text(top + 0.015 * span, y, f"{m:.3f}", va="center", fontsize=8, color="#333333")
    ax.set_yticks(ys, [_label(e.init) for e in entries], fontsize=9)
    for tick, e in zip(ax.get_yticklabels(), entries):
        if e.best:
            tick.set_fontweight("bold")
    ax.set_xlabel(f"{metric} (mean ± std over seeds)", fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", color="#E5E5E5", zorder=0)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return to_data_uri(fig)


def to_data_uri(fig: Figure) -> str:
    """PNG of `fig` as a data: URI. No Software metadata: the same results give the same bytes."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
