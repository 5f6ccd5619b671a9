"""Report statistics against hand-computed values: normalized scores, ranks, Pareto front, and the
cross-task analysis built on them (intervals: tests/test_trustworthy_report.py, test_recompute.py)."""

from __future__ import annotations

import numpy as np
import pytest

from rsbench.report.analysis import analyze
from rsbench.report.stats import average_ranks, normalize, pareto_front


def test_normalize_random_zero_best_hundred():
    assert normalize(0.40, zero=0.40, hundred=0.80) == pytest.approx(0.0)
    assert normalize(0.80, zero=0.40, hundred=0.80) == pytest.approx(100.0)
    assert normalize(0.60, zero=0.40, hundred=0.80) == pytest.approx(50.0)
    assert normalize(0.30, zero=0.40, hundred=0.80) == pytest.approx(-25.0)
    with pytest.raises(ValueError):
        normalize(0.5, 0.5, 0.5)


def test_average_ranks_share_ties():
    scores = {"t1": {"a": 0.9, "b": 0.8, "c": 0.8}, "t2": {"a": 0.1, "b": 0.3}}
    ranks = average_ranks(scores)
    # t1: a=1, b=c=2.5; t2: b=1, a=2.
    assert ranks == {"a": (1.5, 2), "b": (1.75, 2), "c": (2.5, 1)}


def test_pareto_front():
    pts = [(0.0, 0.0), (1.0, 50.0), (2.0, 40.0), (3.0, 90.0), (3.0, 80.0)]
    assert pareto_front(pts) == [0, 1, 3]


def row(init, dataset, seed, value, kind="run", protocol="knn"):
    return {
        "task": "classification",
        "dataset": dataset,
        "protocol": protocol,
        "init": init,
        "init_kind": kind,
        "label_fraction": 1.0,
        "seed": seed,
        "metric": "accuracy",
        "value": value,
    }


def test_analysis_normalizes_per_task_and_pairs_by_seed():
    # Task A: random 0.40/0.40, ssl 0.80/0.60. Task B: random 0.20, ssl 0.30 (seeds 0, 1). No per-example
    # outputs and no n_test: the intervals come from the seeds alone (and say so).
    rows = [
        row("random-r18", "A", 0, 0.40, "random"),
        row("random-r18", "A", 1, 0.40, "random"),
        row("ssl", "A", 0, 0.80),
        row("ssl", "A", 1, 0.60),
        row("random-r18", "B", 0, 0.20, "random"),
        row("random-r18", "B", 1, 0.20, "random"),
        row("ssl", "B", 0, 0.30),
        row("ssl", "B", 1, 0.30),
    ]
    a = analyze(rows, n_boot=1000)
    [ta, tb] = a.tasks
    # Headroom score: random init is 0, the perfect metric (1.0) is 100, whoever else is in the report.
    assert (ta.zero, ta.best) == pytest.approx((0.40, 1.0)) and ta.zero_from == "random-r18"
    assert ta.scaled("ssl") == pytest.approx({0: 400 / 6, 1: 200 / 6})  # (0.8-0.4)/0.6*100, (0.6-0.4)/0.6*100
    assert tb.scaled("ssl") == pytest.approx({0: 12.5, 1: 12.5})
    agg = {e.init: e for e in a.aggregate}
    assert agg["ssl"].mean == pytest.approx((50 + 12.5) / 2) and agg["random-r18"].mean == pytest.approx(0.0)
    # Hand computation: paired diffs on A are 0.4, 0.2 (sample variance 0.02, of the mean 0.01), on B 0.1, 0.1
    # (no variation). Score SE = sqrt(0.01 * (100/0.6)^2 / 4); Welch-Satterthwaite df = 1 (one task varies).
    se = np.sqrt(0.01 * (100 / 0.6) ** 2 / 4)
    q = 12.706204736  # t(0.975, df=1)
    assert (agg["ssl"].lo, agg["ssl"].hi) == pytest.approx((31.25 - q * se, 31.25 + q * se), rel=1e-6)
    assert any("test-set error not included" in f for f in ta.flags)
    # No ImageNet rows: the paired comparison falls back to random init, and says so.
    assert a.reference == "random-r18" and "no ImageNet" in a.reference_note
    [p] = a.paired
    assert p["init"] == "ssl" and p["mean"] == pytest.approx(31.25) and p["pairs"] == 4
    assert p["delta_points"] == pytest.approx(100 * (0.3 + 0.1) / 2)
    # Task B's difference has zero spread (SE 0): significant; A's (t = 0.3/0.1, df 1) is not.
    assert (p["won"], p["tied"], p["lost"]) == (1, 1, 0)
    assert a.ranks == {"ssl": (1.0, 2), "random-r18": (2.0, 2)}


def test_analysis_prefers_imagenet_reference_and_label_efficiency():
    rows = []
    for seed, (r, i, s) in enumerate([(0.3, 0.6, 0.5), (0.3, 0.7, 0.55)]):
        rows += [
            row("random", "A", seed, r, "random"),
            row("imagenet-r18", "A", seed, i, "imagenet"),
            row("ssl", "A", seed, s),
        ]
        rows += [
            {**row("ssl", "A", seed, s - 0.2), "label_fraction": 0.1},
            {**row("random", "A", seed, r - 0.1, "random"), "label_fraction": 0.1},
        ]
    a = analyze(rows, n_boot=1000)
    assert a.reference == "imagenet-r18"
    [p] = [d for d in a.paired if d["init"] == "ssl"]
    # Scores on the headroom scale above random (0.3): differences (0.5-0.6, 0.55-0.7) / 0.7 * 100.
    assert p["mean"] == pytest.approx(((0.5 - 0.6) + (0.55 - 0.7)) / 2 / 0.7 * 100)
    assert p["won"] == 0
    # Only the full-label leaderboard is a task for aggregation; the 10% one feeds label efficiency.
    assert [t.title for t in a.tasks] == ["A · knn"]
    [curve] = a.efficiency
    assert [pt[0] for pt in curve["lines"]["ssl"]] == [0.1, 1.0]
    assert curve["lines"]["ssl"][0][1] == pytest.approx(np.mean([0.3, 0.35]))
