"""Cross-task analysis: normalized scores with intervals that include test-set error, paired tests
against a reference init, average ranks, label efficiency, and score versus pretraining progress.

A "task" for aggregation is one leaderboard (task, dataset, protocol) at its largest label fraction,
scored by its headline metric. Every task counts, including one where nothing beats random init.

The normalized score of an init on a task is the share of the headroom above the score reference
(random init of the same backbone by default) that the init closes: 100 x (m - m_ref) / (m_max - m_ref),
with m_max the metric's perfect value (1.0). Adding or removing an init changes nobody else's score. A
frozen normalizer file (per-dataset min/max, GEO-Bench's normalizer.json idea) replaces m_ref and m_max.
Intervals come from `uncertainty.py`: test-set resampling on the per-example outputs plus seed variation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rsbench.contracts.predictions import resolve_predictions_path
from rsbench.report import stats
from rsbench.report import uncertainty as unc
from rsbench.report.aggregate import SOURCE_FILE, Section, build_sections, is_baseline, prepare_rows
from rsbench.report.pretrain_runs import RunInfo
from rsbench.report.recompute import metric_on_examples

PERFECT = 1.0  # every headline metric rsbench reports (accuracy, mAP, mIoU, F1) is in [0, 1]
ALPHA = 0.05


def binomial_ok(metric: str) -> bool:
    """Only accuracy is a share of test examples, so only it has the analytic binomial test-set error."""
    return metric == "accuracy"


def task_title(s: Section) -> str:
    frac = "" if s.label_fraction == 1.0 else f" · {s.label_fraction * 100:g}% labels"
    return f"{s.dataset} · {s.protocol}{frac}"


@dataclass
class TaskNorm:
    section: Section
    title: str
    zero: float  # m_ref: the score reference's mean (or the normalizer's min)
    zero_from: str | None  # the init that defines 0 (None: a normalizer file)
    best: float  # m_max: the metric's perfect value (or the normalizer's max)
    cells: dict[str, dict[int, unc.SeedCell]]  # init -> seed -> headline value (finite) and its examples
    raw: dict[str, unc.Estimate] = field(default_factory=dict)  # init -> mean over seeds, with uncertainty
    score: dict[str, unc.Estimate] = field(default_factory=dict)  # init -> normalized score
    flags: list[str] = field(default_factory=list)
    n_test: int | None = None
    scorable: bool = True

    @property
    def per_seed(self) -> dict[str, dict[int, float]]:
        """init -> seed -> raw headline metric."""
        return {init: {s: c.value for s, c in by_seed.items()} for init, by_seed in self.cells.items()}

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
    iqm: float = math.nan
    iqm_lo: float = math.nan
    iqm_hi: float = math.nan
    task_names: list[str] = field(default_factory=list)
    source: str = ""


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
    normalization: str = ""
    warnings: list[str] = field(default_factory=list)
    parity: list[str] = field(default_factory=list)
    estimates: dict[tuple, dict[str, unc.Estimate]] = field(default_factory=dict)  # leaderboard -> init -> mean


RowIndex = dict[tuple, list[dict]]  # (task, dataset, protocol, label_fraction, metric) -> rows


def index_rows(rows: Sequence[dict]) -> RowIndex:
    out: RowIndex = {}
    for r in rows:
        out.setdefault((r["task"], r["dataset"], r["protocol"], r["label_fraction"], r["metric"]), []).append(r)
    return out


def _cells(section: Section, rows: RowIndex) -> dict[str, dict[int, unc.SeedCell]]:
    """Per init and seed: the finite headline value and its per-example outputs (read once, here)."""
    out: dict[str, dict[int, unc.SeedCell]] = {}
    key = (section.task, section.dataset, section.protocol, section.label_fraction, section.primary_metric)
    for r in rows.get(key, []):
        if not math.isfinite(r["value"]):
            continue
        examples = None
        path = resolve_predictions_path(r, r.get(SOURCE_FILE))
        if path is not None:
            try:
                examples = metric_on_examples(path, r["metric"])
            except Exception:  # an unreadable file means "no per-example outputs", said in flags
                examples = None
        out.setdefault(r["init"], {})[r["seed"]] = unc.SeedCell(
            r["value"], examples, r.get("test_split_id"), r.get("n_test")
        )
    return out


def load_normalizer(path: str | Path) -> dict:
    """A frozen normalizer: {"version": ..., "datasets": {NAME: {"min": m, "max": M}}} (or the mapping alone).

    Fixing min/max per dataset in a versioned file (GEO-Bench's normalizer.json idea) makes scores comparable
    across reports and releases, whatever inits each report holds."""
    import json

    from rsbench.errors import DataError

    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read normalizer {path}: {e}") from None
    datasets = doc.get("datasets", doc) if isinstance(doc, dict) else None
    if not isinstance(datasets, dict) or not datasets:
        raise DataError(f'normalizer {path}: expected {{"datasets": {{NAME: {{"min": m, "max": M}}}}}}')
    for name, entry in datasets.items():
        ok = isinstance(entry, dict) and all(isinstance(entry.get(k), (int, float)) for k in ("min", "max"))
        if not ok or entry["max"] <= entry["min"]:
            raise DataError(f"normalizer {path}: dataset '{name}' needs numbers min < max, got {entry!r}")
    return datasets


def _references(inits: set[str], kinds: dict[str, str], backbones: dict[str, str], flag: str) -> dict[str, str]:
    """init -> its score reference: the `flag` kind (random / bandstats) of the same backbone if there is one."""
    refs = sorted(i for i in inits if kinds.get(i) == flag or (not kinds.get(i) and i.lower().startswith(flag)))
    out = {}
    for init in inits:
        same = [r for r in refs if backbones.get(r) == backbones.get(init)]
        if same:
            out[init] = same[0]
        elif refs:
            out[init] = refs[0]
    return out


def task_norms(
    sections: Sequence[Section],
    rows: RowIndex,
    kinds: dict[str, str],
    backbones: dict[str, str],
    score_reference: str,
    normalizer: dict | None,
    resampler: unc.TestResampler,
) -> list[TaskNorm]:
    largest: dict[tuple, float] = {}
    for s in sections:
        key = (s.task, s.dataset, s.protocol)
        largest[key] = max(largest.get(key, 0.0), s.label_fraction)
    norms = []
    for s in sections:
        if s.label_fraction != largest[(s.task, s.dataset, s.protocol)]:
            continue
        cells = _cells(s, rows)
        t = TaskNorm(s, task_title(s), math.nan, None, PERFECT, cells)
        n_tests = [c.n_test for by_seed in cells.values() for c in by_seed.values() if c.n_test]
        t.n_test = min(n_tests) if n_tests else None
        nan_inits = sorted(
            e.init
            for e in s.entries
            if (c := e.cells.get(s.primary_metric)) is not None and any(map(math.isnan, c.values))
        )
        if nan_inits:
            t.flags.append(f"NaN {s.primary_metric} for {', '.join(nan_inits)} (left out of aggregates)")
        t.raw = {i: unc.estimate(c, resampler, binomial_ok(s.primary_metric)) for i, c in cells.items()}
        _normalize(t, kinds, backbones, score_reference, normalizer, resampler)
        _task_flags(t)
        norms.append(t)
    return norms


def _normalize(t: TaskNorm, kinds, backbones, score_reference, normalizer, resampler) -> None:
    if normalizer is not None:
        entry = normalizer.get(t.section.dataset)
        if entry is None:
            t.scorable = False
            t.flags.append(f"dataset '{t.section.dataset}' is not in the normalizer file: not in the normalized score")
            return
        t.zero, t.best = float(entry["min"]), float(entry["max"])
        for init, e in t.raw.items():
            t.score[init] = unc.scaled(e, 100.0 / (t.best - t.zero), -100.0 * t.zero / (t.best - t.zero))
        return
    refs = _references(set(t.cells), kinds, backbones, score_reference)
    if not refs:
        t.scorable = False
        t.flags.append(f"no {score_reference} init on this task: it has no normalized score (add the baseline)")
        return
    # One m_ref per task for the displayed scale: the reference of the most common backbone.
    ref = max(set(refs.values()), key=lambda r: (list(refs.values()).count(r), r))
    if ref not in t.raw:
        t.scorable = False
        return
    t.zero, t.zero_from = t.raw[ref].mean, ref
    if t.zero >= t.best:
        t.scorable = False
        t.flags.append(f"{ref} already scores {t.zero:.3f}: no headroom to normalize")
        return
    for init in t.cells:
        r = refs.get(init, ref)
        factor = 100.0 / (t.best - t.raw[r].mean)
        if init == r:
            t.score[init] = unc.Estimate(
                0.0, 0.0, 0.0, 0.0, math.inf, t.raw[r].n_seeds, t.raw[r].source, ["score reference"]
            )
            continue
        diff = unc.estimate_difference(t.cells[init], t.cells[r], resampler, binomial_ok(t.section.primary_metric))
        if diff.n_seeds == 0:  # no seed in common: unpaired difference of the two means
            a, b = t.raw[init], t.raw[r]
            diff = unc.combine([a, unc.scaled(b, -1.0)], weights=[1.0, 1.0])
        t.score[init] = unc.scaled(diff, factor)


def _task_flags(t: TaskNorm) -> None:
    means = {i: e.mean for i, e in t.raw.items() if math.isfinite(e.mean)}
    if t.zero_from and means and max(means, key=means.get) == t.zero_from:
        t.flags.append(f"nothing beats {t.zero_from} on this task (it still counts in every aggregate)")
    ses = [e.se for e in t.raw.values() if e.var_test > 0]
    if len(means) > 1 and ses:
        spread = max(means.values()) - min(means.values())
        if spread < float(np.median(ses)):
            t.flags.append(
                f"the spread of inits ({spread:.4f}) is below the test-set standard error "
                f"({float(np.median(ses)):.4f}): differences here are noise"
            )
    for e in t.raw.values():
        for f in e.flags:
            if f not in t.flags and not f.startswith("score reference"):
                t.flags.append(f)


def aggregate(
    tasks: Sequence[TaskNorm], baselines: set[str], n_boot: int, resampler: unc.TestResampler | None = None
) -> list[AggEntry]:
    resampler = resampler or unc.TestResampler(n_boot)
    scorable = [t for t in tasks if t.scorable]
    inits = sorted({i for t in scorable for i in t.score})
    out = []
    for init in inits:
        ests = [t.score[init] for t in scorable if init in t.score]
        names = [t.title for t in scorable if init in t.score]
        total = unc.combine(ests)
        lo, hi = total.ci()
        per_task = []
        for t in scorable:
            if init not in t.score or init not in t.per_seed:
                continue
            scaled = t.scaled(init)
            seeds = sorted(scaled)
            # Test-set resamples of each seed, on the score scale (None without per-example outputs).
            devs = unc.resampled_deviations(t.cells[init], resampler)
            dev = None if devs is None else np.stack([devs[s] for s in seeds]) * 100.0 / (t.best - t.zero)
            per_task.append((np.array([scaled[s] for s in seeds]), dev))
        iqm, iqm_lo, iqm_hi = unc.stratified_iqm_ci(per_task, n_boot=n_boot) if per_task else (math.nan,) * 3
        seeds = max((len(t.per_seed.get(init, {})) for t in scorable), default=0)
        out.append(
            AggEntry(
                init,
                total.mean,
                lo,
                hi,
                len(ests),
                seeds,
                init in baselines,
                iqm=iqm,
                iqm_lo=iqm_lo,
                iqm_hi=iqm_hi,
                task_names=names,
                source=total.source,
            )
        )
    ranks = stats.average_ranks(
        {t.title: {i: e.mean for i, e in t.raw.items() if math.isfinite(e.mean)} for t in scorable}
    )
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
        return randoms[0], (
            f"These results have no ImageNet baseline, so methods are compared with the random "
            f"init {randoms[0]} instead (add `imagenet` to the benchmark's baselines)."
        )
    return None, "No ImageNet or random-init baseline in these results: no paired comparison."


def _task_test(t: TaskNorm, init: str, reference: str, diff: unc.Estimate) -> tuple[float, str]:
    """(p-value, test name) of init vs reference on one task. McNemar (exact) for classification accuracy
    when one pair of prediction vectors says everything (one seed, or both inits identical over seeds on one
    fixed test set); otherwise the paired t-test on the two-level estimate, which counts seed variation."""
    a, b = t.cells.get(init, {}), t.cells.get(reference, {})
    common = sorted(set(a) & set(b))
    one_split = len({a[s].split_id for s in common} | {b[s].split_id for s in common}) == 1
    deterministic = one_split and all(len({c[s].value for s in common}) == 1 for c in (a, b))
    if t.section.primary_metric == "accuracy" and common and (len(common) == 1 or deterministic):
        ca, cb = a[common[0]].examples, b[common[0]].examples
        if (
            ca is not None
            and cb is not None
            and ca.correct is not None
            and cb.correct is not None
            and a[common[0]].split_id == b[common[0]].split_id
        ):
            p, _, _ = unc.mcnemar(ca.correct, cb.correct)
            return p, "McNemar (exact)"
    return diff.p_value(), "paired t (test resampling + seeds)"


def paired(tasks: Sequence[TaskNorm], reference: str, resampler: unc.TestResampler) -> list[dict]:
    """Each init against `reference`, per task (raw metric points, a paired test, Holm across tasks) and
    over all tasks (difference of normalized scores and of raw points, one test)."""
    inits = sorted({i for t in tasks for i in t.cells} - {reference})
    out = []
    for init in inits:
        per_task, raw_ests, score_ests = [], [], []
        for t in tasks:
            if init not in t.cells or reference not in t.cells:
                continue
            diff = unc.estimate_difference(
                t.cells[init], t.cells[reference], resampler, binomial_ok(t.section.primary_metric)
            )
            if diff.n_seeds == 0:
                continue
            p, test = _task_test(t, init, reference, diff)
            lo, hi = diff.ci()
            mdd = (
                unc.min_detectable_difference(t.raw[reference].mean, t.n_test)
                if t.section.primary_metric == "accuracy"
                else math.nan
            )
            per_task.append(
                {
                    "task": t.title,
                    "metric": t.section.primary_metric,
                    "delta": diff.mean,
                    "lo": lo,
                    "hi": hi,
                    "p_value": p,
                    "test": test,
                    "seeds": diff.n_seeds,
                    "mdd": mdd,
                    "source": diff.source,
                }
            )
            raw_ests.append(diff)
            if t.scorable:
                score_ests.append(unc.scaled(diff, 100.0 / (t.best - t.zero)))
        if not per_task:
            continue
        for d, p_holm in zip(per_task, unc.holm([d["p_value"] for d in per_task])):
            d["p_holm"] = p_holm
            d["outcome"] = "tie" if not p_holm < ALPHA else ("win" if d["delta"] > 0 else "loss")
        raw_total = unc.combine(raw_ests)
        score_total = unc.combine(score_ests) if score_ests else raw_total
        slo, shi = score_total.ci()
        rlo, rhi = raw_total.ci()
        won = sum(d["outcome"] == "win" for d in per_task)
        lost = sum(d["outcome"] == "loss" for d in per_task)
        out.append(
            {
                "init": init,
                "reference": reference,
                "mean": score_total.mean,
                "lo": slo,
                "hi": shi,
                "delta_points": 100 * raw_total.mean,
                "delta_lo": 100 * rlo,
                "delta_hi": 100 * rhi,
                "p_value": raw_total.p_value(),
                "won": won,
                "lost": lost,
                "tied": len(per_task) - won - lost,
                "tasks": len(per_task),
                "pairs": int(sum(d["seeds"] for d in per_task)),
                "per_task": per_task,
                "min_seeds": min(d["seeds"] for d in per_task),
            }
        )
    for d, p_holm in zip(out, unc.holm([d["p_value"] for d in out])):
        d["p_holm"] = p_holm
        d["verdict"] = verdict(d)
    return sorted(out, key=lambda d: -d["mean"])


def verdict(d: dict) -> str:
    """A plain sentence a decision-maker can act on."""
    points = f"{d['delta_points']:+.1f} points [{d['delta_lo']:+.1f}, {d['delta_hi']:+.1f}]"
    record = f"{d['won']} won, {d['tied']} tied, {d['lost']} lost of {d['tasks']} tasks"
    if not d["p_holm"] < ALPHA:
        return f"no significant difference from {d['reference']} at these seeds and test sizes ({points}; {record})"
    better = "better" if d["delta_points"] > 0 else "worse"
    return f"significantly {better} than {d['reference']}: {points}, Holm p = {d['p_holm']:.3g} ({record})"


def section_key(s: Section) -> tuple:
    return (s.task, s.dataset, s.protocol, s.label_fraction)


def section_estimates(
    sections: Sequence[Section], rows: RowIndex, tasks: Sequence[TaskNorm], resampler: unc.TestResampler
) -> dict[tuple, dict[str, unc.Estimate]]:
    """Per leaderboard: each init's headline mean over seeds with its interval (test set + seeds)."""
    done = {section_key(t.section): t.raw for t in tasks}
    out = {}
    for s in sections:
        key = section_key(s)
        if key not in done:
            ok = binomial_ok(s.primary_metric)
            done[key] = {i: unc.estimate(c, resampler, ok) for i, c in _cells(s, rows).items()}
        out[key] = done[key]
    return out


def label_efficiency(sections: Sequence[Section], estimates: dict[tuple, dict[str, unc.Estimate]]) -> list[dict]:
    groups: dict[tuple, list[Section]] = {}
    for s in sections:
        groups.setdefault((s.task, s.dataset, s.protocol), []).append(s)
    out = []
    for (_task, dataset, protocol), secs in groups.items():
        if len(secs) < 2:
            continue
        lines: dict[str, list[tuple[float, float, float, float]]] = {}
        for s in sorted(secs, key=lambda s: s.label_fraction):
            for init, e in estimates[section_key(s)].items():
                lo, hi = e.ci()
                lines.setdefault(init, []).append((s.label_fraction, e.mean, lo, hi))
        out.append({"title": f"{dataset} · {protocol}", "metric": secs[0].primary_metric, "lines": lines})
    return out


def progress(tasks: Sequence[TaskNorm], checkpoint_rows: Sequence[dict], runs: Sequence[RunInfo]) -> dict:
    """Normalized score (mean over the tasks evaluated at checkpoints) per step of each run."""
    by_task = {section_key(t.section): t for t in tasks}
    found: dict[str, dict[tuple, dict[int, list[float]]]] = {}
    for r in checkpoint_rows:
        t = by_task.get((r["task"], r["dataset"], r["protocol"], r["label_fraction"]))
        if t is None or not t.scorable or r["metric"] != t.section.primary_metric:
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
                    float(stats.normalize(np.mean(list(final.values())), t.zero, t.best))
                )
        out[init] = sorted((s, float(np.mean(v))) for s, v in points.items())
    return out


def parity_warnings(rows: Sequence[dict], tasks: Sequence[TaskNorm]) -> list[str]:
    """Within one leaderboard every init must have had the same protocol settings and input shape."""
    keys = ("image_size", "patch_size", "k", "resize")
    hp_keys = ("c_grid", "epochs", "lr", "batch_size", "decoder")
    by_section: dict[tuple, list[dict]] = {}
    for r in rows:
        by_section.setdefault((r["task"], r["dataset"], r["protocol"], r["label_fraction"]), []).append(r)
    out = []
    for t in tasks:
        seen: dict[str, dict[str, set]] = {}
        for r in by_section.get(section_key(t.section), []):
            hp = r.get("hparams") or {}
            vals = {k: r.get(k) for k in keys} | {k: hp.get(k) for k in hp_keys if k in hp}
            for k, v in vals.items():
                seen.setdefault(k, {}).setdefault(str(v), set()).add(r["init"])
        for k, by_value in seen.items():
            if len(by_value) > 1:
                parts = "; ".join(f"{v}: {', '.join(sorted(i))}" for v, i in sorted(by_value.items()))
                out.append(f"{t.title}: inits differ in {k} ({parts})")
    return out


def analyze(
    rows: Sequence[dict],
    checkpoint_rows: Sequence[dict] = (),
    runs: Sequence[RunInfo] = (),
    reference: str | None = None,
    n_boot: int = unc.N_BOOT,
    score_reference: str = "random",
    normalizer: dict | None = None,
) -> Analysis:
    rows = prepare_rows(rows)
    sections = build_sections(rows)
    kinds = {r["init"]: str(r.get("init_kind") or "") for r in rows}
    backbones = {r["init"]: str(r.get("backbone") or "") for r in rows}
    baselines = {i for i in kinds if is_baseline(i, kinds[i])}
    randoms = {i for i in kinds if kinds[i] == "random" or (not kinds[i] and i.lower().startswith("random"))}
    resampler = unc.TestResampler(n_boot)
    indexed = index_rows(rows)
    tasks = task_norms(sections, indexed, kinds, backbones, score_reference, normalizer, resampler)
    ref, note = choose_reference(set(kinds), kinds, reference)
    result = Analysis(
        sections,
        tasks,
        aggregate(tasks, baselines, n_boot, resampler) if tasks else [],
        ref,
        note,
        baselines=baselines,
        randoms=randoms,
    )
    result.normalization = (
        "normalizer file (per-dataset min/max)"
        if normalizer is not None
        else f"headroom closed above {score_reference} init: 100 x (m - m_ref) / (1 - m_ref)"
    )
    if ref is not None and tasks:
        result.paired = paired(tasks, ref, resampler)
    result.ranks = {e.init: (e.rank, e.tasks) for e in result.aggregate if e.rank is not None}
    result.estimates = section_estimates(sections, indexed, tasks, resampler)
    result.efficiency = label_efficiency(sections, result.estimates)
    result.progress = progress(tasks, checkpoint_rows, runs) if checkpoint_rows else {}
    result.parity = parity_warnings(rows, tasks)
    nan_rows = [r for r in rows if not math.isfinite(r["value"])]
    if nan_rows:
        result.warnings.append(
            f"{len(nan_rows)} result row(s) have a NaN value; they are shown and left out of every aggregate"
        )
    seeds = [e.seeds for e in result.aggregate]
    if seeds and min(seeds) < 3:
        result.warnings.append(
            f"some inits have only {min(seeds)} seed(s): intervals are wide and seed variation "
            "is poorly estimated (use 5 seeds)"
        )
    for d in result.paired:
        small = [pt for pt in d["per_task"] if math.isfinite(pt["mdd"]) and abs(pt["delta"]) < pt["mdd"]]
        if small:
            result.warnings.append(
                f"{d['init']} vs {d['reference']}: on {len(small)} task(s) the difference is below what the test "
                f"set can detect (e.g. {small[0]['task']}: |Δ| {abs(small[0]['delta']) * 100:.1f} < "
                f"{small[0]['mdd'] * 100:.1f} points at n_test={_n(tasks, small[0]['task'])})"
            )
    unscorable = [t.title for t in tasks if not t.scorable]
    if unscorable:
        result.warnings.append(f"not in the normalized score (see flags): {', '.join(unscorable)}")
    return result


def _n(tasks: Sequence[TaskNorm], title: str) -> int | None:
    return next((t.n_test for t in tasks if t.title == title), None)


__all__ = ["AggEntry", "Analysis", "TaskNorm", "analyze", "task_title"]
