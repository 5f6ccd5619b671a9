"""Where a report's inputs come from: a benchmark results database and/or results.jsonl files.

Both give the same `ReportData`: validated result rows under the names to show (a benchmark cell's
matrix name, else the init name evaluate wrote), rows of intermediate checkpoints set apart with
their step, and the pretraining runs behind the results.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from rsbench.contracts.results import deduplicate, find_results_files, load_results, validate_row
from rsbench.contracts.run_dir import SNAPSHOT_NAME
from rsbench.errors import ConfigError
from rsbench.report.pretrain_runs import RunInfo, run_from_dir
from rsbench.results_store import Store, existing_db_url
from rsbench.results_store.db import display_url
from rsbench.results_store.studies import study_records

STEP = "_step"
# evaluate names a run "<method>-<arch> (<run dir>)"; benchmark snapshots live in "<run dir>@step-<N>".
_SNAPSHOT = re.compile(rf"^(?P<base>.*) \({SNAPSHOT_NAME.pattern}\)$")


@dataclass
class ReportData:
    rows: list[dict]  # final results, one per (task, dataset, protocol, init, fraction, seed, metric)
    checkpoint_rows: list[dict] = field(default_factory=list)  # same, for intermediate checkpoints (STEP set)
    runs: list[RunInfo] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    cells: int | None = None  # benchmark cells behind the rows, when known
    studies: list[dict] = field(default_factory=list)  # tuning studies' trial records (rsbench.results_store.studies)
    contamination: list[dict] = field(default_factory=list)  # `rsbench corpus check` findings of the benchmark


def mark_snapshot(row: dict) -> dict:
    """A benchmark checkpoint's row (init "<name> (<run>@step-N)") gets STEP and its run's init name."""
    m = _SNAPSHOT.match(row["init"])
    if m is None or row.get(STEP) is not None:
        return row
    return {**row, "init": f"{m['base']} ({m['run']})", STEP: int(m["step"])}


def _split(rows: Iterable[dict]) -> tuple[list[dict], list[dict]]:
    final, ckpt = [], []
    for r in rows:
        (ckpt if r.get(STEP) is not None else final).append(r)
    return deduplicate(final), ckpt


def from_db(url: str) -> ReportData:
    store = Store(url)
    rows, stored = [], store.result_rows()
    for i, raw in enumerate(stored, start=1):
        row = validate_row(
            {k: v for k, v in raw.items() if not k.startswith("_")}, f"{display_url(url)} results row {i}"
        )
        row["init_name"] = row["init"]
        if raw.get("_label"):
            row["init"] = raw["_label"]
        row[STEP] = raw.get("_step")
        rows.append(row)
    final, ckpt = _split(rows)
    runs = [RunInfo.from_record(r) for r in store.run_rows()]
    cells = len({r["_cell"] for r in stored if r.get("_cell")})
    return ReportData(final, ckpt, runs, [url], cells or None, study_records(url), _contamination(url))


def _contamination(url: str) -> list[dict]:
    """The benchmark's contamination findings: OUT/contamination/*.json beside a SQLite store's file."""
    if not url.startswith("sqlite:///"):
        return []
    folder = Path(url.removeprefix("sqlite:///")).parent / "contamination"
    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            found.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue  # a file being written; the next report shows it
    return found


def from_files(paths: Iterable[str | os.PathLike]) -> ReportData:
    files = find_results_files(paths)
    final, ckpt = _split(mark_snapshot(r) for r in load_results(files))
    runs: dict[str, RunInfo] = {}
    for r in final:
        if r.get("init_kind") == "run" and r.get("init_path") and r["init"] not in runs:
            info = run_from_dir(r["init_path"], r["init"])
            if info is not None:
                runs[r["init"]] = info
    return ReportData(final, ckpt, list(runs.values()), [str(f) for f in files])


def load_report_data(results: Iterable[str | os.PathLike] = (), db: str | None = None) -> ReportData:
    """Rows from --db and/or RESULTS paths; with both, runs and rows are combined."""
    parts = []
    if db:
        parts.append(from_db(existing_db_url(db, None)))
    results = list(results)
    if results:
        parts.append(from_files(results))
    if not parts:
        raise ConfigError("no inputs: pass results.jsonl files or folders, or --db URL|FILE")
    if len(parts) == 1:
        return parts[0]
    runs = {r.name: r for p in parts for r in p.runs}
    return ReportData(
        deduplicate([r for p in parts for r in p.rows]),
        [r for p in parts for r in p.checkpoint_rows],
        list(runs.values()),
        [s for p in parts for s in p.sources],
        studies=[s for p in parts for s in p.studies],
        contamination=[c for p in parts for c in p.contamination],
    )


def corpus_paths(runs: Iterable[RunInfo]) -> list[tuple[str, str]]:
    """(kind, path) of every distinct pretraining data source."""
    seen = {}
    for r in runs:
        if r.data.get("path"):
            seen.setdefault(str(r.data["path"]), str(r.data.get("kind") or "data"))
    return [(kind, path) for path, kind in seen.items()]


__all__ = ["STEP", "ReportData", "corpus_paths", "from_db", "from_files", "load_report_data"]
