"""Per-band statistics of a band group: moments (BandStats) plus 1st/99th percentiles.

Moments use the same Chan et al. parallel-variance merge and the same summary format as
`rsbench.data.normalization.BandStats`, computed here with numpy only: that module imports torch
(about 700 MiB resident, 2 s), which every tiling worker would otherwise pay for nothing.

Percentiles come from fixed-bin histograms, which are mergeable: each shard task returns the
histogram of its tiles' valid pixels and the build sums them (integer sums: order-independent, so
any worker count gives the same numbers). The bins are fixed before packing from the exact group
min/max known from the tiling pass. Integer data with a range of at most 2^16 values gets one bin per
value, which makes the percentiles exact (numpy's default 'linear' definition); other data gets
2^16 uniform bins and percentiles within one bin width.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

MAX_BINS = 2**16
PERCENTILES = (1.0, 99.0)


def tile_moments(pixels: np.ndarray) -> dict[str, Any]:
    """count, mean, m2 (sum of squared deviations), min, max per band of a C x N array of valid pixels."""
    n = pixels.shape[1]
    if n == 0:
        return {"count": 0, "mean": None, "m2": None, "min": None, "max": None}
    x = pixels.astype(np.float64)
    mean = np.einsum("ij->i", x) / n
    d = x - mean[:, None]
    return {
        "count": n,
        "mean": mean.tolist(),
        "m2": np.einsum("ij,ij->i", d, d).tolist(),
        "min": pixels.min(axis=1).astype(np.float64).tolist(),
        "max": pixels.max(axis=1).astype(np.float64).tolist(),
    }


def merge_tile_stats(
    count: np.ndarray, mean: np.ndarray, m2: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> dict[str, Any]:
    """Merge N partial moments (count: N, mean/m2: N x C; lo/hi: any x C) in one vectorized step.

    Returns BandStats.summary()'s format: count, mean, std (ddof=1), min, max.
    """
    total = int(count.sum())
    w = count[:, None].astype(np.float64)
    grand = (w * mean).sum(axis=0) / total
    m2_total = m2.sum(axis=0) + (w * (mean - grand) ** 2).sum(axis=0)
    std = np.sqrt(m2_total / (total - 1)) if total > 1 else np.ones_like(grand)
    return {
        "count": total,
        "mean": grand.tolist(),
        "std": std.tolist(),
        "min": lo.min(axis=0).tolist(),
        "max": hi.max(axis=0).tolist(),
    }


def histogram_spec(dtype: str, lo: list[float], hi: list[float]) -> dict[str, Any]:
    low, high = min(lo), max(hi)
    if np.issubdtype(np.dtype(dtype), np.integer) and high - low < MAX_BINS:
        return {"kind": "integer", "low": int(low), "bins": int(high - low) + 1, "width": 1.0}
    width = (high - low) / MAX_BINS if high > low else 1.0
    return {"kind": "uniform", "low": float(low), "bins": MAX_BINS, "width": width}


def histogram(pixels: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """C x bins counts of a C x N array of valid pixels."""
    out = np.zeros((pixels.shape[0], spec["bins"]), dtype=np.int64)
    low, bins = spec["low"], spec["bins"]
    for b, band in enumerate(pixels):
        if spec["kind"] == "integer" and band.dtype.kind == "u":
            # Unsigned data straight into bincount, the bins below `low` sliced off afterwards.
            out[b] = np.bincount(band, minlength=low + bins)[low : low + bins]
            continue
        if spec["kind"] == "integer":
            idx = band.astype(np.int64) - low
        else:
            idx = np.floor((band.astype(np.float64) - low) / spec["width"]).astype(np.int64)
        out[b] = np.bincount(np.clip(idx, 0, bins - 1), minlength=bins)
    return out


def histogram_moments(hist: np.ndarray, spec: dict[str, Any]) -> dict[str, Any]:
    """count/mean/m2 per band from a one-bin-per-value histogram: exact, and O(bins) not O(pixels)."""
    values = spec["low"] + np.arange(spec["bins"], dtype=np.float64)
    count = hist.sum(axis=1).astype(np.float64)
    mean = (hist * values).sum(axis=1) / count
    m2 = (hist * (values[None, :] - mean[:, None]) ** 2).sum(axis=1)
    return {"count": int(count[0]), "mean": mean.tolist(), "m2": m2.tolist()}


def percentiles(hist: np.ndarray, spec: dict[str, Any], qs=PERCENTILES) -> dict[str, list[float]]:
    """{"p1": [...], "p99": [...]} per band from a C x bins histogram."""
    out: dict[str, list[float]] = {}
    for q in qs:
        values = []
        for counts in hist:
            n = int(counts.sum())
            if n == 0:
                values.append(float("nan"))
                continue
            cum = np.cumsum(counts)
            h = (n - 1) * q / 100.0
            k_lo, k_hi = math.floor(h), math.ceil(h)
            v_lo, v_hi = (float(np.searchsorted(cum, k, side="right")) for k in (k_lo, k_hi))
            if spec["kind"] == "uniform":  # bin index -> bin centre
                v_lo, v_hi = (spec["low"] + (v + 0.5) * spec["width"] for v in (v_lo, v_hi))
            else:
                v_lo, v_hi = spec["low"] + v_lo, spec["low"] + v_hi
            values.append(v_lo + (h - k_lo) * (v_hi - v_lo))
        out[f"p{q:g}"] = values
    return out


def group_summary(stats: dict[str, Any], hist: np.ndarray | None, spec: dict[str, Any] | None) -> dict[str, Any]:
    summary = dict(stats)
    if hist is not None and spec is not None:
        summary.update(percentiles(hist, spec))
        summary["percentile_bin_width"] = spec["width"]
    return summary
