"""`rsbench runs`: the pretraining runs below some folders, with status, progress and cost."""

from __future__ import annotations

import csv
import os
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rsbench.contracts.run_dir import RunDir
from rsbench.errors import DataError

STALE_AFTER_S = 15 * 60  # a running run writes run.json at least at every checkpoint and log step


def find_runs(roots: list[Path]) -> list[Path]:
    """Run directories (holding run.json) at or below each root, sorted."""
    for root in roots:
        if not root.exists():
            raise DataError(f"no such folder: {root}")
    return RunDir.find(roots)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def effective_status(run: dict[str, Any], now: datetime | None = None) -> str:
    """run.json's status, corrected for runs that died without writing it (SIGKILL, lost node)."""
    status = run.get("status", "unknown")
    if status != "running":
        return status
    current = (run.get("segments") or [{}])[-1]
    if (
        current.get("host") == socket.gethostname()
        and isinstance(current.get("pid"), int)
        and not _alive(current["pid"])
    ):
        return "killed"
    try:
        updated = datetime.fromisoformat(run["updated_at"])
    except (KeyError, TypeError, ValueError):
        return status
    age = ((now or datetime.now(timezone.utc)) - updated).total_seconds()
    return f"stalled ({int(age // 60)} min)" if age > STALE_AFTER_S else status


def _last_loss(run_dir: Path) -> float | None:
    path = RunDir(run_dir).metrics
    if not path.is_file():
        return None
    last = None
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            if row.get("train/loss"):
                last = float(row["train/loss"])
    return last


def run_summary(run_dir: Path) -> dict[str, Any]:
    try:
        run = RunDir(run_dir).read_run()
    except (OSError, ValueError) as e:
        return {"run": str(run_dir), "status": f"unreadable run.json ({e.__class__.__name__})"}
    step, max_steps = run.get("step", run.get("steps")), run.get("max_steps")
    loss = _last_loss(run_dir)
    return {
        "run": str(run_dir),
        "method": run.get("method"),
        "backbone": run.get("backbone"),
        "status": effective_status(run),
        "step": step,
        "max_steps": max_steps,
        "progress": step / max_steps if isinstance(step, int) and max_steps else None,
        "images_per_s": run.get("images_per_s"),
        "device_hours": run.get("device_hours"),
        "device": run.get("device_name") or run.get("device"),
        "world_size": run.get("world_size"),
        "loss": loss if loss is not None else run.get("loss"),
        "updated_at": run.get("updated_at"),
    }
