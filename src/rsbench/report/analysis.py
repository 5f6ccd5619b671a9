"""Cross-task analysis: normalized scores, aggregate with CIs, paired comparison against a reference
baseline, average ranks, label efficiency, and score versus pretraining progress and cost.

A "task" for aggregation is one leaderboard (task, dataset, protocol) at its largest label fraction,
scored by its primary metric. Per task, the strongest random-init baseline maps to 0 and the best init
to 100 (GEO-Bench style); without a random init, the weakest init maps to 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from rsbench.report import stats
from rsbench.report.aggregate import Section, build_sections, is_baseline
from rsbench.report.runs import RunInfo


def task_title(s: Section) -> str:
    frac = "" if s.label_fraction == 1.0 else f" · {s.label_fraction * 100:g}% labels"
    return f"{s.dataset} · {s.protocol}{frac}"


@dataclass
class TaskNorm:
    section: Section
    title: str
    zero: float
    zero_from: str  # the init that defines 0
    best: float
    per_seed: dict[str, dict[int, float]]  # init -> seed -> raw primary metric

    def scaled(self, init: str) -> dict[int, float]:
        return {s: float(stats.normalize(v, self.zero, self.best)) for s, v in self.per_seed.get(init, {}).items()}


@dataclass
class AggEntry:
    init: str
    mean: float
    lo: float
    hi: float
    tasks: int
    seeds: int
    baseline: bool
    rank: float | None = None


@dataclass
class Analysis:
    sections: list[Section]
    tasks: list[TaskNorm]
    aggregate: list[AggEntry]
    reference: str | None
    reference_note: str
    paired: list[dict] = field(default_factory=list)
    ranks: dict[str, tuple[float, int]] = field(default_factory=dict)
    efficiency: list[dict] = field(default_factory=list)  # label-efficiency groups
    progress: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # run -> (step, score)
    baselines: set[str] = field(default_factory=set)
    randoms: set[str] = field(default_factory=set)


def _per_seed(section: Section) -> dict[str, dict[int, float]]:
    out = {}
    for e in section.entries:
        c = e.cells.get(section.primary_metric)
        if c is not None:
            out[e.init] = dict(zip(c.seeds, c.values))
    return out


def task_norms(sections: Sequence[Section], baselines: set[str], random_inits: set[str]) -> list[TaskNorm]:
    largest: dict[tuple, float] = {}
    for s in sections:
        key = (s.task, s.dataset, s.protocol)
        largest[key] = max(largest.get(key, 0.0), s.label_fraction)
    norms = []
    for s in sections:
        if s.label_fraction != largest[(s.task, s.dataset, s.protocol)]:
            continue
        per_seed = _per_seed(s)
        means = {i: float(np.mean(list(v.values()))) for i, v in per_seed.items()}
        if len(means) < 2:
            continue
        randoms = {i: m for i, m in means.items() if i in random_inits}
        zero_from = max(randoms, key=randoms.get) if randoms else min(means, key=means.get)
        best = max(means.values())
        if best == means[zero_from]:
            continue  # nothing beats the reference: the scale is undefined
        norms.append(TaskNorm(s, task_title(s), means[zero_from], zero_from, best, per_seed))
    return norms


def aggregate(tasks: Sequence[TaskNorm], baselines: set[str], n_boot: int) -> list[AggEntry]:
    inits = sorted({i for t in tasks for i in t.per_seed})
    out = []
    for init in inits:
        per_task = [list(t.scaled(init).values()) for t in tasks if init in t.per_seed]
        mean, lo, hi = stats.aggregate_ci(per_task, n_boot=n_boot)
        seeds = max(len(v) for v in per_task)
        out.append(AggEntry(init, mean, lo, hi, len(per_task), seeds, init in baselines))
    ranks = stats.average_ranks({t.title: {i: float(np.mean(list(v.values()))) for i, v in t.per_seed.items()}
                                 for t in tasks})
    for e in out:
        e.rank = ranks.get(e.init, (None, 0))[0]
    # Inits scored on fewer tasks are not comparable on the mean: they sort after the complete ones.
    return sorted(out, key=lambda e: (-e.tasks, -e.mean, e.init))


def choose_reference(inits: set[str], kinds: dict[str, str], wanted: str | None) -> tuple[str | None, str]:
    if wanted:
        if wanted not in inits:
            from rsbench.errors import ConfigError

            raise ConfigError(f"reference '{wanted}' is not among the inits ({', '.join(sorted(inits))})")
        return wanted, f"Reference chosen by the user: {wanted}."
    imagenet = sorted(i for i in inits if kinds.get(i) == "imagenet" or i.lower().startswith("imagenet"))
    if imagenet:
        return imagenet[0], f"Reference: the ImageNet baseline {imagenet[0]}."
    randoms = sorted(i for i in inits if kinds.get(i) == "random" or i.lower().startswith("random"))
    if randoms:
        return randoms[0], (f"These results have no ImageNet baseline, so methods are compared with the random "
                            f"init {randoms[0]} instead (add `imagenet` to the benchmark's baselines).")
    return None, "No ImageNet or random-init baseline in these results: no paired comparison."


def paired(tasks: Sequence[TaskNorm], reference: str, n_boot: int) -> list[dict]:
    inits = sorted({i for t in tasks for i in t.per_seed} - {reference})
    out = []
    for init in inits:
        diffs = []
        for t in tasks:
            a, b = t.scaled(init), t.scaled(reference)
            common = sorted(set(a) & set(b))
            if common:
                diffs.append([a[s] - b[s] for s in common])
            elif a and b:  # no seed in common: compare the means
                diffs.append([np.mean(list(a.values())) - np.mean(list(b.values()))])
        if diffs:
            out.append({"init": init, **stats.paired_bootstrap(diffs, n_boot=n_boot)})
    return sorted(out, key=lambda d: -d["mean"])


def label_efficiency(sections: Sequence[Section], n_boot: int) -> list[dict]:
    groups: dict[tuple, list[Section]] = {}
    for s in sections:
        groups.setdefault((s.task, s.dataset, s.protocol), []).append(s)
    out = []
    for (task, dataset, protocol), secs in groups.items():
        if len(secs) < 2:
            continue
        lines: dict[str, list[tuple[float, float, float, float]]] = {}
        for s in sorted(secs, key=lambda s: s.label_fraction):
            for init, vals in _per_seed(s).items():
                lo, hi = stats.bootstrap_ci(list(vals.values()), n_boot=n_boot)
                lines.setdefault(init, []).append((s.label_fraction, float(np.mean(list(vals.values()))), lo, hi))
        out.append({"title": f"{dataset} · {protocol}", "metric": secs[0].primary_metric, "lines": lines})
    return out


def progress(tasks: Sequence[TaskNorm], checkpoint_rows: Sequence[dict], runs: Sequence[RunInfo]) -> dict:
    """Normalized score (mean over the tasks evaluated at checkpoints) per step of each run."""
    by_task = {(t.section.task, t.section.dataset, t.section.protocol, t.section.label_fraction): t for t in tasks}
    found: dict[str, dict[tuple, dict[int, list[float]]]] = {}
    for r in checkpoint_rows:
        t = by_task.get((r["task"], r["dataset"], r["protocol"], r["label_fraction"]))
        if t is None or r["metric"] != t.section.primary_metric:
            continue
        found.setdefault(r["init"], {}).setdefault(t.title, {}).setdefault(int(r["_step"]), []).append(r["value"])
    steps_of = {r.name: r.steps for r in runs}
    out = {}
    for init, per_task in found.items():
        points: dict[int, list[float]] = {}
        for title, per_step in per_task.items():
            t = next(t for t in tasks if t.title == title)
            for step, vals in per_step.items():
                points.setdefault(step, []).append(float(stats.normalize(np.mean(vals), t.zero, t.best)))
            final = t.per_seed.get(init)
            if final and steps_of.get(init):
                points.setdefault(int(steps_of[init]), []).append(
                    float(stats.normalize(np.mean(list(final.values())), t.zero, t.best)))
        out[init] = sorted((s, float(np.mean(v))) for s, v in points.items())
    return out


def analyze(rows: Sequence[dict], checkpoint_rows: Sequence[dict] = (), runs: Sequence[RunInfo] = (),
            reference: str | None = None, n_boot: int = stats.N_BOOT) -> Analysis:
    sections = build_sections(rows)
    kinds = {r["init"]: str(r.get("init_kind") or "") for r in rows}
    baselines = {i for i in kinds if is_baseline(i, kinds[i])}
    randoms = {i for i in kinds if kinds[i] == "random" or (not kinds[i] and i.lower().startswith("random"))}
    tasks = task_norms(sections, baselines, randoms)
    ref, note = choose_reference(set(kinds), kinds, reference)
    result = Analysis(sections, tasks, aggregate(tasks, baselines, n_boot) if tasks else [], ref, note,
                      baselines=baselines, randoms=randoms)
    if ref is not None and tasks:
        result.paired = paired(tasks, ref, n_boot)
    result.ranks = {e.init: (e.rank, e.tasks) for e in result.aggregate if e.rank is not None}
    result.efficiency = label_efficiency(sections, n_boot)
    result.progress = progress(tasks, checkpoint_rows, runs) if checkpoint_rows else {}
    return result


__all__ = ["AggEntry", "Analysis", "TaskNorm", "analyze", "task_title"]
