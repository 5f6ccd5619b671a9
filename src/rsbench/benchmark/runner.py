"""The local executor: N worker processes draining the matrix from the store, with a live progress bar.

Workers claim cells themselves, so a second `rsbench benchmark run` on the same store simply adds
workers; killing a runner loses at most the cells in flight, which the next run reclaims (their
pretraining resumes from its last checkpoint).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from rsbench.benchmark.plan import Plan, sync
from rsbench.benchmark.worker import open_work
from rsbench.io import stable_hash, write_json
from rsbench.results_store.db import display_url
from rsbench.results_store.store import DONE, FAILED, Store


@dataclass
class RunSummary:
    total: int
    done: int
    failed: int
    blocked: int
    ran: int  # cells this invocation's own workers finished (done or failed); other runners' are not counted
    wall_s: float
    failures: list[dict] = field(default_factory=list)


def summarize(
    store: Store, ids: list[str], before: dict[str, str], wall_s: float, workers: set[str] = frozenset()
) -> RunSummary:
    """`workers`: 'host:pid' of this runner's worker processes; a cell counts as ran now when one of them
    finished it (another runner on the same store finishes cells at the same time)."""
    cells = store.cells(ids)
    status = {c["id"]: c["status"] for c in cells}
    blocked = sum(1 for c in cells if c["status"] == "pending" and status.get(c["depends_on"]) == FAILED)
    ran = sum(
        1
        for c in cells
        if c["status"] in (DONE, FAILED)
        and before.get(c["id"]) != c["status"]
        and (c["worker"] or "").rsplit(":", 1)[0] in workers
    )
    return RunSummary(
        len(cells),
        sum(s == DONE for s in status.values()),
        sum(s == FAILED for s in status.values()),
        blocked,
        ran,
        wall_s,
        [c for c in cells if c["status"] == FAILED],
    )


def threads_per_cell(plan: Plan, max_parallel: int) -> int:
    return plan.experiment.executor.threads_per_cell or max(1, (os.cpu_count() or 1) // max_parallel)


def write_matrix(plan: Plan, max_parallel: int) -> Path:
    spec = {
        "db": plan.url,
        "ids": plan.ids,
        "stale_after_s": plan.experiment.executor.stale_after_s,
        "max_attempts": plan.experiment.executor.max_attempts,
        "threads": threads_per_cell(plan, max_parallel),
    }
    # Content-addressed: concurrent runners of the same matrix write the same file.
    return write_json(plan.out / "matrices" / f"{stable_hash(spec)}.json", spec)


def _spawn(matrix: Path, plan: Plan, threads: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    (plan.out / "logs").mkdir(parents=True, exist_ok=True)
    with open(plan.out / "logs" / "workers.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "rsbench.benchmark.worker", str(matrix)],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env=env,
        )


def run_local(
    plan: Plan,
    max_parallel: int,
    retry_failed: bool = False,
    console: Console | None = None,
    on_tick: Callable[[], None] | None = None,
    poll_s: float = 0.5,
) -> RunSummary:
    """Run every open cell of the plan with up to `max_parallel` worker processes."""
    console = console or Console(stderr=True)
    start = time.perf_counter()
    store = sync(plan)
    if retry_failed:
        n = store.reset_failed(plan.ids)
        if n:
            console.print(f"retrying {n} failed cell(s)")
    before = {c["id"]: c["status"] for c in store.cells(plan.ids)}
    todo = [c for c in before.values() if c != DONE]
    if not todo:
        console.print(f"nothing to do: all {len(before)} cells are done")
        return summarize(store, plan.ids, before, time.perf_counter() - start)
    exec_spec = plan.experiment.executor
    matrix = write_matrix(plan, max_parallel)
    threads = threads_per_cell(plan, max_parallel)
    procs: list[subprocess.Popen] = []
    spawned: set[str] = set()  # 'host:pid' of every worker this runner started
    rounds = 0
    seen: dict[str, str] = dict(before)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[state]}"),
    )
    try:
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task(plan.experiment.name, total=len(before), state="")
            while True:
                cells = store.cells(plan.ids)
                for c in cells:
                    if c["status"] in (DONE, FAILED) and seen.get(c["id"]) != c["status"]:
                        mark = "[green]done[/]" if c["status"] == DONE else f"[red]FAILED[/] {c['error'] or ''}"
                        took = f" ({c['duration_s']:.0f}s)" if c["duration_s"] else ""
                        bar.console.print(f"{mark} {c['label']}{took}", markup=True, highlight=False)
                    seen[c["id"]] = c["status"]
                counts = {s: sum(c["status"] == s for c in cells) for s in ("running", "failed")}
                finished = sum(c["status"] in (DONE, FAILED) for c in cells)
                bar.update(
                    task,
                    completed=finished,
                    state=f"{counts['running']} running, {counts['failed']} failed, {len(procs)} workers",
                )
                procs = [p for p in procs if p.poll() is None]
                if not procs:
                    if not open_work(cells) or rounds >= exec_spec.max_attempts:
                        break
                    # (Re)start workers: first round, or workers that died while work remained.
                    rounds += 1
                    pending = sum(c["status"] != DONE for c in cells)
                    procs = [_spawn(matrix, plan, threads) for _ in range(min(max_parallel, max(pending, 1)))]
                    spawned.update(f"{socket.gethostname()}:{p.pid}" for p in procs)
                if on_tick:
                    on_tick()
                time.sleep(poll_s)
    except KeyboardInterrupt:
        # Workers got the same SIGINT and release their cells; give them a moment, then stop them.
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        raise
    return summarize(store, plan.ids, before, time.perf_counter() - start, spawned)


def write_summary(plan: Plan, summary: RunSummary) -> Path:
    return write_json(
        plan.out / "last_run.json",
        {
            "experiment": str(plan.path),
            "store": display_url(plan.url),
            "cells": summary.total,
            "done": summary.done,
            "failed": summary.failed,
            "blocked": summary.blocked,
            "ran": summary.ran,
            "wall_s": round(summary.wall_s, 1),
        },
    )
