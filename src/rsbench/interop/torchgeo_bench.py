"""torchgeo-bench's results CSV (its docs/user/results-format.rst): rsbench rows out, external rows in.

One CSV row per (dataset, method, model, seed) with the headline metric. rsbench -> torchgeo-bench fields:
`method` is `knn5` / `linear` for the probes of the same name, `seg-<decoder>` for a frozen segmentation
decoder, and rsbench's own protocol name otherwise (`knn` = weighted k-NN, `finetune`: torchgeo-bench has
no such method); `name` is the init's label and `model` "rsbench:<init kind>"; `ci_lower`/`ci_upper` are 0.0
("not applicable" in that schema: rsbench's intervals, which include test-set sampling error, live in its
report); `normalization` is `train_zscore` (rsbench normalizes with the training split's band statistics).

Rows read back with `read_external` keep torchgeo-bench's names and are marked external, so a report can
show published results beside rsbench's without mixing them into rsbench's statistics.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from rsbench.errors import DataError
from rsbench.interop import at_fraction, headline_rows
from rsbench.io import atomic_write_text

COLUMNS = (
    "dataset",
    "method",
    "metric_name",
    "metric_value",
    "ci_lower",
    "ci_upper",
    "feature_dim",
    "best_c",
    "n_train",
    "n_val",
    "n_test",
    "seed",
    "model",
    "name",
    "normalization",
    "image_size",
    "interpolation",
    "partition",
    "bands",
    "num_classes",
)
# rsbench metric -> torchgeo-bench metric_name (the others keep rsbench's name).
METRIC_NAMES = {"accuracy": "accuracy", "miou": "mIoU", "map": "micro_mAP"}
REQUIRED = ("dataset", "method", "metric_name", "metric_value", "name")


def _method(row: dict) -> str:
    if row["task"] == "segmentation" and row["protocol"] == "frozen":
        return f"seg-{(row.get('hparams') or {}).get('decoder') or 'fpn'}"
    return str(row["protocol"])


def _best_c(row: dict) -> float | None:
    if row["protocol"] != "linear":
        return None
    c = (row.get("hparams") or {}).get("C")
    return float(c) if c is not None else None


def export_rows(rows: list[dict[str, Any]], label_fraction: float = 1.0) -> list[dict[str, Any]]:
    """torchgeo-bench rows for the headline metric of every full-label rsbench row."""
    out = []
    for row in at_fraction(headline_rows(rows), label_fraction):
        bands = (row.get("band_mapping") or {}).get("data_bands")
        out.append(
            {
                "dataset": row["dataset"],
                "method": _method(row),
                "metric_name": METRIC_NAMES.get(row["metric"], row["metric"]),
                "metric_value": row["value"],
                "ci_lower": 0.0,
                "ci_upper": 0.0,
                "feature_dim": row.get("feature_dim"),
                "best_c": _best_c(row),
                "n_train": row.get("n_train"),
                "n_val": None,
                "n_test": row.get("n_test"),
                "seed": row["seed"],
                "model": f"rsbench:{row.get('init_kind') or 'init'}",
                "name": row.get("_label") or row["init"],
                "normalization": "train_zscore",
                "image_size": row.get("image_size"),
                "interpolation": "bilinear",
                "partition": "default",
                "bands": ",".join(bands) if bands else "default",
                "num_classes": row.get("num_classes"),
            }
        )
    return sorted(out, key=lambda r: (r["dataset"], r["method"], r["name"], r["seed"]))


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if r.get(k) is None else r[k]) for k in COLUMNS} for r in rows)
    return atomic_write_text(path, buf.getvalue())


def read_external(path: Path) -> list[dict[str, Any]]:
    """Rows of a torchgeo-bench results CSV (theirs or an rsbench export), marked external."""
    path = Path(path)
    try:
        with path.open(newline="") as f:
            table = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read external results {path}: {e}") from None
    if not table:
        raise DataError(f"external results {path} hold no rows")
    missing = [c for c in REQUIRED if c not in table[0]]
    if missing:
        raise DataError(f"external results {path} lack torchgeo-bench columns: {', '.join(missing)}")
    out = []
    for i, r in enumerate(table, start=2):
        try:
            value = float(r["metric_value"])
        except ValueError:
            raise DataError(f"{path}:{i}: metric_value '{r['metric_value']}' is not a number") from None
        out.append(
            {
                "dataset": r["dataset"],
                "method": r["method"],
                "metric": r["metric_name"],
                "value": value,
                "seed": int(r["seed"]) if r.get("seed") not in (None, "") else None,
                "name": r["name"],
                "model": r.get("model"),
                "image_size": int(float(r["image_size"])) if r.get("image_size") not in (None, "", "None") else None,
                "external": True,
                "source": str(path),
            }
        )
    return out
