"""What the report needs from a pretraining run directory: cost (run.json), backbone, curves, corpus.

The benchmark stores the same dict in its database, so a report can be drawn from the database alone.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rsbench.io import read_json

MAX_CURVE_POINTS = 400


def read_curves(path: Path, max_points: int = MAX_CURVE_POINTS) -> dict[str, list[list[float]]]:
    """metrics.csv -> {column: [[step, value], ...]}, thinned to at most `max_points` per column."""
    if not path.is_file():
        return {}
    curves: dict[str, list[list[float]]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            try:
                step = float(row.get("step") or "nan")
            except ValueError:
                continue
            for key, value in row.items():
                if key in ("step", "epoch") or not value:
                    continue
                try:
                    curves.setdefault(key, []).append([step, float(value)])
                except ValueError:
                    continue
    return {k: v[:: max(1, -(-len(v) // max_points))] for k, v in curves.items()}


def corpus_summary(path: str | None) -> dict | None:
    """The counts of corpus.json (kept, rejected per reason, failures), or None when unreadable."""
    if not path:
        return None
    try:
        from rsbench.corpus import read_corpus_info

        info = read_corpus_info(path)
    except Exception:  # a moved or deleted corpus must not stop the report
        return None
    out = {k: info.get(k) for k in ("counts", "failures", "settings", "rsbench_version")}
    out["band_groups"] = {
        k: {kk: v.get(kk) for kk in ("bands", "tiles", "band_names")}
        for k, v in (info.get("band_groups") or {}).items()
    }
    return out


def collect_run(run_dir: Path, label: str, code_version: str | None = None) -> dict[str, Any]:
    """One `runs` record (the benchmark database's columns) from a finished run directory."""
    import yaml

    run = read_json(run_dir / "run.json")
    meta = read_json(run_dir / "backbone.json")
    data = meta.get("data") or {}
    config_path = run_dir / "config.yaml"
    return {
        "label": label,
        "run_dir": str(run_dir.resolve()),
        "method": meta.get("method"),
        "backbone": meta.get("arch"),
        "steps": run.get("steps"),
        "wall_time_s": run.get("wall_time_s"),
        "device_hours": run.get("gpu_hours", run.get("device_hours")),
        "images_per_s": run.get("images_per_s"),
        "device": run.get("device"),
        "code_version": code_version,
        "corpus": data.get("path"),
        "config": yaml.safe_load(config_path.read_text()) if config_path.is_file() else None,
        "run_json": run,
        "backbone_json": meta,
        "metrics": read_curves(run_dir / "metrics.csv"),
        "corpus_json": corpus_summary(data.get("path")) if data.get("kind") == "corpus" else None,
    }


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
    def from_record(cls, rec: dict[str, Any]) -> RunInfo:
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
    run_dir = Path(run_dir)
    if not (run_dir / "run.json").is_file() or not (run_dir / "backbone.json").is_file():
        return None
    try:
        return RunInfo.from_record(collect_run(run_dir, name))
    except (OSError, ValueError):
        return None
