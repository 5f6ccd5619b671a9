"""COCO AP from saved per-image outcomes (rsbench.metrics.detection_ap) against torchmetrics' pycocotools
backend, on real NEON tree-crown boxes with synthetic predictions; bootstrap weights vs physical repetition."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from rsbench.evaluate.datasets import load_detection_data
from rsbench.metrics.detection_ap import (
    COCO_IOUS,
    REC_THRESHOLDS,
    coco_ap,
    from_record,
    match_image,
    record_schema,
    to_record,
)

TILE = 400
METRICS = ("map_50_95", "ap50", "ap75")


@pytest.fixture(scope="module")
def gt_images(shared_data: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """Real crown boxes: the two small images whole, the big YELL crop cut into 400 px tiles (by box centre);
    labels 1-3 drawn at random, plus one image without ground truth."""
    data = load_detection_data(shared_data / "detection" / "neon_tree_crowns", "voc")
    rng = np.random.default_rng(0)
    out = []
    for item in data.items:
        boxes = item.boxes.astype(np.float32)
        if boxes[:, 2:].max() <= TILE:
            groups = [np.arange(len(boxes))]
        else:
            cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2 // TILE, (boxes[:, 1] + boxes[:, 3]) / 2 // TILE
            key = cy * 100 + cx
            groups = [np.nonzero(key == k)[0] for k in np.unique(key)]
        for g in groups:
            out.append((boxes[g], rng.integers(1, 4, len(g))))
    out.append((np.zeros((0, 4), np.float32), np.zeros(0, np.int64)))
    assert len(out) >= 30 and sum(len(b) for b, _ in out) == 672
    return out


def make_preds(gt_images, seed: int, integer: bool = False, decimals: int | None = None, crowded: int = 250):
    """Jittered / dropped / duplicated / relabelled ground truth plus random false positives; image 0 gets
    `crowded` extra detections (mostly class 1) so that the 100-per-class cap bites."""
    rng = np.random.default_rng(seed)
    preds = []
    for i, (gt, gl) in enumerate(gt_images):
        boxes, scores, labels = [], [], []
        for b, lab in zip(gt, gl):
            for _ in range(1 + (rng.random() < 0.15)):  # duplicates
                if rng.random() < 0.15:
                    continue
                wh = b[2:] - b[:2]
                s = rng.uniform(0.01, 0.25)
                jit = rng.normal(0, s, 4) * np.r_[wh, wh]
                boxes.append(b + jit)
                scores.append(np.clip(rng.beta(4, 2) - s, 0.001, 1))
                labels.append(lab if rng.random() < 0.9 else rng.integers(1, 4))
        n_fp = rng.poisson(0.3 * len(gt) + 2) + (crowded if i == 0 else 0)
        lo = gt.min(axis=0)[:2] if len(gt) else np.zeros(2)
        xy = lo + rng.uniform(0, TILE - 40, (n_fp, 2))
        wh = rng.uniform(8, 40, (n_fp, 2))
        boxes += list(np.c_[xy, xy + wh])
        scores += list(rng.beta(2, 4, n_fp))
        labels += list(np.where(rng.random(n_fp) < (0.8 if i == 0 else 0.3), 1, rng.integers(1, 4, n_fp)))
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        boxes = np.round(boxes) if integer else boxes
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        scores = np.asarray(scores)
        scores = np.round(scores, decimals) if decimals is not None else scores
        perm = rng.permutation(len(boxes))
        preds.append(
            (boxes[perm].astype(np.float32), scores[perm].astype(np.float32), np.asarray(labels, np.int64)[perm])
        )
    preds[-2] = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))  # image w/o preds
    return preds


def torchmetrics_ap(preds, gt_images, max_detection_thresholds=(1, 10, 100)) -> dict[str, float]:
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(
        box_format="xyxy",
        iou_type="bbox",
        backend="pycocotools",
        max_detection_thresholds=list(max_detection_thresholds),
    )
    metric.warn_on_many_detections = False
    metric.update(
        [
            {"boxes": torch.from_numpy(b), "scores": torch.from_numpy(s), "labels": torch.from_numpy(lab)}
            for b, s, lab in preds
        ],
        [{"boxes": torch.from_numpy(b), "labels": torch.from_numpy(np.asarray(lab, np.int64))} for b, lab in gt_images],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = metric.compute()
    return {"map_50_95": float(r["map"]), "ap50": float(r["map_50"]), "ap75": float(r["map_75"])}


def outcomes(preds, gt_images, max_dets: int = 100) -> list[dict]:
    return [match_image(b, s, lab, g, gl, max_dets=max_dets) for (b, s, lab), (g, gl) in zip(preds, gt_images)]


def test_thresholds_are_torchmetrics_float32_linspace():
    assert COCO_IOUS.tolist() == torch.linspace(0.5, 0.95, 10).tolist()
    assert REC_THRESHOLDS.tolist() == torch.linspace(0.0, 1.0, 101).tolist()


@pytest.mark.parametrize(
    "integer,decimals,mdt", [(False, None, (1, 10, 100)), (True, 2, (1, 10, 100)), (True, 1, (1, 100, 1000))]
)
def test_matches_torchmetrics(gt_images, integer, decimals, mdt):
    preds = make_preds(gt_images, seed=1 + mdt[-1], integer=integer, decimals=decimals)
    assert (preds[0][2] == 1).sum() > 100 and len(preds[0][2]) > 200
    ref = torchmetrics_ap(preds, gt_images, mdt)
    images = outcomes(preds, gt_images, mdt[-1])
    if mdt[-1] == 100:  # per (image, class) cap: image 0 keeps 100 of class 1 and all of classes 2, 3
        assert (images[0]["labels"] == 1).sum() == 100 and len(images[0]["labels"]) > 100
        got = coco_ap(images)
        # stored with a larger cap, capped afterwards: the same
        later = coco_ap(outcomes(preds, gt_images, 1000), max_dets=100)
        assert [later[k] for k in METRICS] == [got[k] for k in METRICS]
    else:  # rsbench's (1, 100, 1000): pycocotools' summarize takes map at maxDets 100, map_50/75 at 1000
        got = coco_ap(images, max_detection_thresholds=mdt)
        assert got["map_50_95"] == pytest.approx(coco_ap(images, max_dets=100)["map_50_95"], abs=1e-12)
        assert got["ap50"] == pytest.approx(coco_ap(images, max_dets=1000)["ap50"], abs=1e-12)
        assert abs(got["ap50"] - coco_ap(images, max_dets=100)["ap50"]) > 1e-5  # the 1000 cap is used
    for k in ref:
        assert got[k] == pytest.approx(ref[k], abs=1e-7), k
    assert 0.05 < got["map_50_95"] < got["ap75"] + 0.2 and got["ap75"] < got["ap50"] < 1
    assert list(got["classes"]) == [1, 2, 3] and (got["ap_class"] > 0).all()
    # the cap matters: without it the numbers move
    assert coco_ap(outcomes(preds, gt_images, 10_000), max_dets=None)["map_50_95"] != pytest.approx(
        got["map_50_95"], abs=1e-6
    )


def _repeat(images, w):
    return [d for d, k in zip(images, w) for _ in range(int(k))]


def _within_image_mixed_ties(images) -> int:
    n = 0
    for d in images:
        for c in np.unique(d["labels"]):
            m = d["labels"] == c
            s, tp = d["scores"][m], d["tp"][m]
            for v in np.unique(s):
                t = tp[s == v]
                n += bool(len(t) > 1 and (t.any(axis=0) & ~t.all(axis=0)).any())
    return n


def test_weights_equal_physical_repetition(gt_images):
    rng = np.random.default_rng(5)
    n = len(gt_images)
    # coarse scores: ties within and across images, some mixing TPs and FPs
    tied = outcomes(make_preds(gt_images, seed=7, integer=True, decimals=1), gt_images)
    assert _within_image_mixed_ties(tied) > 5
    smooth = outcomes(make_preds(gt_images, seed=8), gt_images)
    ws = [rng.multinomial(n, np.full(n, 1 / n)) for _ in range(4)] + [
        rng.poisson(1.0, n),
        np.zeros(n, int),
        np.eye(n, dtype=int)[3] * 3,
    ]
    ws[1][:5] = 0
    for images in (tied, smooth):
        for w in ws:
            got, ref = coco_ap(images, weights=w, num_classes=4), coco_ap(_repeat(images, w), num_classes=4)
            for k in ("map_50_95", "ap50", "ap75"):
                assert got[k] == pytest.approx(ref[k], abs=1e-12), (k, w)
            np.testing.assert_allclose(got["ap_class"], ref["ap_class"], atol=1e-12)
    assert coco_ap(tied, weights=np.zeros(n, int))["map_50_95"] == -1
    # the repeated list is what pycocotools sees for repeated images, ties included
    preds = make_preds(gt_images, seed=7, integer=True, decimals=1)
    w = ws[0]
    ref = torchmetrics_ap(_repeat(preds, w), _repeat(gt_images, w))
    got = coco_ap(tied, weights=w)
    for k in ref:
        assert got[k] == pytest.approx(ref[k], abs=1e-7), k


def test_class_missing_from_a_resample_is_left_out():
    box = np.array([[0, 0, 10, 10]], np.float32)
    a = match_image(box, [0.9], [1], box, [1])
    b = match_image(box + 50, [0.8], [2], box, [2])  # class 2: one FP, its one GT missed
    assert coco_ap([a, b])["map_50_95"] == pytest.approx(0.5)
    assert coco_ap([a, b], weights=[2, 0])["map_50_95"] == pytest.approx(1.0)
    assert coco_ap([a, b], weights=[0, 1])["map_50_95"] == pytest.approx(0.0)
    r = coco_ap([a, b], weights=np.array([[1, 1], [2, 0], [0, 1], [0, 0]]), num_classes=3)
    np.testing.assert_allclose(r["map_50_95"], [0.5, 1.0, 0.0, -1.0])
    np.testing.assert_allclose(r["ap_class"], [[-1, 1, 0], [-1, 1, -1], [-1, -1, 0], [-1, -1, -1]])


def test_2d_weights_equal_rows(gt_images):
    images = outcomes(make_preds(gt_images, seed=11, decimals=2), gt_images)
    n = len(images)
    rng = np.random.default_rng(3)
    W = rng.multinomial(n, np.full(n, 1 / n), size=25)
    W[0] = 0
    got = coco_ap(images, weights=W)
    for k in ("map_50_95", "ap50", "ap75"):
        assert got[k].shape == (25,)
    for b in range(25):
        row = coco_ap(images, weights=W[b])
        for k in ("map_50_95", "ap50", "ap75"):
            assert got[k][b] == pytest.approx(row[k], abs=1e-12)
        np.testing.assert_allclose(got["ap_class"][b], row["ap_class"], atol=1e-12)


def test_record_round_trip_through_parquet(gt_images, tmp_path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    images = outcomes(make_preds(gt_images, seed=13), gt_images)
    table = pa.Table.from_pylist([to_record(d, index=i) for i, d in enumerate(images)], schema=record_schema())
    pq.write_table(table, tmp_path / "det.parquet")
    rows = pq.read_table(tmp_path / "det.parquet").to_pylist()
    assert [r["index"] for r in rows] == list(range(len(images)))
    back = [from_record(r) for r in rows]
    for d, e in zip(images, back):
        assert d.keys() == e.keys()
        for k in d:
            assert d[k].dtype == e[k].dtype and d[k].shape == e[k].shape, k
            np.testing.assert_array_equal(d[k], e[k])
    a, b = coco_ap(back), coco_ap(images)
    assert a["map_50_95"] == b["map_50_95"] and a["ap50"] == b["ap50"]
