"""`rsbench benchmark run|status|export|import`: a whole experiment matrix into one results store."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import typer
from pydantic import Field
from rich.table import Table

from rsbench.cli.common import ConfigOption, console, handle_errors, stdout_console
from rsbench.cli.model_options import GIVEN, Opt, model_options
from rsbench.errors import ConfigError, RsbenchError
from rsbench.settings import StrictModel, resolve_config

app = typer.Typer(
    help="Run an experiment matrix (pretraining x tasks x protocols x seeds) and track it.", no_args_is_help=True
)

FileArg = typer.Argument(
    ...,
    help="Experiment file (YAML): pretraining runs, baselines, tasks, protocols, seeds.",
    show_default=False,
    metavar="FILE",
)
DB_HELP = "SQLAlchemy URL or SQLite file (unset: OUT/results.db)."


class RunOptions(StrictModel):
    out: str | None = Field(None, description="Benchmark folder: runs, logs, results.db (unset: the file's 'out').")
    db: str | None = Field(None, description=DB_HELP)
    executor: Literal["local", "slurm"] | None = Field(None, description="Executor (unset: the file's executor.kind).")
    max_parallel: int | None = Field(None, ge=1, description="Local worker processes (unset: the file's, else 1).")
    retry_failed: bool = Field(False, description="Run failed cells again.")
    dry_run: bool = Field(False, description="List the cells (and SLURM jobs) without running.")


class StatusOptions(StrictModel):
    out: str | None = Field(None, description="Benchmark folder (unset: the file's 'out').")
    db: str | None = Field(None, description=DB_HELP)
    watch: bool = Field(False, description="Refresh until no cell is pending or running.")
    interval: float = Field(2.0, gt=0, description="Seconds between refreshes.")
    tail: int = Field(5, ge=0, description="Log lines shown per failed cell.")
    hide_done: bool = Field(False, description="Leave finished cells out of the table.")


class ExportOptions(StrictModel):
    experiment: str | None = None  # the [FILE] argument
    out: str = Field(
        description="Output: a .csv, .parquet or .jsonl file; a folder for --format geobench2; a .csv file for "
        "--format torchgeo-bench."
    )
    db: str | None = Field(None, description=DB_HELP)
    table: Literal["results", "cells", "runs"] = Field("results", description="What to export (--format table).")
    bench_out: str | None = Field(None, description="Benchmark folder, when not the file's 'out'.")
    format: Literal["table", "geobench2", "torchgeo-bench"] = Field(
        "table",
        description="table: the store's rows as they are; geobench2: a GEO-Bench-2 leaderboard submission "
        "(checked against the leaderboard's rules); torchgeo-bench: its results CSV (headline metrics).",
    )
    protocol: str | None = Field(
        None, description="Leaderboard formats: the protocol to export when a dataset has several."
    )
    label_fraction: float = Field(1.0, gt=0, le=1, description="Leaderboard formats: the label fraction to export.")


@app.command("run")
@handle_errors
@model_options(RunOptions)
def run_command(file: Path = FileArg, given: dict[str, Any] = GIVEN, config: Path | None = ConfigOption) -> None:
    """Run every cell of the matrix once: finished cells are skipped, failed ones only with --retry-failed."""
    from rsbench.benchmark.plan import load_plan
    from rsbench.benchmark.runner import run_local, write_summary
    from rsbench.results_store.db import display_url

    opts = resolve_config(RunOptions, config, **given)
    plan = load_plan(file, opts.out, opts.db, check=True)
    exec_spec = plan.experiment.executor
    kind = opts.executor or exec_spec.kind
    if opts.dry_run:
        _print_plan(plan, kind)
        return
    if plan.experiment.contamination:
        from rsbench.benchmark.contamination import check

        check(plan, log=lambda m: console.print(m, markup=False, highlight=False))
    if kind == "slurm":
        from rsbench.benchmark.slurm import submit

        jobs = submit(
            plan, retry_failed=opts.retry_failed, log=lambda m: console.print(m, markup=False, highlight=False)
        )
        typer.echo(f"{len(jobs)} job(s) submitted; follow them with: rsbench benchmark status {file} --watch")
        return
    summary = run_local(
        plan, opts.max_parallel or exec_spec.max_parallel, retry_failed=opts.retry_failed, console=console
    )
    write_summary(plan, summary)
    typer.echo(
        f"{summary.total} cells: {summary.done} done, {summary.failed} failed, {summary.blocked} blocked; "
        f"{summary.ran} ran now in {summary.wall_s:.0f}s; store: {display_url(plan.url)}"
    )
    if summary.failed or summary.done + summary.failed < summary.total:
        raise RsbenchError(
            f"{summary.failed} cell(s) failed and {summary.total - summary.done - summary.failed} did not "
            f"run; see `rsbench benchmark status {file}` (then --retry-failed)"
        )


def _print_plan(plan, kind: str) -> None:
    from rsbench.results_store.db import display_url
    from rsbench.results_store.store import Store

    known = {}
    db_file = Path(plan.url.removeprefix("sqlite:///")) if plan.url.startswith("sqlite:///") else None
    if db_file is None or db_file.exists():
        known = {c["id"]: c["status"] for c in Store(plan.url).cells(plan.ids)}
    table = Table(title=f"{plan.experiment.name}: {len(plan.cells)} cells ({kind} executor)", title_justify="left")
    for col in ("cell", "kind", "what", "after", "state"):
        table.add_column(col, overflow="fold")
    for c in plan.cells:
        table.add_row(c.id[:8], c.kind, c.label, (c.depends_on or "")[:8], known.get(c.id, "new"))
    out = stdout_console()
    out.print(table)
    if kind == "slurm":
        from rsbench.benchmark.slurm import check_parameters

        spec = plan.experiment.executor.slurm
        check_parameters(spec, f"experiment file {plan.path}")
        out.print(f"SLURM jobs (submitit, cluster={spec.cluster}); evaluation jobs wait with afterok on their run:")
        out.print({stage: spec.resources(stage).submitit_parameters() for stage in ("pretrain", "evaluate")})
    out.print(f"store: {display_url(plan.url)}")


@app.command("status")
@handle_errors
@model_options(StatusOptions)
def status_command(file: Path = FileArg, given: dict[str, Any] = GIVEN, config: Path | None = ConfigOption) -> None:
    """Cells (pending/running/done/failed/blocked) with error lines, failed cells' log tails, cost so far."""
    from rich.live import Live

    from rsbench.benchmark.plan import load_plan
    from rsbench.benchmark.status import status_view
    from rsbench.benchmark.worker import open_work
    from rsbench.results_store.db import display_url, existing_db_url
    from rsbench.results_store.store import Store

    opts = resolve_config(StatusOptions, config, **given)
    plan = load_plan(file, opts.out, opts.db)
    store = Store(existing_db_url(plan.url, None))
    title = f"{plan.experiment.name} · {display_url(plan.url)}"

    def view():
        return status_view(store, plan.ids, title, tail=opts.tail, show_done=not opts.hide_done)

    out_console = stdout_console()
    if not opts.watch:
        out_console.print(view())
        return
    with Live(view(), console=out_console, refresh_per_second=4, screen=False) as live:
        while open_work(store.cells(plan.ids)):
            time.sleep(opts.interval)
            live.update(view())
        live.update(view())


@app.command("export")
@handle_errors
@model_options(ExportOptions, exclude={"experiment"}, options={"out": Opt(aliases=("-o",))})
def export_command(
    file: Path | None = typer.Argument(
        None, help="Experiment file whose store to export (or give --db).", show_default=False, metavar="[FILE]"
    ),
    given: dict[str, Any] = GIVEN,
    config: Path | None = ConfigOption,
) -> None:
    """Export the results store (results rows, cells or runs) to CSV, Parquet or JSONL, or the results in a
    leaderboard's format (GEO-Bench-2 submission, torchgeo-bench CSV)."""
    from rsbench.benchmark.export import export, export_leaderboard

    opts = resolve_config(ExportOptions, config, experiment=str(file) if file else None, **given)
    store = _store(opts.experiment, opts.db, opts.bench_out)
    if opts.format == "table":
        n = export(store, opts.out, opts.table)
        console.print(f"{n} {opts.table} rows written to {opts.out}", markup=False, highlight=False)
    else:
        name = Path(opts.experiment).stem if opts.experiment else "rsbench"
        n, problems = export_leaderboard(store, opts.out, opts.format, name, opts.protocol, opts.label_fraction)
        console.print(f"{n} {opts.format} rows written to {opts.out}", markup=False, highlight=False)
        for problem in problems:
            console.print(f"warning: the leaderboard would reject this: {problem}", style="yellow", markup=False)
    typer.echo(opts.out)


@app.command("import")
@handle_errors
def import_command(
    results: list[Path] = typer.Argument(
        ..., help="results.jsonl files, or folders searched for them.", show_default=False, metavar="RESULTS..."
    ),
    db: str = typer.Option(..., "--db", help="SQLAlchemy URL or SQLite file to import into."),
) -> None:
    """Import existing results.jsonl files into a results store (re-importing a file replaces its rows)."""
    from rsbench.contracts.results import find_results_files
    from rsbench.results_store.db import db_url
    from rsbench.results_store.store import Store

    store = Store(db_url(db, None))
    for path in find_results_files(results):
        n = store.import_results(path)
        console.print(f"{n} rows imported from {path}", markup=False, highlight=False)


def _store(experiment: str | None, db: str | None, bench_out: str | None):
    from rsbench.results_store.db import existing_db_url
    from rsbench.results_store.store import Store

    if experiment:
        from rsbench.benchmark.plan import load_plan

        plan = load_plan(experiment, bench_out, db)
        return Store(existing_db_url(plan.url, None))
    if not db:
        raise ConfigError("give the experiment FILE or --db URL|FILE")
    return Store(existing_db_url(db, None))
