"""`rsbench runs`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from rsbench.cli.common import handle_errors, stdout_console


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


@handle_errors
def runs_command(
    dirs: list[Path] = typer.Argument(None, help="Run directories or folders holding runs (default: .)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per run instead of a table."),
) -> None:
    """List pretraining runs: status (running/finished/failed/preempted/interrupted/killed), progress, img/s,
    device-hours and last loss."""
    from rsbench.train.run_status import find_runs, run_summary

    rows = [run_summary(d) for d in find_runs(dirs or [Path(".")])]
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row))
        return
    table = Table(title=f"{len(rows)} run(s)")
    for col in ("run", "method", "backbone", "status", "progress", "img/s", "device-h", "loss", "devices"):
        table.add_column(
            col, justify="right" if col in ("progress", "img/s", "device-h", "loss", "devices") else "left"
        )
    for r in rows:
        progress = (
            f"{r.get('step')}/{r.get('max_steps')} ({r['progress']:.0%})" if r.get("progress") is not None else "-"
        )
        table.add_row(
            r["run"],
            r.get("method") or "-",
            r.get("backbone") or "-",
            r["status"],
            progress,
            _fmt(r.get("images_per_s"), ".1f"),
            _fmt(r.get("device_hours"), ".3f"),
            _fmt(r.get("loss"), ".4f"),
            f"{r.get('world_size') or '-'} x {r.get('device') or '-'}",
        )
    stdout_console().print(table)
