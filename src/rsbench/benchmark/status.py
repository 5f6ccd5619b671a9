"""`rsbench benchmark status`: the matrix's cells as a Rich table, cost so far, failed cells' log tails."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from rsbench.results_store.store import DONE, FAILED, PENDING, RUNNING, Store, worker_alive

BLOCKED = "blocked"
STYLE = {DONE: "green", FAILED: "bold red", RUNNING: "cyan", PENDING: "white", BLOCKED: "yellow"}


def cell_state(cell: dict, status: dict[str, str]) -> str:
    if cell["status"] == PENDING and status.get(cell["depends_on"]) == FAILED:
        return BLOCKED
    return cell["status"]


def log_tail(path: str | None, lines: int = 5) -> list[str]:
    """Last non-empty lines of a cell log; progress bars' carriage returns count as line breaks."""
    if not path or not Path(path).is_file():
        return []
    with open(path, "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - 64_000))
        text = f.read().decode("utf-8", errors="replace")
    parts = [p.rstrip() for p in text.replace("\r", "\n").split("\n")]
    return [p for p in parts if p.strip()][-lines:]


def _duration(cell: dict, now: float) -> float | None:
    if cell["status"] == RUNNING and cell["claimed_at"]:
        return now - cell["claimed_at"]
    return cell["duration_s"]


def _fmt_s(s: float | None) -> str:
    if s is None:
        return ""
    return f"{s:.0f}s" if s < 120 else f"{s / 60:.1f}m" if s < 7200 else f"{s / 3600:.1f}h"


def counts(cells: Sequence[dict]) -> dict[str, int]:
    status = {c["id"]: c["status"] for c in cells}
    out = {k: 0 for k in (DONE, RUNNING, PENDING, BLOCKED, FAILED)}
    for c in cells:
        out[cell_state(c, status)] += 1
    return out


def cost(store: Store, cells: Sequence[dict], now: float | None = None) -> dict[str, float]:
    """Device-hours of finished pretraining (run.json) and wall-clock hours of all cell work so far."""
    now = now or time.time()
    ids = {c["id"] for c in cells}
    pretrain_h = sum(r["device_hours"] or 0.0 for r in store.run_rows() if r["cell_id"] in ids)
    cell_h = sum((_duration(c, now) or 0.0) for c in cells if c["status"] in (DONE, FAILED, RUNNING)) / 3600
    return {"pretrain_device_hours": pretrain_h, "cell_hours": cell_h}


def status_view(store: Store, ids: Sequence[str], title: str, tail: int = 5, show_done: bool = True):
    """A Rich renderable: summary line, cell table, and a panel with the log tail of each failed cell."""
    cells = store.cells(ids)
    now = time.time()
    status = {c["id"]: c["status"] for c in cells}
    n = counts(cells)
    spent = cost(store, cells, now)
    table = Table(title=title, title_justify="left", expand=False)
    right, fold = {"justify": "right"}, {"overflow": "fold"}
    for col, kw in (
        ("cell", {}),
        ("kind", {}),
        ("what", fold),
        ("state", {}),
        ("tries", right),
        ("time", right),
        ("worker / error", fold),
    ):
        table.add_column(col, **kw)
    for c in cells:
        state = cell_state(c, status)
        if state == DONE and not show_done:
            continue
        if state == RUNNING:
            alive = worker_alive(c["worker"])
            note = c["worker"] + ("" if alive is not False else "  (worker gone: will be reclaimed)")
        elif state == FAILED:
            note = c["error"] or ""
        elif state == BLOCKED:
            note = f"waits for failed cell {c['depends_on'][:8]}"
        else:
            note = ""
        table.add_row(
            c["id"][:8],
            c["kind"],
            c["label"],
            Text(state, style=STYLE[state]),
            str(c["attempts"] or 0),
            _fmt_s(_duration(c, now)),
            Text(note, style="red" if state == FAILED else ""),
        )
    new = len(ids) - len(cells)
    summary = Text(
        (f"{new} cell(s) not in the store yet (never run with this code version); " if new else "")
        + f"{len(cells)} cells: {n[DONE]} done, {n[RUNNING]} running, {n[PENDING]} pending, {n[BLOCKED]} blocked, "
        f"{n[FAILED]} failed · cost so far: {spent['pretrain_device_hours']:.3f} pretraining device-hours, "
        f"{spent['cell_hours']:.2f} cell-hours in total"
    )
    parts: list = [table, summary]
    for c in cells:
        if c["status"] == FAILED:
            lines = log_tail(c["log_path"], tail)
            body = "\n".join(lines) if lines else "(no log)"
            parts.append(
                Panel(
                    Text(body),
                    title=f"{c['id'][:8]} {c['label']} · {c['log_path']}",
                    title_align="left",
                    border_style="red",
                )
            )
    return Group(*parts)
