"""Export the store's tables to CSV, Parquet or JSONL (by file suffix), written atomically."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from rsbench.benchmark.store import Store
from rsbench.errors import ConfigError
from rsbench.io import atomic_write_bytes, write_jsonl

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
