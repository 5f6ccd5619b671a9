"""`rsbench quickstart`."""

from __future__ import annotations

from pathlib import Path

import typer

from rsbench.cli.common import handle_errors


@handle_errors
def quickstart_command(
    out: Path = typer.Option(Path("quickstart-output"), "--out", help="Output directory (re-running resumes)."),
) -> None:
    """Run the whole pipeline offline on generated multispectral scenes and print the report path."""
    from rsbench.quickstart import run_quickstart

    report = run_quickstart(out)
    typer.echo(f"report: {report.resolve()}")
