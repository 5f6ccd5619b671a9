"""`rsbench report [RESULTS...] [--db URL|FILE] --out report.html`: one self-contained HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer
from pydantic import Field

from rsbench.cli.common import ConfigOption, handle_errors
from rsbench.errors import ConfigError
from rsbench.settings import StrictModel, resolve_config


class ReportConfig(StrictModel):
    results: list[str] = Field(default_factory=list, description="results.jsonl files or folders holding them")
    db: str | None = Field(None, description="benchmark results store: SQLAlchemy URL, SQLite file or bench folder")
    out: str = "report.html"
    title: str = "rsbench report"
    reference: str | None = Field(None, description="init the paired comparison uses (default: ImageNet, else random)")
    bootstrap: int = Field(2000, ge=100, description="bootstrap resamples for the confidence intervals")
    tables: bool = Field(True, description="also write <OUT stem>.tables.md and .tables.tex beside OUT")
    score_reference: Literal["random", "bandstats"] = Field(
        "random", description="init whose score is 0 on the normalized scale (same backbone where possible)"
    )
    normalizer: str | None = Field(None, description="frozen per-dataset min/max JSON replacing the reference")


@handle_errors
def report_command(
    results: list[Path] | None = typer.Argument(
        None,
        help="results.jsonl files, or folders searched recursively for results.jsonl.",
        show_default=False,
        metavar="RESULTS",
    ),
    db: str | None = typer.Option(
        None, "--db", help="Benchmark results store: SQLAlchemy URL, SQLite file or bench folder."
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="HTML file to write (default: report.html)."),
    title: str | None = typer.Option(None, "--title", help="Page title (default: rsbench report)."),
    reference: str | None = typer.Option(
        None, "--reference", help="Init for the paired comparison (default: the ImageNet baseline, else random init)."
    ),
    bootstrap: int | None = typer.Option(None, "--bootstrap", help="Bootstrap resamples for CIs (default 2000)."),
    tables: bool | None = typer.Option(
        None,
        "--tables/--no-tables",
        help="Also write <OUT stem>.tables.md and .tables.tex, e.g. report.tables.md (default: yes).",
        show_default=False,
    ),
    score_reference: str | None = typer.Option(
        None,
        "--score-reference",
        help="Init that scores 0 on the normalized scale: random or bandstats (default: random).",
    ),
    normalizer: Path | None = typer.Option(
        None,
        "--normalizer",
        help='Frozen normalizer JSON {"datasets": {NAME: {"min": m, "max": M}}}: '
        "score = 100 x (value - min) / (max - min) instead of the headroom above the reference.",
    ),
    config: Path | None = ConfigOption,
) -> None:
    """Leaderboards with bootstrap CIs, normalized cross-task scores, paired comparison with the baseline,
    cost and pretraining curves, in one offline HTML page (plus its tables as Markdown and LaTeX)."""
    # Imported here so `rsbench --help` does not pay for matplotlib.
    from rsbench.report import render_report
    from rsbench.report.analysis import load_normalizer
    from rsbench.report.sources import load_report_data

    cfg = resolve_config(
        ReportConfig,
        config,
        # An empty RESULTS list means "not given", so the config file's list can apply.
        results=[str(p) for p in results] if results else None,
        db=db,
        out=str(out) if out is not None else None,
        title=title,
        reference=reference,
        bootstrap=bootstrap,
        tables=tables,
        score_reference=score_reference,
        normalizer=str(normalizer) if normalizer else None,
    )
    if not cfg.results and not cfg.db:
        raise ConfigError("no RESULTS given: pass results.jsonl files or folders, --db, or set 'results' in --config")
    data = load_report_data(cfg.results, cfg.db)
    path = render_report(
        data,
        cfg.out,
        title=cfg.title,
        config=cfg.model_dump(mode="json"),
        reference=cfg.reference,
        n_boot=cfg.bootstrap,
        write_tables=cfg.tables,
        score_reference=cfg.score_reference,
        normalizer=load_normalizer(cfg.normalizer) if cfg.normalizer else None,
    )
    # stdout carries only the path, so scripts can capture it; everything else goes to stderr.
    typer.echo(str(path))
