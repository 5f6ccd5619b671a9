"""One evaluation loop for every task kind: seeds -> label fractions -> protocols.

A task plugs in an adapter (`TaskAdapter`): how a seed splits its data, how a label fraction subsets the
seed's training set, and how one protocol trains and scores on that subset. The driver builds each cell's
row fields, saves what the cell trained (its probe file), writes its per-example test outputs
(rsbench.contracts.predictions) and turns its metrics into result rows. Both files are named by the cell's
hash (`probe_file`, `predictions_file`), so re-running a cell replaces them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sized
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from rich.console import Console

from rsbench.contracts.predictions import write_predictions
from rsbench.evaluate.comparability import check_comparable
from rsbench.evaluate.results import make_row, predictions_file, probe_file, save_tensors

if TYPE_CHECKING:
    from rsbench.contracts.evaluate_config import EvaluateConfig


@dataclass
class SeedSplit:
    """One seed's data: the training set that label fractions subset, the test set every cell is scored on."""

    train: Sized
    test: Sized
    description: str  # the rows' `split`
    fields: dict  # per-seed row fields: normalization, test_split_id, resize, ...
    context: dict[str, Any] = field(default_factory=dict)  # the adapter's own per-seed state (features, init, ...)


@dataclass
class Predictions:
    """A cell's per-example test outputs: a predictions kind, its columns, and metadata beside protocol/seed."""

    kind: str
    columns: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class CellResult:
    """What one protocol produced on one (seed, label fraction)."""

    metrics: dict[str, float]  # in the order rows are written
    fields: dict  # row-field updates: hparams, timings, k, feature_dim, ...
    state: dict | None  # saved as the cell's probe file; None: the protocol fitted nothing to keep
    predictions: Predictions


class TaskAdapter(Protocol):
    def split(self, seed: int) -> SeedSplit: ...

    def subset(self, split: SeedSplit, fraction: float, seed: int) -> Sized:
        """The label-fraction training subset of the seed's training set."""

    def run(self, protocol: str, split: SeedSplit, train: Sized, seed: int, fields: Mapping) -> CellResult:
        """Train and score one protocol; `fields` are the cell's row fields so far (they name its files)."""


def run_cells(
    cfg: EvaluateConfig, adapter: TaskAdapter, base_fields: dict, headline: str, classes: list[str]
) -> list[dict]:
    """Result rows of every (seed, label fraction, protocol, metric), in that order."""
    # Before any work: the rows already in cfg.out for this task were scored at this input shape.
    note = check_comparable(cfg, base_fields, ("image size", "token count"), Console(stderr=True))
    base_fields = {**base_fields, "mixed_inputs": note}
    rows = []
    for seed in cfg.seeds:
        split = adapter.split(seed)
        for fraction in cfg.fractions:
            train = adapter.subset(split, fraction, seed)
            for protocol in cfg.protocol:
                fields = {
                    **base_fields,
                    **split.fields,
                    "protocol": protocol,
                    "seed": seed,
                    "label_fraction": fraction,
                    "n_train": len(train),
                    "n_test": len(split.test),
                    "split": split.description,
                    "probe_path": None,
                }
                cell = adapter.run(protocol, split, train, seed, dict(fields))
                fields.update(cell.fields)
                if cfg.tuned is not None:  # a benchmark's tuned setting: which study and trial chose it
                    fields["hparams"] = {**(fields.get("hparams") or {}), "tuned": cfg.tuned}
                if cell.state is not None:
                    path = probe_file(cfg.out, fields)
                    save_tensors(path, cell.state)
                    fields["probe_path"] = str(path.resolve())
                pred = cell.predictions
                written = write_predictions(
                    predictions_file(cfg.out, fields),
                    pred.kind,
                    pred.columns,
                    classes,
                    {"protocol": protocol, "seed": seed, **pred.extra},
                )
                fields["predictions_path"] = str(written.resolve())
                rows += [make_row(**fields, metric=m, value=v, headline=m == headline) for m, v in cell.metrics.items()]
    return rows
