"""The evaluation driver (rsbench.evaluate.driver) with a fake task: no data, no training."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from rsbench.contracts.predictions import read_predictions
from rsbench.evaluate.driver import CellResult, Predictions, SeedSplit, run_cells
from rsbench.evaluate.results import predictions_file, probe_file

CLASSES = ["a", "b"]


class FakeTask:
    """10 train / 4 test examples per seed; protocol 'fit' keeps a state, 'knn' none."""

    def __init__(self):
        self.calls: list[tuple] = []

    def split(self, seed):
        self.calls.append(("split", seed))
        return SeedSplit(
            list(range(10)),
            list(range(10, 14)),
            f"fake split {seed}",
            {"normalization": {"seed": seed}, "test_split_id": f"t{seed}"},
            {"offset": seed * 100},
        )

    def subset(self, split, fraction, seed):
        self.calls.append(("subset", seed, fraction))
        return split.train[: int(len(split.train) * fraction)]

    def run(self, protocol, split, train, seed, fields):
        self.calls.append(("run", seed, fields["label_fraction"], protocol))
        assert fields["seed"] == seed and fields["protocol"] == protocol and fields["n_train"] == len(train)
        columns = {
            "index": np.asarray(split.test),
            "path": [f"img{i}" for i in split.test],
            "y_true": np.zeros(4, dtype=np.int64),
            "y_pred": np.ones(4, dtype=np.int64),
        }
        state = {"w": torch.full((2,), float(split.context["offset"]))} if protocol == "fit" else None
        return CellResult(
            {"accuracy": 0.5 + seed, "f1_macro": 0.25},
            {"k": 5 if protocol == "knn" else None},
            state,
            Predictions("classification", columns, {"note": protocol}),
        )


def test_run_cells_loops_writes_files_and_flags_headline(tmp_path: Path):
    cfg = SimpleNamespace(seeds=[0, 1], fractions=[0.5, 1.0], protocol=["knn", "fit"], out=tmp_path, tuned=None)
    task = FakeTask()
    base = {"task": "classification", "dataset": "fake", "init": "random", "image_size": 32}
    rows = run_cells(cfg, task, base, "accuracy", CLASSES)

    assert task.calls == [
        ("split", 0),
        ("subset", 0, 0.5),
        ("run", 0, 0.5, "knn"),
        ("run", 0, 0.5, "fit"),
        ("subset", 0, 1.0),
        ("run", 0, 1.0, "knn"),
        ("run", 0, 1.0, "fit"),
        ("split", 1),
        ("subset", 1, 0.5),
        ("run", 1, 0.5, "knn"),
        ("run", 1, 0.5, "fit"),
        ("subset", 1, 1.0),
        ("run", 1, 1.0, "knn"),
        ("run", 1, 1.0, "fit"),
    ]
    assert [(r["seed"], r["label_fraction"], r["protocol"], r["metric"]) for r in rows] == [
        (s, f, p, m) for s in (0, 1) for f in (0.5, 1.0) for p in ("knn", "fit") for m in ("accuracy", "f1_macro")
    ]
    assert [r["headline"] for r in rows] == [True, False] * 8

    for r in rows:
        assert r["split"] == f"fake split {r['seed']}" and r["test_split_id"] == f"t{r['seed']}"
        assert r["normalization"] == {"seed": r["seed"]}
        assert r["n_train"] == int(10 * r["label_fraction"]) and r["n_test"] == 4
        assert r["k"] == (5 if r["protocol"] == "knn" else None)
        assert r["predictions_path"] == str(predictions_file(tmp_path, r).resolve())
        meta, cols = read_predictions(r["predictions_path"])
        assert meta["classes"] == CLASSES and meta["protocol"] == r["protocol"] and meta["seed"] == r["seed"]
        assert meta["note"] == r["protocol"] and cols["index"].tolist() == [10, 11, 12, 13]
        if r["protocol"] == "fit":
            assert r["probe_path"] == str(probe_file(tmp_path, r).resolve())
            assert torch.load(r["probe_path"])["w"].tolist() == [r["seed"] * 100.0] * 2
        else:
            assert r["probe_path"] is None
            assert not probe_file(tmp_path, r).exists()

    assert len({r["predictions_path"] for r in rows}) == 8  # one file per cell
    assert len(list((tmp_path / "probes").glob("*.pt"))) == 4  # only the protocol with a state
