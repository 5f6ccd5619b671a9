"""Progress of a build, for the terminal (rich bars) and for `rsbench corpus status` (progress.json).

The driver (the process that runs `corpus build`) is the only writer, also when the tasks run on a
Dask scheduler or SLURM, so the file is where the user started the build: `<out>/progress.json`,
written atomically at most every THROTTLE_S seconds and at every stage change. It keeps the last
build's figures after the build ends (status done or failed).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from rsbench.io import write_json

THROTTLE_S = 1.0


class BuildProgress:
    """`stage(name, unit, total, done)` starts a stage; `advance(n)` counts work; `end(status)` closes."""

    def __init__(self, path: Path, bars=None) -> None:
        self.path, self.bars = path, bars
        self.started = time.time()
        self.stages: dict[str, dict[str, Any]] = {}
        self.current: str | None = None
        self._bar = None
        self._written = 0.0

    def stage(self, name: str, unit: str, total: int, done: int = 0) -> None:
        self._stop_clock()
        self.current = name
        # `resumed`: work finished by an earlier run; the rate counts only what this run does.
        self.stages[name] = {"unit": unit, "total": total, "done": done, "resumed": done, "started": time.time()}
        if self.bars is not None:
            self._bar = self.bars.add_task(name, total=total)
            if done:
                self.bars.advance(self._bar, done)
        self._write(force=True)

    def advance(self, n: int = 1) -> None:
        s = self.stages[self.current]
        s["done"] += n
        if self.bars is not None:
            self.bars.advance(self._bar, n)
        self._write()

    def end(self, status: str, error: str | None = None) -> None:
        self._stop_clock()
        self._write(force=True, status=status, error=error)

    def _stop_clock(self) -> None:
        # A finished stage keeps its own duration and rate, not ones that keep growing with the build.
        if self.current is not None:
            self.stages[self.current].setdefault("ended", time.time())

    def _figures(self, s: dict[str, Any], now: float) -> dict[str, Any]:
        elapsed = max(s.get("ended", now) - s["started"], 1e-9)
        rate = (s["done"] - s["resumed"]) / elapsed
        left = s["total"] - s["done"]
        return {
            "unit": s["unit"],
            "done": s["done"],
            "total": s["total"],
            "elapsed_s": round(elapsed, 3),
            "rate_per_s": round(rate, 3),
            "eta_s": round(left / rate, 1) if rate > 0 else None,
        }

    def _write(self, force: bool = False, status: str = "running", error: str | None = None) -> None:
        now = time.time()
        if not force and now - self._written < THROTTLE_S:
            return
        self._written = now
        figures = {name: self._figures(s, now) for name, s in self.stages.items()}
        if self.bars is not None and self.current is not None:
            f = figures[self.current]
            self.bars.update(self._bar, description=f"{self.current} ({f['rate_per_s']:.0f} {f['unit']}/s)")
        state = {
            "status": status,
            "stage": self.current,
            "stages": figures,
            "error": error,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": self.started,
            "updated_at": now,
        }
        try:
            write_json(self.path, state)
        except OSError:  # progress is advisory: a full disk fails the build where it writes data, not here
            pass
