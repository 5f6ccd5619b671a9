"""The `rsbench` command line: one sub-command per pipeline stage."""

from __future__ import annotations

import os
import warnings

import typer

from rsbench import __version__
from rsbench.cli import benchmark, corpus, evaluate, methods, pretrain, quickstart, report, runs, suite

app = typer.Typer(
    name="rsbench",
    help="Benchmark self-supervised pretraining for remote-sensing imagery.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(corpus.app, name="corpus")
app.add_typer(benchmark.app, name="benchmark")
app.add_typer(suite.app, name="suite")
app.command("pretrain")(pretrain.pretrain_command)
app.command("evaluate")(evaluate.evaluate_command)
app.command("report")(report.report_command)
app.command("quickstart")(quickstart.quickstart_command)
app.command("methods")(methods.methods_command)
app.command("runs")(runs.runs_command)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"rsbench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """rsbench: rasters -> corpus -> pretrain -> evaluate -> report."""


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def main() -> None:
    # Warnings read like errors, one line each ("warning: ..."); RSBENCH_DEBUG=1 keeps Python's file:line form.
    if not os.environ.get("RSBENCH_DEBUG"):
        warnings.formatwarning = _one_line_warning
    app()
