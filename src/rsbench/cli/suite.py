"""`rsbench suite list|show`: the named task suites a benchmark can include."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from rsbench.cli.common import handle_errors, stdout_console

app = typer.Typer(
    help="Named sets of downstream tasks (suites) that an experiment includes by name.", no_args_is_help=True
)


@app.callback()
def _suite() -> None:
    """Named sets of downstream tasks (suites) that an experiment includes by name."""


@app.command("list")
@handle_errors
def list_command() -> None:
    """List the suites: shipped ones and those in $RSBENCH_SUITES folders."""
    from rsbench.suites import available_suites, load_suite

    table = Table(title="suites")
    for column in ("suite", "tasks", "description", "file"):
        table.add_column(column)
    for name, path in sorted(available_suites().items()):
        suite = load_suite(path, root=".")  # the root only resolves paths; nothing is read here
        table.add_row(name, str(len(suite.tasks)), suite.description, str(path))
    stdout_console().print(table)


@app.command("show")
@handle_errors
def show_command(
    name: str = typer.Argument(..., help="Suite name (see `rsbench suite list`) or a suite file."),
    root: Path = typer.Option(None, "--root", help="Data root of the suite (default: the suite's own root)."),
) -> None:
    """Show a suite's tasks (data folder, metric, protocols, label fractions) and which are present under
    the root. Exits 1 when a dataset is missing, naming its folder and what belongs there."""
    from rsbench.errors import DataError
    from rsbench.suites import load_suite

    suite = load_suite(name, root=root)
    missing = suite.missing()
    table = Table(title=f"suite {suite.name} (root {suite.root})")
    for column in ("task", "kind", "data", "metric", "protocols", "fractions", "present"):
        table.add_column(column)
    for task in suite.tasks:
        present = task.data.exists() and (task.test_data is None or task.test_data.exists())
        table.add_row(
            task.name,
            task.task,
            str(task.data),
            task.metric or "-",
            ",".join(task.protocols or []) or "default",
            ",".join(f"{f:g}" for f in task.fractions or [1.0]),
            "yes" if present else "no",
        )
    stdout_console().print(table)
    if missing:
        raise DataError("; ".join(missing))
