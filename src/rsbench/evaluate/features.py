"""Frozen-backbone feature extraction with an on-disk cache.

Features are extracted once per (init identity, image files + mtimes, preprocessing) for ALL images
(train pool and test) in one pass, so every seed, split and protocol reuses the same cache file.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from rsbench.data.images import read_image
from rsbench.data.normalization import Normalization, band_stats
from rsbench.errors import ConfigError, DataError
from rsbench.evaluate.inits import Init
from rsbench.io import atomic_write_bytes, stable_hash

CACHE_FORMAT = 1
NORMALIZATION_SOURCE = "train pool of --data (per-band mean/std; --test-data excluded)"


@dataclass
class FeatureSet:
    features: torch.Tensor  # N x D float32, rows in the order of the `paths` given
    labels: torch.Tensor  # N int64
    normalization: dict
    resize: str
    extract_time_s: float  # time of the extraction that produced the cache (also on a cache hit)
    cached: bool  # True when loaded from the cache instead of extracted now
    key: str
    path: Path


def preprocessing_spec(image_size: int) -> dict:
    """Everything about preprocessing that changes features; part of the cache key and of the rows."""
    return {"dtype": "float32", "resize": "bilinear antialias=True align_corners=False", "image_size": image_size,
            "normalization": NORMALIZATION_SOURCE}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"invalid config key 'device': unknown device '{name}' (auto, cpu, cuda, ...)") from None


def _files_id(paths: Sequence[Path]) -> list:
    out = []
    for p in paths:
        st = p.stat()
        out.append([str(p.resolve()), st.st_mtime_ns, st.st_size])
    return out


def _read(path: Path, in_chans: int) -> np.ndarray:
    arr = read_image(path)
    if arr.shape[0] != in_chans:
        raise DataError(f"image {path} has {arr.shape[0]} band(s) but the dataset's first image has {in_chans}")
    return arr


def _preprocess(arr: np.ndarray, size: int, norm: Normalization) -> torch.Tensor:
    x = torch.from_numpy(arr.astype(np.float32, copy=False))
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    return norm(x)


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=console, transient=True)


def _batches(items: Sequence, size: int) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def get_features(
    init: Init,
    paths: Sequence[Path],
    labels: np.ndarray,
    n_pool: int,
    cache_dir: Path,
    batch_size: int,
    device: torch.device,
    console: Console,
) -> FeatureSet:
    """Features of `paths` (the first `n_pool` are the train pool that sets the normalization)."""
    key = stable_hash({
        "format": CACHE_FORMAT, "init": init.identity, "files": _files_id(paths), "n_pool": n_pool,
        "labels": labels.tolist(), "preprocessing": preprocessing_spec(init.image_size),
    })
    cache_path = Path(cache_dir) / f"{key}.pt"
    if cache_path.is_file():
        try:
            blob = torch.load(cache_path, map_location="cpu", weights_only=True)
            return _feature_set(blob, key, cache_path, cached=True)
        except Exception as e:  # noqa: BLE001 - a damaged cache is rebuilt, not fatal
            console.print(f"warning: re-extracting, cannot load feature cache {cache_path}: {e}", style="yellow",
                          markup=False, highlight=False)

    model = init.build().eval().to(device)  # before reading images: a bad init fails fast
    start = time.perf_counter()
    with _progress(console) as prog:
        task = prog.add_task("band statistics", total=n_pool)
        norm = Normalization.from_stats(
            band_stats(_read(p, init.in_chans) for p in prog.track(paths[:n_pool], task_id=task)), NORMALIZATION_SOURCE
        )
        task = prog.add_task(f"features {init.name}", total=len(paths))
        feats, native_sizes = [], set()
        with torch.inference_mode():
            for batch in _batches(paths, batch_size):
                arrays = [_read(p, init.in_chans) for p in batch]
                native_sizes.update(f"{a.shape[2]}x{a.shape[1]}" for a in arrays)
                x = torch.stack([_preprocess(a, init.image_size, norm) for a in arrays]).to(device)
                feats.append(model(x).flatten(1).float().cpu())
                prog.advance(task, len(batch))
    size = f"{init.image_size}x{init.image_size}"
    native = native_sizes.pop() if len(native_sizes) == 1 else "mixed sizes"
    resize = f"none ({size})" if native == size else f"bilinear antialias {native} -> {size}"
    features = torch.cat(feats)
    if not torch.isfinite(features).all():
        raise DataError(f"backbone {init.name} produced non-finite (NaN/inf) features; check its weights")
    blob = {"features": features, "labels": torch.as_tensor(labels, dtype=torch.int64),
            "normalization": norm.to_dict(), "resize": resize, "extract_time_s": time.perf_counter() - start}
    buf = io.BytesIO()
    torch.save(blob, buf)
    atomic_write_bytes(cache_path, buf.getvalue())
    return _feature_set(blob, key, cache_path, cached=False)


def _feature_set(blob: dict, key: str, path: Path, cached: bool) -> FeatureSet:
    return FeatureSet(blob["features"], blob["labels"], dict(blob["normalization"]), str(blob["resize"]),
                      float(blob["extract_time_s"]), cached, key, path)
