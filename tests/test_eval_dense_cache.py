"""Frozen dense heads on cached backbone maps (rsbench.evaluate.dense_cache) equal the uncached computation
on the same fixed crops, up to float16 rounding of the maps: training losses, logits, predictions; and the
cache is hit, and missed when what it depends on changes. Real data: Dubai crops, NEON OSBS_029."""

from __future__ import annotations

import io
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from rich.console import Console

from rsbench.data.normalization import Normalization
from rsbench.evaluate import EvaluateConfig, evaluate
from rsbench.evaluate.datasets import load_detection_data, load_segmentation_data
from rsbench.evaluate.datasets.samples import (
    DetectionChips,
    FixedCrops,
    collate_detection,
    read_window,
    region_windows,
)
from rsbench.evaluate.datasets.tiling import ArrayWindow, Region, whole_images
from rsbench.evaluate.dense import build_dense_encoder, fit, param_groups, resolve_dense_init
from rsbench.evaluate.dense_cache import CachedSamples, collate_listed_targets, extract_maps, image_digests
from rsbench.evaluate.detection import DETECTION_LEVELS, build_detector, detect_from_backbone_maps
from rsbench.evaluate.detection import _cached_loss as det_cached_loss
from rsbench.evaluate.detection import _loss as det_loss
from rsbench.evaluate.segmentation import (
    HEAD_LEVELS,
    SegmentationNet,
    cached_logits,
    predict_region,
    window_logits,
)
from rsbench.evaluate.segmentation import _cached_loss as seg_cached_loss
from rsbench.evaluate.segmentation import _loss as seg_loss

CPU = torch.device("cpu")
SIZE = 64


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


@pytest.fixture(scope="module")
def dubai_small(dubai_excerpt) -> Path:
    """Two real Dubai pairs cut to 160x128."""
    return dubai_excerpt("dubai_small", 2, 160, 128)


def _init(backbone: str = "resnet18", image_size: int | None = None):
    cfg = EvaluateConfig(
        task="segmentation", data=Path("."), init="random", backbone=backbone, image_size=image_size, protocol="frozen"
    )
    return resolve_dense_init(cfg, 3, quiet())


def _seg_pairs(root: Path, task: dict) -> tuple[list[np.ndarray], list[np.ndarray]]:
    data = load_segmentation_data(root, "masks", task["classes"], task["options"])
    pairs = [data.read(i) for i in range(len(data.pairs))]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _norm(images: list[np.ndarray]) -> Normalization:
    stack = np.concatenate([img.reshape(img.shape[0], -1) for img in images], axis=1).astype(np.float64)
    return Normalization(stack.mean(1).tolist(), stack.std(1).tolist())


def _seg_net(init, decoder: str, n_classes: int) -> SegmentationNet:
    L.seed_everything(0, verbose=False)
    return SegmentationNet(build_dense_encoder(init, SIZE).freeze(), decoder, n_classes)


def test_cached_segmentation_trains_and_predicts_like_the_uncached_path(
    dubai_small: Path, dubai_task: dict, tmp_path: Path
):
    images, masks = _seg_pairs(dubai_small, dubai_task)
    norm, init = _norm(images), _init()
    train, test = [Region(0, ArrayWindow(0, 0, 64, 112))], [Region(1, ArrayWindow(16, 8, 64, 112))]
    crops = FixedCrops(images, masks, train, SIZE, norm, 255)
    digests = image_digests(images)

    uncached = _seg_net(init, "fpn", len(dubai_task["classes"]))
    groups = param_groups(uncached.encoder, uncached.head_parameters(), 1e-3)
    losses_uncached = fit(uncached, partial(seg_loss, ignore_index=255), crops, None, groups, 2, 1, CPU).losses

    cached = _seg_net(init, "fpn", len(dubai_task["classes"]))  # the same weights: the same seed
    extract = partial(extract_maps, cached.encoder, init.identity, images, digests)
    train_maps = extract(crops.windows, SIZE, norm, HEAD_LEVELS["fpn"], tmp_path, 4, CPU, quiet(), "train")
    assert len(train_maps) == len(crops) == 2 and not train_maps.cached  # 64 x 112 px: 2 windows, stride 48
    assert train_maps.maps[0].dtype == torch.float16 and train_maps.maps[0].shape == (2, 64, 16, 16)
    samples = CachedSamples(train_maps, crops.mask)
    groups = param_groups(cached.encoder, cached.head_parameters(), 1e-3)
    loss = partial(seg_cached_loss, ignore_index=255, size=SIZE)
    losses_cached = fit(cached, loss, samples, None, groups, 2, 1, CPU).losses
    assert len(losses_cached) == len(losses_uncached) == 4
    torch.testing.assert_close(torch.tensor(losses_cached), torch.tensor(losses_uncached), rtol=2e-3, atol=1e-4)

    # Inference on the test image: logits of the same network, and the trained networks' class maps.
    windows = region_windows(test, SIZE)
    test_maps = extract(windows, SIZE, norm, HEAD_LEVELS["fpn"], tmp_path, 4, CPU, quiet(), "test")
    uncached.eval(), cached.eval()
    with torch.no_grad():
        x = torch.stack([read_window(images[s], w, SIZE, norm) for s, w in windows])
        torch.testing.assert_close(
            uncached.from_backbone_maps(test_maps.rows(0, len(windows)), SIZE), uncached(x), rtol=1e-2, atol=2e-3
        )
    pred_uncached = predict_region(
        window_logits(uncached, images[1], test[0].window, SIZE, norm, CPU), test[0], SIZE, 6, 4
    )
    pred_cached = predict_region(cached_logits(cached, test_maps, 0, SIZE, CPU), test[0], SIZE, 6, 4)
    assert pred_cached.shape == (64, 112)
    assert (pred_cached == pred_uncached).float().mean() > 0.995

    # The cache: hit on the same inputs (same tensors), missed when the normalization changes.
    again = extract(crops.windows, SIZE, norm, HEAD_LEVELS["fpn"], tmp_path, 4, CPU, quiet(), "train")
    assert again.cached and again.key == train_maps.key and torch.equal(again.maps[2], train_maps.maps[2])
    shifted = Normalization([m + 1 for m in norm.mean], list(norm.std))
    other = extract(crops.windows, SIZE, shifted, HEAD_LEVELS["fpn"], tmp_path, 4, CPU, quiet(), "train")
    assert not other.cached and other.key != train_maps.key


@pytest.mark.parametrize(
    ("decoder", "backbone"),
    [("unet", "resnet18"), ("fpn", "vit")],  # fpn, upernet: levels 2-5; linear: 5
)
def test_every_decoder_reads_the_cached_levels(
    decoder: str, backbone: str, dubai_small: Path, dubai_task: dict, tmp_path: Path
):
    images, _ = _seg_pairs(dubai_small, dubai_task)
    norm = _norm(images)
    init = _init("vit_tiny_patch16_224", 32) if backbone == "vit" else _init()
    net = _seg_net(init, decoder, len(dubai_task["classes"])).eval()
    windows = region_windows(whole_images([images[0].shape[1:]]), SIZE)[:2]
    maps = extract_maps(
        net.encoder,
        init.identity,
        images,
        image_digests(images),
        windows,
        SIZE,
        norm,
        HEAD_LEVELS[decoder],
        tmp_path,
        4,
        CPU,
        quiet(),
        "w",
    )
    if backbone == "vit":  # the cache holds the last block; the (trained) pyramid runs on it
        assert len(maps.maps) == 1 and maps.maps[0].shape[-2:] == (4, 4)
    with torch.no_grad():
        x = torch.stack([read_window(images[s], w, SIZE, norm) for s, w in windows])
        torch.testing.assert_close(net.from_backbone_maps(maps.rows(0, 2), SIZE), net(x), rtol=1e-2, atol=2e-3)


def test_cached_detector_equals_the_uncached_one(shared_data: Path, tmp_path: Path):
    data = load_detection_data(shared_data / "detection" / "neon_tree_crowns", options={"single_class": "Tree"})
    osbs = next(i for i, it in enumerate(data.items) if it.image.stem == "OSBS_029")
    image, boxes, labels = data.read(osbs)
    norm, size, init = _norm([image]), 128, _init()
    region = [Region(0, ArrayWindow(0, 0, 224, 224))]  # 4 chips of 128 px, stride 96
    chips = DetectionChips([image], [boxes], [labels], region, size, norm, augment=False)
    assert len(chips) == 4 and chips.n_boxes() > 10

    def detector():
        L.seed_everything(0, verbose=False)
        enc = build_dense_encoder(init, size).freeze(weights=True, norm_stats=True)
        model = build_detector(enc, 1, size, 3)
        return model, [p for n, p in model.named_parameters() if not n.startswith("backbone.body.")]

    uncached, head = detector()
    losses_uncached = fit(
        uncached, det_loss, chips, collate_detection, param_groups(uncached.backbone.body, head, 1e-3), 1, 2, CPU
    ).losses
    cached, head = detector()
    maps = extract_maps(
        cached.backbone.body,
        init.identity,
        [image],
        image_digests([image]),
        chips.windows,
        size,
        norm,
        DETECTION_LEVELS,
        tmp_path,
        8,
        CPU,
        quiet(),
        "chips",
    )
    samples = CachedSamples(maps, chips.target)
    loss = partial(det_cached_loss, size=size)
    losses_cached = fit(
        cached, loss, samples, collate_listed_targets, param_groups(cached.backbone.body, head, 1e-3), 1, 2, CPU
    ).losses
    assert len(losses_cached) == len(losses_uncached) == 2
    torch.testing.assert_close(torch.tensor(losses_cached), torch.tensor(losses_uncached), rtol=1e-2, atol=1e-3)

    uncached.eval()
    with torch.no_grad():
        x = [chips[i][0] for i in range(4)]
        pyramid = uncached.backbone(torch.stack(x))
        encoder = uncached.backbone.body
        from_maps = uncached.backbone.pyramid(
            encoder.from_backbone_maps(maps.rows(0, 4), DETECTION_LEVELS, (size, size))
        )
        for level in pyramid:
            torch.testing.assert_close(from_maps[level], pyramid[level], rtol=1e-2, atol=2e-3)
        ref, got = uncached(x), detect_from_backbone_maps(uncached, maps.rows(0, 4), size)
    # Detections: the same top scores; each top box found again (near-tied scores may swap places).
    from torchvision.ops import box_iou

    for r, g in zip(ref, got):
        top = min(len(r["scores"]), len(g["scores"]), 10)
        assert top > 0
        torch.testing.assert_close(g["scores"][:top], r["scores"][:top], rtol=1e-2, atol=1e-3)
        assert (box_iou(r["boxes"][:top], g["boxes"][: 2 * top]).max(1).values > 0.9).all()


def test_frozen_runs_reuse_the_cache_and_record_it(dubai_small: Path, dubai_task: dict, tmp_path: Path):
    cfg = EvaluateConfig(
        task="segmentation",
        data=dubai_small,
        classes=dubai_task["classes"],
        options=dubai_task["options"],
        out=tmp_path,
        init="random",
        image_size=SIZE,
        seeds=[0],
        epochs=1,
        batch_size=8,
        test_fraction=0.5,
    )
    first, second = evaluate(cfg, console=quiet()), evaluate(cfg, console=quiet())
    for rows, cached in ((first, False), (second, True)):
        head = next(r for r in rows if r["headline"])
        assert head["features_cached"] is cached and head["extract_time_s"] > 0
        assert head["hparams"]["augment"].startswith("none (fixed overlapping grid crops")
    assert [r["value"] for r in first] == [r["value"] for r in second]
    assert first[0]["features_key"] == second[0]["features_key"]
    assert len(list((tmp_path / "features").glob("dense-*.pt"))) == 2  # train crops, test windows
