"""Cell queue and results in the database: sync, atomic claims, heartbeats, completion, import.

Every state change is one short transaction guarded by the expected current state (`WHERE status =
'pending'`, `WHERE worker = me`), so any number of runners and SLURM jobs can share one store: a cell is
claimed by exactly one worker, and a worker that lost its claim cannot overwrite the new owner's work.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import psutil
from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from rsbench.contracts.results import ROW_KEY, load_results
from rsbench.errors import DataError
from rsbench.results_store.db import cells, display_url, engine_for, results, retrying, runs

PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"
_CHUNK = 500
# A result row's key as the `results` table stores it: the contract's row key without the input shape
# (image_size, patch_size), which has no column. The table's unique constraint (per source) is on these
# columns, and stores made before the shape joined the key must keep working, so they stay. Nothing is
# lost: one cell is evaluated at one shape, and an imported file's init at two shapes gets the shape in
# its name (rsbench.contracts.results.disambiguate_shapes).
STORED_KEY = tuple(k for k in ROW_KEY if k in results.c)


class CellSpec(Protocol):
    """A cell of a benchmark matrix as the store records it (rsbench.benchmark.matrix.Cell is one)."""

    id: str
    kind: str
    label: str
    init_label: str
    task: str | None
    priority: int
    config: Mapping[str, Any]
    depends_on: str | None


def worker_identity() -> str:
    """host:pid:start-time; the start time tells a live process from a recycled pid."""
    proc = psutil.Process()
    return f"{socket.gethostname()}:{os.getpid()}:{int(proc.create_time() * 1000)}"


def worker_alive(identity: str | None) -> bool | None:
    """True/False for a worker on this host; None when it runs elsewhere (only heartbeats can tell)."""
    try:
        host, pid, started = (identity or "").rsplit(":", 2)
        if host != socket.gethostname():
            return None
        return int(psutil.Process(int(pid)).create_time() * 1000) == int(started)
    except (ValueError, psutil.Error):
        return False


def _chunks(ids: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(ids), _CHUNK):
        yield ids[i : i + _CHUNK]


def feature_group(cell) -> str:
    """Cells that share a feature cache: same init and task options, any protocol, seed or fraction."""
    config = cell.config if hasattr(cell, "config") else cell["config"]
    return json.dumps([config.get("init"), config.get("options")], sort_keys=True, default=str)


def result_columns(row: dict) -> dict:
    keys = (
        "task",
        "dataset",
        "protocol",
        "init",
        "init_kind",
        "backbone",
        "label_fraction",
        "seed",
        "metric",
        "value",
        "created",
    )
    values = {k: row.get(k) for k in keys}
    values["label_fraction"] = float(values["label_fraction"])
    values["seed"], values["value"] = int(values["seed"]), float(values["value"])
    return values


def _claimed_by(worker: str) -> dict[str, Any]:
    """The column updates of a pending cell that `worker` claims now."""
    now = time.time()
    return {
        "status": RUNNING,
        "worker": worker,
        "claimed_at": now,
        "heartbeat_at": now,
        "attempts": cells.c.attempts + 1,
        "error": None,
    }


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = engine_for(url)

    # --- the matrix ---------------------------------------------------------------------------------
    def sync_cells(self, benchmark: str, matrix: Sequence[CellSpec], out: Path) -> None:
        """Insert cells not yet known; refresh display fields (names may change without changing ids)."""
        for attempt in range(3):
            try:
                return self._sync_cells(benchmark, matrix, out)
            except IntegrityError:
                # Two runners starting at once on PostgreSQL (READ COMMITTED): both saw a cell missing and the
                # second insert of it failed. Its transaction rolled back; the next pass finds the cell known.
                if attempt == 2:
                    raise

    @retrying
    def _sync_cells(self, benchmark: str, matrix: Sequence[CellSpec], out: Path) -> None:
        with self.engine.begin() as conn:
            known = {r.id: r for r in self._select(conn, [c.id for c in matrix])}
            now = time.time()
            for c in matrix:
                shown = {"label": c.label, "init_label": c.init_label, "priority": c.priority, "task": c.task}
                if c.id in known:
                    if known[c.id].status in (PENDING, FAILED):
                        shown["config"] = c.config  # new execution settings apply to cells still to run
                    if any(getattr(known[c.id], k) != v for k, v in shown.items()):
                        conn.execute(update(cells).where(cells.c.id == c.id).values(**shown))
                    continue
                safe = "".join(ch if ch.isalnum() or ch in "-_.@" else "_" for ch in c.init_label)
                out_dir = out / "runs" / f"{safe}-{c.id[:8]}" if c.kind == "pretrain" else out / "evals" / str(c.task)
                if c.kind == "hpo":  # trials write nothing under evals/, where results.jsonl files are searched
                    out_dir = out / "tuning" / f"{safe}-{c.id[:8]}"
                conn.execute(
                    insert(cells).values(
                        id=c.id,
                        benchmark=benchmark,
                        kind=c.kind,
                        config=c.config,
                        depends_on=c.depends_on,
                        out_dir=str(out_dir),
                        log_path=str(out / "logs" / f"{c.id}.log"),
                        code_version=c.config.get("code_version"),
                        status=PENDING,
                        attempts=0,
                        created_at=now,
                        **shown,
                    )
                )

    def _select(self, conn: Connection, ids: Sequence[str]) -> list:
        rows = []
        for chunk in _chunks(list(ids)):
            rows += conn.execute(select(cells).where(cells.c.id.in_(chunk))).all()
        return rows

    @retrying
    def cells(self, ids: Sequence[str]) -> list[dict]:
        """Cells in `ids` order (unknown ids are skipped)."""
        with self.engine.connect() as conn:
            got = {r.id: r._asdict() for r in self._select(conn, ids)}
        return [got[i] for i in ids if i in got]

    @retrying
    def reset_failed(self, ids: Sequence[str]) -> int:
        with self.engine.begin() as conn:
            n = 0
            for chunk in _chunks(list(ids)):
                n += conn.execute(
                    update(cells)
                    .where(cells.c.id.in_(chunk), cells.c.status == FAILED)
                    .values(status=PENDING, attempts=0, error=None, worker=None)
                ).rowcount
            return n

    # --- claims -------------------------------------------------------------------------------------
    @retrying
    def claim_next(
        self, ids: Sequence[str], worker: str, kinds: Sequence[str] = ("pretrain", "hpo", "eval")
    ) -> dict | None:
        """Atomically take the first pending cell (by priority) whose dependency is done."""
        with self.engine.begin() as conn:
            rows = self._select(conn, ids)
            status = {r.id: r.status for r in rows}
            busy = {feature_group(r) for r in rows if r.status == RUNNING}
            # A cell whose sibling (same init and task) is running would extract the same features again
            # at the same time; prefer other ready cells, and take it only when nothing else is ready.
            ready = sorted(
                (
                    r
                    for r in rows
                    if r.status == PENDING
                    and r.kind in kinds
                    and (r.depends_on is None or status.get(r.depends_on) == DONE)
                ),
                key=lambda r: (feature_group(r) in busy, r.priority),
            )
            for r in ready:
                claimed = conn.execute(
                    update(cells).where(cells.c.id == r.id, cells.c.status == PENDING).values(**_claimed_by(worker))
                ).rowcount
                if claimed == 1:
                    return {**r._asdict(), "status": RUNNING, "worker": worker, "attempts": r.attempts + 1}
        return None

    @retrying
    def claim(self, cell_id: str, worker: str) -> dict | None:
        """Take one given cell (SLURM jobs): only when pending and its dependency is done."""
        with self.engine.begin() as conn:
            row = conn.execute(select(cells).where(cells.c.id == cell_id)).first()
            if row is None or row.status != PENDING:
                return None
            if row.depends_on is not None:
                dep = conn.execute(select(cells.c.status).where(cells.c.id == row.depends_on)).scalar()
                if dep != DONE:
                    return None
            n = conn.execute(
                update(cells).where(cells.c.id == cell_id, cells.c.status == PENDING).values(**_claimed_by(worker))
            ).rowcount
            return {**row._asdict(), "status": RUNNING, "worker": worker, "attempts": row.attempts + 1} if n else None

    @retrying
    def reclaim_abandoned(self, ids: Sequence[str], stale_after_s: float, max_attempts: int) -> list[str]:
        """Running cells whose worker died (same host: pid gone; elsewhere: no heartbeat) go back to pending."""
        now, freed = time.time(), []
        with self.engine.begin() as conn:
            for r in self._select(conn, ids):
                if r.status != RUNNING:
                    continue
                alive = worker_alive(r.worker)
                if alive or (alive is None and now - (r.heartbeat_at or 0) < stale_after_s):
                    continue
                gave_up = r.attempts >= max_attempts
                values = (
                    {
                        "status": FAILED,
                        "error": f"worker {r.worker} died on each of {r.attempts} attempts",
                        "finished_at": now,
                    }
                    if gave_up
                    else {"status": PENDING}
                )
                n = conn.execute(
                    update(cells)
                    .where(cells.c.id == r.id, cells.c.status == RUNNING, cells.c.worker == r.worker)
                    .values(**values)
                ).rowcount
                freed += [r.id] * n
        return freed

    @retrying
    def heartbeat(self, cell_id: str, worker: str) -> bool:
        with self.engine.begin() as conn:
            return (
                conn.execute(
                    update(cells)
                    .where(cells.c.id == cell_id, cells.c.worker == worker, cells.c.status == RUNNING)
                    .values(heartbeat_at=time.time())
                ).rowcount
                == 1
            )

    def _finish(self, conn: Connection, cell: dict, worker: str, **values: Any) -> bool:
        now = time.time()
        n = conn.execute(
            update(cells)
            .where(cells.c.id == cell["id"], cells.c.worker == worker, cells.c.status == RUNNING)
            .values(finished_at=now, duration_s=now - cells.c.claimed_at, **values)
        ).rowcount
        return n == 1

    @retrying
    def complete(
        self, cell: dict, worker: str, rows: Sequence[dict] = (), run: Mapping[str, Any] | None = None
    ) -> bool:
        """Mark done and store its rows/run record (rsbench.contracts.run_record) in one transaction; False
        (nothing written) if the claim was lost."""
        with self.engine.begin() as conn:
            if not self._finish(conn, cell, worker, status=DONE, error=None):
                return False  # nothing was changed: another worker owns the cell now
            self._replace_rows(conn, cell["id"], rows, cell_id=cell["id"])
            if run is not None:
                conn.execute(delete(runs).where(runs.c.cell_id == cell["id"]))
                conn.execute(insert(runs).values(cell_id=cell["id"], recorded_at=time.time(), **run))
            return True

    @retrying
    def fail(self, cell: dict, worker: str, error: str) -> bool:
        with self.engine.begin() as conn:
            return self._finish(conn, cell, worker, status=FAILED, error=error[:2000])

    @retrying
    def release(self, cell: dict, worker: str) -> None:
        """Give an interrupted cell back (Ctrl-C): pending again, and this attempt does not count."""
        with self.engine.begin() as conn:
            conn.execute(
                update(cells)
                .where(cells.c.id == cell["id"], cells.c.worker == worker, cells.c.status == RUNNING)
                .values(status=PENDING, worker=None, attempts=cells.c.attempts - 1)
            )

    # --- results ------------------------------------------------------------------------------------
    def _replace_rows(self, conn: Connection, source: str, rows: Sequence[dict], cell_id: str | None) -> None:
        conn.execute(delete(results).where(results.c.source == source))
        unique: dict[tuple, dict] = {}
        for row in rows:  # the last row per key wins, as in results.jsonl
            cols = result_columns(row)
            key = tuple(cols[k] for k in STORED_KEY)
            unique[key] = {"source": source, "cell_id": cell_id, "row": row, **cols}
        if unique:
            conn.execute(insert(results), list(unique.values()))

    @retrying
    def import_results(self, path: str | Path) -> int:
        """Load a results.jsonl (validated like `rsbench report` does); re-importing replaces its rows."""
        path = Path(path).resolve()
        rows = load_results([path])
        with self.engine.begin() as conn:
            self._replace_rows(conn, f"file:{path}", rows, cell_id=None)
        return len(rows)

    @retrying
    def result_rows(self) -> list[dict]:
        """Every stored row, with the cell's matrix name (`label`) and checkpoint step where it has one."""
        q = (
            select(results.c.row, results.c.source, results.c.cell_id, cells.c.init_label, cells.c.config)
            .select_from(results.outerjoin(cells, results.c.cell_id == cells.c.id))
            .order_by(results.c.id)
        )
        with self.engine.connect() as conn:
            out = []
            for r in conn.execute(q):
                step = ((r.config or {}).get("init") or {}).get("step") if r.config else None
                label = r.init_label.split("@step")[0] if r.init_label and step is not None else r.init_label
                out.append({**r.row, "_source": r.source, "_cell": r.cell_id, "_label": label, "_step": step})
            return out

    @retrying
    def run_rows(self) -> list[dict]:
        with self.engine.connect() as conn:
            return [r._asdict() for r in conn.execute(select(runs).order_by(runs.c.label))]

    @retrying
    def all_cells(self) -> list[dict]:
        with self.engine.connect() as conn:
            return [r._asdict() for r in conn.execute(select(cells).order_by(cells.c.priority))]


def require_rows(store: Store) -> list[dict]:
    rows = store.result_rows()
    if not rows:
        raise DataError(f"no results in {display_url(store.url)}")
    return rows


__all__ = [
    "DONE",
    "FAILED",
    "PENDING",
    "RUNNING",
    "STORED_KEY",
    "CellSpec",
    "Store",
    "feature_group",
    "require_rows",
    "result_columns",
    "worker_alive",
    "worker_identity",
]
