"""`rsbench evaluate --protocol knn5,linear --save-features` on real EuroSAT images agrees with
scikit-learn run on the features rsbench saved (torchgeo-bench's protocols), within 1 accuracy point."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rsbench.cli import app
from rsbench.contracts.predictions import read_predictions
from rsbench.evaluate.probes import C_GRID, VAL_FRACTION
from rsbench.evaluate.splits import stratified_split
from rsbench.io import read_jsonl

PER_CLASS = 50


@pytest.fixture(scope="module")
def eurosat_500(tmp_path_factory, eurosat_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("eurosat_500")
    for cls in sorted(p for p in eurosat_dir.iterdir() if p.is_dir()):
        (root / cls.name).mkdir()
        for f in sorted(cls.iterdir())[:PER_CLASS]:
            (root / cls.name / f.name).symlink_to(f)
    return root


def sklearn_logistic_sweep(x, y, x_test, seed):
    """The same procedure with scikit-learn: standardize, pick C on the validation split of the train data by
    accuracy (ties: lower validation log-loss, then smaller C), refit on all train data, predict test."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    fit_idx, val_idx = stratified_split(y, VAL_FRACTION, [seed, 1], strict=False)
    scores = []
    with threadpool_limits(1):
        scaler = StandardScaler().fit(x[fit_idx])
        for i, c in enumerate(C_GRID):
            clf = LogisticRegression(C=c, max_iter=3000, tol=1e-6).fit(scaler.transform(x[fit_idx]), y[fit_idx])
            xv = scaler.transform(x[val_idx])
            acc = float((clf.predict(xv) == y[val_idx]).mean())
            scores.append((-acc, log_loss(y[val_idx], clf.predict_proba(xv), labels=clf.classes_), i))
        best = C_GRID[min(scores)[2]]
        scaler = StandardScaler().fit(x)
        clf = LogisticRegression(C=best, max_iter=3000, tol=1e-6).fit(scaler.transform(x), y)
        return clf.predict(scaler.transform(x_test)), best


def test_knn5_and_linear_agree_with_sklearn_on_saved_features(eurosat_500: Path, tmp_path: Path):
    from sklearn.neighbors import KNeighborsClassifier

    out = tmp_path / "out"
    res = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--data",
            str(eurosat_500),
            "--init",
            "random",
            "--image-size",
            "32",
            "--protocol",
            "knn5,linear",
            "--seeds",
            "0",
            "--save-features",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    rows = {r["protocol"]: r for r in read_jsonl(out / "results.jsonl") if r["metric"] == "accuracy"}
    [npz] = (out / "saved_features").glob("*.npz")  # one file: both probes of the cell saw these features
    f = np.load(npz)
    assert f["train_x"].shape == (400, 512) and f["test_x"].shape == (100, 512)
    assert len(f["paths"]) == 100 and len(set(f["train_index"]) & set(f["test_index"])) == 0
    _, cols = read_predictions(rows["knn5"]["predictions_path"])
    assert np.array_equal(cols["index"], f["test_index"]) and np.array_equal(cols["y_true"], f["test_y"])

    knn = KNeighborsClassifier(n_neighbors=5).fit(f["train_x"], f["train_y"])
    sk_knn = float((knn.predict(f["test_x"]) == f["test_y"]).mean())
    assert abs(rows["knn5"]["value"] - sk_knn) <= 0.01, (rows["knn5"]["value"], sk_knn)

    preds, best_c = sklearn_logistic_sweep(f["train_x"].astype(np.float64), f["train_y"], f["test_x"], seed=0)
    sk_linear = float((preds == f["test_y"]).mean())
    assert abs(rows["linear"]["value"] - sk_linear) <= 0.01, (
        rows["linear"]["value"],
        sk_linear,
        best_c,
        rows["linear"]["hparams"]["C"],
    )
    assert rows["linear"]["hparams"]["c_grid"] == pytest.approx(list(C_GRID))
