"""Export the store's tables to CSV, Parquet or JSONL (by file suffix), written atomically."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from rsbench.errors import ConfigError
from rsbench.interop import geobench2, torchgeo_bench
from rsbench.io import atomic_write_bytes, write_jsonl
from rsbench.results_store.store import Store, require_rows

TABLES = ("results", "cells", "runs")
FORMATS = (".csv", ".parquet", ".jsonl")


def table_rows(store: Store, table: str) -> list[dict[str, Any]]:
    if table == "results":
        # Every results.jsonl field, plus where it came from: the cell and its matrix name (or the file).
        return [
            {
                **{k: v for k, v in r.items() if not k.startswith("_")},
                "label": r["_label"],
                "cell_id": r["_cell"],
                "checkpoint_step": r["_step"],
                "source": r["_source"],
            }
            for r in store.result_rows()
        ]
    if table == "cells":
        return store.all_cells()
    if table == "runs":
        return store.run_rows()
    raise ConfigError(f"unknown table '{table}' (choose from {', '.join(TABLES)})")


def _flat(value: Any) -> Any:
    # Columnar formats need one type per column: nested values become JSON text.
    return json.dumps(value, sort_keys=True, default=str) if isinstance(value, (dict, list, tuple)) else value


def _arrow(rows: list[dict[str, Any]]) -> pa.Table:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    data = {c: [_flat(r.get(c)) for r in rows] for c in columns}
    arrays = {}
    for c, values in data.items():
        try:
            arrays[c] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types (e.g. int and str): keep them as text
            arrays[c] = pa.array([None if v is None else str(v) for v in values], type=pa.string())
    return pa.table(arrays)


def export(store: Store, path: str | Path, table: str = "results") -> int:
    """Write `table` to `path` (.csv, .parquet or .jsonl); returns the number of rows."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(f"--out {path}: unknown format '{suffix}' (use {', '.join(FORMATS)})")
    rows = table_rows(store, table)
    if suffix == ".jsonl":
        write_jsonl(path, rows)
        return len(rows)
    arrow = _arrow(rows) if rows else pa.table({})
    sink = io.BytesIO()
    if suffix == ".csv":
        pacsv.write_csv(arrow, sink)
    else:
        pq.write_table(arrow, sink)
    atomic_write_bytes(path, sink.getvalue())
    return len(rows)


def export_leaderboard(
    store: Store, out: str | Path, fmt: str, experiment_name: str, protocol: str | None, label_fraction: float
) -> tuple[int, list[str]]:
    """The results in a leaderboard's format (rsbench.interop); returns (rows written, what the leaderboard
    would reject: GEO-Bench-2's acceptance rules, empty for torchgeo-bench)."""
    rows = require_rows(store)
    if fmt == "geobench2":
        out_rows = geobench2.submission_rows(rows, experiment_name, protocol, label_fraction)
        folder = geobench2.write_submission(Path(out), out_rows, geobench2.additional_info(out_rows))
        return len(out_rows), geobench2.check_submission(folder)
    if fmt == "torchgeo-bench":
        picked = [r for r in rows if protocol is None or r["protocol"] == protocol]
        out_rows = torchgeo_bench.export_rows(picked, label_fraction)
        torchgeo_bench.write_csv(Path(out), out_rows)
        return len(out_rows), []
    raise ConfigError(f"unknown export format '{fmt}' (table, geobench2, torchgeo-bench)")
