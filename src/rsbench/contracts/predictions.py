"""Per-example test outputs: one Parquet file per evaluation cell, beside results.jsonl.

Every number in a report is recomputed from these files (and its uncertainty resampled over their
rows), so they hold exactly what the task's metrics need, one row per test example:

| kind | columns |
|---|---|
| `classification` | `index`, `path`, `y_true`, `y_pred`, and `probs` (list of class probabilities) for the linear probe and fine-tuning |
| `multilabel` | `index`, `path`, `y_true` (list of 0/1 per label), `scores` (list of per-label scores) |
| `segmentation` | `index`, `path`, `confusion` (row-major K x K pixel counts, rows = truth, columns = prediction; ignored pixels excluded) |
| `detection` | `index`, `path`, `scores`, `labels`, `tp` (per detection, one bit per IoU threshold 0.50:0.05:0.95), `gt_labels` |

`index` is the example's position in the evaluated dataset (train pool first, then --test-data) or, for
dense tasks, the test region's number; `path` names the image. The file's schema metadata holds `kind`,
`classes` and `metric_names`. Files are written atomically and named by the cell's hash, so re-running a
cell replaces its file.
"""  # noqa: E501 - the Markdown table rows cannot wrap

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

PREDICTIONS_DIR = "predictions"
KINDS = ("classification", "multilabel", "segmentation", "detection")


def write_predictions(
    path: str | Path, kind: str, columns: dict[str, Any], classes: list[str], extra: dict | None = None
) -> Path:
    """Write one cell's per-example outputs; `columns` maps column names to equal-length sequences."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rsbench.io import atomic_write_bytes

    if kind not in KINDS:
        raise ValueError(f"unknown predictions kind '{kind}' ({', '.join(KINDS)})")
    arrays = {}
    for name, values in columns.items():
        if isinstance(values, np.ndarray) and values.ndim == 2:
            values = list(values)  # a list column: one row per example
        arrays[name] = pa.array(
            [np.asarray(v).tolist() if isinstance(v, np.ndarray) else v for v in values]
            if isinstance(values, list)
            else values
        )
    meta = {"kind": kind, "classes": list(classes), **(extra or {})}
    table = pa.table(arrays).replace_schema_metadata({"rsbench": json.dumps(meta)})
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return atomic_write_bytes(path, buf.getvalue())


def read_predictions(path: str | Path) -> tuple[dict, dict[str, Any]]:
    """(metadata, columns as numpy arrays; list columns as 2-D arrays where rows have equal length)."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = json.loads((table.schema.metadata or {}).get(b"rsbench", b"{}"))
    cols: dict[str, Any] = {}
    for name in table.column_names:
        values = table.column(name).to_pylist()
        if values and isinstance(values[0], list):
            lengths = {len(v) for v in values}
            if len(lengths) == 1 and not (values[0] and isinstance(values[0][0], list)):
                cols[name] = np.asarray(values)
                continue
            cols[name] = values
        else:
            cols[name] = np.asarray(values)
    return meta, cols


def resolve_predictions_path(row: dict, results_file: str | Path | None = None) -> Path | None:
    """The row's per-example file: its recorded path, else the same name beside the results file read."""
    recorded = row.get("predictions_path")
    if not recorded:
        return None
    path = Path(recorded)
    if path.is_file():
        return path
    if results_file is not None:
        moved = Path(results_file).parent / PREDICTIONS_DIR / path.name
        if moved.is_file():
            return moved
    return None
