"""COCO box AP from saved per-image detection outcomes, exactly as torchmetrics' `MeanAveragePrecision`
(backend pycocotools, iou_type "bbox", area range "all") computes it, also under a bootstrap over test images.

`match_image` reduces one image to what AP needs: the kept detections (score, label, and per IoU threshold
whether each is a true positive under COCO's greedy matching) and the labels of its ground-truth boxes.
`coco_ap` turns a list of those into mAP@[.5:.95], AP50 and AP75; with integer `weights` per image (a
bootstrap resample) it gives what the same list with image i physically repeated weights[i] times, in index
order (`[img for i, img in enumerate(images) for _ in range(weights[i])]`), gives, exactly, including
tied scores; a 2-D weights array (B, n_images) is evaluated for all B resamples at once.
`to_record` / `from_record` turn an image into flat columns (one Parquet row per test image).

Semantics replicated from pycocotools' COCOeval (as driven by torchmetrics 1.x):
- max_dets caps detections per image AND per class (COCOeval.evaluateImg sorts the detections of one
  (image, class) by score, stable, and keeps the first maxDet), not per image over all classes;
- pycocotools' summarize() reports map (stats[0]) at maxDets=100 whatever the thresholds are (-1 if 100 is
  not among them) and map_50 / map_75 at the largest one: see `coco_ap(max_detection_thresholds=...)`;
- matching per class: detections in descending score order (stable: ties keep input order), each takes the
  unmatched ground truth with the highest IoU >= threshold (ties in IoU: the later ground truth);
- boxes go through float32 xyxy -> xywh (torchvision box_convert) and IoU is computed in float64 from
  those xywh values like pycocotools' C code; scores are float32;
- the IoU and recall thresholds are torchmetrics' `torch.linspace(...).tolist()` values, i.e. float32
  numbers (0.55 is 0.550000011920929, recall 0.53 is 0.5300000309944153), not pycocotools' float64 defaults;
- area range "all" = [0, 1e10]: a ground truth outside it is ignored, and so are detections matched to it,
  and unmatched detections outside it (only degenerate or gigantic boxes); no crowd boxes;
- a class without ground truth (in the evaluated set / resample) has AP -1 and is left out of the mean;
  mean of nothing = -1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# torch.linspace(0.5, 0.95, 10).tolist() and torch.linspace(0.0, 1.0, 101).tolist(): float32 values, as
# torchmetrics hands them to COCOeval (checked against torch by the tests).
COCO_IOUS = np.array([0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95], dtype=np.float32).astype(np.float64)
_REC_F32 = [f"{i / 100:.2f}" for i in range(101)]
for _i, _v in {
    5: "0.049999997",
    9: "0.089999996",
    10: "0.099999994",
    15: "0.14999999",
    18: "0.17999999",
    20: "0.19999999",
    23: "0.22999999",
    27: "0.26999998",
    30: "0.29999998",
    33: "0.32999998",
    36: "0.35999998",
    40: "0.39999998",
    43: "0.42999998",
    46: "0.45999998",
    49: "0.48999998",
    53: "0.53000003",
    59: "0.59000003",
    65: "0.65000004",
    78: "0.78000003",
    84: "0.84000003",
}.items():
    _REC_F32[_i] = _v  # where torch's float32 linspace is not the float32 nearest i/100
REC_THRESHOLDS = np.array(_REC_F32, dtype=np.float32).astype(np.float64)
AREA_RANGE = (0.0, 1e5**2)  # COCO's "all"
MAX_DETS = 100
_EPS = np.spacing(1)


def _xywh(boxes) -> np.ndarray:
    """xyxy -> float64 xywh via float32 arithmetic (torchvision's box_convert on float32 boxes)."""
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1).astype(np.float64)


def _iou(dt: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(D, G) IoU of xywh boxes, operation for operation as pycocotools' bbIou (no crowd)."""
    dx, dy, dw, dh = (dt[:, None, k] for k in range(4))
    gx, gy, gw, gh = (gt[None, :, k] for k in range(4))
    w = np.minimum(dw + dx, gw + gx) - np.maximum(dx, gx)
    h = np.minimum(dh + dy, gh + gy) - np.maximum(dy, gy)
    inter = w * h
    with np.errstate(divide="ignore", invalid="ignore"):
        o = inter / (dw * dh + gw * gh - inter)
    return np.where((w > 0) & (h > 0), o, 0.0)


def match_image(
    pred_boxes,
    pred_scores,
    pred_labels,
    gt_boxes,
    gt_labels,
    iou_thresholds: Sequence[float] = COCO_IOUS,
    max_dets: int = MAX_DETS,
) -> dict:
    """One image's detection outcome, as plain arrays.

    Boxes are xyxy pixels. Returns {"scores": float32 (D,), "labels": int64 (D,), "tp": bool (D, T),
    "ignore": bool (D, T), "gt_labels": int64 (G,)}: the detections COCO keeps (the top `max_dets` per
    class), in descending score order (stable: ties keep input order); tp[d, t]: matched at
    iou_thresholds[t]; ignore[d, t]: neither TP nor FP there (all False for sane boxes); gt_labels: the
    labels of the ground-truth boxes that count (all, for boxes of area <= 1e10).
    Greedy matching is prefix-consistent, so a smaller cap can be applied later (`coco_ap(max_dets=...)`):
    store with the largest cap any metric needs (rsbench detection: 1000).
    """
    thr = np.minimum(np.asarray(iou_thresholds, dtype=np.float64), 1 - 1e-10)
    n_t = len(thr)
    dt = _xywh(pred_boxes)
    scores = np.asarray(pred_scores, dtype=np.float32).reshape(-1)
    labels = np.asarray(pred_labels).reshape(-1).astype(np.int64)
    gt = _xywh(gt_boxes)
    gl = np.asarray(gt_labels).reshape(-1).astype(np.int64)
    if not (len(dt) == len(scores) == len(labels)) or len(gt) != len(gl):
        raise ValueError(
            f"match_image: {len(dt)} boxes, {len(scores)} scores, {len(labels)} labels; "
            f"{len(gt)} ground-truth boxes, {len(gl)} labels"
        )
    lo, hi = AREA_RANGE
    d_area, g_area = dt[:, 2] * dt[:, 3], gt[:, 2] * gt[:, 3]
    d_out = (d_area < lo) | (d_area > hi)
    g_ign = (g_area < lo) | (g_area > hi)

    order = np.argsort(-scores.astype(np.float64), kind="stable")
    keep = np.zeros(len(dt), dtype=bool)
    tp = np.zeros((len(dt), n_t), dtype=bool)
    ign = np.zeros((len(dt), n_t), dtype=bool)
    for c in np.unique(np.concatenate([labels, gl])):
        d_idx = order[labels[order] == c][:max_dets]
        keep[d_idx] = True
        g_idx = np.nonzero(gl == c)[0]
        g_idx = g_idx[np.argsort(g_ign[g_idx], kind="stable")]  # ignored ground truth last
        if len(d_idx) == 0:
            continue
        if len(g_idx) == 0:
            ign[d_idx] = d_out[d_idx, None]
            continue
        iou = _iou(dt[d_idx], gt[g_idx])
        gig = g_ign[g_idx]
        cand = [np.nonzero(row >= thr.min())[0] for row in iou]
        m_ign = np.zeros((len(d_idx), n_t), dtype=bool)
        matched_any = np.zeros((len(d_idx), n_t), dtype=bool)
        for t, th in enumerate(thr):
            taken = np.zeros(len(g_idx), dtype=bool)
            for k, cg in enumerate(cand):
                if len(cg) == 0:
                    continue
                best = -1
                for pool in (cg[~gig[cg]], cg[gig[cg]]):  # a match to a counted box beats an ignored one
                    vv = iou[k, pool]
                    ok = (vv >= th) & ~taken[pool]
                    if ok.any():
                        top = vv[ok].max()
                        best = pool[ok][np.nonzero(vv[ok] == top)[0][-1]]  # equal IoU: the later box
                        break
                if best >= 0:
                    taken[best] = True
                    matched_any[k, t] = True
                    m_ign[k, t] = gig[best]
        tp[d_idx] = matched_any & ~m_ign
        ign[d_idx] = m_ign | (~matched_any & d_out[d_idx, None])
    sel = order[keep[order]]
    return {"scores": scores[sel], "labels": labels[sel], "tp": tp[sel], "ignore": ign[sel], "gt_labels": gl[~g_ign]}


def _min_tp(npig: np.ndarray, rec: np.ndarray) -> np.ndarray:
    """(B, R): the least integer m with float64(m / npig) >= r (what searchsorted on rc = tp / npig finds)."""
    n = npig.astype(np.float64)[:, None]
    est = np.floor(rec[None, :] * n).astype(np.int64)
    out = np.full(est.shape, np.iinfo(np.int64).max // 4, dtype=np.int64)
    for off in (2, 1, 0, -1):  # the exact real ceil(r * n) lies within est - 1 .. est + 1
        m = np.maximum(est + off, 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            ok = (m / n) >= rec[None, :]
        out = np.where(ok, m, out)
    return out


def _class_ap(score, img, tp, ign, W, npig, rec) -> np.ndarray:
    """(B, T) AP of one class; score/img/tp/ign: its detections over all images, in image order."""
    n_b, n_t = W.shape[0], tp.shape[1]
    ap = np.full((n_b, n_t), -1.0)
    has_gt = npig > 0
    if not has_gt.any():
        return ap
    ap[has_gt] = 0.0
    if len(score) == 0:
        return ap
    o = np.argsort(-score.astype(np.float64), kind="stable")  # pycocotools' accumulate order
    score, img, tp, ign = score[o], img[o], tp[o], ign[o]
    # A run of equal scores within one image, holding both TPs and FPs at some threshold, is interleaved
    # copy by copy when the image is repeated: expand it into max-weight copies, copy k counted in a resample
    # iff that image's weight there exceeds k. Anything else repeated w times is one point of weight w (the
    # intermediate points are dominated: the last copy of a TP has higher recall and precision; after an FP
    # the point before it is better).
    n_d = len(score)
    start = np.r_[True, (img[1:] != img[:-1]) | (score[1:] != score[:-1])]
    bounds = np.r_[np.nonzero(start)[0], n_d]
    src, copy = [], []
    wmax = W.max(axis=0)
    pos = 0
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b - a < 2 or wmax[img[a]] < 2:
            continue
        f = ~tp[a:b] & ~ign[a:b]
        if not (tp[a:b].any(axis=0) & f.any(axis=0)).any():
            continue
        src.append(np.arange(pos, a))
        copy.append(np.full(a - pos, -1))
        k = int(wmax[img[a]])
        src.append(np.tile(np.arange(a, b), k))
        copy.append(np.repeat(np.arange(k), b - a))
        pos = b
    if src:
        src.append(np.arange(pos, n_d))
        copy.append(np.full(n_d - pos, -1))
        src, copy = np.concatenate(src), np.concatenate(copy)
        Wv = W[:, img[src]]
        Wv = np.where(copy[None, :] >= 0, Wv > copy[None, :], Wv).astype(np.int64)
        tp, ign = tp[src], ign[src]
    else:
        Wv = W[:, img]

    m_r = _min_tp(npig, rec)  # (B, R)
    n_cum = np.cumsum(Wv, axis=1) if not ign.any() else None
    rows = np.arange(n_b)[:, None]
    for t in range(n_t):
        sel = tp[:, t]
        if not sel.any():
            continue
        # only points right after a TP matter (one after an FP is beaten by the point before it)
        tp_cum = np.cumsum(Wv[:, sel], axis=1)
        n_all = n_cum if n_cum is not None else np.cumsum(Wv * ~ign[:, t], axis=1)
        pr = tp_cum / (n_all[:, sel].astype(np.float64) + _EPS)
        env = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
        n_s = tp_cum.shape[1]
        step = int(max(tp_cum[:, -1].max(), npig.max())) + 2
        offs = np.arange(n_b, dtype=np.int64)[:, None] * step
        idx = np.searchsorted((tp_cum + offs).ravel(), (np.minimum(m_r, step - 1) + offs).ravel(), side="left")
        idx = idx.reshape(n_b, -1) - rows * n_s
        q = np.where(idx < n_s, env[rows, np.minimum(idx, n_s - 1)], 0.0)
        ap[:, t] = np.where(has_gt, q.mean(axis=1), -1.0)
    return ap


def _weights(weights, n: int) -> tuple[np.ndarray, bool]:
    if weights is None:
        return np.ones((1, n), dtype=np.int64), False
    w = np.asarray(weights)
    batched = w.ndim == 2
    w = w.reshape(1, -1) if w.ndim == 1 else w
    if w.ndim != 2 or w.shape[1] != n:
        raise ValueError(f"coco_ap: weights of shape {np.shape(weights)} for {n} images")
    if w.size and (np.any(w < 0) or np.any(w != np.round(w))):
        raise ValueError("coco_ap: weights must be nonnegative integer counts per image")
    return w.astype(np.int64), batched


def _per_class_rank(img: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Rank of each detection among those of its (image, class), in stored (descending score) order."""
    if len(img) == 0:
        return np.zeros(0, dtype=np.int64)
    o = np.lexsort((np.arange(len(img)), labels, img))
    key_i, key_l = img[o], labels[o]
    start = np.r_[True, (key_i[1:] != key_i[:-1]) | (key_l[1:] != key_l[:-1])]
    first = np.maximum.accumulate(np.where(start, np.arange(len(o)), 0))
    rank = np.empty(len(o), dtype=np.int64)
    rank[o] = np.arange(len(o)) - first
    return rank


def coco_ap(
    images: Sequence[dict],
    weights: np.ndarray | None = None,
    num_classes: int | None = None,
    max_dets: int | None = MAX_DETS,
    max_detection_thresholds: Sequence[int] | None = None,
    iou_thresholds: Sequence[float] = COCO_IOUS,
    rec_thresholds: Sequence[float] = REC_THRESHOLDS,
) -> dict:
    """COCO AP over `match_image` outcomes, image i counted weights[i] times (default once).

    Returns {"map_50_95", "ap50", "ap75"} (floats; arrays of B values for 2-D weights (B, n_images)), the
    mean over classes with ground truth of the 101-point AP (averaged over all thresholds for map_50_95),
    -1 when no class has ground truth; and "classes" (the class ids) with "ap_class" (..., K) mAP@[.5:.95]
    per class, -1 where a class has no ground truth. With `num_classes`, classes are 0..num_classes-1
    (rsbench detection labels are 1..C, so pass C + 1); else the labels seen in detections or ground truth.

    max_dets: keep the top max_dets detections per (image, class) (None: all stored ones).
    max_detection_thresholds: instead, report what torchmetrics' MeanAveragePrecision with these
    max_detection_thresholds reports (pycocotools' summarize): map_50_95 (and ap_class) at maxDets=100
    (-1 if 100 is not among them), ap50 / ap75 at the largest one; e.g. rsbench's (1, 100, 1000).
    """
    thr = np.asarray(iou_thresholds, dtype=np.float64)
    rec = np.asarray(rec_thresholds, dtype=np.float64)
    W, batched = _weights(weights, len(images))
    n_b, n_t = W.shape[0], len(thr)
    for i, d in enumerate(images):
        if np.shape(d["tp"]) != (len(d["scores"]), n_t):
            raise ValueError(
                f"coco_ap: image {i} has tp of shape {np.shape(d['tp'])}, expected "
                f"({len(d['scores'])}, {n_t}) for {n_t} IoU thresholds"
            )
    empty = np.zeros(0, dtype=np.int64)
    labels = np.concatenate([np.asarray(d["labels"], dtype=np.int64) for d in images] + [empty])
    gl = [np.asarray(d["gt_labels"], dtype=np.int64) for d in images]
    gt_all = np.concatenate(gl + [empty])
    if num_classes is not None:
        classes = np.arange(num_classes)
        bad = np.setdiff1d(np.concatenate([labels, gt_all]), classes)
        if len(bad):
            raise ValueError(f"coco_ap: label {bad[0]} outside 0..{num_classes - 1}")
    else:
        classes = np.unique(np.concatenate([labels, gt_all]))
    scores = np.concatenate([np.asarray(d["scores"], dtype=np.float32) for d in images] + [np.zeros(0, np.float32)])
    img = np.repeat(np.arange(len(images)), [len(d["scores"]) for d in images])
    tp = np.concatenate([np.asarray(d["tp"], dtype=bool).reshape(-1, n_t) for d in images] + [np.zeros((0, n_t), bool)])
    ign = np.concatenate(
        [
            np.asarray(d.get("ignore", np.zeros((len(d["scores"]), n_t), bool)), dtype=bool).reshape(-1, n_t)
            for d in images
        ]
        + [np.zeros((0, n_t), bool)]
    )
    rank = _per_class_rank(img, labels)
    # ground-truth count per (image, class)
    gimg = np.repeat(np.arange(len(images)), [len(g) for g in gl])
    counts = np.zeros((len(images), len(classes)), dtype=np.int64)
    np.add.at(counts, (gimg, np.searchsorted(classes, gt_all)), 1)
    npig = W @ counts  # (B, K)

    def table(cap: int | None, t_idx: np.ndarray) -> np.ndarray:  # (B, K, len(t_idx)) AP, -1: no GT
        ap = np.full((n_b, len(classes), len(t_idx)), -1.0)
        keep = rank < cap if cap is not None else np.ones(len(rank), dtype=bool)
        for k, c in enumerate(classes):
            if counts[:, k].sum() == 0:
                continue  # no ground truth anywhere: -1 in every resample
            m = keep & (labels == c)
            ap[:, k] = _class_ap(scores[m], img[m], tp[m][:, t_idx], ign[m][:, t_idx], W, npig[:, k], rec)
        return ap

    def mean(a: np.ndarray) -> np.ndarray:  # a: (B, K, T') -> mean over entries > -1, like summarize()
        valid = a > -1
        n = valid.sum(axis=(1, 2))
        s = np.where(valid, a, 0.0).sum(axis=(1, 2))
        return np.where(n > 0, s / np.maximum(n, 1), -1.0)

    t50, t75 = (np.nonzero(thr == v)[0] for v in (0.5, 0.75))
    all_t = np.arange(n_t)
    if max_detection_thresholds is None:
        ap = table(max_dets, all_t)
        ap_hi = ap[:, :, np.r_[t50, t75]]
    else:
        mdt = sorted(int(m) for m in max_detection_thresholds)
        ap = table(100, all_t) if 100 in mdt else np.full((n_b, len(classes), n_t), -1.0)
        ap_hi = ap[:, :, np.r_[t50, t75]] if mdt[-1] == 100 else table(mdt[-1], np.r_[t50, t75])
    out = {
        "map_50_95": mean(ap),
        "ap50": mean(ap_hi[:, :, : len(t50)]),
        "ap75": mean(ap_hi[:, :, len(t50) :]),
        "ap_class": np.where((ap > -1).all(axis=2), ap.mean(axis=2), -1.0),
    }
    if not batched:
        out = {k: (float(v[0]) if k != "ap_class" else v[0]) for k, v in out.items()}
    out["classes"] = classes
    return out


# --- flat columns: one Parquet row per image -------------------------------------------------------------


def _bits(a: np.ndarray) -> list[int]:
    a = np.asarray(a, dtype=bool)
    if a.shape[1] > 16:
        raise ValueError(f"{a.shape[1]} IoU thresholds do not fit a uint16 bitmask")
    return (a.astype(np.uint32) << np.arange(a.shape[1], dtype=np.uint32)).sum(axis=1).astype(np.uint16).tolist()


def _unbits(v, n_t: int) -> np.ndarray:
    v = np.asarray(v, dtype=np.uint32).reshape(-1, 1)
    return ((v >> np.arange(n_t, dtype=np.uint32)) & 1).astype(bool)


def to_record(d: dict, index: int | None = None) -> dict:
    """Plain-Python columns of one image: scores list<float32>, labels list<int64>, tp and ignore list<uint16>
    (bit t = IoU threshold t), gt_labels list<int64>; plus index (int64) when given."""
    rec = {"index": int(index)} if index is not None else {}
    n_t = np.shape(d["tp"])[1] if np.ndim(d["tp"]) == 2 else len(COCO_IOUS)
    tp = np.asarray(d["tp"], dtype=bool).reshape(-1, n_t)
    ign = np.asarray(d.get("ignore", np.zeros_like(tp)), dtype=bool).reshape(-1, n_t)
    rec.update(
        scores=np.asarray(d["scores"], dtype=np.float32).tolist(),
        labels=np.asarray(d["labels"], dtype=np.int64).tolist(),
        tp=_bits(tp),
        ignore=_bits(ign),
        gt_labels=np.asarray(d["gt_labels"], dtype=np.int64).tolist(),
    )
    return rec


def from_record(rec: dict, num_thresholds: int = len(COCO_IOUS)) -> dict:
    """The `match_image` dict back from `to_record`'s columns (e.g. a row of `table.to_pylist()`)."""
    n = len(rec["scores"])
    ignore = rec.get("ignore")
    return {
        "scores": np.asarray(rec["scores"], dtype=np.float32),
        "labels": np.asarray(rec["labels"], dtype=np.int64).reshape(n),
        "tp": _unbits(rec["tp"], num_thresholds).reshape(n, num_thresholds),
        "ignore": (
            _unbits(ignore, num_thresholds) if ignore is not None else np.zeros((n, num_thresholds), bool)
        ).reshape(n, num_thresholds),
        "gt_labels": np.asarray(rec["gt_labels"], dtype=np.int64).reshape(-1),
    }


def record_schema():
    """pyarrow schema of `to_record` rows with an index (pyarrow imported here, not at module load)."""
    import pyarrow as pa

    return pa.schema(
        [
            ("index", pa.int64()),
            ("scores", pa.list_(pa.float32())),
            ("labels", pa.list_(pa.int64())),
            ("tp", pa.list_(pa.uint16())),
            ("ignore", pa.list_(pa.uint16())),
            ("gt_labels", pa.list_(pa.int64())),
        ]
    )
