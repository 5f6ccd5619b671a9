"""Frozen dense heads on cached backbone maps.

A frozen backbone gives the same maps for the same input, so the maps of a fixed set of windows (the
training crops of a seed and label fraction, the test regions' inference windows) are extracted once, in
float16, stored under OUT/features/, and the parts that train (decoder, ViT neck, detector) train and
predict on them: a frozen head then costs head-training time only (torchgeo-bench extracts its frozen
features once per split the same way). `--no-frozen-cache` runs the encoder at every step instead.

Given up against the uncached frozen path: random crop positions and random flips/rot90 (the encoder
would see a new input every step). Kept: every overlapping grid window of the training regions
(`datasets.samples.region_windows`, the detection chips), reshuffled every epoch. Up to float16 rounding
of the maps, training and inference equal the uncached computation on the same windows
(tests/test_eval_dense_cache.py).

Keyed like the classification feature cache (rsbench.evaluate.features): the init's identity (with the
random draw of the seed), the image contents, the windows, input size, normalization, levels and dtype.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from torch.utils.data import Dataset

from rsbench.data.normalization import Normalization
from rsbench.errors import DataError
from rsbench.evaluate.datasets.samples import read_window
from rsbench.evaluate.datasets.tiling import ArrayWindow
from rsbench.evaluate.features import load_cache, save_cache
from rsbench.io import stable_hash
from rsbench.progress import progress_bar

CACHE_FORMAT = 1
CACHE_DTYPE = torch.float16
CACHE_PREFIX = "dense-"
FROZEN_CACHE_AUGMENT = "none (fixed overlapping grid crops; frozen backbone maps cached)"


@dataclass
class BackboneMaps:
    """A frozen backbone's maps of some windows: per level N x C x h x w float16, rows in window order."""

    maps: list[torch.Tensor]
    extract_time_s: float  # of the extraction that wrote the cache (also on a hit)
    cached: bool  # loaded from the cache instead of extracted now
    key: str
    path: Path

    def __len__(self) -> int:
        return len(self.maps[0])

    def rows(self, start: int, stop: int) -> list[torch.Tensor]:
        return [m[start:stop].float() for m in self.maps]


def image_digests(images: Sequence[np.ndarray]) -> list[str]:
    """Content hash of each image (dtype, shape, pixels): dense tasks hold their images in memory, and
    some come from dataset classes without files to stat."""
    out = []
    for img in images:
        h = hashlib.blake2b(f"{img.dtype}{img.shape}".encode(), digest_size=16)
        h.update(np.ascontiguousarray(img).data)
        out.append(h.hexdigest())
    return out


def cache_key(
    init_identity: dict,
    digests: Sequence[str],
    windows: Sequence[tuple[int, ArrayWindow]],
    size: int,
    norm: Normalization,
    levels: Sequence[int],
) -> str:
    return stable_hash(
        {
            "format": CACHE_FORMAT,
            "init": init_identity,
            "images": [digests[s] for s in sorted({s for s, _ in windows})],
            "windows": [[s, w.row, w.col, w.height, w.width] for s, w in windows],
            "size": size,
            "normalization": norm.to_dict(),
            "levels": list(levels),
            "dtype": str(CACHE_DTYPE),
        }
    )


def extract_maps(
    encoder,  # rsbench.evaluate.dense.DenseEncoder, frozen
    init_identity: dict,
    images: Sequence[np.ndarray],
    digests: Sequence[str],
    windows: Sequence[tuple[int, ArrayWindow]],
    size: int,
    norm: Normalization,
    levels: tuple[int, ...],
    cache_dir: Path,
    batch_size: int,
    device: torch.device,
    console: Console,
    what: str,
) -> BackboneMaps:
    """`encoder.backbone_maps` of every window (read as `read_window` reads them), from the cache or now."""
    key = cache_key(init_identity, digests, windows, size, norm, levels)
    path = Path(cache_dir) / f"{CACHE_PREFIX}{key}.pt"
    blob = load_cache(path, console)
    if blob is not None:
        return BackboneMaps(list(blob["maps"]), float(blob["extract_time_s"]), True, key, path)
    start = time.perf_counter()
    encoder.eval()
    parts: list[list[torch.Tensor]] = []
    with progress_bar(console) as prog:
        task = prog.add_task(f"backbone maps of {what}", total=len(windows))
        for first in range(0, len(windows), batch_size):
            batch = windows[first : first + batch_size]
            x = torch.stack([read_window(images[s], w, size, norm) for s, w in batch]).to(device)
            parts.append([m.to(CACHE_DTYPE).cpu() for m in encoder.backbone_maps(x, levels)])
            prog.advance(task, len(batch))
    maps = [torch.cat(level) for level in zip(*parts)]
    if not all(torch.isfinite(m).all() for m in maps):
        raise DataError(f"the frozen backbone produced non-finite maps of {what} (float16 overflow or bad weights)")
    blob = {"maps": maps, "extract_time_s": time.perf_counter() - start}
    save_cache(path, blob)
    return BackboneMaps(maps, blob["extract_time_s"], False, key, path)


class CachedSamples(Dataset):
    """(maps of window i as float16 tensors, target of window i): what a cached frozen head trains on."""

    def __init__(self, maps: BackboneMaps, target: Callable[[int], object]):
        self.maps, self.target = maps, target

    def __len__(self) -> int:
        return len(self.maps)

    def __getitem__(self, index: int) -> tuple[list[torch.Tensor], object]:
        return [m[index] for m in self.maps.maps], self.target(index)


def collate_listed_targets(batch) -> tuple[list[torch.Tensor], list]:
    """Stacked maps per level and the targets as a list (detection's dicts)."""
    return [torch.stack(level) for level in zip(*(m for m, _ in batch))], [t for _, t in batch]


def cache_fields(train: BackboneMaps, test: BackboneMaps) -> dict:
    """Row fields of a cell trained and scored on cached maps."""
    return {
        "extract_time_s": round(train.extract_time_s + test.extract_time_s, 3),
        "features_cached": train.cached and test.cached,
        "features_key": stable_hash({"train": train.key, "test": test.key}),
    }
