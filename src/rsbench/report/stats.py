"""Statistics of the report: bootstrap CIs over seeds, GEO-Bench-style normalized scores, paired
comparisons, average ranks and the Pareto front. Pure numpy; every bootstrap uses a fixed seed so the
same results always give the same page.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

N_BOOT = 2000
LEVEL = 0.95


def _percentiles(samples: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(samples, [tail, 100.0 - tail])
    return float(lo), float(hi)


def _boot_means(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """n_boot means of `values` resampled with replacement (same size)."""
    idx = rng.integers(0, len(values), size=(n_boot, len(values)))
    return values[idx].mean(axis=1)


def bootstrap_ci(values: Sequence[float], n_boot: int = N_BOOT, level: float = LEVEL,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean over seeds. One value gives a zero-width interval."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if v.size == 1:
        return float(v[0]), float(v[0])
    return _percentiles(_boot_means(v, n_boot, np.random.default_rng(seed)), level)


def normalize(values: np.ndarray | float, zero: float, hundred: float) -> np.ndarray | float:
    """Scale so `zero` (random init) maps to 0 and `hundred` (the best init) to 100."""
    span = hundred - zero
    if span == 0:
        raise ValueError("normalization needs the best score to differ from the reference")
    return (np.asarray(values, dtype=np.float64) - zero) / span * 100.0


def aggregate_ci(per_task: Sequence[Sequence[float]], n_boot: int = N_BOOT, level: float = LEVEL,
                 seed: int = 0) -> tuple[float, float, float]:
    """Mean over tasks of the per-task mean over seeds, with a bootstrap CI that resamples seeds
    within each task (the tasks are the benchmark's fixed design, the seeds its noise)."""
    if not per_task:
        raise ValueError("aggregate_ci needs at least one task")
    rng = np.random.default_rng(seed)
    arrays = [np.asarray(v, dtype=np.float64) for v in per_task]
    point = float(np.mean([a.mean() for a in arrays]))
    boots = np.stack([_boot_means(a, n_boot, rng) for a in arrays]).mean(axis=0)
    lo, hi = _percentiles(boots, level)
    return point, lo, hi


def paired_bootstrap(diffs_per_task: Sequence[Sequence[float]], n_boot: int = N_BOOT, level: float = LEVEL,
                     seed: int = 0) -> dict[str, float]:
    """Paired differences (method - reference, matched by task and seed), resampled over tasks and,
    within each drawn task, over its seeds. Returns mean, CI, the bootstrap probability that the
    mean difference is > 0, and the share of tasks won (mean difference > 0; a tie counts half)."""
    arrays = [np.asarray(d, dtype=np.float64) for d in diffs_per_task if len(d)]
    if not arrays:
        raise ValueError("paired_bootstrap needs at least one task with paired values")
    rng = np.random.default_rng(seed)
    task_boot = np.stack([_boot_means(a, n_boot, rng) for a in arrays])  # (tasks, n_boot)
    pick = rng.integers(0, len(arrays), size=(n_boot, len(arrays)))
    boots = task_boot[pick, np.arange(n_boot)[:, None]].mean(axis=1)
    lo, hi = _percentiles(boots, level)
    means = np.array([a.mean() for a in arrays])
    won = float(np.mean(np.where(means > 0, 1.0, np.where(means == 0, 0.5, 0.0))))
    return {"mean": float(means.mean()), "lo": lo, "hi": hi, "p_better": float(np.mean(boots > 0)),
            "won": won, "tasks": len(arrays), "pairs": int(sum(a.size for a in arrays))}


def average_ranks(scores: Mapping[str, Mapping[str, float]]) -> dict[str, tuple[float, int]]:
    """{task: {init: score}} -> {init: (mean rank over the tasks it appears in, number of tasks)}.
    Rank 1 is best; ties share the average of the ranks they span."""
    ranks: dict[str, list[float]] = {}
    for by_init in scores.values():
        ordered = sorted(by_init.items(), key=lambda kv: -kv[1])
        pos = 0
        while pos < len(ordered):
            end = pos
            while end + 1 < len(ordered) and ordered[end + 1][1] == ordered[pos][1]:
                end += 1
            shared = (pos + end) / 2.0 + 1.0
            for init, _ in ordered[pos:end + 1]:
                ranks.setdefault(init, []).append(shared)
            pos = end + 1
    return {init: (float(np.mean(r)), len(r)) for init, r in ranks.items()}


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both cost (lower) and score (higher), by cost."""
    front = []
    for i, (c, s) in enumerate(points):
        dominated = any((c2 <= c and s2 >= s) and (c2 < c or s2 > s) for j, (c2, s2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))
