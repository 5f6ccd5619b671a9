"""The run record: what the benchmark stores per finished pretraining run and the report draws.

One record per run directory: its cost (run.json), backbone (backbone.json), downsampled loss curves
(metrics.csv), configuration (config.yaml) and, when it trained on an rsbench corpus, the counts of
that corpus's corpus.json. The benchmark keeps records in its results store (one `runs` row each, see
rsbench.results_store.db), so a report can be drawn from the store alone; the report builds the same
record from a run directory when it reads results.jsonl files.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TypedDict

from rsbench.contracts.corpus_info import CorpusInfo
from rsbench.contracts.run_dir import RunDir

MAX_CURVE_POINTS = 400


class RunRecord(TypedDict):
    label: str  # the init name the run's results are reported under
    run_dir: str
    method: str | None
    backbone: str | None
    steps: int | None
    wall_time_s: float | None
    device_hours: float | None
    images_per_s: float | None
    device: str | None
    code_version: str | None
    corpus: str | None  # the pretraining data's path
    config: dict | None  # config.yaml
    run_json: dict  # run.json (upgraded: see RunDir.read_run)
    backbone_json: dict  # backbone.json
    metrics: dict[str, list[list[float]]]  # read_curves(metrics.csv)
    corpus_json: dict | None  # corpus_summary of the corpus, when the data was one


RUN_RECORD_FIELDS = tuple(RunRecord.__annotations__)


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
        info = CorpusInfo(path).read()
    except Exception:  # a moved or deleted corpus must not stop the report
        return None
    out = {k: info.get(k) for k in ("counts", "failures", "settings", "rsbench_version", "warnings")}
    out["band_groups"] = {
        k: {kk: v.get(kk) for kk in ("key", "bands", "tiles", "band_names", "units", "sensors", "pooled_sensors")}
        for k, v in (info.get("band_groups") or {}).items()
    }
    return out


def collect_run(run_dir: Path, label: str, code_version: str | None = None) -> RunRecord:
    """The record of a finished run directory (OSError/ValueError when run.json or backbone.json is
    missing or unreadable)."""
    rd = RunDir(run_dir)
    run = rd.read_run()
    meta = rd.read_backbone_meta()
    data = meta.get("data") or {}
    return {
        "label": label,
        "run_dir": str(rd.path.resolve()),
        "method": meta.get("method"),
        "backbone": meta.get("arch"),
        "steps": run.get("steps"),
        "wall_time_s": run.get("wall_time_s"),
        "device_hours": run.get("device_hours"),
        "images_per_s": run.get("images_per_s"),
        "device": run.get("device"),
        "code_version": code_version,
        "corpus": data.get("path"),
        "config": rd.read_config(),
        "run_json": run,
        "backbone_json": meta,
        "metrics": read_curves(rd.metrics),
        "corpus_json": corpus_summary(data.get("path")) if data.get("kind") == "corpus" else None,
    }


__all__ = ["MAX_CURVE_POINTS", "RUN_RECORD_FIELDS", "RunRecord", "collect_run", "corpus_summary", "read_curves"]
