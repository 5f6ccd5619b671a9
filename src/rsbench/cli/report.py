"""`rsbench report RESULTS... --out report.html`: one self-contained HTML page from results.jsonl files."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from pydantic import Field

from rsbench.cli.common import ConfigOption, handle_errors
from rsbench.config import StrictModel, resolve_config
from rsbench.errors import ConfigError


class ReportConfig(StrictModel):
    results: List[str] = Field(default_factory=list, description="results.jsonl files or folders holding them")
    out: str = "report.html"
    title: str = "rsbench report"


@handle_errors
def report_command(
    results: Optional[List[Path]] = typer.Argument(
        None, help="results.jsonl files, or folders searched recursively for results.jsonl.",
        show_default=False, metavar="RESULTS",
    ),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="HTML file to write (default: report.html)."),
    title: Optional[str] = typer.Option(None, "--title", help="Page title (default: rsbench report)."),
    config: Optional[Path] = ConfigOption,
) -> None:
    """Aggregate evaluation results over seeds into leaderboards and plots in one offline HTML page."""
    # Imported here so `rsbench --help` does not pay for matplotlib.
    from rsbench.report import find_results_files, load_results, render_report

    cfg = resolve_config(
        ReportConfig, config,
        # An empty RESULTS list means "not given", so the config file's list can apply.
        results=[str(p) for p in results] if results else None,
        out=str(out) if out is not None else None,
        title=title,
    )
    if not cfg.results:
        raise ConfigError("no RESULTS given: pass results.jsonl files or folders, or set 'results' in --config")
    files = find_results_files(cfg.results)
    rows = load_results(files)
    path = render_report(rows, cfg.out, title=cfg.title, sources=files, config=cfg.model_dump(mode="json"))
    # stdout carries only the path, so scripts can capture it; everything else goes to stderr.
    typer.echo(str(path))
