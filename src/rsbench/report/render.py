"""Render results rows into one self-contained HTML page (inline CSS, base64 PNG figures)."""

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
from rsbench.report.aggregate import MetricSummary, Section, prepare_rows, build_sections, is_baseline
from rsbench.report.plots import primary_metric_plot

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


def _seeds_note(section: Section) -> str:
    counts = section.seed_counts
    seeds = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    per = "" if len(counts) == 1 else " per init"
    plural = "" if counts[-1] == 1 else "s"
    rows = "" if section.n_rows == 1 else "s"
    return f"based on {seeds} seed{plural}{per}, {section.n_rows} results row{rows}"


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


def build_context(rows: Sequence[dict], title: str, sources: Sequence[str | os.PathLike] | None = None,
                  config: dict[str, Any] | None = None) -> dict[str, Any]:
    rows = prepare_rows(rows)
    if not rows:
        raise DataError("no results rows to report")
    sections = build_sections(rows)
    inits = sorted({r["init"] for r in rows})
    row_versions = sorted({str(r["rsbench_version"]) for r in rows if r.get("rsbench_version")})
    return {
        "title": title,
        "generated": datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "version": __version__,
        # Results produced by another rsbench version are worth flagging next to the generator version.
        "row_versions": [v for v in row_versions if v != __version__],
        "stats": {
            "rows": len(rows), "inits": len(inits), "tasks": len({r["task"] for r in rows}),
            "datasets": len({r["dataset"] for r in rows}), "leaderboards": len(sections),
        },
        "tasks": sorted({r["task"] for r in rows}),
        "baselines": sorted({r["init"] for r in rows if is_baseline(r["init"], r.get("init_kind"))}),
        "sections": [
            {"id": f"lb-{n}", "s": s, "plot": primary_metric_plot(s), "note": _seeds_note(s)}
            for n, s in enumerate(sections, start=1)
        ],
        "preprocessing": _preprocessing(rows),
        "sources": [str(p) for p in sources or []],
        "config_yaml": yaml.safe_dump(config, sort_keys=False).strip() if config else "",
    }


def render_html(rows: Sequence[dict], title: str = "rsbench report", **kwargs: Any) -> str:
    return _env().get_template(TEMPLATE_NAME).render(**build_context(rows, title, **kwargs))


def render_report(rows: Sequence[dict], out_path: str | os.PathLike, title: str = "rsbench report", *,
                  sources: Sequence[str | os.PathLike] | None = None, config: dict[str, Any] | None = None) -> Path:
    """Write the report atomically and return its path. `sources`/`config` are recorded in the footer."""
    out = Path(out_path)
    if out.is_dir():
        raise DataError(f"--out {out} is a folder; give a file name such as {out / 'report.html'}")
    html = render_html(rows, title, sources=sources, config=config)
    return atomic_write_text(out, html)
