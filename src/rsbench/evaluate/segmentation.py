"""Semantic segmentation: an init's multi-scale features + an smp decoder (FPN, UPerNet, U-Net) or a linear
head, trained on random crops with a frozen or fine-tuned backbone, scored by sliding-window inference
over whole test images (or test regions of a single large image)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn

from rsbench.contracts.evaluate_config import EvaluateConfig
from rsbench.contracts.results import headline_metric
from rsbench.data.normalization import Normalization
from rsbench.errors import ConfigError, DataError
from rsbench.evaluate.datasets import SegmentationData, load_segmentation_data
from rsbench.evaluate.datasets.samples import (
    CHIP_OVERLAP,
    FixedCrops,
    SegmentationCrops,
    overlap_stride,
    read_window,
    region_windows,
)
from rsbench.evaluate.datasets.tiling import ArrayWindow, Region, grid_windows
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
from rsbench.evaluate.dense_cache import FROZEN_CACHE_AUGMENT, BackboneMaps, CachedSamples, cache_fields
from rsbench.evaluate.driver import CellResult, Predictions, SeedSplit, run_cells
from rsbench.evaluate.tasks import register_task
from rsbench.progress import progress_bar

DECODERS = ("fpn", "upernet", "unet", "linear")
# The encoder levels (indices into DenseEncoder.forward's list: the input, then strides 2-32) each smp decoder
# reads; the cache of frozen maps keeps only these.
HEAD_LEVELS = {"fpn": (2, 3, 4, 5), "upernet": (2, 3, 4, 5), "unet": (1, 2, 3, 4, 5), "linear": (5,)}
DEFAULT_LR = 1e-3


class SegmentationNet(nn.Module):
    def __init__(self, encoder: DenseEncoder, decoder: str, num_classes: int):
        super().__init__()
        from segmentation_models_pytorch.base import SegmentationHead
        from segmentation_models_pytorch.base import initialization as smp_init

        self.encoder, self.decoder_name = encoder, decoder
        ch = encoder.out_channels
        if decoder == "fpn":
            from segmentation_models_pytorch.decoders.fpn.decoder import FPNDecoder

            self.decoder = FPNDecoder(ch, encoder_depth=5)
            self.head = SegmentationHead(self.decoder.out_channels, num_classes, upsampling=4)
        elif decoder == "upernet":
            from segmentation_models_pytorch.decoders.upernet.decoder import UPerNetDecoder

            self.decoder = UPerNetDecoder(ch, encoder_depth=5, decoder_channels=256)
            self.head = SegmentationHead(256, num_classes, upsampling=4)
        elif decoder == "unet":
            from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder

            self.decoder = UnetDecoder(ch, decoder_channels=(256, 128, 64, 32, 16), n_blocks=5)
            self.head = SegmentationHead(16, num_classes)
        elif decoder == "linear":
            # A 1x1 conv on the coarsest map, upsampled: what the backbone alone resolves.
            self.decoder = nn.Identity()
            self.head = nn.Conv2d(ch[-1], num_classes, kernel_size=1)
        else:
            raise ConfigError(f"unknown decoder '{decoder}' (available: {', '.join(DECODERS)})")
        if decoder != "linear":
            smp_init.initialize_decoder(self.decoder)
            smp_init.initialize_head(self.head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encoder(x), x.shape[-2:])

    def decode(self, features: list, size: tuple[int, int]) -> torch.Tensor:
        """Logits at `size` from the encoder's maps (DenseEncoder.forward's list)."""
        if self.decoder_name == "linear":
            return F.interpolate(self.head(features[-1]), size=size, mode="bilinear", align_corners=False)
        return self.head(self.decoder(features))

    def from_backbone_maps(self, maps: list[torch.Tensor], size: int) -> torch.Tensor:
        """forward of size x size inputs, from the frozen backbone's cached maps (rsbench.evaluate.dense_cache)."""
        levels = HEAD_LEVELS[self.decoder_name]
        return self.decode(self.encoder.from_backbone_maps(maps, levels, (size, size)), (size, size))

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.decoder.parameters()) + list(self.head.parameters())


def class_slug(name: str) -> str:
    """'Land (unpaved area)' -> 'land_unpaved_area': metric names stay lower-case and stable."""
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_") or "class"


def segmentation_metrics(
    preds: list[torch.Tensor], targets: list[torch.Tensor], classes: list[str], ignore_index: int
) -> dict[str, float]:
    """`miou` (mean over classes present in prediction or truth), `pixel_accuracy` and `iou_<class>`;
    pixels equal to ignore_index in the truth count nowhere. Absent classes get no iou_<class> entry."""
    from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

    k = len(classes)
    iou = MulticlassJaccardIndex(num_classes=k, average="none", ignore_index=ignore_index, zero_division=float("nan"))
    acc = MulticlassAccuracy(num_classes=k, average="micro", ignore_index=ignore_index)
    for p, t in zip(preds, targets):
        iou.update(p.reshape(-1), t.reshape(-1))
        acc.update(p.reshape(-1), t.reshape(-1))
    per_class = iou.compute()
    present = ~torch.isnan(per_class)
    out = {
        "miou": float(per_class[present].mean()) if present.any() else float("nan"),
        "pixel_accuracy": float(acc.compute()),
    }
    for name, value, ok in zip(metric_names(classes), per_class.tolist(), present.tolist()):
        if ok:
            out[name] = float(value)
    return out


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int) -> np.ndarray:
    """K x K pixel counts (rows = truth, columns = prediction) of one test region; ignored pixels excluded."""
    t, p = target.reshape(-1), pred.reshape(-1)
    keep = (t != ignore_index) & (t >= 0) & (t < num_classes)
    counts = torch.bincount(t[keep] * num_classes + p[keep], minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).numpy().astype(np.int64)


def metric_names(classes: list[str]) -> list[str]:
    """`iou_<class>` per class, lower-case; numbered when two names would collide."""
    slugs = [class_slug(c) for c in classes]
    if len(set(slugs)) != len(slugs):
        slugs = [f"{i}_{s}" for i, s in enumerate(slugs)]
    return [f"iou_{s}" for s in slugs]


def window_logits(model: nn.Module, image: np.ndarray, rw: ArrayWindow, size: int, norm: Normalization, device):
    """`logits(start, windows)` for predict_region: the model on the windows read from `image`."""

    def logits(start: int, batch: list[ArrayWindow]) -> torch.Tensor:
        return model(torch.stack([read_window(image, _shift(w, rw), size, norm) for w in batch]).to(device))

    return logits


def cached_logits(model: SegmentationNet, maps: BackboneMaps, first: int, size: int, device):
    """`logits(start, windows)` for predict_region: the head on cached maps whose rows from `first` are the
    region's windows in grid order (datasets.samples.region_windows)."""

    def logits(start: int, batch: list) -> torch.Tensor:
        rows = maps.rows(first + start, first + start + len(batch))
        return model.from_backbone_maps([m.to(device) for m in rows], size)

    return logits


@torch.inference_mode()
def predict_region(
    logits: Callable[[int, list[ArrayWindow]], torch.Tensor],
    region: Region,
    size: int,
    num_classes: int,
    batch_size: int,
) -> torch.Tensor:
    """Class map (H x W int64) of one region: softmax averaged over overlapping windows, whose logits
    `logits(index of the first, windows in region coordinates)` gives (window_logits, cached_logits)."""
    rw = region.window
    probs = torch.zeros((num_classes, rw.height, rw.width))
    count = torch.zeros((rw.height, rw.width))
    windows = grid_windows(rw.height, rw.width, size, overlap_stride(size))
    for start in range(0, len(windows), batch_size):
        batch = windows[start : start + batch_size]
        out = logits(start, batch).float().softmax(1).cpu()
        for w, p in zip(batch, out):
            probs[:, w.row : w.row + w.height, w.col : w.col + w.width] += p[:, : w.height, : w.width]
            count[w.row : w.row + w.height, w.col : w.col + w.width] += 1
    return (probs / count).argmax(0)


def _shift(w: ArrayWindow, rw: ArrayWindow) -> ArrayWindow:
    return ArrayWindow(rw.row + w.row, rw.col + w.col, w.height, w.width)


def _load(data: SegmentationData, console: Console) -> tuple[list[np.ndarray], list[np.ndarray]]:
    images, masks = [], []
    with progress_bar(console) as prog:
        for i in prog.track(range(len(data.pairs)), description=f"reading {data.name}"):
            img, mask = data.read(i)
            if images and img.shape[0] != images[0].shape[0]:
                raise DataError(
                    f"image {data.pairs[i][0]} has {img.shape[0]} band(s) but {data.pairs[0][0]} "
                    f"has {images[0].shape[0]}"
                )
            images.append(img)
            masks.append(mask)
    return images, masks


def _data(cfg: EvaluateConfig, path: Path, test: bool = False) -> SegmentationData:
    return load_segmentation_data(path, cfg.adapter, cfg.classes, cfg.options, cfg.dataset_name, test=test)


@register_task("segmentation", protocols=("frozen", "finetune"))
def run_segmentation(cfg: EvaluateConfig, console: Console) -> list[dict]:
    if cfg.decoder not in DECODERS:
        raise ConfigError(f"invalid config key 'decoder': '{cfg.decoder}' (available: {', '.join(DECODERS)})")
    data = _data(cfg, cfg.data)
    test = _data(cfg, cfg.test_data, test=True) if cfg.test_data is not None else None
    check_test_classes(cfg, data, test)
    slugs = metric_names(data.classes)
    check_metric(cfg, ["miou", "pixel_accuracy", *slugs])
    images, masks = _load(data, console)
    n_pool = len(images)
    if test is not None:
        more = _load(test, console)
        images, masks = images + more[0], masks + more[1]
    init = resolve_dense_init(cfg, images[0].shape[0], console)
    size = cfg.image_size or init.image_size
    check_input_size(size)
    paths = [str(p[0]) for p in data.pairs] + ([str(p[0]) for p in test.pairs] if test is not None else [])
    base = base_fields(
        cfg, data.name, init, size, len(data.classes), f"none (random {size}x{size} crops; sliding-window inference)"
    )
    headline = cfg.metric or headline_metric("segmentation", ["miou"])
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
        masks,
    )
    return run_cells(cfg, cells, base, headline, data.classes)


@dataclass
class _Cells(DenseCells):
    """Segmentation on the evaluation driver: a decoder trained on crops, scored by sliding windows."""

    masks: list[np.ndarray]

    def targets(self, seed: int, test_regions: list[Region]) -> list[torch.Tensor]:
        return [torch.from_numpy(_crop(self.masks[r.scene], r).astype(np.int64)) for r in test_regions]

    def run(self, protocol: str, split: SeedSplit, selected: list[Region], seed: int, fields) -> CellResult:
        cfg, data, init, size, lr, device = self.cfg, self.data, self.init, self.size, self.lr, self.device
        norm, test_regions, targets = split.context["norm"], split.test, split.context["targets"]
        L.seed_everything(seed, verbose=False)
        encoder = build_dense_encoder(split.context["init"], size).freeze(
            weights=protocol == "frozen", norm_stats=False
        )
        model = SegmentationNet(encoder, cfg.decoder, len(data.classes)).to(device)
        groups = param_groups(encoder, model.head_parameters(), lr)
        loss = partial(_loss, ignore_index=data.ignore_index)
        cache, test_maps = {}, None
        # The held-out regions' grid windows: a tuning trial's validation loss (split.test is then validation).
        held_out = FixedCrops(self.images, self.masks, test_regions, size, norm, data.ignore_index)
        if self.uses_cache(protocol):
            crops = FixedCrops(self.images, self.masks, selected, size, norm, data.ignore_index)
            levels = HEAD_LEVELS[cfg.decoder]
            train_maps = self.backbone_maps(encoder, split.context["init"], crops.windows, norm, levels, "train crops")
            test_maps = self.backbone_maps(
                encoder, split.context["init"], region_windows(test_regions, size), norm, levels, "test windows"
            )
            cache = cache_fields(train_maps, test_maps)
            samples, augment = CachedSamples(train_maps, crops.mask), FROZEN_CACHE_AUGMENT
            val = CachedSamples(test_maps, held_out.mask)  # the same windows, in the same order
            loss = partial(_cached_loss, ignore_index=data.ignore_index, size=size)
        else:
            samples = SegmentationCrops(self.images, self.masks, selected, size, norm, data.ignore_index)
            val, augment = held_out, "random crop, flips, rot90"
        res = self.fit(model, loss, samples, None, groups, val)
        start = time.perf_counter()
        model.eval()
        firsts = np.cumsum([0] + [len(region_windows([r], size)) for r in test_regions])
        with progress_bar(self.console) as prog:
            preds = [
                predict_region(
                    cached_logits(model, test_maps, int(first), size, device)
                    if test_maps is not None
                    else window_logits(model, self.images[r.scene], r.window, size, norm, device),
                    r,
                    size,
                    len(data.classes),
                    cfg.batch_size,
                )
                for r, first in zip(prog.track(test_regions, description=f"predicting {protocol} seed {seed}"), firsts)
            ]
        metrics = segmentation_metrics(preds, targets, data.classes, data.ignore_index)
        confusions = [confusion_matrix(p, t, len(data.classes), data.ignore_index) for p, t in zip(preds, targets)]
        hparams = {
            "decoder": cfg.decoder,
            **fit_hparams(cfg, res),
            "lr": lr,
            "backbone_lr": lr * BACKBONE_LR_SCALE if protocol == "finetune" else None,
            "optimizer": "adamw",
            "schedule": "cosine per step",
            "crops_per_epoch": len(samples),
            "augment": augment,
            "inference": f"sliding window {size}px, overlap {CHIP_OVERLAP}",
            "ignore_index": data.ignore_index,
        }
        cell_fields = {
            "eval_images_per_s": None,
            "feature_dim": encoder.feature_dim,
            "hparams": hparams,
            "fit_time_s": round(res.fit_time_s, 3),
            "eval_time_s": round(time.perf_counter() - start, 3),
            **cache,
        }
        state = {
            "state_dict": _trained_state(model, protocol),
            "classes": data.classes,
            "decoder": cfg.decoder,
            "arch": init.arch,
            "in_chans": init.in_chans,
            "image_size": size,
            "normalization": norm.to_dict(),
            "protocol": protocol,
        }
        columns = {
            "index": np.arange(len(test_regions)),
            "path": [self.paths[r.scene] for r in test_regions],
            "confusion": np.stack([c.reshape(-1) for c in confusions]),
            "window": [[r.window.row, r.window.col, r.window.height, r.window.width] for r in test_regions],
        }
        return CellResult(
            metrics,
            cell_fields,
            state,
            Predictions("segmentation", columns, {"metric_names": metric_names(data.classes)}),
        )


def _loss(net: nn.Module, batch, ignore_index: int) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(net(x), y, ignore_index=ignore_index)


def _cached_loss(net: SegmentationNet, batch, ignore_index: int, size: int) -> torch.Tensor:
    maps, y = batch
    return F.cross_entropy(net.from_backbone_maps([m.float() for m in maps], size), y, ignore_index=ignore_index)


def _crop(mask: np.ndarray, region: Region) -> np.ndarray:
    w = region.window
    return mask[w.row : w.row + w.height, w.col : w.col + w.width]


def _trained_state(model: nn.Module, protocol: str) -> dict:
    """Frozen protocol: only what was trained (decoder, head, ViT neck); fine-tune: the whole network."""
    state = model.state_dict()
    if protocol == "frozen":
        state = {k: v for k, v in state.items() if not k.startswith("encoder.backbone.")}
    return state
