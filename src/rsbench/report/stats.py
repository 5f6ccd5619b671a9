"""Small statistics of the report: the normalized-score scale, average ranks and the Pareto front.
Intervals and tests live in `uncertainty.py`. Pure numpy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def normalize(values: np.ndarray | float, zero: float, hundred: float) -> np.ndarray | float:
    """Scale so `zero` (random init) maps to 0 and `hundred` (the best init) to 100."""
    span = hundred - zero
    if span == 0:
        raise ValueError("normalization needs the best score to differ from the reference")
    return (np.asarray(values, dtype=np.float64) - zero) / span * 100.0


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
            for init, _ in ordered[pos : end + 1]:
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
