"""The evaluation result row: the one record `evaluate` writes and `benchmark` and `report` read.

One row = one metric of one evaluation cell (task, dataset, protocol, init, label fraction, seed, input
shape). Rows are versioned (`schema_version`); rows written before versioning (version 1) are upgraded
on read by `upgrade_row`, so old results.jsonl files and stores keep loading.

Reading: `load_results` finds results.jsonl files, checks every row (`validate_row`, errors name the
file and line), and keeps one row per key (`deduplicate`); an init evaluated at two input shapes for
one task, dataset, protocol and label fraction gets the shape in its name (`disambiguate_shapes`), so
readers that key rows without the shape (leaderboards, the results store) keep both.

Version 2 added: `schema_version`, `headline` (the metric a task is ranked by), `patch_size` and
`image_size` in the row key (one init at two input shapes is two results, not one overwriting the
other), `predictions_path` (the per-example test outputs every number can be recomputed from),
`test_split_id` (rows with equal ids were scored on the same test examples, so they pair),
`band_mapping` (how published RGB weights were mapped onto the data's bands) and `eval_images_per_s`.

Version 3 added `split_spec`: the split as data, beside the `split` text: {"kind": "fixed"},
{"kind": "random", "test_fraction", "seed"} or {"kind": "spatial", "block_m", "buffer_m", "crs", "blocks",
"test_blocks", ...}. Older rows get it from their `split` text where that says fixed or random
(`split_spec_of`), else None.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from rsbench.errors import DataError

SCHEMA_VERSION = 3
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
    split_spec: dict | None = None
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
    mixed_inputs: str | None = None  # set by `evaluate --allow-mixed`: the other input shapes in the folder
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
    if out["schema_version"] < 3 and out["split_spec"] is None:
        out["split_spec"] = split_spec_of(row.get("split"))
    return out


def split_spec_of(split: str | None) -> dict | None:
    """The split_spec of a row written before version 3, from its `split` text (None when it says neither
    fixed nor random: such rows predate spatial splits, but the text may be a caller's own)."""
    text = split or ""
    if text.startswith("fixed"):
        return {"kind": "fixed"}
    if text.startswith(("by image", "by ", "stratified", "random")):
        return {"kind": "random"}
    return None


# --- reading results -------------------------------------------------------------------------------------

SOURCE_FILE = "_results_file"  # reader-side: the results.jsonl a row came from (finds moved predictions)
# The fields every row must have: the result row's required fields.
REQUIRED_KEYS = tuple(name for name, f in ResultRow.model_fields.items() if f.is_required())
_STR_KEYS = ("task", "dataset", "protocol", "init", "metric")
# Rows of one init that differ only in seed and metric, or in input shape (see disambiguate_shapes).
_SHAPE_SCOPE = ("task", "dataset", "protocol", "label_fraction", "init")


def find_results_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Explicit files as given; folders searched recursively for results.jsonl. Each file once."""
    found: list[Path] = []
    seen: set[Path] = set()
    paths = list(paths)
    for p in map(Path, paths):
        if p.is_dir():
            candidates = sorted(p.rglob(RESULTS_FILE))
        elif p.is_file():
            candidates = [p]
        else:
            raise DataError(f"results path not found: {p}")
        for c in candidates:
            # Overlapping inputs (a folder and a file inside it) must not double-count rows.
            if c.resolve() not in seen:
                seen.add(c.resolve())
                found.append(c)
    if not found:
        where = ", ".join(str(p) for p in paths) or "(no paths given)"
        raise DataError(f"no {RESULTS_FILE} found in {where}")
    return found


def validate_row(row: object, where: str) -> dict:
    """Check one row and return a copy (upgraded to the current schema) with label_fraction/seed/value in
    canonical types.

    Canonical types matter for grouping: 1 and 1.0 must be the same label fraction.
    """
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in row]
    if missing:
        raise DataError(f"{where}: missing required key(s) {', '.join(missing)}")
    for k in _STR_KEYS:
        if not isinstance(row[k], str) or not row[k]:
            raise DataError(f"{where}: '{k}' must be a non-empty string, got {row[k]!r}")
    out = upgrade_row(row)
    for k in ("label_fraction", "value"):
        v = row[k]
        # bool is an int subclass. A NaN value (a metric undefined on a test split) is kept and shown, and
        # left out of every aggregate with a warning; an infinity or a NaN label fraction is an error.
        if v is None and k == "value":
            v = math.nan
        nan_ok = k == "value" and isinstance(v, float) and math.isnan(v)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) or nan_ok):
            raise DataError(f"{where}: '{k}' must be a finite number, got {v!r}")
        out[k] = float(v)
    seed = row["seed"]
    if isinstance(seed, bool) or not isinstance(seed, (int, float)) or seed != int(seed):
        raise DataError(f"{where}: 'seed' must be an integer, got {seed!r}")
    out["seed"] = int(seed)
    return out


def read_results_file(path: Path) -> list[dict]:
    """Every row of one results.jsonl, validated, with SOURCE_FILE set; DataError naming the line."""
    # Not io.read_jsonl: errors must name the line, which it does not track.
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                where = f"{path}:{lineno}"
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{where}: malformed JSON ({e.msg} at column {e.colno})") from None
                rows.append({**validate_row(obj, where), SOURCE_FILE: str(path)})
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason})") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    return rows


def deduplicate(rows: Iterable[dict]) -> list[dict]:
    """One row per `row_key`: the latest `created` wins; on a tie, the later row.

    Re-running `rsbench evaluate` appends rather than rewrites, so duplicates are expected.
    ISO timestamps written by rsbench compare correctly as strings; rows without one lose.
    """
    latest: dict[tuple, dict] = {}
    for row in rows:
        key = row_key(row)
        old = latest.get(key)
        if old is None or str(row.get("created") or "") >= str(old.get("created") or ""):
            latest[key] = row
    return list(latest.values())


def _is_tuned(row: dict) -> bool:
    return bool((row.get("hparams") or {}).get("tuned"))


def disambiguate_shapes(rows: list[dict]) -> list[dict]:
    """An init evaluated at two input shapes for one task, dataset, protocol and label fraction is two inits
    there: "<init> (<size> px, patch <p>)", so neither result overwrites the other. An init whose shape
    differs only between tasks (a dense task's crop size beside classification's input size) keeps one name.
    Likewise an init evaluated both at the default setting and at a tuned one (`hparams.tuned`, benchmark
    `hpo`) is "<init> (default)" and "<init> (tuned)" there: two conditions, never one row overwriting the other."""

    def where(r: dict) -> tuple:
        return tuple(r[k] for k in _SHAPE_SCOPE)

    shapes: dict[tuple, set] = {}
    tuning: dict[tuple, set] = {}
    for r in rows:
        shapes.setdefault(where(r), set()).add((r.get("image_size"), r.get("patch_size")))
        tuning.setdefault(where(r), set()).add(_is_tuned(r))
    out = []
    for r in rows:
        parts = []
        if len(shapes[where(r)]) > 1:
            size, patch = r.get("image_size"), r.get("patch_size")
            parts.append(f"{size} px" + (f", patch {patch}" if patch else ""))
        if len(tuning[where(r)]) > 1:
            parts.append("tuned" if _is_tuned(r) else "default")
        if parts:
            r = {**r, "init": f"{r['init']} ({', '.join(parts)})"}
        out.append(r)
    return out


def load_results(paths: Iterable[str | os.PathLike]) -> list[dict]:
    """Validated, de-duplicated rows from results.jsonl files and/or folders holding them."""
    paths = list(paths)
    rows: list[dict] = []
    for path in find_results_files(paths):
        rows.extend(read_results_file(path))
    if not rows:
        raise DataError(f"no results rows in {', '.join(str(p) for p in paths)}")
    return deduplicate(disambiguate_shapes(rows))
