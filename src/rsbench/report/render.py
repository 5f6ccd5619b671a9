"""Render results into one self-contained HTML page (inline CSS, base64 PNG figures), plus the page's
tables as Markdown and LaTeX files beside it."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from rsbench import __version__
from rsbench.errors import DataError
from rsbench.io import atomic_write_text, write_json
from rsbench.report import context as ctx
from rsbench.report import figures
from rsbench.report.aggregate import MetricSummary, deduplicate, is_baseline, validate_row
from rsbench.report.analysis import analyze, section_key
from rsbench.report.sources import STEP, ReportData, mark_snapshot
from rsbench.report.tables import document_latex, document_markdown
from rsbench.report.tuning import contamination_table, tuning_section
from rsbench.report.uncertainty import N_BOOT

TEMPLATE_DIR = Path(__file__).parent / "templates"
TEMPLATE_NAME = "report.html.j2"
SUMMARY_SCHEMA_VERSION = 1
README_URL = "#reading"  # the in-page summary of README.md's "Reading the numbers"


def _env() -> Environment:
    # autoescape=True explicitly: select_autoescape() keys on ".html", which "report.html.j2" is not,
    # and init names are user text.
    env = Environment(
        loader=FileSystemLoader(TEMPLATE_DIR),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = format_number
    env.filters["cell"] = format_cell
    env.filters["fraction"] = format_fraction
    return env


def format_number(x: float) -> str:
    return f"{x:.3f}" if abs(x) < 1000 else f"{x:.4g}"


def format_cell(s: MetricSummary | None) -> str:
    return "–" if s is None else f"{format_number(s.mean)} ± {format_number(s.std)}"


def format_fraction(f: float) -> str:
    return f"{f * 100:g}%"


def _preprocessing(rows: Sequence[dict]) -> list[dict]:
    """Distinct (init, dataset, image_size, normalization source, resize) combinations, where recorded."""
    seen: dict[tuple, dict] = {}
    for r in rows:
        if not any(k in r for k in ("image_size", "normalization", "resize")):
            continue
        norm = r.get("normalization")
        # evaluate writes {"mean", "std", "source"}; accept a bare string too.
        source = norm.get("source") if isinstance(norm, dict) else norm
        item = {
            "init": r["init"],
            "dataset": r["dataset"],
            "baseline": is_baseline(r["init"], r.get("init_kind")),
            "image_size": r.get("image_size"),
            "normalization": source,
            "resize": r.get("resize"),
        }
        key = tuple(str(v) for v in item.values())
        seen.setdefault(key, item)
    return sorted(seen.values(), key=lambda d: (d["init"], d["dataset"], str(d["image_size"])))


def as_report_data(data: ReportData | Sequence[dict]) -> ReportData:
    if isinstance(data, ReportData):
        return data
    rows = [
        mark_snapshot({**validate_row(r, f"results row {i}"), STEP: r.get(STEP)}) for i, r in enumerate(data, start=1)
    ]
    return ReportData(deduplicate([r for r in rows if r[STEP] is None]), [r for r in rows if r[STEP] is not None])


def build_context(
    data: ReportData | Sequence[dict],
    title: str,
    sources: Sequence[str | os.PathLike] | None = None,
    config: dict[str, Any] | None = None,
    reference: str | None = None,
    n_boot: int = N_BOOT,
    score_reference: str = "random",
    normalizer: dict | None = None,
    external: Sequence[dict] = (),
) -> dict[str, Any]:
    data = as_report_data(data)
    rows = data.rows
    if not rows:
        raise DataError("no results rows to report")
    a = analyze(
        rows,
        data.checkpoint_rows,
        data.runs,
        reference=reference,
        n_boot=n_boot,
        score_reference=score_reference,
        normalizer=normalizer,
    )
    inits = [e.init for e in a.aggregate] + sorted({r["init"] for r in rows} - {e.init for e in a.aggregate})
    colors = figures.colors_for(inits)
    boards = [ctx.leaderboard(s, n, a.estimates.get(section_key(s), {})) for n, s in enumerate(a.sections, start=1)]
    tables = []
    summary = comparison = heatmap = None
    if a.aggregate:
        summary = {"table": ctx.summary_table(a, rows), "plot": figures.aggregate_plot(a.aggregate)}
        scored = [i for i in inits if any(i in t.per_seed for t in a.tasks)]
        heatmap = {"table": ctx.heatmap_table(a, inits, rows), "plot": figures.heatmap_plot(a.tasks, scored)}
        tables += [summary["table"]]
    if a.paired:
        comparison = {
            "table": ctx.paired_table(a, rows),
            "plot": figures.paired_plot(a.paired, a.reference),
            "per_task": ctx.per_task_table(a),
            "ranks": figures.rank_plot(a.ranks, a.baselines) if a.ranks else None,
        }
        tables += [comparison["table"], comparison["per_task"]]
    task_flags = ctx.task_flags_table(a) if a.tasks else None
    per_class = ctx.per_class_table(a)
    compute = ctx.compute_table(rows)
    external_table = ctx.external_table(external, rows) if external else None
    tables += [t for t in (task_flags, per_class, compute, external_table) if t]
    if heatmap:
        tables.append(heatmap["table"])
    tables += [t for _, t in boards]
    cost = ctx.cost_section(a, data.runs, colors)
    progress = ctx.progress_section(a, data.runs, colors)
    corpora = ctx.corpus_section(data.runs)
    corpus_tables = ctx.corpus_tables(corpora)
    tables += [x["table"] for x in (cost, progress) if x] + corpus_tables
    tuning = tuning_section(data.studies)
    if tuning:
        tables += [t for t in (tuning["settings"], tuning["ranking"]) if t]
    contamination = contamination_table(data.contamination)
    tables += [contamination] if contamination else []
    row_versions = sorted({str(r["rsbench_version"]) for r in rows if r.get("rsbench_version")})
    return {
        "title": title,
        "generated": datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "version": __version__,
        # Results produced by another rsbench version are worth flagging next to the generator version.
        "row_versions": [v for v in row_versions if v != __version__],
        "stats": {
            "rows": len(rows),
            "inits": len(inits),
            "tasks": len({r["task"] for r in rows}),
            "datasets": len({r["dataset"] for r in rows}),
            "leaderboards": len(boards),
            "runs": len(data.runs),
            "cells": data.cells or ctx.count_cells(rows),
        },
        "tasks": sorted({r["task"] for r in rows}),
        "baselines": sorted(a.baselines),
        "summary": summary,
        "comparison": comparison,
        "heatmap": heatmap,
        "reference_note": a.reference_note,
        "task_flags": task_flags,
        "per_class": per_class,
        "compute": compute,
        "external": external_table,
        "readme_url": README_URL,
        "warnings": a.warnings + [f"protocol parity: {w}" for w in a.parity],
        "analysis": a,
        "sections": [item for item, _ in boards],
        "efficiency": [figures.efficiency_plot(g, colors) for g in a.efficiency],
        "cost": cost,
        "progress": progress,
        "curves": figures.curves_plot(data.runs, colors) if data.runs else None,
        "runs_without_curve": [r.name for r in data.runs if len(r.curves.get("train/loss") or []) < 2],
        "corpora": list(zip(corpora, corpus_tables)),
        "tuning": tuning,
        "contamination": contamination,
        "preprocessing": _preprocessing(rows),
        "all_tables": tables,
        "table_files": [],
        "sources": [str(p) for p in (sources if sources is not None else data.sources)],
        "config_yaml": yaml.safe_dump(config, sort_keys=False).strip() if config else "",
    }


def render_html(data: ReportData | Sequence[dict], title: str = "rsbench report", **kwargs: Any) -> str:
    return render_context(build_context(data, title, **kwargs))


def render_context(context: dict[str, Any]) -> str:
    return _env().get_template(TEMPLATE_NAME).render(**context)


def summary_path(out: Path) -> Path:
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    return out.with_name(f"{stem}.summary.json")


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


def summary_json(a) -> dict:
    """The report's answer in machine-readable form (schema documented in README, 'Reading the numbers')."""
    return {
        "schema_version": SUMMARY_SCHEMA_VERSION,
        "reference": a.reference,
        "normalization": a.normalization,
        "tasks": [
            {
                "name": t.title,
                "dataset": t.section.dataset,
                "protocol": t.section.protocol,
                "metric": t.section.primary_metric,
                "n_test": t.n_test,
                "ref_value": _num(t.zero) if t.scorable else None,
                "score_reference": t.zero_from,
                "flags": list(t.flags),
            }
            for t in a.tasks
        ],
        "inits": [
            {
                "init": e.init,
                "score": _num(e.mean),
                "ci": [_num(e.lo), _num(e.hi)],
                "iqm": _num(e.iqm),
                "iqm_ci": [_num(e.iqm_lo), _num(e.iqm_hi)],
                "n_tasks": e.tasks,
                "tasks": e.task_names,
            }
            for e in a.aggregate
        ],
        "paired": [
            {
                "init": d["init"],
                "reference": d["reference"],
                "delta": _num(d["mean"]),
                "ci": [_num(d["lo"]), _num(d["hi"])],
                "delta_points": _num(d["delta_points"]),
                "delta_points_ci": [_num(d["delta_lo"]), _num(d["delta_hi"])],
                "p_value": _num(d["p_value"]),
                "p_holm": _num(d["p_holm"]),
                "tasks_won": d["won"],
                "tasks_tied": d["tied"],
                "tasks_lost": d["lost"],
                "verdict": d["verdict"],
                "per_task": [
                    {k: (_num(v) if isinstance(v, float) else v) for k, v in pt.items()} for pt in d["per_task"]
                ],
            }
            for d in a.paired
        ],
        "warnings": list(a.warnings),
        "parity": list(a.parity),
    }


def table_paths(out: Path) -> tuple[Path, Path]:
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    return out.with_name(f"{stem}.tables.md"), out.with_name(f"{stem}.tables.tex")


def render_report(
    data: ReportData | Sequence[dict],
    out_path: str | os.PathLike,
    title: str = "rsbench report",
    *,
    sources: Sequence[str | os.PathLike] | None = None,
    config: dict[str, Any] | None = None,
    reference: str | None = None,
    n_boot: int = N_BOOT,
    write_tables: bool = True,
    score_reference: str = "random",
    normalizer: dict | None = None,
    external: Sequence[dict] = (),
) -> Path:
    """Write the report, its machine-readable summary (OUT stem + .summary.json) and its tables (OUT.tables.md
    / OUT.tables.tex) atomically; returns the HTML path."""
    out = Path(out_path)
    if out.is_dir():
        raise DataError(f"--out {out} is a folder; give a file name such as {out / 'report.html'}")
    context = build_context(
        data,
        title,
        sources=sources,
        config=config,
        reference=reference,
        n_boot=n_boot,
        score_reference=score_reference,
        normalizer=normalizer,
        external=external,
    )
    md, tex = table_paths(out)
    write_json(summary_path(out), summary_json(context["analysis"]))
    context["table_files"] = [md.name, tex.name] if write_tables else []
    html = render_context(context)
    if write_tables:
        atomic_write_text(md, document_markdown(title, context["all_tables"]))
        atomic_write_text(tex, document_latex(title, context["all_tables"]))
    return atomic_write_text(out, html)
