"""Load `rsbench evaluate` results and aggregate them over seeds into leaderboards."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

# Reading and checking results.jsonl is the result row's contract; re-exported as the report's API.
from rsbench.contracts.results import REQUIRED_KEYS as REQUIRED_KEYS
from rsbench.contracts.results import RESULTS_FILE, deduplicate, disambiguate_shapes, headline_metric, validate_row
from rsbench.contracts.results import SOURCE_FILE as SOURCE_FILE
from rsbench.contracts.results import find_results_files as find_results_files
from rsbench.contracts.results import load_results as load_results

RESULTS_NAME = RESULTS_FILE
# One leaderboard per section; one cell per (init, metric) within it.
SECTION_KEYS = ("task", "dataset", "protocol", "label_fraction")
GROUP_KEYS = (*SECTION_KEYS, "metric", "init")
BASELINE_PREFIXES = ("random", "imagenet")


@dataclass(frozen=True)
class MetricSummary:
    """One metric of one init in one section, aggregated over seeds."""

    task: str
    dataset: str
    protocol: str
    label_fraction: float
    metric: str
    init: str
    mean: float
    std: float  # ddof=1; 0.0 for a single seed, where spread is unknown rather than zero
    n: int
    min: float
    max: float
    seeds: tuple[int, ...]
    values: tuple[float, ...]  # per seed, in `seeds` order


@dataclass
class Entry:
    rank: int
    init: str
    baseline: bool
    best: bool
    n_seeds: int
    cells: dict[str, MetricSummary | None]


@dataclass
class Section:
    task: str
    dataset: str
    protocol: str
    label_fraction: float
    metrics: list[str]  # primary first
    n_rows: int
    seed_counts: list[int]  # distinct seeds per init, for the "based on N seeds" note
    entries: list[Entry] = field(default_factory=list)

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]


def prepare_rows(rows: Sequence[dict]) -> list[dict]:
    """Validate and de-duplicate rows handed over by library callers (not via load_results)."""
    checked = [validate_row(r, f"results row {i}") for i, r in enumerate(rows, start=1)]
    return deduplicate(disambiguate_shapes(checked))


def summarize(rows: Sequence[dict]) -> list[MetricSummary]:
    """Mean/std(ddof=1)/min/max over seeds per (task, dataset, protocol, label_fraction, metric, init)."""
    groups: dict[tuple, list[dict]] = {}
    for row in prepare_rows(rows):
        groups.setdefault(tuple(row[k] for k in GROUP_KEYS), []).append(row)
    out = []
    for key in sorted(groups):
        members = sorted(groups[key], key=lambda r: r["seed"])
        v = np.array([r["value"] for r in members], dtype=np.float64)
        finite = v[np.isfinite(v)]  # NaN values are shown per seed but not averaged
        nan = math.nan
        out.append(
            MetricSummary(
                *key,
                mean=float(finite.mean()) if finite.size else nan,
                std=float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
                n=len(finite),
                min=float(finite.min()) if finite.size else nan,
                max=float(finite.max()) if finite.size else nan,
                seeds=tuple(r["seed"] for r in members),
                values=tuple(v.tolist()),
            )
        )
    return out


def is_baseline(init: str, init_kind: str | None = None) -> bool:
    return init.lower().startswith(BASELINE_PREFIXES) or (init_kind or "").lower() in BASELINE_PREFIXES


def primary_metric(task: str, metrics: Sequence[str], flagged: Sequence[str] = ()) -> str:
    """The metric rows flag as `headline` (schema 2), else the task kind's headline among those reported."""
    for m in flagged:
        if m in metrics:
            return m
    return headline_metric(task, list(metrics))


def _rank_key(s: MetricSummary | None, init: str) -> tuple:
    """Sort key of an init by its primary-metric summary: best mean first, ties by name."""
    # Inits lacking the primary metric (or with only NaN) go last rather than pretending to score 0.
    missing = s is None or not math.isfinite(s.mean)
    return (missing, -(s.mean if not missing else 0.0), init)


def build_sections(rows: Sequence[dict]) -> list[Section]:
    """One ranked leaderboard per (task, dataset, protocol, label_fraction)."""
    rows = prepare_rows(rows)
    summaries = summarize(rows)
    by_section: dict[tuple, list[dict]] = {}
    for r in rows:
        by_section.setdefault(tuple(r[k] for k in SECTION_KEYS), []).append(r)
    sections = []
    for skey in sorted(by_section):
        srows = by_section[skey]
        metrics = list(dict.fromkeys(r["metric"] for r in srows))
        primary = primary_metric(skey[0], metrics, [r["metric"] for r in srows if r.get("headline")])
        metrics = [primary, *(m for m in metrics if m != primary)]
        inits = list(dict.fromkeys(r["init"] for r in srows))
        baselines = {r["init"] for r in srows if is_baseline(r["init"], r.get("init_kind"))}
        cells = {(s.init, s.metric): s for s in summaries if (s.task, s.dataset, s.protocol, s.label_fraction) == skey}
        seeds = {i: len({r["seed"] for r in srows if r["init"] == i}) for i in inits}
        section = Section(*skey, metrics=metrics, n_rows=len(srows), seed_counts=sorted(set(seeds.values())))
        prev_mean, rank = None, 0
        ranked = sorted(inits, key=lambda init: _rank_key(cells.get((init, primary)), init))
        for pos, init in enumerate(ranked, start=1):
            s = cells.get((init, primary))
            mean = s.mean if s and math.isfinite(s.mean) else None
            if mean is None or mean != prev_mean:
                rank = pos  # competition ranking: ties share a rank
            prev_mean = mean
            section.entries.append(
                Entry(
                    rank=rank,
                    init=init,
                    baseline=init in baselines,
                    best=rank == 1 and mean is not None,
                    n_seeds=seeds[init],
                    cells={m: cells.get((init, m)) for m in metrics},
                )
            )
        sections.append(section)
    return sections
