"""Uncertainty of a benchmark number: test-set sampling error and seed-to-seed variation, combined.

A task's value for an init is the mean over seeds of a metric on a finite test set. It varies for two
reasons: another seed (training noise, and the split when it is drawn per seed) and another test set
from the same population. Both are estimated and added:

- test-set sampling: a bootstrap over test examples, recomputing the metric from the per-example
  outputs (`recompute.py`). Seeds scored on the same test examples (a fixed test set) share each
  resample, so their common test error is not averaged away; inits share it too, so differences are
  paired on examples. Without per-example outputs (older results) accuracy-like metrics fall back to the
  analytic binomial variance p(1-p)/n_test, and the estimate says so.
- seeds: the between-seed variance of the values, minus the part of it the test resampling already
  explains when each seed has its own split; zero when every seed gives the same value (deterministic
  protocols on a fixed test set), which is flagged rather than shown as certainty.

The interval is mean +/- t(df) x SE, with Welch-Satterthwaite degrees of freedom for the seed part: a
percentile bootstrap over 5 seeds covers about 88 % rather than 95 % (`benchmarks/stats_coverage.py`
measures both), because it ignores that the seed variance itself is estimated from 5 values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats as sps

from rsbench.report.recompute import MetricOnExamples

LEVEL = 0.95
N_BOOT = 2000


@dataclass
class Estimate:
    """A mean over seeds (or over tasks) with its standard error split into parts."""

    mean: float
    se: float
    var_seed: float  # of the mean: seed-to-seed part
    var_test: float  # of the mean: test-set sampling part
    df: float  # Welch-Satterthwaite degrees of freedom (inf when only test sampling counts)
    n_seeds: int
    source: str  # "bootstrap" | "binomial" | "seeds only"
    flags: list[str] = field(default_factory=list)

    def ci(self, level: float = LEVEL) -> tuple[float, float]:
        if not math.isfinite(self.mean):
            return (math.nan, math.nan)
        q = sps.t.ppf(0.5 + level / 2, self.df) if math.isfinite(self.df) else sps.norm.ppf(0.5 + level / 2)
        return (self.mean - q * self.se, self.mean + q * self.se)

    def p_value(self) -> float:
        """Two-sided p-value of mean == 0 (for a paired difference)."""
        if self.se == 0:
            return 1.0 if self.mean == 0 else 0.0
        t = abs(self.mean) / self.se
        sf = sps.t.sf(t, self.df) if math.isfinite(self.df) else sps.norm.sf(t)
        return float(min(1.0, 2 * sf))


@dataclass
class SeedCell:
    """One seed of one init on one task: the row's value and, when available, the per-example metric."""

    value: float
    examples: MetricOnExamples | None = None
    split_id: str | None = None
    n_test: int | None = None
    deviations: dict = field(default_factory=dict, repr=False)  # resampler -> (B,) bootstrap deviations


def _satterthwaite(var_seed: float, n_seeds: int, var_test: float) -> float:
    total = var_seed + var_test
    if var_seed <= 0 or n_seeds < 2:
        return math.inf
    return total**2 / (var_seed**2 / (n_seeds - 1))  # the test part's df is large (many examples)


class TestResampler:
    """Bootstrap weights over test examples, one draw per test split, reused by every init and seed that
    was scored on that split (so differences pair on examples)."""

    def __init__(self, n_boot: int = N_BOOT, seed: int = 0):
        self.n_boot, self.rng, self._w = n_boot, np.random.default_rng(seed), {}

    def weights(self, split_id: str, n: int) -> np.ndarray:
        key = (split_id, n)
        if key not in self._w:
            self._w[key] = self.rng.multinomial(n, np.full(n, 1.0 / n), size=self.n_boot).astype(np.float64)
        return self._w[key]


def resampled_deviations(cells: Mapping[int, SeedCell], resampler: TestResampler) -> dict[int, np.ndarray] | None:
    """Per seed: bootstrap values minus the point value (B,), or None if any seed lacks per-example data.
    Computed once per cell and resampler (a cell enters its own estimate and every paired one)."""
    out = {}
    for seed, c in cells.items():
        if c.examples is None:
            return None
        key = id(resampler)
        if key not in c.deviations:
            w = resampler.weights(c.split_id or f"seed-{seed}", c.examples.n)
            c.deviations[key] = c.examples(w) - c.examples.point()
        out[seed] = c.deviations[key]
    return out


def _binomial_var(cells: Mapping[int, SeedCell], shared_split: bool) -> float | None:
    vals = [c for c in cells.values() if c.n_test]
    if len(vals) != len(cells) or any(not 0 <= c.value <= 1 for c in vals):
        return None
    per_seed = np.array([c.value * (1 - c.value) / c.n_test for c in vals])
    # Shared test set: the test error is common to all seeds; otherwise it averages over the seeds.
    return float(per_seed.mean() if shared_split else per_seed.mean() / len(vals))


def estimate(cells: Mapping[int, SeedCell], resampler: TestResampler, binomial_ok: bool = True) -> Estimate:
    """The mean over seeds of `cells` (seed -> cell) with its uncertainty."""
    seeds = sorted(cells)
    binomial = _binomial_var(cells, _shared(cells[s] for s in seeds)) if binomial_ok else None
    return _estimate(
        seeds,
        np.array([cells[s].value for s in seeds]),
        resampled_deviations(cells, resampler),
        {cells[s].split_id for s in seeds},
        binomial,
    )


def estimate_difference(
    cells: Mapping[int, SeedCell],
    reference: Mapping[int, SeedCell],
    resampler: TestResampler,
    binomial_ok: bool = True,
) -> Estimate:
    """The mean over common seeds of (cells - reference), paired on seeds and on test examples."""
    seeds = sorted(set(cells) & set(reference))
    a, b = {s: cells[s] for s in seeds}, {s: reference[s] for s in seeds}
    dev_a, dev_b = resampled_deviations(a, resampler), resampled_deviations(b, resampler)
    dev = None if dev_a is None or dev_b is None else {s: dev_a[s] - dev_b[s] for s in seeds}
    split_ids = {c.split_id for c in (*a.values(), *b.values())}
    binomial = None
    if binomial_ok and seeds:  # on the same examples the unpaired binomial variance is a conservative bound
        shared = _shared((*a.values(), *b.values()))
        parts = [_binomial_var(a, shared), _binomial_var(b, shared)]
        binomial = None if None in parts else float(sum(parts))
    return _estimate(seeds, np.array([a[s].value - b[s].value for s in seeds]), dev, split_ids, binomial)


def _shared(cells) -> bool:
    """All cells scored on one named test split (a fixed test set)."""
    ids = {c.split_id for c in cells}
    return len(ids) == 1 and None not in ids


def _estimate(
    seeds: list[int],
    values: np.ndarray,
    dev: dict[int, np.ndarray] | None,
    split_ids: set,
    binomial_var: float | None,
) -> Estimate:
    """Mean of `values` (one per seed) with seed variance and test-set variance: from the bootstrap
    deviations `dev` when there are per-example outputs, else from `binomial_var` (None: not included)."""
    n = len(seeds)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, math.nan, math.inf, 0, "none", ["no common seeds"])
    flags: list[str] = []
    shared = len(split_ids) == 1 and None not in split_ids
    if dev is not None:
        var_test = float(np.var(np.mean([dev[s] for s in seeds], axis=0), ddof=1))
        per_seed_test = float(np.mean([np.var(dev[s], ddof=1) for s in seeds]))
        source = "bootstrap"
    else:
        var_test = binomial_var or 0.0
        per_seed_test = var_test * (1 if shared else n)
        source = "binomial" if binomial_var is not None else "seeds only"
        flags.append(
            "no per-example outputs: "
            + ("analytic binomial test-set error" if source == "binomial" else "test-set error not included")
        )
    between = float(np.var(values, ddof=1)) if n > 1 else 0.0
    if n > 1 and np.ptp(values) == 0:
        flags.append(
            "seeds give identical values (deterministic protocol on a fixed test set): the interval "
            "is test-set sampling only"
        )
    # With a split per seed, the between-seed spread already holds test-set error: do not count it twice.
    seed_part = max(0.0, between - (0.0 if shared else per_seed_test))
    var_seed = seed_part / n if n > 1 else 0.0
    if n == 1:
        flags.append("1 seed: seed-to-seed variation unknown")
    elif n < 3:
        flags.append(f"{n} seeds: the interval is wide and itself uncertain")
    se = math.sqrt(var_seed + var_test)
    return Estimate(
        float(values.mean()), se, var_seed, var_test, _satterthwaite(var_seed, n, var_test), n, source, flags
    )


def combine(estimates: Sequence[Estimate], weights: Sequence[float] | None = None) -> Estimate:
    """Weighted sum of independent estimates (e.g. the mean over tasks of per-task scores)."""
    w = np.full(len(estimates), 1.0 / len(estimates)) if weights is None else np.asarray(weights, dtype=np.float64)
    mean = float(sum(wi * e.mean for wi, e in zip(w, estimates)))
    var_seed = float(sum(wi**2 * e.var_seed for wi, e in zip(w, estimates)))
    var_test = float(sum(wi**2 * e.var_test for wi, e in zip(w, estimates)))
    denom = sum((wi**2 * e.var_seed) ** 2 / max(e.n_seeds - 1, 1) for wi, e in zip(w, estimates) if e.var_seed > 0)
    df = (var_seed + var_test) ** 2 / denom if denom > 0 else math.inf
    sources = sorted({e.source for e in estimates})
    return Estimate(
        mean,
        math.sqrt(var_seed + var_test),
        var_seed,
        var_test,
        df,
        min((e.n_seeds for e in estimates), default=0),
        "+".join(sources),
    )


def scaled(e: Estimate, factor: float, offset: float = 0.0) -> Estimate:
    """factor x (estimate) + offset, e.g. a metric difference as normalized points."""
    f = abs(factor)
    return Estimate(
        factor * e.mean + offset,
        f * e.se,
        f * f * e.var_seed,
        f * f * e.var_test,
        e.df,
        e.n_seeds,
        e.source,
        list(e.flags),
    )


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> tuple[float, int, int]:
    """Exact McNemar test of equal accuracy on the same test examples: (p-value, a-only right, b-only right)."""
    a_only = int(np.sum((correct_a == 1) & (correct_b == 0)))
    b_only = int(np.sum((correct_a == 0) & (correct_b == 1)))
    if a_only + b_only == 0:
        return 1.0, 0, 0
    p = sps.binomtest(a_only, a_only + b_only, 0.5).pvalue
    return float(p), a_only, b_only


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given); NaN stays NaN and is not counted."""
    p = np.asarray(p_values, dtype=np.float64)
    ok = np.flatnonzero(np.isfinite(p))
    out = np.full(len(p), np.nan)
    order = ok[np.argsort(p[ok], kind="stable")]
    m, running = len(order), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def iqm(values: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50 % (rliable / GEO-Bench's aggregate), robust to one
    extreme task."""
    v = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if v.size == 0:
        return math.nan
    n = v.size
    lo, hi = n * 0.25, n * 0.75
    # Fractional trimming, as scipy.stats.trim_mean does for integer counts, but exact for any n.
    idx = np.arange(n)
    weight = np.clip(np.minimum(idx + 1, hi) - np.maximum(idx, lo), 0, 1)
    return float((v * weight).sum() / weight.sum())


def stratified_iqm_ci(
    per_task: Sequence[tuple[np.ndarray, np.ndarray | None]], n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0
) -> tuple[float, float, float]:
    """IQM over (task, seed) scores with a stratified bootstrap CI: seeds are resampled within each task,
    and each drawn seed's test-set resample (B deviations, or None) is added to it."""
    rng = np.random.default_rng(seed)
    point = iqm(np.concatenate([v for v, _ in per_task]))
    draws = []
    for values, devs in per_task:
        pick = rng.integers(0, len(values), size=(n_boot, len(values)))
        drawn = values[pick]
        if devs is not None:
            col = rng.integers(0, devs.shape[1], size=(n_boot, len(values)))
            drawn = drawn + devs[pick, col]
        draws.append(drawn)
    pooled = np.concatenate(draws, axis=1)
    boots = np.array([iqm(row) for row in pooled])
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(boots, [tail, 100 - tail])
    return point, float(lo), float(hi)


def min_detectable_difference(p: float, n_test: int, power: float = 0.8, alpha: float = 0.05) -> float:
    """Smallest accuracy difference two inits scored on n_test examples would show as significant with the
    given power (two independent binomial proportions near p; a paired test on the same examples can do
    better, so this is a conservative guide)."""
    if not n_test or not 0 < p < 1:
        return math.nan
    z = sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)
    return float(z * math.sqrt(2 * p * (1 - p) / n_test))
