"""Render results into one self-contained HTML page (inline CSS, base64 PNG figures), plus the page's
tables as Markdown and LaTeX files beside it."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

import yaml
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from rsbench import __version__
from rsbench.errors import DataError
from rsbench.io import atomic_write_text
from rsbench.report import context as ctx
from rsbench.report import figures
from rsbench.report.aggregate import MetricSummary, deduplicate, is_baseline, validate_row
from rsbench.report.analysis import analyze
from rsbench.report.sources import STEP, ReportData, mark_snapshot
from rsbench.report.stats import N_BOOT
from rsbench.report.tables import document_latex, document_markdown

TEMPLATE_DIR = Path(__file__).parent / "templates"
TEMPLATE_NAME = "report.html.j2"


def _env() -> Environment:
    # autoescape=True explicitly: select_autoescape() keys on ".html", which "report.html.j2" is not,
    # and init names are user text.
    env = Environment(
        loader=FileSystemLoader(TEMPLATE_DIR), autoescape=True, undefined=StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
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
            "init": r["init"], "dataset": r["dataset"], "baseline": is_baseline(r["init"], r.get("init_kind")),
            "image_size": r.get("image_size"), "normalization": source, "resize": r.get("resize"),
        }
        key = tuple(str(v) for v in item.values())
        seen.setdefault(key, item)
    return sorted(seen.values(), key=lambda d: (d["init"], d["dataset"], str(d["image_size"])))


def as_report_data(data: ReportData | Sequence[dict]) -> ReportData:
    if isinstance(data, ReportData):
        return data
    rows = [mark_snapshot({**validate_row(r, f"results row {i}"), STEP: r.get(STEP)}) for i, r in enumerate(data, start=1)]
    return ReportData(deduplicate([r for r in rows if r[STEP] is None]), [r for r in rows if r[STEP] is not None])


def build_context(data: ReportData | Sequence[dict], title: str, sources: Sequence[str | os.PathLike] | None = None,
                  config: dict[str, Any] | None = None, reference: str | None = None,
                  n_boot: int = N_BOOT) -> dict[str, Any]:
    data = as_report_data(data)
    rows = data.rows
    if not rows:
        raise DataError("no results rows to report")
    a = analyze(rows, data.checkpoint_rows, data.runs, reference=reference, n_boot=n_boot)
    inits = [e.init for e in a.aggregate] + sorted({r["init"] for r in rows} - {e.init for e in a.aggregate})
    colors = figures.colors_for(inits)
    boards = [ctx.leaderboard(s, n, n_boot) for n, s in enumerate(a.sections, start=1)]
    tables = []
    summary = comparison = heatmap = None
    if a.aggregate:
        summary = {"table": ctx.summary_table(a, rows), "plot": figures.aggregate_plot(a.aggregate)}
        scored = [i for i in inits if any(i in t.per_seed for t in a.tasks)]
        heatmap = {"table": ctx.heatmap_table(a, inits, rows), "plot": figures.heatmap_plot(a.tasks, scored)}
        tables += [summary["table"]]
    if a.paired:
        comparison = {"table": ctx.paired_table(a, rows), "plot": figures.paired_plot(a.paired, a.reference),
                      "ranks": figures.rank_plot(a.ranks, a.baselines) if a.ranks else None}
        tables.append(comparison["table"])
    if heatmap:
        tables.append(heatmap["table"])
    tables += [t for _, t in boards]
    cost = ctx.cost_section(a, data.runs, colors)
    progress = ctx.progress_section(a, data.runs, colors)
    corpora = ctx.corpus_section(data.runs)
    corpus_tables = ctx.corpus_tables(corpora)
    tables += [x["table"] for x in (cost, progress) if x] + corpus_tables
    row_versions = sorted({str(r["rsbench_version"]) for r in rows if r.get("rsbench_version")})
    return {
        "title": title,
        "generated": datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "version": __version__,
        # Results produced by another rsbench version are worth flagging next to the generator version.
        "row_versions": [v for v in row_versions if v != __version__],
        "stats": {
            "rows": len(rows), "inits": len(inits), "tasks": len({r["task"] for r in rows}),
            "datasets": len({r["dataset"] for r in rows}), "leaderboards": len(boards),
            "runs": len(data.runs), "cells": data.cells or ctx.count_cells(rows),
        },
        "tasks": sorted({r["task"] for r in rows}),
        "baselines": sorted(a.baselines),
        "summary": summary, "comparison": comparison, "heatmap": heatmap, "reference_note": a.reference_note,
        "sections": [item for item, _ in boards],
        "efficiency": [figures.efficiency_plot(g, colors) for g in a.efficiency],
        "cost": cost, "progress": progress,
        "curves": figures.curves_plot(data.runs, colors) if data.runs else None,
        "corpora": list(zip(corpora, corpus_tables)),
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


def table_paths(out: Path) -> tuple[Path, Path]:
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    return out.with_name(f"{stem}.tables.md"), out.with_name(f"{stem}.tables.tex")


def render_report(data: ReportData | Sequence[dict], out_path: str | os.PathLike, title: str = "rsbench report", *,
                  sources: Sequence[str | os.PathLike] | None = None, config: dict[str, Any] | None = None,
                  reference: str | None = None, n_boot: int = N_BOOT, write_tables: bool = True) -> Path:
    """Write the report (and its tables as OUT.tables.md / OUT.tables.tex) atomically; returns the HTML path."""
    out = Path(out_path)
    if out.is_dir():
        raise DataError(f"--out {out} is a folder; give a file name such as {out / 'report.html'}")
    context = build_context(data, title, sources=sources, config=config, reference=reference, n_boot=n_boot)
    md, tex = table_paths(out)
    context["table_files"] = [md.name, tex.name] if write_tables else []
    html = render_context(context)
    if write_tables:
        atomic_write_text(md, document_markdown(title, context["all_tables"]))
        atomic_write_text(tex, document_latex(title, context["all_tables"]))
    return atomic_write_text(out, html)
