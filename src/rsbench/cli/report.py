"""`rsbench report [RESULTS...] [--db URL|FILE] --out report.html`: one self-contained HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import typer
from pydantic import Field

from rsbench.cli.common import ConfigOption, handle_errors
from rsbench.cli.model_options import GIVEN, Opt, model_options
from rsbench.errors import ConfigError
from rsbench.settings import StrictModel, resolve_config


class ReportConfig(StrictModel):
    results: list[str] = Field(default_factory=list, description="results.jsonl files or folders holding them")
    db: str | None = Field(None, description="Benchmark results store: SQLAlchemy URL, SQLite file or bench folder.")
    out: str = Field("report.html", description="HTML file to write.")
    title: str = Field("rsbench report", description="Page title.")
    reference: str | None = Field(
        None, description="Init for the paired comparison (unset: the ImageNet baseline, else random init)."
    )
    bootstrap: int = Field(2000, ge=100, description="Bootstrap resamples for the confidence intervals.")
    tables: bool = Field(True, description="Also write <OUT stem>.tables.md and .tables.tex beside OUT.")
    score_reference: Literal["random", "bandstats"] = Field(
        "random", description="Init that scores 0 on the normalized scale (same backbone where possible)."
    )
    normalizer: str | None = Field(
        None,
        description='Frozen normalizer JSON {"datasets": {NAME: {"min": m, "max": M}}}: score = 100 x '
        "(value - min) / (max - min) instead of the headroom above the reference.",
    )
    external: list[str] = Field(
        default_factory=list,
        description="Result CSVs of other benchmarks (torchgeo-bench's schema) shown beside rsbench's, "
        "never mixed into its statistics.",
    )


@handle_errors
@model_options(
    ReportConfig,
    exclude={"results"},
    options={"out": Opt(aliases=("-o",)), "external": Opt(repeat=True, metavar="FILE.csv")},
)
def report_command(
    results: list[Path] | None = typer.Argument(
        None,
        help="results.jsonl files, or folders searched recursively for results.jsonl.",
        show_default=False,
        metavar="RESULTS",
    ),
    given: dict[str, Any] = GIVEN,
    config: Path | None = ConfigOption,
) -> None:
    """Leaderboards with bootstrap CIs, normalized cross-task scores, paired comparison with the baseline,
    cost and pretraining curves, in one offline HTML page (plus its tables as Markdown and LaTeX)."""
    # Imported here so `rsbench --help` does not pay for matplotlib.
    from rsbench.interop.torchgeo_bench import read_external
    from rsbench.report import render_report
    from rsbench.report.analysis import load_normalizer
    from rsbench.report.sources import load_report_data

    # An empty RESULTS list means "not given", so the config file's list can apply.
    cfg = resolve_config(ReportConfig, config, results=[str(p) for p in results] if results else None, **given)
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
        external=[row for path in cfg.external for row in read_external(Path(path))],
    )
    # stdout carries only the path, so scripts can capture it; everything else goes to stderr.
    typer.echo(str(path))
