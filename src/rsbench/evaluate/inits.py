"""Backbone initialisations to evaluate: a pretraining run, random, ImageNet, a weights file, published
torchgeo weights, and the network-free baselines `bandstats` and `pixels`.

Models are built lazily (`Init.build`) so a feature-cache hit never loads weights; `identity` is what
distinguishes the features one init produces, and goes into the feature-cache key.

ImageNet weights on other data than RGB: the RGB filters go to the data's red, green, blue bands (found
by `band_mapping.imagenet_band_mapping` from `--rgb-bands` or the band names; never assumed on more than
3 bands), recorded in `Init.band_mapping`. `random` is one draw per evaluation seed (`Init.for_seed`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import timm
import torch
from rich.console import Console
from torch import nn

from rsbench.bands import band_code
from rsbench.contracts.evaluate_config import DEFAULT_BACKBONE, DEFAULT_IMAGE_SIZE, EvaluateConfig
from rsbench.errors import ConfigError, DataError
from rsbench.evaluate.band_mapping import imagenet_band_mapping
from rsbench.evaluate.baselines import PIXELS_GRID, BandStatsFeatures, PixelFeatures
from rsbench.models import BACKBONE_META, create_backbone
from rsbench.models.sources import TORCHGEO_PREFIX as PREFIX
from rsbench.models.sources import file_id, run_source, torchgeo_source, weights_source

RANDOM_INIT_SEED = 0
BASELINES = {
    "bandstats": (BandStatsFeatures, "bandstats"),
    "pixels": (PixelFeatures, f"pixels-{PIXELS_GRID}x{PIXELS_GRID}"),
}


@dataclass
class Init:
    kind: str  # run | random | imagenet | weights | torchgeo | bandstats | pixels
    name: str  # display name used in results, e.g. "simclr-resnet18 (run1)"
    path: str | None
    arch: str
    in_chans: int
    image_size: int
    identity: dict
    build: Callable[[], nn.Module] = field(repr=False)
    # The input normalization the weights were trained with ({mean, std, source}); None = the data's own
    # per-band statistics (computed on the train pool), which is what every other init uses.
    normalization: dict | None = None
    bands: list[str] | None = None  # band names the model sees, in input order, when known
    trainable: bool = True  # False for the network-free baselines (no fine-tuning)
    # How pretrained first-layer filters meet the data's bands (JSON-able, for result rows): imagenet
    # inits {"red", "green", "blue" (0-based input channels), "others", "source", ...}; torchgeo inits
    # the weights' channel each input band uses. None for the others.
    band_mapping: dict | None = None
    # Builds the weights for one evaluation seed (random inits; see for_seed). Not part of equality.
    seeded_build: Callable[[int], nn.Module] | None = field(default=None, repr=False, compare=False)

    def band_info(self) -> dict:
        return {"bands": self.bands} if self.bands else {}

    def for_seed(self, seed: int) -> Init:
        """This init for evaluation seed `seed`: for `random`, a copy whose weights are drawn from a seed
        derived from (RANDOM_INIT_SEED, seed) and whose identity says so (separate feature caches), with
        the same `name` (rows group across seeds); seed 0 is the draw of `build()`. Other kinds: self."""
        if self.seeded_build is None:
            return self
        draw = random_init_seed(seed)
        make = self.seeded_build
        return replace(self, identity={**self.identity, "seed": draw}, build=lambda: make(draw))


def random_init_seed(seed: int) -> int:
    """The torch seed of the random weights for evaluation seed `seed`. Seed 0 keeps RANDOM_INIT_SEED (the
    draw of `Init.build()`, and its feature caches); other seeds get a hash of (RANDOM_INIT_SEED, seed), so
    the weights share no RNG stream with anything seeded by the evaluation seed itself (splits, probes)."""
    if seed == 0:
        return RANDOM_INIT_SEED
    return int(np.random.SeedSequence([RANDOM_INIT_SEED, int(seed)]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _warn(console: Console, msg: str) -> None:
    console.print(f"warning: {msg}", style="yellow", markup=False, highlight=False)


def resolve_init(cfg: EvaluateConfig, in_chans: int, console: Console) -> Init:
    """Interpret `cfg.init` for data with `in_chans` bands."""
    if cfg.weights is not None and cfg.init != "imagenet" and not cfg.init.startswith(PREFIX):
        raise ConfigError(
            "--weights only applies to --init imagenet and --init torchgeo:<weights> "
            "(evaluate a state_dict file with --init PATH)"
        )
    if cfg.init == "random":
        return _random(cfg, in_chans)
    if cfg.init == "imagenet":
        return _imagenet(cfg, in_chans)
    if cfg.init in BASELINES:
        return _baseline(cfg, in_chans)
    if cfg.init.startswith(PREFIX):
        return _torchgeo(cfg, in_chans)
    path = Path(cfg.init)
    if path.is_dir():
        return _run(cfg, path, in_chans, console)
    if path.is_file():
        return _weights_file(cfg, path, in_chans)
    raise ConfigError(
        f"--init '{cfg.init}' is not a run directory, a weights file, 'random', 'imagenet', "
        f"'bandstats', 'pixels' or 'torchgeo:<WeightsEnum>'"
    )


def _arch_label(cfg: EvaluateConfig, arch: str) -> str:
    return f"{arch}-patch{cfg.patch_size}" if cfg.patch_size else arch


def _patch(cfg: EvaluateConfig) -> dict:
    # Only a non-default patch size enters the identity, so existing feature caches stay valid.
    return {"patch_size": cfg.patch_size} if cfg.patch_size else {}


def _random(cfg: EvaluateConfig, in_chans: int) -> Init:
    arch, size = cfg.backbone or DEFAULT_BACKBONE, cfg.image_size or DEFAULT_IMAGE_SIZE

    def draw(torch_seed: int) -> nn.Module:
        # A fixed seed makes each draw reproducible; fork_rng leaves the caller's RNG alone.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch_seed)
            return create_backbone(arch, in_chans, size, patch_size=cfg.patch_size)

    identity = {
        "kind": "random",
        "arch": arch,
        "in_chans": in_chans,
        "seed": RANDOM_INIT_SEED,
        "timm": timm.__version__,
        "torch": torch.__version__,
        **_patch(cfg),
    }
    return Init(
        "random",
        f"random-{_arch_label(cfg, arch)}",
        None,
        arch,
        in_chans,
        size,
        identity,
        lambda: draw(RANDOM_INIT_SEED),
        seeded_build=draw,
    )


def _imagenet(cfg: EvaluateConfig, in_chans: int) -> Init:
    arch, size = cfg.backbone or DEFAULT_BACKBONE, cfg.image_size or DEFAULT_IMAGE_SIZE
    weights = file_id(cfg.weights) if cfg.weights is not None else "timm-hub"
    # Where the RGB filters go; a one-line ConfigError here (before any weights or images are read) when
    # the data's red, green, blue bands cannot be told.
    mapping = imagenet_band_mapping(in_chans, cfg.bands, cfg.rgb_bands)
    rgb = None if mapping["red"] is None else (mapping["red"], mapping["green"], mapping["blue"])

    def build() -> nn.Module:
        # create_backbone raises a one-line ConfigError when no weights are available: never fall back.
        return create_backbone(
            arch, in_chans, size, pretrained=True, weights_file=cfg.weights, patch_size=cfg.patch_size, rgb_channels=rgb
        )

    # R, G, B on channels 0, 1, 2 builds the weights rsbench always built: same identity, caches stay valid.
    placed = {"rgb": list(rgb)} if rgb not in (None, (0, 1, 2)) else {}
    identity = {
        "kind": "imagenet",
        "arch": arch,
        "in_chans": in_chans,
        "weights": weights,
        "timm": timm.__version__,
        **_patch(cfg),
        **placed,
    }
    path = str(cfg.weights.resolve()) if cfg.weights is not None else None
    return Init(
        "imagenet",
        f"imagenet-{_arch_label(cfg, arch)}",
        path,
        arch,
        in_chans,
        size,
        identity,
        build,
        band_mapping=mapping,
    )


def _weights_file(cfg: EvaluateConfig, path: Path, in_chans: int) -> Init:
    arch, size = cfg.backbone or DEFAULT_BACKBONE, cfg.image_size or DEFAULT_IMAGE_SIZE
    build = weights_source(path, arch, in_chans, size, cfg.patch_size).build
    identity = {"kind": "weights", "arch": arch, "in_chans": in_chans, "file": file_id(path), **_patch(cfg)}
    return Init(
        "weights",
        f"weights-{_arch_label(cfg, arch)} ({path.name})",
        str(path.resolve()),
        arch,
        in_chans,
        size,
        identity,
        build,
    )


def _run(cfg: EvaluateConfig, run_dir: Path, in_chans: int, console: Console) -> Init:
    source = run_source(run_dir)
    meta, meta_path, arch, run_chans = source.meta, run_dir / BACKBONE_META, source.arch, source.in_chans
    if run_chans != in_chans:
        raise DataError(
            f"data in {cfg.data} has {in_chans} band(s) but the backbone in {run_dir} expects in_chans={run_chans}"
        )
    # The run fixes the architecture and input size; CLI values that disagree are ignored, loudly.
    if cfg.backbone is not None and cfg.backbone != arch:
        _warn(console, f"--backbone {cfg.backbone} ignored: {meta_path} says arch={arch}")
    size = meta.get("image_size")
    if size is not None and cfg.image_size is not None and cfg.image_size != size:
        _warn(console, f"--image-size {cfg.image_size} ignored: {meta_path} says image_size={size}")
    size = int(size or cfg.image_size or DEFAULT_IMAGE_SIZE)

    identity = {"kind": "run", "path": str(run_dir.resolve()), "meta": meta, "weights": file_id(source.file)}
    name = f"{meta.get('method') or 'run'}-{arch} ({run_dir.resolve().name})"
    return Init("run", name, str(run_dir.resolve()), arch, in_chans, size, identity, source.build)


def _baseline(cfg: EvaluateConfig, in_chans: int) -> Init:
    module, arch = BASELINES[cfg.init]
    size = cfg.image_size or DEFAULT_IMAGE_SIZE
    identity = {"kind": cfg.init, "arch": arch, "in_chans": in_chans, "version": 1}
    return Init(cfg.init, arch, None, arch, in_chans, size, identity, lambda: module(in_chans), trainable=False)


def _torchgeo(cfg: EvaluateConfig, in_chans: int) -> Init:
    if cfg.bands:
        # Band descriptions read from GeoTIFFs ('B04_red') are matched by their band number ('B04'), the way
        # the weights name their bands.
        cfg = cfg.model_copy(update={"bands": [band_code(b) or b for b in cfg.bands]})
    source = torchgeo_source(cfg.init, cfg.weights, cfg.bands, in_chans)
    info = source.meta
    size = cfg.image_size or info["image_size"] or DEFAULT_IMAGE_SIZE
    identity = {
        "kind": "torchgeo",
        "weights": info["name"],
        "file": file_id(info["file"]),
        "select": info["select"],
        "timm": timm.__version__,
    }
    select = info["select"]
    mapping = {
        # Input channel i uses the weights' first-layer channel weights_channels[i]; weights bands the data
        # lacks are dropped (as if at the weights' normalization mean).
        "weights_channels": list(select) if select is not None else list(range(info["weights_chans"])),
        "weights_bands": info["bands"],
        "dropped": info["weights_chans"] - (len(select) if select is not None else info["weights_chans"]),
        "source": "--bands matched to the weights' bands" if select is not None else "the data has the weights' bands",
    }
    if cfg.bands:
        mapping["bands"] = list(cfg.bands)
    return Init(
        "torchgeo",
        f"torchgeo-{info['name']}",
        str(info["file"].resolve()),
        info["arch"],
        in_chans,
        size,
        identity,
        source.build,
        normalization=info["normalization"],
        bands=info["bands"],
        band_mapping=mapping,
    )
