"""`handle_errors`: operating-system faults as one `error:` line (the fault matrix replays them end to end)."""

from __future__ import annotations

import errno

import pytest
import typer

from rsbench.cli.common import handle_errors


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "error: No space left on device while writing the "
         "output (free some space, or choose another --out)"),
        (OSError(errno.ENOSPC, "No space left on device", "/data/c/shards/x.tar"),
         "error: No space left on device: /data/c/shards/x.tar"),
        (OSError(errno.EROFS, "Read-only file system", "/ro/c"), "error: Read-only file system: /ro/c"),
    ],
)  # fmt: skip
def test_os_errors_are_one_line_naming_the_path_or_the_fix(error, line, capsys):
    @handle_errors
    def command():
        raise error

    with pytest.raises(typer.Exit) as exit_:
        command()
    assert exit_.value.exit_code == 1
    assert capsys.readouterr().err.splitlines() == [line]
