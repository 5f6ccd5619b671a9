"""Object detection: torchvision Faster R-CNN with an FPN on an init's multi-scale features, trained on
overlapping chips of the training images (frozen or fine-tuned backbone) and scored with COCO mAP on
whole test images, whose per-tile predictions are merged back (offset + NMS across tiles)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import torch
from rich.console import Console
from torch import nn

from rsbench.contracts.evaluate_config import EvaluateConfig
from rsbench.contracts.results import headline_metric
from rsbench.data.normalization import Normalization
from rsbench.errors import DataError
from rsbench.evaluate.datasets import DetectionData, load_detection_data
from rsbench.evaluate.datasets.samples import (
    CHIP_OVERLAP,
    DetectionChips,
    collate_detection,
    overlap_stride,
    read_window,
    region_windows,
)
from rsbench.evaluate.datasets.tiling import (
    ArrayWindow,
    Region,
    clip_boxes,
    grid_windows,
    merge_tile_detections,
)
from rsbench.evaluate.dense import (
    BACKBONE_LR_SCALE,
    DenseCells,
    DenseEncoder,
    base_fields,
    build_dense_encoder,
    check_input_size,
    check_metric,
    check_test_classes,
    fit_hparams,
    param_groups,
    resolve_dense_init,
)
from rsbench.evaluate.dense_cache import (
    FROZEN_CACHE_AUGMENT,
    BackboneMaps,
    CachedSamples,
    cache_fields,
    collate_listed_targets,
)
from rsbench.evaluate.driver import CellResult, Predictions, SeedSplit, run_cells
from rsbench.evaluate.tasks import register_task
from rsbench.metrics.detection_ap import coco_ap, match_image, to_record
from rsbench.progress import progress_bar

DEFAULT_LR = 1e-3
# Remote-sensing objects are small: anchors one octave below torchvision's (32-512) defaults, one size per
# FPN level (strides 4, 8, 16, 32, 64).
ANCHOR_SIZES = ((16,), (32,), (64,), (128,), (256,))
ASPECT_RATIOS = ((0.5, 1.0, 2.0),) * len(ANCHOR_SIZES)
FPN_CHANNELS = 128
NMS_IOU = 0.5  # merging tiles: overlapping detections of one class are one object
# COCO's cap of 100 detections per image is the headline; dense scenes hold hundreds of objects per image,
# so mAP with up to 1000 is reported beside it (labelled map_50_95_maxdet1000).
MAX_DETECTIONS = (1, 100, 1000)
# Sized for chips, not 800 px photos: torchvision's 512 sampled RoIs / 1000-2000 proposals per image and a
# 1024-wide box head cost ~10x more on 64-256 px chips and find nothing more there.
ROI_SAMPLES = 128
BOX_HEAD_WIDTH = 512


def proposals_for(size: int) -> int:
    return int(min(1000, max(100, size * size // 64)))


METRICS = ("map_50_95", "ap50", "ap75", "map_50_95_maxdet1000")


class FPNBackbone(nn.Module):
    """torchvision's BackboneWithFPN, with a DenseEncoder as the body (strides 4-32, + max-pooled 64)."""

    def __init__(self, encoder: DenseEncoder):
        super().__init__()
        from torchvision.ops import FeaturePyramidNetwork
        from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

        self.body = encoder
        self.fpn = FeaturePyramidNetwork(list(encoder.out_channels[2:]), FPN_CHANNELS, extra_blocks=LastLevelMaxPool())
        self.out_channels = FPN_CHANNELS

    def forward(self, x: torch.Tensor) -> OrderedDict:
        return self.pyramid(self.body(x))

    def pyramid(self, features: list) -> OrderedDict:
        """The FPN on the encoder's strides 4-32 (forward's list: levels DETECTION_LEVELS)."""
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(features[2:])))


# The encoder levels (DenseEncoder.forward's list: input, strides 2-32) the FPN reads; cached frozen maps
# keep only these.
DETECTION_LEVELS = (2, 3, 4, 5)


def detect_from_backbone_maps(model: nn.Module, maps: list[torch.Tensor], size: int, targets: list | None = None):
    """What `model(chips, targets)` computes for size x size chips, from the frozen backbone's cached maps
    (rsbench.evaluate.dense_cache): the loss dict when training, else the detections. The detector's
    transform is the identity on these chips (normalized, chip-sized: no rescaling, no re-normalizing)."""
    from torchvision.models.detection.image_list import ImageList

    encoder = model.backbone.body
    features = model.backbone.pyramid(encoder.from_backbone_maps(maps, DETECTION_LEVELS, (size, size)))
    # The RPN reads only the batch's padded size from the image tensor: a zero-channel stand-in.
    images = ImageList(maps[0].new_zeros((len(maps[0]), 0, size, size)), [(size, size)] * len(maps[0]))
    proposals, rpn_losses = model.rpn(images, features, targets)
    detections, roi_losses = model.roi_heads(features, proposals, images.image_sizes, targets)
    return {**rpn_losses, **roi_losses} if model.training else detections


def build_detector(encoder: DenseEncoder, num_classes: int, size: int, in_chans: int) -> nn.Module:
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

    n = proposals_for(size)
    # Inputs arrive normalized and chip-sized: the transform must neither rescale nor re-normalize them.
    return FasterRCNN(
        FPNBackbone(encoder),
        rpn_anchor_generator=AnchorGenerator(ANCHOR_SIZES, ASPECT_RATIOS),
        min_size=size,
        max_size=size,
        image_mean=[0.0] * in_chans,
        image_std=[1.0] * in_chans,
        rpn_pre_nms_top_n_train=2 * n,
        rpn_post_nms_top_n_train=2 * n,
        rpn_pre_nms_top_n_test=n,
        rpn_post_nms_top_n_test=n,
        box_batch_size_per_image=ROI_SAMPLES,
        box_detections_per_img=300,
        box_head=TwoMLPHead(FPN_CHANNELS * 7 * 7, BOX_HEAD_WIDTH),
        box_predictor=FastRCNNPredictor(BOX_HEAD_WIDTH, num_classes + 1),
    )


def match_detections(preds: list[dict], targets: list[dict]) -> list[dict]:
    """COCO matching of every test image (rsbench.metrics.detection_ap), kept up to MAX_DETECTIONS[-1] per
    image and class: what the per-example file stores and every AP is computed from."""
    return [
        match_image(
            p["boxes"].numpy(),
            p["scores"].numpy(),
            p["labels"].numpy(),
            t["boxes"].numpy(),
            t["labels"].numpy(),
            max_dets=MAX_DETECTIONS[-1],
        )
        for p, t in zip(preds, targets)
    ]


def detection_metrics(matches: list[dict]) -> dict[str, float]:
    """COCO mAP@[.5:.95], AP50 and AP75 at COCO's 100 detections per image (the headline), and mAP with up to
    1000 (dense scenes can hold more objects than COCO's cap). Equal to pycocotools (tests/test_detection_ap)."""
    at100 = coco_ap(matches, max_dets=MAX_DETECTIONS[1])
    at1000 = coco_ap(matches, max_dets=MAX_DETECTIONS[-1])
    return {
        "map_50_95": float(at100["map_50_95"]),
        "ap50": float(at100["ap50"]),
        "ap75": float(at100["ap75"]),
        "map_50_95_maxdet1000": float(at1000["map_50_95"]),
    }


def window_detections(model: nn.Module, image: np.ndarray, rw: ArrayWindow, size: int, norm: Normalization, device):
    """`detect(start, windows)` for predict_image: the model on the windows read from `image`."""

    def detect(start: int, batch: list[ArrayWindow]) -> list[dict]:
        x = [
            read_window(image, ArrayWindow(rw.row + w.row, rw.col + w.col, w.height, w.width), size, norm).to(device)
            for w in batch
        ]
        return model(x)

    return detect


def cached_detections(model: nn.Module, maps: BackboneMaps, first: int, size: int, device):
    """`detect(start, windows)` for predict_image from cached maps whose rows from `first` are the region's
    windows in grid order (datasets.samples.region_windows)."""

    def detect(start: int, batch: list[ArrayWindow]) -> list[dict]:
        rows = maps.rows(first + start, first + start + len(batch))
        return detect_from_backbone_maps(model, [m.to(device) for m in rows], size)

    return detect


@torch.inference_mode()
def predict_image(
    detect: Callable[[int, list[ArrayWindow]], list[dict]], region: Region, size: int, batch_size: int
) -> dict:
    """Detections on one whole region: per-tile predictions, which `detect(index of the first, windows in
    region coordinates)` gives (window_detections, cached_detections), offset into region coordinates and
    merged."""
    rw = region.window
    windows = grid_windows(rw.height, rw.width, size, overlap_stride(size))
    tiles = []
    for start in range(0, len(windows), batch_size):
        batch = windows[start : start + batch_size]
        for w, out in zip(batch, detect(start, batch)):
            boxes = out["boxes"].float().cpu()
            # Boxes reaching into the zero padding of an edge tile stop at the image border.
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w.width)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, w.height)
            tiles.append((w, boxes, out["scores"].float().cpu(), out["labels"].cpu()))
    boxes, scores, labels = merge_tile_detections(tiles, NMS_IOU)
    top = scores.argsort(descending=True)[: MAX_DETECTIONS[-1]]  # what COCO evaluation would keep anyway
    return {"boxes": boxes[top], "scores": scores[top], "labels": labels[top]}


def _load(data: DetectionData, console: Console) -> tuple[list, list, list]:
    images, boxes, labels = [], [], []
    with progress_bar(console) as prog:
        for i in prog.track(range(len(data.items)), description=f"reading {data.name}"):
            img, b, lab = data.read(i)
            if images and img.shape[0] != images[0].shape[0]:
                raise DataError(
                    f"image {data.items[i].image} has {img.shape[0]} band(s) but "
                    f"{data.items[0].image} has {images[0].shape[0]}"
                )
            images.append(img)
            boxes.append(b)
            labels.append(lab)
    return images, boxes, labels


def _data(cfg: EvaluateConfig, path: Path) -> DetectionData:
    return load_detection_data(path, cfg.adapter, cfg.classes, cfg.options, cfg.dataset_name)


@contextmanager
def loss_mode(model: nn.Module) -> Iterator[None]:
    """torchvision's detectors return their losses only in training mode: the validation loss (computed in eval
    mode, without gradients) switches it on for the call. Frozen parts stay in eval mode (DenseEncoder.train)."""
    was = model.training
    model.train()
    try:
        yield
    finally:
        model.train(was)


def _loss(model: nn.Module, batch) -> torch.Tensor:
    images, targets = batch
    with loss_mode(model):
        return sum(model(images, targets).values())


def _cached_loss(model: nn.Module, batch, size: int) -> torch.Tensor:
    maps, targets = batch
    with loss_mode(model):
        return sum(detect_from_backbone_maps(model, [m.float() for m in maps], size, targets).values())


@register_task("detection", protocols=("frozen", "finetune"))
def run_detection(cfg: EvaluateConfig, console: Console) -> list[dict]:
    check_metric(cfg, list(METRICS))
    data = _data(cfg, cfg.data)
    test = _data(cfg, cfg.test_data) if cfg.test_data is not None else None
    check_test_classes(cfg, data, test)
    images, boxes, labels = _load(data, console)
    n_pool = len(images)
    if test is not None:
        more = _load(test, console)
        images, boxes, labels = images + more[0], boxes + more[1], labels + more[2]
    in_chans = images[0].shape[0]
    init = resolve_dense_init(cfg, in_chans, console)
    size = cfg.image_size or init.image_size
    check_input_size(size)
    base = base_fields(
        cfg,
        data.name,
        init,
        size,
        len(data.classes),
        f"none ({size}x{size} chips, overlap {CHIP_OVERLAP}; tiled inference merged by NMS)",
    )
    paths = [str(it.image) for it in data.items] + ([str(it.image) for it in test.items] if test is not None else [])
    headline = cfg.metric or headline_metric("detection", list(METRICS))
    cells = _Cells(
        cfg,
        data,
        init,
        images,
        n_pool,
        paths,
        size,
        cfg.lr or DEFAULT_LR,
        console,
        boxes,
        labels,
    )
    return run_cells(cfg, cells, base, headline, data.classes)


@dataclass
class _Cells(DenseCells):
    """Detection on the evaluation driver: Faster R-CNN trained on chips, scored on whole test regions."""

    boxes: list[np.ndarray]
    labels: list[np.ndarray]

    def targets(self, seed: int, test_regions: list[Region]) -> list[dict]:
        targets = []
        for r in test_regions:
            b, lab = clip_boxes(self.boxes[r.scene], self.labels[r.scene], r.window)
            targets.append({"boxes": torch.from_numpy(b), "labels": torch.from_numpy(lab).long() + 1})
        if not any(len(t["boxes"]) for t in targets):
            raise DataError(f"the test split of seed {seed} holds no boxes; use more images or --test-data")
        return targets

    def run(self, protocol: str, split: SeedSplit, selected: list[Region], seed: int, fields) -> CellResult:
        cfg, data, init, size, lr, device = self.cfg, self.data, self.init, self.size, self.lr, self.device
        norm, test_regions, in_chans = split.context["norm"], split.test, self.images[0].shape[0]
        L.seed_everything(seed, verbose=False)
        # Fine-tuning keeps BatchNorm statistics frozen: detection batches hold few chips.
        encoder = build_dense_encoder(split.context["init"], size).freeze(weights=protocol == "frozen", norm_stats=True)
        model = build_detector(encoder, len(data.classes), size, in_chans).to(device)
        head = [p for n, p in model.named_parameters() if not n.startswith("backbone.body.")]
        cache, test_maps = {}, None
        # The held-out regions' chips: a tuning trial's validation loss (split.test is then validation).
        held_out = DetectionChips(self.images, self.boxes, self.labels, test_regions, size, norm, augment=False)
        if self.uses_cache(protocol):
            chips = DetectionChips(self.images, self.boxes, self.labels, selected, size, norm, augment=False)
            seed_init = split.context["init"]
            train_maps = self.backbone_maps(encoder, seed_init, chips.windows, norm, DETECTION_LEVELS, "train chips")
            test_windows = region_windows(test_regions, size)
            test_maps = self.backbone_maps(encoder, seed_init, test_windows, norm, DETECTION_LEVELS, "test windows")
            cache = cache_fields(train_maps, test_maps)
            samples, collate = CachedSamples(train_maps, chips.target), collate_listed_targets
            val = CachedSamples(test_maps, held_out.target)  # the same windows, in the same order
            loss, augment = partial(_cached_loss, size=size), FROZEN_CACHE_AUGMENT
        else:
            chips = DetectionChips(self.images, self.boxes, self.labels, selected, size, norm)
            samples, collate, loss, augment = chips, collate_detection, _loss, "flips, rot90"
            val = held_out
        res = self.fit(model, loss, samples, collate, param_groups(encoder, head, lr), val)
        start = time.perf_counter()
        model.eval()
        firsts = np.cumsum([0] + [len(region_windows([r], size)) for r in test_regions])
        with progress_bar(self.console) as prog:
            preds = [
                predict_image(
                    cached_detections(model, test_maps, int(first), size, device)
                    if test_maps is not None
                    else window_detections(model, self.images[r.scene], r.window, size, norm, device),
                    r,
                    size,
                    cfg.batch_size,
                )
                for r, first in zip(prog.track(test_regions, description=f"predicting {protocol} seed {seed}"), firsts)
            ]
        matches = match_detections(preds, split.context["targets"])
        metrics = detection_metrics(matches)
        hparams = {
            "detector": "faster_rcnn_fpn",
            **fit_hparams(cfg, res),
            "lr": lr,
            "backbone_lr": lr * BACKBONE_LR_SCALE if protocol == "finetune" else None,
            "optimizer": "adamw",
            "schedule": "cosine per step",
            "chips": len(chips),
            "augment": augment,
            "train_boxes": chips.n_boxes(),
            "anchor_sizes": [a[0] for a in ANCHOR_SIZES],
            "nms_iou_merge": NMS_IOU,
            "max_detections": list(MAX_DETECTIONS),
            "proposals": proposals_for(size),
            "roi_samples": ROI_SAMPLES,
            "box_head_width": BOX_HEAD_WIDTH,
        }
        cell_fields = {
            "eval_images_per_s": None,
            "feature_dim": encoder.feature_dim,
            "hparams": hparams,
            "fit_time_s": round(res.fit_time_s, 3),
            "eval_time_s": round(time.perf_counter() - start, 3),
            **cache,
        }
        state = model.state_dict()
        if protocol == "frozen":  # the backbone is the init's; keep what was trained
            state = {k: v for k, v in state.items() if not k.startswith("backbone.body.backbone.")}
        state = {
            "state_dict": state,
            "classes": data.classes,
            "arch": init.arch,
            "in_chans": in_chans,
            "image_size": size,
            "normalization": norm.to_dict(),
            "protocol": protocol,
        }
        records = [to_record(m) for m in matches]
        columns = {
            "index": np.arange(len(test_regions)),
            "path": [self.paths[r.scene] for r in test_regions],
            **{c: [rec[c] for rec in records] for c in ("scores", "labels", "tp", "ignore", "gt_labels")},
        }
        return CellResult(
            metrics,
            cell_fields,
            state,
            Predictions(
                "detection",
                columns,
                {"max_dets_stored": MAX_DETECTIONS[-1], "labels": "1-based class ids (0 = background)"},
            ),
        )
