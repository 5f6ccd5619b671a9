"""The results schema, results.jsonl (read-replace-rename) and the summary table.

`RESULT_FIELDS` is the contract with `rsbench report` and the results DB: every row has exactly these
keys (None where a field does not apply, e.g. `k` for a linear probe). `hparams` holds the
protocol's training settings (fine-tuning, decoders) as a dict; `fit_time_s` / `eval_time_s` time the
training and the test-set prediction, `extract_time_s` the shared feature pass.
"""

from __future__ import annotations

import contextlib
import io
import math
import statistics
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import torch
from rich.table import Table

from rsbench import __version__
from rsbench.io import atomic_write_bytes, read_jsonl, stable_hash, write_jsonl

RESULTS_FILE = "results.jsonl"
ROW_KEY = ("task", "dataset", "protocol", "init", "label_fraction", "seed", "metric")
RESULT_FIELDS = (
    *ROW_KEY[:4], "init_kind", "init_path", "backbone", "label_fraction", "seed", "metric", "value",
    "n_train", "n_test", "num_classes", "feature_dim", "image_size", "normalization", "resize", "split",
    "k", "temperature", "weight_decay", "hparams", "probe_path",
    "extract_time_s", "fit_time_s", "eval_time_s", "features_cached", "features_key",
    "data", "test_data", "rsbench_version", "created",
)


def make_row(**values) -> dict:
    """A result row in schema order; a missing or unknown field is a bug, so fail loudly."""
    values.setdefault("rsbench_version", __version__)
    values.setdefault("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    missing, extra = set(RESULT_FIELDS) - set(values), set(values) - set(RESULT_FIELDS)
    if missing or extra:
        raise ValueError(f"result row schema mismatch: missing {sorted(missing)}, unknown {sorted(extra)}")
    return {k: values[k] for k in RESULT_FIELDS}


def row_key(row: dict) -> tuple:
    return tuple(row[k] for k in ROW_KEY)


def probe_file(out_dir: Path, row: dict) -> Path:
    """Where the probe fitted for this row's (task, dataset, protocol, init, label_fraction, seed) goes."""
    key = {k: row[k] for k in ROW_KEY if k != "metric"}
    return Path(out_dir) / "probes" / f"{stable_hash(key)}.pt"


def save_tensors(path: Path, obj: dict) -> Path:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


@contextlib.contextmanager
def _locked(out_dir: Path):
    # Two evaluations writing into one folder must not drop each other's rows (read-modify-write).
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / f".{RESULTS_FILE}.lock", "w") as f:
        try:
            import fcntl

            fcntl.flock(f, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - non-POSIX: best effort
            pass
        yield


def append_results(out_dir: str | Path, rows: list[dict]) -> Path:
    """Add `rows` to out_dir/results.jsonl, replacing existing rows with the same key."""
    out_dir = Path(out_dir)
    path = out_dir / RESULTS_FILE
    with _locked(out_dir):
        new_keys = {row_key(r) for r in rows}
        old = read_jsonl(path) if path.is_file() else []
        kept = [r for r in old if tuple(r.get(k) for k in ROW_KEY) not in new_keys]
        write_jsonl(path, kept + rows)
    return path


def results_table(rows: list[dict]) -> Table:
    """Mean ± std over seeds per (dataset, init, protocol, metric)."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in rows:
        groups[(r["dataset"], r["init"], r["protocol"], r["metric"])].append(r["value"])
    table = Table(title="rsbench evaluate")
    for col in ("dataset", "init", "protocol", "metric"):
        table.add_column(col, overflow="fold")  # init names are long; never truncate them
    for col in ("mean", "std", "seeds"):
        table.add_column(col, justify="right")
    for (dataset, init, protocol, metric), values in groups.items():
        std = statistics.stdev(values) if len(values) > 1 else math.nan
        table.add_row(dataset, init, protocol, metric, f"{statistics.fmean(values):.4f}",
                      "-" if math.isnan(std) else f"{std:.4f}", str(len(values)))
    return table
