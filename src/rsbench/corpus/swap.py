"""`corpus build --overwrite` of a finished corpus: build the new one beside it, swap it in when complete.

The old corpus stays readable and untouched until the new one has its corpus.json: any failure before
that (bad --bands, unreadable inputs, no tile fits, a full disk, a kill) leaves it as it was, and the
half-built new one waits in the sibling folder for a re-run to resume it. The swap is two renames in
one parent folder (same filesystem); a kill between them is completed by the next build (`finish_swap`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from rsbench.contracts.corpus_info import CorpusInfo


def beside(out: Path) -> Path:
    """Where the replacement of the corpus in `out` is built."""
    return out.parent / f".{out.name}.rsbench-new"


def _retired(out: Path) -> Path:
    return out.parent / f".{out.name}.rsbench-old"


def _sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def swap_in(out: Path, new: Path) -> None:
    """Replace the corpus folder `out` by the finished corpus in `new`, then delete the old one."""
    retired = _retired(out)
    shutil.rmtree(retired, ignore_errors=True)
    os.rename(out, retired)
    os.rename(new, out)
    _sync_dir(out.parent)
    shutil.rmtree(retired, ignore_errors=True)


def finish_swap(out: Path) -> None:
    """Complete a swap that was killed between its renames, or its clean-up."""
    retired, new = _retired(out), beside(out)
    if not out.exists() and retired.exists():
        os.rename(new if CorpusInfo(new).is_built() else retired, out)
    if out.exists() and retired.exists():
        shutil.rmtree(retired, ignore_errors=True)
