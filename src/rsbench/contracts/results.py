"""The evaluation result row: the one record `evaluate` writes and `benchmark` and `report` read.

One row = one metric of one evaluation cell (task, dataset, protocol, init, label fraction, seed, input
shape). Rows are versioned (`schema_version`); rows written before versioning (version 1) are upgraded
on read by `upgrade_row`, so old results.jsonl files and stores keep loading.

Version 2 added: `schema_version`, `headline` (the metric a task is ranked by), `patch_size` and
`image_size` in the row key (one init at two input shapes is two results, not one overwriting the
other), `predictions_path` (the per-example test outputs every number can be recomputed from),
`test_split_id` (rows with equal ids were scored on the same test examples, so they pair),
`band_mapping` (how published RGB weights were mapped onto the data's bands) and `eval_images_per_s`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict

SCHEMA_VERSION = 2
RESULTS_FILE = "results.jsonl"
ROW_KEY = ("task", "dataset", "protocol", "init", "label_fraction", "seed", "metric", "image_size", "patch_size")

# The metric each task kind is ranked by when a task spec names none. Detection's headline is COCO mAP
# at IoU 0.50:0.95 with at most 100 detections per image (COCO's own headline).
HEADLINE_METRICS = {
    "classification": "accuracy",
    "classification-multilabel": "map",
    "segmentation": "miou",
    "detection": "map_50_95",
}


class ResultRow(BaseModel):
    """Field order is the order rows are written in; `None` where a field does not apply."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    task: str
    dataset: str
    protocol: str
    init: str
    init_kind: str | None = None
    init_path: str | None = None
    backbone: str | None = None
    label_fraction: float
    seed: int
    metric: str
    value: float  # NaN is allowed (a metric undefined on this test split): shown, never aggregated
    headline: bool = False
    image_size: int | None = None
    patch_size: int | None = None
    n_train: int | None = None
    n_test: int | None = None
    num_classes: int | None = None
    feature_dim: int | None = None
    normalization: dict | None = None
    band_mapping: dict | None = None
    resize: str | None = None
    split: str | None = None
    test_split_id: str | None = None
    k: int | None = None
    temperature: float | None = None
    weight_decay: float | None = None
    hparams: dict | None = None
    probe_path: str | None = None
    predictions_path: str | None = None
    extract_time_s: float | None = None
    fit_time_s: float | None = None
    eval_time_s: float | None = None
    eval_images_per_s: float | None = None
    features_cached: bool | None = None
    features_key: str | None = None
    data: str | None = None
    test_data: str | None = None
    rsbench_version: str | None = None
    created: str | None = None


RESULT_FIELDS = tuple(ResultRow.model_fields)


def make_row(**values: Any) -> dict:
    """A validated result row as a plain dict in schema order; an unknown field is a bug, so it fails."""
    from rsbench import __version__

    values.setdefault("rsbench_version", __version__)
    values.setdefault("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    for key in ("schema_version", "headline"):  # None means "the default", as for any optional field
        if values.get(key) is None:
            values.pop(key, None)
    return ResultRow(**values).model_dump()


def row_key(row: dict) -> tuple:
    return tuple(row.get(k) for k in ROW_KEY)


def headline_metric(task: str, metrics: list[str] | tuple[str, ...]) -> str:
    """The metric a task is ranked by, among those it reports (rows of schema 1 carry no flag)."""
    candidates = [HEADLINE_METRICS.get(task)] + (["map"] if task == "classification" else [])
    for name in candidates:
        if name in metrics:
            return name
    return metrics[0]  # evaluate writes a task's headline first


def upgrade_row(row: dict) -> dict:
    """A row of any schema version as the current version (missing fields None; values kept).

    `headline` of a version-1 row is left to the reader, which knows the task's other metrics.
    """
    out = {k: row.get(k) for k in RESULT_FIELDS}
    out.update({k: v for k, v in row.items() if k not in out})  # reader-side extras (e.g. _step) survive
    out["schema_version"] = int(row.get("schema_version") or 1)
    return out
