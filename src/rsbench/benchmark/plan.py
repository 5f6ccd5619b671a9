"""From an experiment file to a synced matrix: the shared first step of run, status and export."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rsbench.benchmark.experiment import Experiment, load_experiment
from rsbench.benchmark.matrix import Cell, expand
from rsbench.results_store.db import db_url
from rsbench.results_store.store import Store


@dataclass
class Plan:
    experiment: Experiment
    path: Path
    out: Path
    url: str
    cells: list[Cell]

    @property
    def ids(self) -> list[str]:
        return [c.id for c in self.cells]

    def store(self) -> Store:
        return Store(self.url)


def default_out(exp: Experiment) -> Path:
    return Path(exp.out) if exp.out else Path("benchmark-output") / exp.name


def load_plan(
    path: str | os.PathLike, out: str | os.PathLike | None = None, db: str | None = None, check: bool = False
) -> Plan:
    """Load and expand; `check` also validates every cell with the stages' config models (imports torch)."""
    path = Path(path)
    source = f"experiment file {path}"
    exp = load_experiment(path)
    cells = expand(exp, source, path.parent)
    if check:
        from rsbench.benchmark.validate import validate_stage_options

        validate_stage_options(exp, cells, source, path.parent)
    out_dir = Path(out) if out is not None else default_out(exp)
    return Plan(exp, path, out_dir.resolve(), db_url(db or exp.db, out_dir), cells)


def sync(plan: Plan) -> Store:
    store = plan.store()
    store.sync_cells(plan.experiment.name, plan.cells, plan.out)
    return store
