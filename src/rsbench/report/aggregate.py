"""Load `rsbench evaluate` results and aggregate them over seeds into leaderboards."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rsbench.contracts.results import RESULTS_FILE, ResultRow, headline_metric, upgrade_row
from rsbench.errors import DataError

RESULTS_NAME = RESULTS_FILE
SOURCE_FILE = "_results_file"  # reader-side: the results.jsonl a row came from (finds moved predictions)
# The fields every row must have: the result row's required fields (rsbench.contracts.results).
REQUIRED_KEYS = tuple(name for name, f in ResultRow.model_fields.items() if f.is_required())
_STR_KEYS = ("task", "dataset", "protocol", "init", "metric")
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


def find_results_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Explicit files as given; folders searched recursively for results.jsonl. Each file once."""
    found: list[Path] = []
    seen: set[Path] = set()
    paths = list(paths)
    for p in map(Path, paths):
        if p.is_dir():
            candidates = sorted(p.rglob(RESULTS_NAME))
        elif p.is_file():
            candidates = [p]
        else:
            raise DataError(f"results path not found: {p}")
        for c in candidates:
            # Overlapping inputs (a folder and a file inside it) must not double-count rows.
            if c.resolve() not in seen:
                seen.add(c.resolve())
                found.append(c)
    if not found:
        where = ", ".join(str(p) for p in paths) or "(no paths given)"
        raise DataError(f"no {RESULTS_NAME} found in {where}")
    return found


def validate_row(row: object, where: str) -> dict:
    """Check one row and return a copy with label_fraction/seed/value in canonical types.

    Canonical types matter for grouping: 1 and 1.0 must be the same label fraction.
    """
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in row]
    if missing:
        raise DataError(f"{where}: missing required key(s) {', '.join(missing)}")
    for k in _STR_KEYS:
        if not isinstance(row[k], str) or not row[k]:
            raise DataError(f"{where}: '{k}' must be a non-empty string, got {row[k]!r}")
    out = upgrade_row(row)
    for k in ("label_fraction", "value"):
        v = row[k]
        # bool is an int subclass. A NaN value (a metric undefined on a test split) is kept and shown, and
        # left out of every aggregate with a warning; an infinity or a NaN label fraction is an error.
        if v is None and k == "value":
            v = math.nan
        nan_ok = k == "value" and isinstance(v, float) and math.isnan(v)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) or nan_ok):
            raise DataError(f"{where}: '{k}' must be a finite number, got {v!r}")
        out[k] = float(v)
    seed = row["seed"]
    if isinstance(seed, bool) or not isinstance(seed, (int, float)) or seed != int(seed):
        raise DataError(f"{where}: 'seed' must be an integer, got {seed!r}")
    out["seed"] = int(seed)
    return out


def _read_file(path: Path) -> list[dict]:
    # Not io.read_jsonl: errors must name the line, which it does not track.
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                where = f"{path}:{lineno}"
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{where}: malformed JSON ({e.msg} at column {e.colno})") from None
                rows.append({**validate_row(obj, where), SOURCE_FILE: str(path)})
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason})") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    return rows


def row_key(row: dict) -> tuple:
    return (*(row[k] for k in GROUP_KEYS), row["seed"], row.get("image_size"), row.get("patch_size"))


def deduplicate(rows: Iterable[dict]) -> list[dict]:
    """One row per (group key, seed): the latest `created` wins; on a tie, the later row.

    Re-running `rsbench evaluate` appends rather than rewrites, so duplicates are expected.
    ISO timestamps written by rsbench compare correctly as strings; rows without one lose.
    """
    latest: dict[tuple, dict] = {}
    for row in rows:
        key = row_key(row)
        old = latest.get(key)
        if old is None or str(row.get("created") or "") >= str(old.get("created") or ""):
            latest[key] = row
    return list(latest.values())


def disambiguate_shapes(rows: list[dict]) -> list[dict]:
    """An init evaluated at two input shapes on one leaderboard is two inits there: "<init> (<size> px,
    patch <p>)", so neither result overwrites the other. An init whose shape differs only between tasks
    (a dense task's crop size beside classification's input size) keeps one name."""

    def where(r: dict) -> tuple:
        return (*(r[k] for k in SECTION_KEYS), r["init"])

    shapes: dict[tuple, set] = {}
    for r in rows:
        shapes.setdefault(where(r), set()).add((r.get("image_size"), r.get("patch_size")))
    out = []
    for r in rows:
        if len(shapes[where(r)]) > 1:
            size, patch = r.get("image_size"), r.get("patch_size")
            suffix = f"{size} px" + (f", patch {patch}" if patch else "")
            r = {**r, "init": f"{r['init']} ({suffix})"}
        out.append(r)
    return out


def load_results(paths: Iterable[str | os.PathLike]) -> list[dict]:
    """Validated, de-duplicated rows from results.jsonl files and/or folders holding them."""
    paths = list(paths)
    rows: list[dict] = []
    for path in find_results_files(paths):
        rows.extend(_read_file(path))
    if not rows:
        raise DataError(f"no results rows in {', '.join(str(p) for p in paths)}")
    return deduplicate(disambiguate_shapes(rows))


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
