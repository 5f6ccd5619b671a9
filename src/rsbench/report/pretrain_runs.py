"""A pretraining run as the report shows it: built from a run record (rsbench.contracts.run_record), the
one the benchmark stores in its results store or one collected from a run directory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rsbench.contracts.run_dir import RunDir
from rsbench.contracts.run_record import collect_run


@dataclass
class RunInfo:
    """A pretraining run as the report shows it, under the init name its results carry."""

    name: str
    run_dir: str | None = None
    method: str | None = None
    backbone: str | None = None
    steps: int | None = None
    device_hours: float | None = None
    run: dict = field(default_factory=dict)  # run.json
    meta: dict = field(default_factory=dict)  # backbone.json
    curves: dict = field(default_factory=dict)
    corpus: dict | None = None

    @property
    def data(self) -> dict:
        return self.meta.get("data") or {}

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> RunInfo:
        return cls(
            rec["label"],
            rec.get("run_dir"),
            rec.get("method"),
            rec.get("backbone"),
            rec.get("steps"),
            rec.get("device_hours"),
            rec.get("run_json") or {},
            rec.get("backbone_json") or {},
            rec.get("metrics") or {},
            rec.get("corpus_json"),
        )


def run_from_dir(run_dir: str | Path, name: str) -> RunInfo | None:
    if not RunDir(run_dir).is_finished():
        return None
    try:
        return RunInfo.from_record(collect_run(Path(run_dir), name))
    except (OSError, ValueError):
        return None
