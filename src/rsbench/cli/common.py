"""Shared CLI plumbing: one-line errors, non-zero exits, the console."""

from __future__ import annotations

import errno
import functools
import os
import sys
from collections.abc import Callable
from typing import TypeVar

import typer
from rich.console import Console

from rsbench.errors import RsbenchError

console = Console(stderr=True)
# Width of tables written to a log or a pipe, where Rich would assume 80 columns and wrap every wide row.
LOG_WIDTH = 300


def stdout_console() -> Console:
    """The console for tables on stdout: the terminal's width on a terminal; in a log or pipe, LOG_WIDTH so a
    table row stays on one line (a COLUMNS variable still wins)."""
    out = Console()
    if out.is_terminal or os.environ.get("COLUMNS"):
        return out
    return Console(width=LOG_WIDTH)


F = TypeVar("F", bound=Callable)

ConfigOption = typer.Option(None, "--config", help="YAML file with this command's options (CLI options override it).")


def handle_errors(fn: F) -> F:
    """Turn user-facing errors into `error: <one line>` on stderr and exit code 1.

    Set RSBENCH_DEBUG=1 to see the full traceback instead.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RsbenchError as e:
            if os.environ.get("RSBENCH_DEBUG"):
                raise
            print(f"error: {e}", file=sys.stderr)
            raise typer.Exit(code=e.exit_code) from None
        except OSError as e:
            # Operating-system faults on the user's paths (an --out that is a file, a read-only folder, a full
            # disk): one line naming the path. Written artefacts are atomic, so nothing half-written remains.
            if os.environ.get("RSBENCH_DEBUG"):
                raise
            print(f"error: {_os_error(e)}", file=sys.stderr)
            raise typer.Exit(code=1) from None
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            raise typer.Exit(code=130) from None

    return wrapper  # type: ignore[return-value]


def _os_error(e: OSError) -> str:
    what = e.strerror or type(e).__name__
    paths = [str(p) for p in (e.filename, e.filename2) if p]
    if paths:
        return f"{what}: {' -> '.join(paths)}"
    if e.errno in (errno.ENOSPC, errno.EDQUOT):  # a write through an open file names no path
        return f"{what} while writing the output (free some space, or choose another --out)"
    return e.strerror or (str(e).splitlines() or [type(e).__name__])[0]


def split_csv(value: str | None) -> list[str] | None:
    """'a,b, c' -> ['a', 'b', 'c'] (None stays None so the config file can provide the value)."""
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]
