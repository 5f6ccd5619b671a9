"""Multi-scale feature maps from any init for the dense tasks, and how they train (rsbench.evaluate.training).

`DenseEncoder` has segmentation-models-pytorch's encoder interface: forward(x) returns maps at strides
1, 2, 4, 8, 16, 32 (x itself first) and `out_channels` their widths, so smp decoders and torchvision's
FPN plug onto it. CNNs (and hierarchical transformers) come through timm's `features_only` models with
the init's weights copied in; plain ViTs get ViTDet's simple feature pyramid on their last block.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader, Dataset

from rsbench.contracts.evaluate_config import EvaluateConfig
from rsbench.data.normalization import Normalization, band_stats
from rsbench.errors import ConfigError, DataError
from rsbench.evaluate import training
from rsbench.evaluate.datasets.spatial import read_georefs, spatial_split
from rsbench.evaluate.datasets.tiling import Region, select_fraction, split_regions, whole_images
from rsbench.evaluate.dense_cache import BackboneMaps, extract_maps, image_digests
from rsbench.evaluate.driver import SeedSplit
from rsbench.evaluate.features import resolve_device
from rsbench.evaluate.inits import Init, resolve_init
from rsbench.evaluate.splits import validation_split
from rsbench.models import backbone_info

PYRAMID_STRIDES = (4, 8, 16, 32)
WEIGHT_DECAY = 1e-4  # AdamW weight decay of decoders and detectors unless --weight-decay (or a tuning trial) sets it
# Fine-tuning moves the pretrained backbone this much slower than the freshly initialised head.
BACKBONE_LR_SCALE = 0.1


class SimpleFeaturePyramid(nn.Module):
    """ViTDet (Li et al. 2022): the last block's stride-p map, deconvolved / max-pooled to strides 4-32."""

    def __init__(self, dim: int, patch: int):
        super().__init__()
        self.levels, self.channels = nn.ModuleList(), []
        for stride in PYRAMID_STRIDES:
            layers: list[nn.Module] = []
            ch, factor = dim, patch / stride
            while factor >= 2:
                if layers:
                    layers += [nn.GroupNorm(1, ch), nn.GELU()]
                layers.append(nn.ConvTranspose2d(ch, ch // 2, kernel_size=2, stride=2))
                ch, factor = ch // 2, factor / 2
            while factor <= 0.5:
                layers.append(nn.MaxPool2d(2))
                factor *= 2
            self.levels.append(nn.Sequential(*layers))
            self.channels.append(ch)

    def forward(self, feat: torch.Tensor, size: tuple[int, int]) -> list[torch.Tensor]:
        out = []
        for stride, level in zip(PYRAMID_STRIDES, self.levels):
            y, target = level(feat), (size[0] // stride, size[1] // stride)
            if tuple(y.shape[-2:]) != target:  # patch sizes that are not powers of two (e.g. 14)
                y = F.interpolate(y, size=target, mode="bilinear", align_corners=False)
            out.append(y)
        return out


class DenseEncoder(nn.Module):
    def __init__(self, backbone: nn.Module, in_chans: int, feature_dim: int, neck: SimpleFeaturePyramid | None = None):
        super().__init__()
        self.backbone, self.neck, self.feature_dim = backbone, neck, feature_dim
        if neck is None:
            self.out_channels = list(backbone.out_channels)
        else:
            self.out_channels = [in_chans, 0, *neck.channels]
        self.frozen = False
        self.norm_frozen = False

    def freeze(self, weights: bool = True, norm_stats: bool = True) -> DenseEncoder:
        """`weights`: frozen protocol (backbone untouched). `norm_stats` alone: fine-tune with frozen
        BatchNorm statistics, the detection default where batches hold few images."""
        self.frozen, self.norm_frozen = weights, norm_stats
        for p in self.backbone.parameters():
            p.requires_grad_(not weights)
        return self.train(self.training)

    def train(self, mode: bool = True) -> DenseEncoder:
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        elif self.norm_frozen:
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            if self.neck is None:
                return list(self.backbone(x))
            feat = self._last_block(x)
        b, _, h, w = x.shape
        return [x, x.new_empty((b, 0, h // 2, w // 2)), *self.neck(feat, (h, w))]

    def _last_block(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)[-1]

    @torch.no_grad()
    def backbone_maps(self, x: torch.Tensor, levels: tuple[int, ...]) -> list[torch.Tensor]:
        """What the frozen backbone hands the trained parts (rsbench.evaluate.dense_cache caches it): a CNN's
        maps at `levels` (indices into forward's list, those the head reads), a ViT's last-block map."""
        if self.neck is None:
            maps = self.backbone(x)
            return [maps[i] for i in levels]
        return [self._last_block(x)]

    def from_backbone_maps(self, maps: list[torch.Tensor], levels: tuple[int, ...], size: tuple[int, int]) -> list:
        """forward's list for size-`size` inputs rebuilt from `backbone_maps` (the ViT neck runs here, it
        trains); a level the head does not read is a zero-channel map of its shape (decoders read shapes)."""
        b, (h, w) = maps[0].shape[0], size
        out = [maps[0].new_empty((b, 0, h >> i, w >> i)) for i in range(len(self.out_channels))]
        if self.neck is not None:
            return [*out[:2], *self.neck(maps[0], size)]
        for i, m in zip(levels, maps):
            out[i] = m
        return out

    def trainable_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(backbone parameters that train, neck parameters)."""
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        return backbone, list(self.neck.parameters()) if self.neck is not None else []


def _canonical(key: str) -> str:
    # features_only wrappers rename 'stages.0' to 'stages_0' or prefix 'model.'; compare modulo that.
    return key.removeprefix("model.").replace(".", "_")


def _copy_weights(src: nn.Module, dst: nn.Module, init: Init) -> None:
    source = {_canonical(k): v for k, v in src.state_dict().items()}
    target = dst.state_dict()
    missing = [k for k in target if _canonical(k) not in source]
    if missing:
        raise ConfigError(
            f"cannot map the weights of {init.name} onto {init.arch}'s feature maps "
            f"({len(missing)} parameters without a source, e.g. '{missing[0]}')"
        )
    try:
        dst.load_state_dict({k: source[_canonical(k)] for k in target}, strict=True)
    except RuntimeError as e:
        why = str(e).splitlines()[-1].strip()
        raise DataError(f"weights of {init.name} do not fit {init.arch}'s feature maps: {why}") from None


def build_dense_encoder(init: Init, image_size: int) -> DenseEncoder:
    """Multi-scale encoder carrying `init`'s weights, for inputs of image_size (a multiple of 32)."""
    pooled = init.build()
    info = backbone_info(pooled)
    dim = info.feature_dim
    if info.is_vit:  # plain ViT: one stride only
        if image_size != init.image_size:
            if not hasattr(pooled, "set_input_size"):
                raise ConfigError(f"{init.arch} cannot take {image_size} px inputs (built for {init.image_size})")
            pooled.set_input_size(img_size=(image_size, image_size))
        return DenseEncoder(pooled, init.in_chans, dim, SimpleFeaturePyramid(dim, info.feature_strides[0]))
    from segmentation_models_pytorch.encoders.timm_universal import TimmUniversalEncoder

    try:
        encoder = TimmUniversalEncoder(init.arch, pretrained=False, in_channels=init.in_chans, depth=5)
    except (ValueError, RuntimeError) as e:
        raise ConfigError(f"backbone '{init.arch}' gives no multi-scale feature maps for dense tasks ({e})") from None
    _copy_weights(pooled, encoder.model, init)
    return DenseEncoder(encoder, init.in_chans, dim)


NORMALIZATION_SOURCE = "train regions of each seed (per-band mean/std; test regions excluded)"


def resolve_dense_init(cfg: EvaluateConfig, in_chans: int, console: Console) -> Init:
    """The init for a dense task; --image-size sets the crop size, not the backbone's (CNNs take any size)."""
    init = resolve_init(cfg.model_copy(update={"image_size": None}), in_chans, console)
    if not getattr(init, "trainable", True):
        raise ConfigError(f"task '{cfg.task}' needs a network; --init {cfg.init} has no feature maps")
    return init


def dense_normalization(init: Init, images: list, train: list[Region]) -> Normalization:
    """The init's own input normalization when it has one (published weights), else the band statistics
    of this seed's train regions: test pixels never set the normalization."""
    own = getattr(init, "normalization", None)
    if own:
        return Normalization.from_dict(own)
    crops = (
        images[r.scene][:, r.window.row : r.window.row + r.window.height, r.window.col : r.window.col + r.window.width]
        for r in train
    )
    return Normalization.from_stats(band_stats(crops), NORMALIZATION_SOURCE)


def check_metric(cfg: EvaluateConfig, reported: list[str]) -> None:
    if cfg.metric is not None and cfg.metric not in reported:
        raise ConfigError(
            f"invalid config key 'metric': '{cfg.metric}' is not reported by task '{cfg.task}' ({', '.join(reported)})"
        )


def check_test_classes(cfg: EvaluateConfig, data, test) -> None:
    if test is not None and test.classes != data.classes:
        raise DataError(
            f"classes of {cfg.test_data} ({', '.join(test.classes)}) differ from those of "
            f"{cfg.data} ({', '.join(data.classes)})"
        )


def seed_regions(
    cfg: EvaluateConfig, shapes: list, n_pool: int, seed: int, size: int, paths: list[str]
) -> tuple[list, list, str, dict]:
    """(train regions, test regions, split description, the rows' split_spec) of one seed. Images [n_pool:]
    are the fixed --test-data set when there is one; otherwise the pool is split per seed into disjoint
    regions: whole images or grid cells (split: random), or blocks of block_m metres (split: spatial)."""
    if cfg.test_data is not None:
        test = [Region(n_pool + r.scene, r.window) for r in whole_images(shapes[n_pool:])]
        return whole_images(shapes[:n_pool]), test, "fixed (--test-data)", {"kind": "fixed"}
    if cfg.split == "spatial":
        assert cfg.block_m is not None  # EvaluateConfig requires it with split: spatial
        return spatial_split(shapes[:n_pool], read_georefs(paths[:n_pool]), cfg.block_m, cfg.test_fraction, seed)
    train, test, how = split_regions(shapes[:n_pool], cfg.test_fraction, seed, size)
    return train, test, how, {"kind": "random", "test_fraction": cfg.test_fraction, "seed": seed}


def base_fields(cfg: EvaluateConfig, dataset: str, init: Init, size: int, num_classes: int, resize: str) -> dict:
    """Result-row fields shared by every row of one dense-task evaluation (normalization is per seed)."""
    from rsbench.evaluate.results import row_patch_size

    return {
        "task": cfg.task,
        "dataset": cfg.dataset_name or dataset,
        "init": init.name,
        "init_kind": init.kind,
        "init_path": init.path,
        "backbone": init.arch,
        "num_classes": num_classes,
        "image_size": size,
        "patch_size": row_patch_size(cfg, init),
        "band_mapping": getattr(init, "band_mapping", None),
        "resize": resize,
        "k": None,
        "temperature": None,
        "weight_decay": weight_decay(cfg),
        "extract_time_s": None,
        "features_cached": None,
        "features_key": None,
        "data": str(cfg.data.resolve()),
        "test_data": str(cfg.test_data.resolve()) if cfg.test_data is not None else None,
    }


def seed_fields(init: Init, norm: Normalization, test_regions: list[Region], paths: list[str]) -> dict:
    """Row fields that change with the seed: the train split's normalization and the test split's id."""
    from rsbench.io import stable_hash

    test = [[r.scene, r.window.row, r.window.col, r.window.height, r.window.width] for r in test_regions]
    return {
        "normalization": norm.to_dict() | (init.band_info() if hasattr(init, "band_info") else {}),
        "test_split_id": stable_hash({"images": paths, "test": test}),
    }


@dataclass
class DenseCells:
    """The dense tasks on the evaluation driver (rsbench.evaluate.driver): per seed, test regions and the train
    regions' normalization; label fractions subset the train regions. Subclasses add `targets` and `run`."""

    cfg: EvaluateConfig
    data: Any  # SegmentationData / DetectionData: `classes`, ...
    init: Init
    images: list  # C x H x W arrays: the train pool, then --test-data's
    n_pool: int  # images of the train pool
    paths: list[str]
    size: int
    lr: float
    console: Console
    shapes: list = field(init=False)  # (height, width) of each image
    device: torch.device = field(init=False)
    digests: list[str] | None = field(init=False, default=None)  # image contents, for the map cache's key

    def __post_init__(self) -> None:
        self.shapes = [img.shape[1:] for img in self.images]
        self.device = resolve_device(self.cfg.device)

    def uses_cache(self, protocol: str) -> bool:
        return protocol == "frozen" and self.cfg.frozen_cache

    def backbone_maps(
        self, encoder: DenseEncoder, init: Init, windows: list, norm: Normalization, levels: tuple[int, ...], what: str
    ) -> BackboneMaps:
        """The frozen `encoder`'s maps of `windows` (rsbench.evaluate.dense_cache), cached in OUT/features."""
        if self.digests is None:
            self.digests = image_digests(self.images)
        return extract_maps(
            encoder,
            init.identity,
            self.images,
            self.digests,
            windows,
            self.size,
            norm,
            levels,
            self.cfg.out / "features",
            self.cfg.batch_size,
            self.device,
            self.console,
            what,
        )

    def fit(
        self, model: nn.Module, loss_fn: Callable, samples: Dataset, collate: Callable | None, groups: list[dict], val
    ) -> training.FitResult:
        """`fit` at this evaluation's epochs, batch size and weight decay (a tuning trial's, when it sets them);
        a tuning trial (--holdout validation) stops early on the loss over `val`, its validation samples."""
        cfg = self.cfg
        return fit(
            model,
            loss_fn,
            samples,
            collate,
            groups,
            cfg.epochs,
            cfg.batch_size,
            self.device,
            weight_decay=weight_decay(cfg),
            val=val,
            patience=training.stop_patience(cfg),
        )

    def targets(self, seed: int, test_regions: list[Region]) -> list:
        raise NotImplementedError

    def split(self, seed: int) -> SeedSplit:
        train, test_regions, split, spec = seed_regions(self.cfg, self.shapes, self.n_pool, seed, self.size, self.paths)
        if self.cfg.holdout == "validation":  # tuning trials: score on regions carved from train, never test
            keep, val, carved = validation_split(np.arange(len(train)), self.cfg.val_fraction, seed)
            train, test_regions, split = [train[i] for i in keep], [train[i] for i in val], f"{carved} of {split}"
        norm = dense_normalization(self.init, self.images, train)
        seed_init = self.init.for_seed(seed)  # random init: one draw per seed
        return SeedSplit(
            train,
            test_regions,
            split,
            seed_fields(self.init, norm, test_regions, self.paths) | {"split_spec": spec},
            {"norm": norm, "init": seed_init, "targets": self.targets(seed, test_regions)},
        )

    def subset(self, split: SeedSplit, fraction: float, seed: int) -> list[Region]:
        return select_fraction(split.train, fraction, seed)


def weight_decay(cfg: EvaluateConfig) -> float:
    return WEIGHT_DECAY if cfg.weight_decay is None else cfg.weight_decay


def check_input_size(image_size: int, what: str = "--image-size") -> None:
    if image_size % 32:
        raise ConfigError(f"{what} {image_size} must be a multiple of 32 for the dense tasks (e.g. 64, 128, 256)")


def param_groups(encoder: DenseEncoder, head: list[nn.Parameter], lr: float) -> list[dict]:
    backbone, neck = encoder.trainable_groups()
    groups = [{"params": head + neck, "lr": lr}]
    if backbone:
        groups.append({"params": backbone, "lr": lr * BACKBONE_LR_SCALE})
    return groups


def fit(
    model: nn.Module,
    loss_fn: Callable,
    dataset: Dataset,
    collate: Callable | None,
    groups: list[dict],
    epochs: int,
    batch_size: int,
    device: torch.device,
    *,
    weight_decay: float = WEIGHT_DECAY,
    val: Dataset | None = None,
    patience: int | None = None,
) -> training.FitResult:
    """Train with the evaluation loop (rsbench.evaluate.training: AdamW, cosine per step); with `val` and
    `patience`, stop after `patience` epochs without a lower loss over `val`. Seed the RNGs before calling."""
    return training.fit(
        model,
        loss_fn,
        _loader(dataset, batch_size, collate, train=True),
        groups,
        epochs,
        device,
        weight_decay=weight_decay,
        val=_loader(val, batch_size, collate, train=False) if val is not None and patience else None,
        patience=patience,
    )


def fit_hparams(cfg: EvaluateConfig, res: training.FitResult) -> dict:
    """The rows' record of how a dense head trained (the keys a tuning trial sets, and early stopping)."""
    return {
        "epochs": cfg.epochs,
        "epochs_trained": res.epochs,
        "early_stop_patience": training.stop_patience(cfg),
        "batch_size": cfg.batch_size,
        "weight_decay": weight_decay(cfg),
        "steps": res.steps,
        "final_loss": res.losses[-1] if res.losses else None,
    }


def _loader(dataset: Dataset, batch_size: int, collate: Callable | None, train: bool) -> DataLoader:
    n = len(dataset)  # type: ignore[arg-type]
    return DataLoader(
        dataset,
        batch_size=min(batch_size, n),
        shuffle=train,
        drop_last=train and n > batch_size,
        collate_fn=collate,
        num_workers=0,
    )
