"""A worker process: claim the next ready cell from the store, run it, repeat until nothing is left.

The store is the queue, so workers of one runner, of two runners started at once, and SLURM jobs all
coordinate through the same atomic claims. `python -m rsbench.benchmark.worker MATRIX.json` is how the
local runner starts one.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from rsbench.benchmark.execute import run_claimed, sigterm_releases
from rsbench.errors import RsbenchError
from rsbench.results_store.store import DONE, PENDING, RUNNING, Store, worker_identity


def open_work(cells: Sequence[dict]) -> bool:
    """Is anything left that this worker could still run or should wait for?

    Pending cells whose dependency failed are blocked: nobody waits for them (`--retry-failed` frees them).
    """
    status = {c["id"]: c["status"] for c in cells}
    for c in cells:
        if c["status"] == RUNNING:
            return True
        if c["status"] == PENDING and status.get(c["depends_on"], DONE) in (PENDING, RUNNING, DONE):
            return True
    return False


def work(
    store: Store,
    ids: Sequence[str],
    *,
    stale_after_s: float,
    max_attempts: int,
    poll_s: float = 1.0,
    keep_going: Callable[[], bool] = lambda: True,
    log: Callable[[str], None] = print,
) -> int:
    """Run cells until the matrix has no open work (or keep_going() turns False); returns cells run."""
    worker = worker_identity()
    ran = 0
    while keep_going():
        for cid in store.reclaim_abandoned(ids, stale_after_s, max_attempts):
            log(f"reclaimed cell {cid}: its worker is gone")
        cell = store.claim_next(ids, worker)
        if cell is not None:
            log(f"start {cell['id'][:8]} {cell['label']}")
            ok = run_claimed(store, cell, worker)
            log(f"{'done' if ok else 'FAILED'} {cell['id'][:8]} {cell['label']}")
            ran += 1
            continue
        if not open_work(store.cells(ids)):
            break
        time.sleep(poll_s)
    return ran


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1:
        print("usage: python -m rsbench.benchmark.worker MATRIX.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    # SIGTERM (scancel, preemption, a supervisor) releases the cell like Ctrl-C.
    with sigterm_releases():
        threads = int(spec.get("threads") or 0)
        if threads:
            import torch

            torch.set_num_threads(threads)
        parent = os.getppid()

        def log(msg: str) -> None:
            print(f"[worker {os.getpid()}] {msg}", file=sys.stderr, flush=True)

        try:
            # A worker whose runner was killed finishes the cell it holds but takes no new one.
            work(
                Store(spec["db"]),
                spec["ids"],
                stale_after_s=spec["stale_after_s"],
                max_attempts=spec["max_attempts"],
                keep_going=lambda: os.getppid() == parent,
                log=log,
            )
        except (KeyboardInterrupt, RsbenchError):  # interrupted or preempted: the cell was released
            return 130
        return 0


if __name__ == "__main__":
    sys.exit(main())
