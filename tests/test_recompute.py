"""Metrics recomputed from per-example files under resampling weights, against scikit-learn with
sample weights (integer weights = examples counted that often) and hand-summed confusion matrices."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, average_precision_score, f1_score

from rsbench.contracts.predictions import read_predictions, write_predictions
from rsbench.report.recompute import CHUNK_ELEMENTS, metric_on_examples


def test_classification_metrics_under_weights(tmp_path):
    rng = np.random.default_rng(1)
    n, k = 300, 5
    y = rng.integers(0, k, n)
    pred = np.where(rng.random(n) < 0.6, y, rng.integers(0, k, n))
    path = write_predictions(
        tmp_path / "c.parquet",
        "classification",
        {"index": np.arange(n), "path": [f"i{i}" for i in range(n)], "y_true": y, "y_pred": pred},
        [f"c{i}" for i in range(k)],
    )
    acc, f1 = metric_on_examples(path, "accuracy"), metric_on_examples(path, "f1_macro")
    w = rng.multinomial(n, np.full(n, 1 / n), size=4)
    for wi, a, f in zip(w, acc(w), f1(w)):
        assert a == pytest.approx(accuracy_score(y, pred, sample_weight=wi))
        kept = wi > 0
        labels = np.union1d(y[kept], pred[kept])  # classes absent from a resample do not count
        assert f == pytest.approx(f1_score(y, pred, average="macro", labels=labels, sample_weight=wi))
    assert acc.point() == pytest.approx(np.mean(y == pred))


def test_multilabel_map_under_weights_with_ties(tmp_path):
    rng = np.random.default_rng(2)
    n, c = 120, 4
    y = (rng.random((n, c)) < 0.3).astype(np.int8)
    scores = np.round(np.clip(y * 0.3 + rng.random((n, c)) * 0.7, 0, 1), 1)  # coarse: many tied scores
    path = write_predictions(
        tmp_path / "m.parquet",
        "multilabel",
        {"index": np.arange(n), "path": ["p"] * n, "y_true": y, "scores": scores},
        list("abcd"),
    )
    m = metric_on_examples(path, "map")
    w = rng.multinomial(n, np.full(n, 1 / n), size=3)
    for wi, value in zip(w, m(w)):
        ref = np.mean([average_precision_score(y[:, j], scores[:, j], sample_weight=wi) for j in range(c)])
        assert value == pytest.approx(ref)


def test_segmentation_miou_from_summed_confusions(tmp_path):
    rng = np.random.default_rng(3)
    k, n = 3, 6
    conf = rng.integers(0, 50, (n, k, k))
    conf[:, 2, :] = 0
    conf[:, :, 2] = 0  # class 2 never present: left out of the mean, as torchmetrics' zero_division=nan
    path = write_predictions(
        tmp_path / "s.parquet",
        "segmentation",
        {"index": np.arange(n), "path": ["p"] * n, "confusion": conf.reshape(n, -1)},
        list("abc"),
    )
    meta, cols = read_predictions(path)
    assert meta["kind"] == "segmentation" and cols["confusion"].shape == (n, 9)
    w = np.array([[2, 0, 1, 0, 3, 0]])
    total = (conf * w[0][:, None, None]).sum(0)
    iou = [total[i, i] / (total[i].sum() + total[:, i].sum() - total[i, i]) for i in range(2)]
    assert metric_on_examples(path, "miou")(w)[0] == pytest.approx(np.mean(iou))
    assert metric_on_examples(path, "pixel_accuracy")(w)[0] == pytest.approx(np.trace(total) / total.sum())


def test_resamples_are_chunked_without_changing_values(tmp_path):
    n = CHUNK_ELEMENTS // 10 + 7  # > 10 resamples per chunk boundary
    y = np.arange(n) % 3
    path = write_predictions(
        tmp_path / "big.parquet",
        "classification",
        {"index": np.arange(n), "path": ["p"] * n, "y_true": y, "y_pred": (y + (np.arange(n) % 4 == 0)) % 3},
        list("abc"),
    )
    m = metric_on_examples(path, "accuracy")
    w = np.random.default_rng(0).integers(0, 3, (25, n))
    assert np.allclose(m(w), [m(wi[None])[0] for wi in w])
