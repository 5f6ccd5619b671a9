"""Assemble everything the report template shows: tables (also as Markdown/LaTeX) and figures."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rsbench.contracts.corpus_info import describe_group, upgrade_band_groups
from rsbench.contracts.run_record import corpus_summary
from rsbench.report import figures
from rsbench.report.aggregate import Section
from rsbench.report.analysis import Analysis
from rsbench.report.plots import primary_metric_plot
from rsbench.report.pretrain_runs import RunInfo, run_from_dir
from rsbench.report.sources import corpus_paths
from rsbench.report.stats import pareto_front
from rsbench.report.tables import Table, seeds_note
from rsbench.report.uncertainty import Estimate

MAX_QUICKLOOKS = 6
MAX_QUICKLOOK_BYTES = 3_000_000


def fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "–"
    return f"{x:.{digits}f}" if abs(x) < 1000 else f"{x:.4g}"


def count_cells(rows: Sequence[dict]) -> int:
    return len({(r["init"], r["task"], r["dataset"], r["protocol"], r["label_fraction"], r["seed"]) for r in rows})


def _task_rows(rows: Sequence[dict], a: Analysis) -> list[dict]:
    keys = {(t.section.task, t.section.dataset, t.section.protocol, t.section.label_fraction) for t in a.tasks}
    return [r for r in rows if (r["task"], r["dataset"], r["protocol"], r["label_fraction"]) in keys]


def summary_table(a: Analysis, rows: Sequence[dict]) -> Table:
    used = _task_rows(rows, a)
    scorable = [t for t in a.tasks if t.scorable]
    table = Table(
        "summary",
        "Normalized score across tasks",
        ["Rank", "Init", "Score", "95% CI", "IQM", "IQM 95% CI", "Avg rank", "Tasks", "Seeds"],
        [],
        numeric={0, 2, 3, 4, 5, 6, 7, 8},
    )
    for n, e in enumerate(a.aggregate, start=1):
        table.rows.append(
            [
                str(n),
                e.init,
                fmt(e.mean, 1),
                f"[{fmt(e.lo, 1)}, {fmt(e.hi, 1)}]",
                fmt(e.iqm, 1),
                f"[{fmt(e.iqm_lo, 1)}, {fmt(e.iqm_hi, 1)}]",
                fmt(e.rank, 2),
                f"{e.tasks}/{len(scorable)}",
                str(e.seeds),
            ]
        )
        table.row_classes.append(" ".join(x for x in ("best" if n == 1 else "", "baseline" if e.baseline else "") if x))
    left_out = [t.title for t in a.tasks if not t.scorable]
    table.note = (
        f"Score: {a.normalization}, per task, then the mean over tasks; IQM = interquartile mean of the "
        "(task, seed) scores. Intervals include test-set sampling error (bootstrap over test examples "
        "from the per-example outputs) and seed variation (t interval); see README, 'Reading the "
        f"numbers'. Tasks: {', '.join(t.title for t in scorable)}."
        + (f" Not scored (no reference): {', '.join(left_out)}." if left_out else "")
        + " "
        + seeds_note([e.seeds for e in a.aggregate], count_cells(used), len(used))
    )
    return table


def paired_table(a: Analysis, rows: Sequence[dict]) -> Table:
    table = Table(
        "paired",
        f"Paired comparison with {a.reference}",
        ["Init", "Δ score", "95% CI", "Δ points", "95% CI ", "p", "p (Holm)", "Won / tied / lost", "Verdict"],
        [],
        numeric={1, 2, 3, 4, 5, 6},
    )
    for d in a.paired:
        table.rows.append(
            [
                d["init"],
                f"{d['mean']:+.1f}",
                f"[{d['lo']:+.1f}, {d['hi']:+.1f}]",
                f"{d['delta_points']:+.2f}",
                f"[{d['delta_lo']:+.2f}, {d['delta_hi']:+.2f}]",
                f"{d['p_value']:.3g}",
                f"{d['p_holm']:.3g}",
                f"{d['won']} / {d['tied']} / {d['lost']}",
                d["verdict"],
            ]
        )
    used = _task_rows(rows, a)
    table.note = (
        f"{a.reference_note} Δ score in normalized points and Δ points in the raw headline metric x 100 "
        "(method − reference, mean over tasks), paired on seeds and test examples. p: paired test of the "
        "mean difference over tasks; Holm-adjusted across the inits compared. A task is won or lost only "
        "when its own Holm-adjusted test (across tasks) is significant at 0.05; otherwise it is a tie. "
        + seeds_note(
            [len(t.per_seed.get(d["init"], {})) for d in a.paired for t in a.tasks] or [0], count_cells(used), len(used)
        )
    )
    return table


def per_task_table(a: Analysis) -> Table:
    table = Table(
        "per-task",
        f"Per task: each init against {a.reference}",
        ["Task", "Init", "Metric", "Δ points", "95% CI", "p", "p (Holm)", "Test", "Outcome", "MDD"],
        [],
        numeric={3, 4, 5, 6, 9},
    )
    for d in a.paired:
        for pt in d["per_task"]:
            table.rows.append(
                [
                    pt["task"],
                    d["init"],
                    pt["metric"],
                    f"{pt['delta'] * 100:+.2f}",
                    f"[{pt['lo'] * 100:+.2f}, {pt['hi'] * 100:+.2f}]",
                    f"{pt['p_value']:.3g}",
                    f"{pt['p_holm']:.3g}",
                    pt["test"],
                    pt["outcome"],
                    fmt(pt["mdd"] * 100, 1) if np.isfinite(pt["mdd"]) else "–",
                ]
            )
    table.note = (
        "Holm correction across the tasks of each init. MDD: the smallest accuracy difference (points) "
        "this test-set size detects with 80 % power at α = 0.05."
    )
    return table


def task_flags_table(a: Analysis) -> Table:
    table = Table("task-flags", "Tasks and their flags", ["Task", "Metric", "n_test", "Score reference", "Flags"], [])
    for t in a.tasks:
        ref = t.zero_from or ("normalizer file" if t.scorable else "–")
        table.rows.append(
            [
                t.title,
                t.section.primary_metric,
                str(t.n_test or "–"),
                f"{ref} ({fmt(t.zero)})" if t.scorable else ref,
                "; ".join(t.flags) or "–",
            ]
        )
    return table


def compute_table(rows: Sequence[dict]) -> Table | None:
    """Evaluation compute per (dataset, protocol, init): feature extraction, probe/training fit, images/s."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r.get("headline") or r.get("headline") is None:
            groups.setdefault((r["dataset"], r["protocol"], r["init"]), []).append(r)
    table = Table(
        "compute",
        "Evaluation compute (mean per evaluation cell)",
        ["Dataset", "Protocol", "Init", "Extract s", "Fit s", "Predict s", "Images/s"],
        [],
        numeric={3, 4, 5, 6},
    )

    def mean(rs: list[dict], key: str) -> float | None:
        vals = [float(r[key]) for r in rs if isinstance(r.get(key), (int, float))]
        return float(np.mean(vals)) if vals else None

    for (dataset, protocol, init), rs in sorted(groups.items()):
        if all(mean(rs, k) is None for k in ("extract_time_s", "fit_time_s", "eval_time_s")):
            continue
        table.rows.append(
            [
                dataset,
                protocol,
                init,
                fmt(mean(rs, "extract_time_s"), 1),
                fmt(mean(rs, "fit_time_s"), 2),
                fmt(mean(rs, "eval_time_s"), 2),
                fmt(mean(rs, "eval_images_per_s"), 1),
            ]
        )
    table.note = (
        "Extract: the frozen feature pass over all images (shared by the probes of one seed; cached "
        "passes show their original time). Images/s: images through the backbone per second."
    )
    return table if table.rows else None


def per_class_table(a: Analysis) -> Table | None:
    """Per-class precision / recall / F1 (mean over seeds) of single-label classification, from the
    per-example files' metadata (read once, with the examples)."""
    table = Table(
        "per-class",
        "Per-class precision / recall / F1 (mean over seeds)",
        ["Task", "Init", "Class", "Precision", "Recall", "F1", "Support"],
        [],
        numeric={3, 4, 5, 6},
    )
    for t in a.tasks:
        if t.section.primary_metric != "accuracy":
            continue
        for init, by_seed in sorted(t.cells.items()):
            stats_per_seed, classes = [], []
            for cell in by_seed.values():
                meta = cell.examples.meta if cell.examples is not None else {}
                if meta.get("per_class"):
                    stats_per_seed.append(meta["per_class"])
                    classes = meta.get("classes") or classes
            if not stats_per_seed:
                continue
            for c, name in enumerate(classes):
                vals = {k: np.mean([s[k][c] for s in stats_per_seed]) for k in ("precision", "recall", "f1", "support")}
                table.rows.append(
                    [
                        t.title,
                        init,
                        name,
                        fmt(vals["precision"]),
                        fmt(vals["recall"]),
                        fmt(vals["f1"]),
                        f"{vals['support']:.0f}",
                    ]
                )
    return table if table.rows else None


def heatmap_table(a: Analysis, inits: Sequence[str], rows: Sequence[dict]) -> Table:
    table = Table(
        "heatmap",
        "Primary metric per init and task (mean over seeds)",
        ["Init", *(t.title for t in a.tasks)],
        [],
        numeric=set(range(1, len(a.tasks) + 1)),
    )
    for init in inits:
        table.rows.append(
            [init, *(fmt(np.mean(list(t.per_seed[init].values()))) if init in t.per_seed else "–" for t in a.tasks)]
        )
    used = _task_rows(rows, a)
    seeds = [len(v) for t in a.tasks for v in t.per_seed.values()]
    metrics = sorted({t.section.primary_metric for t in a.tasks})
    table.note = f"Metric: {', '.join(metrics)}. " + seeds_note(seeds, count_cells(used), len(used))
    return table


def leaderboard(section: Section, n: int, estimates: dict[str, Estimate]) -> tuple[dict, Table]:
    metric = section.primary_metric
    ci = {init: e.ci() for init, e in estimates.items()}
    cells = sum(e.n_seeds for e in section.entries)
    note = seeds_note(section.seed_counts, cells, section.n_rows)
    title = f"{section.task} / {section.dataset} / {section.protocol} / {section.label_fraction * 100:g}% labels"
    cols = ["Rank", "Init", *section.metrics, f"{metric} 95% CI", "Seeds"]
    table = Table(f"lb-{n}", title, cols, [], note, numeric=set(range(2, len(cols))) | {0})
    for e in section.entries:
        lo_hi = ci.get(e.init)
        cells_text = (
            "–" if e.cells[m] is None else f"{fmt(e.cells[m].mean)} ± {fmt(e.cells[m].std)}" for m in section.metrics
        )
        table.rows.append(
            [str(e.rank), e.init, *cells_text, f"[{fmt(lo_hi[0])}, {fmt(lo_hi[1])}]" if lo_hi else "–", str(e.n_seeds)]
        )
    item = {
        "id": f"lb-{n}",
        "s": section,
        "plot": primary_metric_plot(section),
        "note": note,
        "ci": {k: f"[{fmt(lo)}, {fmt(hi)}]" for k, (lo, hi) in ci.items()},
        "table": table,
    }
    return item, table


def cost_section(a: Analysis, runs: Sequence[RunInfo], colors: dict) -> dict | None:
    if not runs:
        return None
    score = {e.init: e for e in a.aggregate}
    table = Table(
        "cost",
        "Pretraining cost and throughput (run.json)",
        [
            "Run",
            "Method",
            "Backbone",
            "Steps",
            "Images seen",
            "img/s",
            "Wall time",
            "Device",
            "Device-hours",
            "Teacher",
            "Score",
        ],  # fmt: skip
        [],
        numeric={3, 4, 5, 6, 8, 10},
    )
    points = []
    distilled = 0
    for r in sorted(runs, key=lambda r: r.name):
        rj = r.run
        wall = rj.get("wall_time_s")
        teacher = teacher_cell(r)
        distilled += teacher != "–"
        table.rows.append(
            [
                r.name,
                str(r.method or "–"),
                str(r.backbone or "–"),
                str(r.steps or "–"),
                f"{rj['images_seen']:,}" if rj.get("images_seen") is not None else "–",
                fmt(rj.get("images_per_s"), 1),
                f"{wall / 60:.1f} min" if wall else "–",
                f"{rj.get('device', '–')} {rj.get('precision', '')}".strip(),
                fmt(r.device_hours, 4),
                teacher,
                fmt(score[r.name].mean, 1) if r.name in score else "–",
            ]
        )
        if r.device_hours is not None and r.name in score:
            points.append(
                {"name": r.name, "cost": float(r.device_hours), "score": score[r.name].mean, "baseline": False}
            )
    for e in a.aggregate:
        if e.init in a.randoms:  # what no pretraining at all gives
            points.append({"name": e.init, "cost": 0.0, "score": e.mean, "baseline": True})
    table.note = (
        f"{len(runs)} pretraining run{'s' if len(runs) != 1 else ''}; score = normalized score across tasks "
        "(see the summary). Device-hours are GPU-hours on GPU, CPU wall-clock hours on CPU."
    )
    if distilled:
        table.note += (
            " A distilled run's device-hours include its frozen teacher's forward passes (the Teacher column "
            "gives their share of the training time) but not the teacher's own pretraining, shown after "
            "'+' when the teacher is an rsbench run this report can read: a student is only cheaper than "
            "its teacher when both are counted."
        )
    by_name = {r.name: r for r in runs}
    progress = {}
    for name, pts in a.progress.items():
        r = by_name.get(name)
        if r is not None and r.device_hours and r.steps:
            progress[name] = [(r.device_hours * s / r.steps, v) for s, v in pts]
    plot = (
        figures.pareto_plot(points, pareto_front([(p["cost"], p["score"]) for p in points]), progress, colors)
        if points
        else None
    )
    return {"table": table, "plot": plot}


def teacher_cell(r: RunInfo) -> str:
    """A distilled run's teacher: its name, its forward's share of the training time and, when the
    teacher is a finished rsbench run, the device-hours of the teacher's own pretraining."""
    spec, cost = r.meta.get("teacher"), r.run.get("teacher_cost") or {}
    if not spec:
        return "–"
    source = str(spec.get("source", ""))
    cell = f"{Path(source).name or source} ({spec.get('arch', '?')})"
    if cost.get("time_fraction") is not None:
        cell += f": forward {100 * cost['time_fraction']:.0f} % of the time"
    teacher_run = run_from_dir(source, Path(source).name) if spec.get("kind") == "run" else None
    if teacher_run is not None and teacher_run.device_hours is not None:
        cell += f"; + {teacher_run.device_hours:.4f} device-hours to pretrain it"
    return cell


def progress_section(a: Analysis, runs: Sequence[RunInfo], colors: dict) -> dict | None:
    if not a.progress:
        return None
    table = Table(
        "progress",
        "Downstream score over pretraining (intermediate checkpoints)",
        ["Run", "Step", "Score"],
        [],
        numeric={1, 2},
    )
    for name, pts in sorted(a.progress.items()):
        for step, value in pts:
            table.rows.append([name, str(step), fmt(value, 1)])
    table.note = (
        "Normalized score (same scale as the summary) averaged over the tasks evaluated at checkpoints "
        "only, which may be a subset of the summary's tasks, protocols and seeds; the last step of each "
        "run is its final result on those same tasks. Compare points within a curve, not with the "
        "summary."
    )
    return {"table": table, "plot": figures.progress_plot(a.progress, colors)}


def _png_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _image_folder_sample(root: Path) -> tuple[int, str | None]:
    from rsbench.data.images import index_image_folder, read_image

    try:
        index = index_image_folder(root)
    except Exception:  # not an ImageFolder (or gone): show no sample
        return 0, None
    firsts: dict[int, int] = {}
    for i, label in enumerate(index.labels):
        firsts.setdefault(int(label), i)
    picks = list(firsts.values())[:16]
    images = [read_image(index.paths[i]) for i in picks]
    return len(index.paths), figures.image_grid(images, [index.classes[index.labels[i]] for i in picks])


def corpus_section(runs: Sequence[RunInfo]) -> list[dict]:
    out = []
    stored = {str(r.data.get("path")): r.corpus for r in runs if r.corpus}
    for kind, path in corpus_paths(runs):
        users = sorted(r.name for r in runs if str(r.data.get("path")) == path)
        item: dict[str, Any] = {"kind": kind, "path": path, "runs": users, "facts": [], "quicklooks": []}
        if kind == "corpus":
            info = stored.get(path) or corpus_summary(path)
            counts = (info or {}).get("counts") or {}
            rejected = counts.get("rejected") or {}
            item["facts"] = [
                ("rasters read", counts.get("rasters")),
                ("rasters failed", counts.get("rasters_failed")),
                ("tiles (windows)", counts.get("tiles_total")),
                ("tiles kept", counts.get("tiles_kept")),
                *((f"rejected: {k}", v) for k, v in rejected.items()),
                *_group_facts(info),
                *_run_facts(r for r in runs if str(r.data.get("path")) == path),
            ]
            pngs = sorted(Path(path).rglob("*.png"))[:MAX_QUICKLOOKS] if Path(path).is_dir() else []
            item["quicklooks"] = [(p.name, _png_uri(p)) for p in pngs if p.stat().st_size <= MAX_QUICKLOOK_BYTES]
        elif Path(path).is_dir():
            n, grid = _image_folder_sample(Path(path))
            item["facts"] = [("images", n)]
            if grid:
                item["quicklooks"] = [("one image per class folder", grid)]
        out.append(item)
    return out


def _group_facts(info: dict | None) -> list[tuple[str, int | None]]:
    """Kept tiles per band group of the corpus (a group pooled from several sensors says so)."""
    groups = upgrade_band_groups({"band_groups": (info or {}).get("band_groups") or {}})["band_groups"]
    if len(groups) < 2 and not any(g.get("pooled_sensors") for g in groups.values()):
        return []
    return [
        (
            f"band group {describe_group(g)}"
            + (f", pooled from {len(g['sensors'])} sensors" if g["pooled_sensors"] else ""),
            g.get("tiles"),
        )
        for g in groups.values()
    ]


def _run_facts(runs) -> list[tuple[str, int | None]]:
    """What each run trained on: its band group's tiles, and the kept tiles it left out (other groups)."""
    out = []
    for r in runs:
        data = r.data
        if data.get("tiles") is None:
            continue  # a run exported before runs recorded their band group
        group = ",".join(data.get("band_names") or []) + (f" ({data['units']})" if data.get("units") else "")
        out.append((f"{r.name}: tiles used (band group {group})", data["tiles"]))
        out.append((f"{r.name}: kept tiles not used (other band groups)", data.get("tiles_ignored")))
    return out


def corpus_tables(items: Sequence[dict]) -> list[Table]:
    tables = []
    for n, it in enumerate(items, start=1):
        tables.append(
            Table(
                f"corpus-{n}",
                f"Pretraining data: {it['path']}",
                ["", "Count"],
                [[k, "–" if v is None else f"{v:,}"] for k, v in it["facts"]],
                f"{it['kind']}; used by {', '.join(it['runs'])}",
                numeric={1},
            )
        )
    return tables


__all__ = [
    "compute_table",
    "corpus_section",
    "cost_section",
    "heatmap_table",
    "per_class_table",
    "leaderboard",
    "paired_table",
    "per_task_table",
    "progress_section",
    "summary_table",
    "task_flags_table",
]


def external_table(external: Sequence[dict], rows: Sequence[dict]) -> Table:
    """Rows of other benchmarks (rsbench.interop.torchgeo_bench.read_external) beside rsbench's, per
    (dataset, method, metric, model): shown only, never part of rsbench's statistics."""
    groups: dict[tuple, list[dict]] = {}
    for r in external:
        groups.setdefault((r["dataset"], r["method"], r["metric"], r["name"]), []).append(r)
    ours = {r["dataset"] for r in rows}
    out = []
    for (dataset, method, metric, name), group in sorted(groups.items()):
        values = [r["value"] for r in group]
        out.append(
            [
                dataset,
                name,
                method,
                metric,
                str(len(values)),
                f"{sum(values) / len(values):.4f}",
                f"{min(values):.4f} - {max(values):.4f}" if len(values) > 1 else "-",
                "yes" if dataset in ours else "no",
                Path(group[0]["source"]).name,
            ]
        )
    return Table(
        "external",
        "External results (not part of rsbench's statistics)",
        ["dataset", "model", "method", "metric", "rows", "mean", "range", "dataset in this report", "file"],
        out,
        note="Read from other benchmarks' result files (--external). Their splits, preprocessing and protocols "
        "are theirs: compare with care; they are never mixed into rsbench's intervals, ranks or scores.",
        numeric={4, 5},
    )
