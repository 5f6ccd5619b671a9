"""Metrics recomputed from per-example test outputs, under resampling weights.

A `MetricOnExamples` evaluates one metric of one evaluation cell for a batch of integer weight vectors
(B x n: how often each test example is counted; all ones = the test set as it is). The value at all-ones
equals the row's value (a test checks it); other weights are bootstrap resamples of the test set. Every
metric is a function of weighted sums, so a resample costs a few matrix products, not a re-evaluation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rsbench.contracts.predictions import read_predictions

CHUNK_ELEMENTS = 2_000_000
WeightsFn = Callable[[np.ndarray], np.ndarray]  # (B, n) weights -> (B,) metric values


@dataclass
class MetricOnExamples:
    n: int
    fn: WeightsFn
    correct: np.ndarray | None = None  # per-example 0/1 correctness (single-label), for McNemar
    meta: dict = field(default_factory=dict)  # the per-example file's metadata (classes, per-class stats, ...)

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        w = np.atleast_2d(weights).astype(np.float64)
        # Resamples in chunks: some metrics build a few (chunk x n) arrays; keep each near 16 MB.
        chunk = max(1, CHUNK_ELEMENTS // max(self.n, 1))
        return np.concatenate([self.fn(w[i : i + chunk]) for i in range(0, len(w), chunk)])

    def point(self) -> float:
        return float(self(np.ones((1, self.n)))[0])


def _accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> WeightsFn:
    correct = (y_true == y_pred).astype(np.float64)
    return lambda w: (w @ correct) / w.sum(1)


def _f1_macro(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> WeightsFn:
    # torchmetrics' macro F1: classes with no true, no predicted example (tp + fp + fn = 0) are left out.
    t = np.eye(k)[y_true]  # n x k one-hot
    p = np.eye(k)[y_pred]
    tp_ex, t_ex, p_ex = t * p, t, p

    def fn(w: np.ndarray) -> np.ndarray:
        tp, pos, pred = w @ tp_ex, w @ t_ex, w @ p_ex
        denom = pos + pred  # 2tp + fp + fn
        f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
        present = denom > 0
        return (f1 * present).sum(1) / np.maximum(present.sum(1), 1)

    return fn


def _average_precision(scores: np.ndarray, target: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted step-function AP (sum over thresholds of recall increase x precision), one column = one
    label; NaN where the resample holds no positive. Ties share a threshold, as in torchmetrics."""
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], target[order].astype(np.float64)
    ww = w[:, order]
    tp = np.cumsum(ww * t, axis=1)
    fp = np.cumsum(ww * (1 - t), axis=1)
    last = np.r_[s[1:] != s[:-1], True]  # the last example of each tie group defines the threshold
    tp, fp = tp[:, last], fp[:, last]
    total = tp[:, -1:]
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
    recall = np.divide(tp, total, out=np.zeros_like(tp), where=total > 0)
    gain = np.diff(np.concatenate([np.zeros((len(w), 1)), recall], axis=1), axis=1)
    ap = (gain * precision).sum(1)
    return np.where(total[:, 0] > 0, ap, np.nan)


def _multilabel_map(y_true: np.ndarray, scores: np.ndarray) -> WeightsFn:
    present = y_true.sum(0) > 0

    def fn(w: np.ndarray) -> np.ndarray:
        aps = np.stack([_average_precision(scores[:, c], y_true[:, c], w) for c in np.flatnonzero(present)], 1)
        return np.nanmean(aps, axis=1)  # macro over the labels with a positive in the test set

    return fn


def _miou(conf: np.ndarray, k: int) -> WeightsFn:
    def fn(w: np.ndarray) -> np.ndarray:
        c = (w @ conf).reshape(len(w), k, k)
        tp = np.diagonal(c, axis1=1, axis2=2)
        denom = c.sum(1) + c.sum(2) - tp
        iou = np.divide(tp, denom, out=np.zeros_like(tp), where=denom > 0)
        present = denom > 0  # torchmetrics' zero_division=nan: absent classes do not count
        return (iou * present).sum(1) / np.maximum(present.sum(1), 1)

    return fn


def _pixel_accuracy(conf: np.ndarray, k: int) -> WeightsFn:
    diag = conf.reshape(-1, k, k).trace(axis1=1, axis2=2).astype(np.float64)
    total = conf.sum(1).astype(np.float64)
    return lambda w: (w @ diag) / np.maximum(w @ total, 1)


def _detection(images: list[dict], which: str) -> WeightsFn:
    from rsbench.metrics.detection_ap import coco_ap  # numpy only

    # The headline caps at COCO's 100 detections per image (and class); files store up to 1000.
    return lambda w: np.asarray(coco_ap(images, weights=w.astype(np.int64), max_dets=100)[which], dtype=np.float64)


# Metrics recomputable per kind: the headline of every task and the main extras.
RECOMPUTABLE = {
    "classification": ("accuracy", "f1_macro"),
    "multilabel": ("map",),
    "segmentation": ("miou", "pixel_accuracy"),
    "detection": ("map_50_95", "ap50"),
}


def metric_on_examples(path: str | Path, metric: str) -> MetricOnExamples | None:
    """The metric of one cell as a function of test-example weights; None when it is not recomputable."""
    meta, cols = read_predictions(path)
    out = _metric_on_examples(meta, cols, metric)
    if out is not None:
        out.meta = meta
    return out


def _metric_on_examples(meta: dict, cols: dict, metric: str) -> MetricOnExamples | None:
    kind = meta.get("kind")
    if metric not in RECOMPUTABLE.get(kind, ()):
        return None
    n = len(cols["index"])
    k = len(meta.get("classes") or [])
    if kind == "classification":
        y_true, y_pred = cols["y_true"].astype(np.int64), cols["y_pred"].astype(np.int64)
        k = max(k, int(max(y_true.max(initial=0), y_pred.max(initial=0))) + 1)
        fn = _accuracy(y_true, y_pred) if metric == "accuracy" else _f1_macro(y_true, y_pred, k)
        return MetricOnExamples(n, fn, correct=(y_true == y_pred).astype(np.int8))
    if kind == "multilabel":
        return MetricOnExamples(n, _multilabel_map(np.asarray(cols["y_true"]), np.asarray(cols["scores"])))
    if kind == "segmentation":
        conf = np.asarray(cols["confusion"], dtype=np.float64)
        k = int(round(np.sqrt(conf.shape[1])))
        return MetricOnExamples(n, _miou(conf, k) if metric == "miou" else _pixel_accuracy(conf, k))
    from rsbench.metrics.detection_ap import from_record

    images = [from_record({c: cols[c][i] for c in cols}) for i in range(n)]
    return MetricOnExamples(n, _detection(images, "map_50_95" if metric == "map_50_95" else "ap50"))
