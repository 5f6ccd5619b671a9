"""Frozen-backbone feature extraction with an on-disk cache.

Features are extracted per (init identity, images, preprocessing, normalization source) for ALL images
(train pool and test) in one pass. The per-band normalization comes from the train split only, so with a
fixed test set every seed shares one cache file, and with a split drawn per seed each seed has its own.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console

from rsbench.data.normalization import Normalization, band_stats
from rsbench.errors import ConfigError, DataError
from rsbench.evaluate.images import FileImages, ImageSource
from rsbench.evaluate.inits import Init
from rsbench.io import atomic_write_bytes, stable_hash
from rsbench.progress import progress_bar

CACHE_FORMAT = 3
NORMALIZATION_SOURCE = "train split of each seed (per-band mean/std; test images excluded)"
RESIZE = "bilinear antialias=True align_corners=False"


@dataclass
class FeatureSet:
    features: torch.Tensor  # N x D float32, rows in the order of the images given
    labels: torch.Tensor  # N int64, or N x C multi-hot int64
    normalization: dict
    resize: str
    extract_time_s: float  # time of the extraction that produced the cache (also on a cache hit)
    cached: bool  # True when loaded from the cache instead of extracted now
    key: str
    path: Path


def preprocessing_spec(init: Init) -> dict:
    """Everything about preprocessing that changes features; part of the cache key and of the rows."""
    norm = init.normalization or NORMALIZATION_SOURCE
    return {"dtype": "float32", "resize": RESIZE, "image_size": init.image_size, "normalization": norm}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"invalid config key 'device': unknown device '{name}' (auto, cpu, cuda, ...)") from None


def as_source(images: ImageSource | Sequence[Path]) -> ImageSource:
    return images if isinstance(images, ImageSource) else FileImages(images)


def read_checked(images: ImageSource, i: int, in_chans: int) -> np.ndarray:
    arr = images.read(i)
    if arr.ndim != 3 or arr.shape[0] != in_chans:
        raise DataError(
            f"{images.describe(i)} has shape {arr.shape}; expected {in_chans} band(s) (C x H x W) "
            f"like the dataset's first image"
        )
    return arr


def preprocess(arr: np.ndarray, size: int, norm: Normalization) -> torch.Tensor:
    """Raw C x H x W array -> float32, resized to size x size, normalized per band."""
    x = torch.from_numpy(arr.astype(np.float32, copy=False))
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    return norm(x)


def train_normalization(init: Init, images: ImageSource, train_idx: Sequence[int], console: Console) -> Normalization:
    """The init's own normalization (published weights), else per-band mean/std of the train split."""
    if init.normalization is not None:
        return Normalization.from_dict(init.normalization)
    with progress_bar(console) as prog:
        task = prog.add_task("band statistics", total=len(train_idx))
        stats = band_stats(read_checked(images, int(i), init.in_chans) for i in prog.track(train_idx, task_id=task))
    return Normalization.from_stats(stats, NORMALIZATION_SOURCE)


def describe_resize(native_sizes: set[str], image_size: int) -> str:
    size = f"{image_size}x{image_size}"
    native = next(iter(native_sizes)) if len(native_sizes) == 1 else "mixed sizes"
    return f"none ({size})" if native == size else f"bilinear antialias {native} -> {size}"


def _batches(n: int, size: int) -> Iterable[range]:
    for start in range(0, n, size):
        yield range(start, min(start + size, n))


def get_features(
    init: Init,
    images: ImageSource | Sequence[Path],
    labels: np.ndarray,
    train_idx: Sequence[int],
    cache_dir: Path,
    batch_size: int,
    device: torch.device,
    console: Console,
) -> FeatureSet:
    """Features of all `images`, normalized with the band statistics of the images at `train_idx`."""
    images = as_source(images)
    train_idx = np.asarray(train_idx, dtype=np.int64)
    key = stable_hash(
        {
            "format": CACHE_FORMAT,
            "init": init.identity,
            "images": images.identity(),
            "train_idx": stable_hash(train_idx.tolist()),
            "labels": np.asarray(labels).tolist(),
            "preprocessing": preprocessing_spec(init),
        }
    )
    cache_path = Path(cache_dir) / f"{key}.pt"
    blob = load_cache(cache_path, console)
    if blob is not None:
        return _feature_set(blob, key, cache_path, cached=True)

    model = init.build().eval().to(device)  # before reading images: a bad init fails fast
    start = time.perf_counter()
    norm = train_normalization(init, images, train_idx, console)
    feats, native_sizes = [], set()
    with progress_bar(console) as prog, torch.inference_mode():
        task = prog.add_task(f"features {init.name}", total=len(images))
        for batch in _batches(len(images), batch_size):
            arrays = [read_checked(images, i, init.in_chans) for i in batch]
            native_sizes.update(f"{a.shape[2]}x{a.shape[1]}" for a in arrays)
            x = torch.stack([preprocess(a, init.image_size, norm) for a in arrays]).to(device)
            feats.append(model(x).flatten(1).float().cpu())
            prog.advance(task, len(batch))
    features = torch.cat(feats)
    if not torch.isfinite(features).all():
        raise DataError(f"backbone {init.name} produced non-finite (NaN/inf) features; check its weights")
    blob = {
        "features": features,
        "labels": torch.as_tensor(np.asarray(labels), dtype=torch.int64),
        "normalization": norm.to_dict() | init.band_info(),
        "resize": describe_resize(native_sizes, init.image_size),
        "extract_time_s": time.perf_counter() - start,
    }
    save_cache(cache_path, blob)
    return _feature_set(blob, key, cache_path, cached=False)


def load_cache(path: Path, console: Console) -> dict | None:
    """A feature cache file's tensors, or None when there is none; a damaged one is rebuilt, not fatal."""
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        console.print(
            f"warning: re-extracting, cannot load feature cache {path}: {e}",
            style="yellow",
            markup=False,
            highlight=False,
        )
        return None


def save_cache(path: Path, blob: dict) -> None:
    buf = io.BytesIO()
    torch.save(blob, buf)
    atomic_write_bytes(path, buf.getvalue())


def _feature_set(blob: dict, key: str, path: Path, cached: bool) -> FeatureSet:
    return FeatureSet(
        blob["features"],
        blob["labels"],
        dict(blob["normalization"]),
        str(blob["resize"]),
        float(blob["extract_time_s"]),
        cached,
        key,
        path,
    )
