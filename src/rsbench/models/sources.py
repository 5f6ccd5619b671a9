"""A backbone from somewhere: an rsbench run directory, a timm state_dict file, or `torchgeo:<WeightsEnum>`.

One loader for every stage that starts from existing weights: evaluation (`--init`) and pretraining's
frozen distillation teachers (`--teacher`). `open_source` says what a source is (architecture, band
count, the bands and input normalization it was trained with, when known) without loading weights;
`BackboneSource.build()` loads them (always `torch.load(..., weights_only=True)`). Nothing is downloaded:
torchgeo weights are read from the local torch hub cache or a given file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from rsbench.contracts.backbone_export import BACKBONE_META, BACKBONE_WEIGHTS
from rsbench.errors import ConfigError, DataError
from rsbench.io import read_json
from rsbench.models.backbones import create_backbone, load_exported_backbone, load_state_dict_file
from rsbench.models.torchgeo_weights import PREFIX as TORCHGEO_PREFIX
from rsbench.models.torchgeo_weights import build_torchgeo_backbone, resolve_torchgeo_weights

# The bands of a 3-band timm (ImageNet) weights file, in its input order.
RGB_BANDS = ["red", "green", "blue"]


@dataclass
class BackboneSource:
    kind: str  # run | weights | torchgeo
    source: str  # as the user wrote it
    arch: str
    in_chans: int
    image_size: int | None  # the input side the weights were made for (ViTs need it), when known
    file: Path  # the weights file
    build: Callable[[], nn.Module] = field(repr=False)
    bands: list[str] | None = None  # band names in input order, when known
    normalization: dict | None = None  # {mean, std, source} in raw units; None: unknown (use the data's)
    meta: dict = field(default_factory=dict)  # run: backbone.json; torchgeo: the resolved weights info

    def sha256(self) -> str:
        return file_sha256(self.file)


def file_id(path: Path) -> dict:
    """path + mtime + size: cheap, and changes whenever the weights are rewritten (feature-cache keys)."""
    try:
        st = path.stat()
    except OSError:
        raise ConfigError(f"weights file not found: {path}") from None
    return {"path": str(path.resolve()), "mtime_ns": st.st_mtime_ns, "size": st.st_size}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def run_source(run_dir: Path) -> BackboneSource:
    """The exported backbone of a finished rsbench run (backbone.pt + backbone.json)."""
    meta_path, weights_path = run_dir / BACKBONE_META, run_dir / BACKBONE_WEIGHTS
    if not meta_path.is_file() or not weights_path.is_file():
        raise DataError(f"{run_dir} is not a finished rsbench run (missing {BACKBONE_META} or {BACKBONE_WEIGHTS})")
    try:
        meta = read_json(meta_path)
        arch, in_chans = str(meta["arch"]), int(meta["in_chans"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise DataError(f"{meta_path} is not a valid backbone description ({type(e).__name__}: {e})") from None
    size = meta.get("image_size")
    names = (meta.get("data") or {}).get("band_names")
    return BackboneSource(
        "run",
        str(run_dir),
        arch,
        in_chans,
        int(size) if size else None,
        weights_path,
        lambda: load_exported_backbone(run_dir)[0],
        bands=[str(b) for b in names] if names else None,
        normalization=meta.get("normalization"),
        meta=meta,
    )


def weights_source(
    path: Path, arch: str, in_chans: int | None, image_size: int | None = None, patch_size: int | None = None
) -> BackboneSource:
    """A timm state_dict file of `arch`; `in_chans=None` reads the band count from its first layer."""
    if in_chans is None:
        in_chans = _first_layer_chans(path, arch)
    bands = list(RGB_BANDS) if in_chans == 3 else None

    def build() -> nn.Module:
        model = create_backbone(arch, in_chans, image_size, patch_size=patch_size)
        load_state_dict_file(model, path)
        return model

    return BackboneSource("weights", str(path), arch, in_chans, image_size, path, build, bands=bands)


def _first_layer_chans(path: Path, arch: str) -> int:
    """The input band count of a timm state_dict: the second dimension of timm's `first_conv` weight."""
    with torch.device("meta"):
        first = create_backbone(arch, 3).pretrained_cfg.get("first_conv")
    key = f"{first[0] if isinstance(first, (list, tuple)) else first}.weight"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        raise DataError(f"cannot load weights from {path}: {str(e).splitlines()[0]}") from e
    for nested in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(nested), dict):
            state = state[nested]
    weight = state.get(key) if isinstance(state, dict) else None
    if weight is None or weight.ndim != 4:
        raise DataError(f"weights in {path} are not a '{arch}' state_dict (no first-layer weight '{key}')")
    return int(weight.shape[1])


def torchgeo_source(
    source: str, weights_file: Path | None = None, data_bands: list[str] | None = None, in_chans: int | None = None
) -> BackboneSource:
    """Published torchgeo weights from a local file; `data_bands` select first-layer channels by name."""
    info = resolve_torchgeo_weights(source, weights_file, data_bands, in_chans)
    chans = len(info["select"]) if info["select"] is not None else info["weights_chans"]
    return BackboneSource(
        "torchgeo",
        source,
        info["arch"],
        chans,
        info["image_size"],
        info["file"],
        lambda: build_torchgeo_backbone(info),
        bands=info["bands"],
        normalization=info["normalization"],
        meta=info,
    )


def open_source(
    source: str,
    *,
    arch: str | None = None,
    in_chans: int | None = None,
    weights_file: Path | None = None,
    option: str = "--teacher",
) -> BackboneSource:
    """Whatever `source` names: `torchgeo:<WeightsEnum>`, a run directory, or a weights file of `arch`."""
    if source.startswith(TORCHGEO_PREFIX):
        return torchgeo_source(source, weights_file, None, in_chans)
    path = Path(source).expanduser()
    if path.is_dir():
        return run_source(path)
    if path.is_file():
        if not arch:
            raise ConfigError(f"{option} {source} is a weights file: name its timm architecture ({option}-arch)")
        return weights_source(path, arch, in_chans)
    raise ConfigError(
        f"{option} '{source}' is not a run directory, a weights file or 'torchgeo:<WeightsEnum>' (nothing there)"
    )


__all__ = [
    "RGB_BANDS",
    "TORCHGEO_PREFIX",
    "BackboneSource",
    "file_id",
    "file_sha256",
    "open_source",
    "run_source",
    "torchgeo_source",
    "weights_source",
]
