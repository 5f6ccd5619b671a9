"""results.jsonl (read-replace-rename), per-cell artefact paths and the summary table.

The row itself is a contract (`rsbench.contracts.results`): every row has exactly its fields (None
where a field does not apply, e.g. `k` for a linear probe). `hparams` holds the protocol's training
settings as a dict; `fit_time_s` / `eval_time_s` time the training and the test-set prediction,
`extract_time_s` the shared feature pass.
"""

from __future__ import annotations

import contextlib
import io
import math
import statistics
from collections import defaultdict
from pathlib import Path

import torch
from rich.table import Table

from rsbench.contracts.predictions import PREDICTIONS_DIR
from rsbench.contracts.results import RESULT_FIELDS, RESULTS_FILE, ROW_KEY, make_row, read_results_file, row_key
from rsbench.io import atomic_write_bytes, read_jsonl, stable_hash, write_jsonl

__all__ = [
    "RESULT_FIELDS",
    "RESULTS_FILE",
    "ROW_KEY",
    "append_results",
    "cell_hash",
    "make_row",
    "predictions_file",
    "probe_file",
    "results_table",
    "row_key",
    "row_patch_size",
    "save_tensors",
]


def cell_hash(row: dict) -> str:
    """The evaluation cell of a row: its key without the metric (one probe and one predictions file each)."""
    return stable_hash({k: row.get(k) for k in ROW_KEY if k != "metric"})


def row_patch_size(cfg, init) -> int | None:
    """The ViT patch size set for this init (a run's own, else --patch-size); None = the architecture's."""
    if init.kind == "run":
        return ((init.identity.get("meta") or {}).get("timm_kwargs") or {}).get("patch_size")
    return cfg.patch_size


def probe_file(out_dir: Path, row: dict) -> Path:
    """Where the probe fitted for this row's cell goes."""
    return Path(out_dir) / "probes" / f"{cell_hash(row)}.pt"


def predictions_file(out_dir: Path, row: dict) -> Path:
    """Where this row's cell writes its per-example test outputs (rsbench.contracts.predictions)."""
    return Path(out_dir) / PREDICTIONS_DIR / f"{cell_hash(row)}.parquet"


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


def check_results_file(out_dir: str | Path) -> None:
    """A results.jsonl already in `out_dir` must be readable before any work: a malformed line is a DataError
    naming the file and line now, not after the evaluation has computed everything."""
    path = Path(out_dir) / RESULTS_FILE
    if path.is_file():
        read_results_file(path)


def append_results(out_dir: str | Path, rows: list[dict]) -> Path:
    """Add `rows` to out_dir/results.jsonl, replacing existing rows with the same key."""
    out_dir = Path(out_dir)
    path = out_dir / RESULTS_FILE
    with _locked(out_dir):
        new_keys = {row_key(r) for r in rows}
        old = read_jsonl(path) if path.is_file() else []
        kept = [r for r in old if row_key(r) not in new_keys]
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
        table.add_row(
            dataset,
            init,
            protocol,
            metric,
            f"{statistics.fmean(values):.4f}",
            "-" if math.isnan(std) else f"{std:.4f}",
            str(len(values)),
        )
    return table
