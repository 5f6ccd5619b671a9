"""Pretraining inputs: an image folder (map-style) or a corpus (streaming shards), as multi-view batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset

from rsbench.data import Normalization, band_stats, list_images, read_image
from rsbench.errors import DataError

_STATS_SAMPLE = 512  # images used to estimate per-band statistics of an image folder


class ImageFilesDataset(Dataset):
    """Every image below a folder (labels, if any, ignored), normalized, passed through `transform`."""

    def __init__(self, paths: list[Path], normalization: Normalization, transform=None):
        self.paths, self.normalization, self.transform = paths, normalization, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        arr = read_image(self.paths[i])
        if arr.shape[0] != self.normalization.bands:
            raise DataError(f"{self.paths[i]} has {arr.shape[0]} bands, expected {self.normalization.bands}")
        x = self.normalization(torch.from_numpy(arr.astype(np.float32)))
        return self.transform(x) if self.transform else x


class TransformedIterable(IterableDataset):
    """Applies a transform to every sample of a streaming dataset."""

    def __init__(self, source: IterableDataset, transform):
        self.source, self.transform = source, transform

    def __iter__(self):
        for x in self.source:
            yield self.transform(x)


def image_folder_source(root: Path) -> tuple[list[Path], Normalization]:
    """List the images and estimate per-band mean/std from an evenly spaced sample of them."""
    paths = list_images(root)
    step = max(1, len(paths) // _STATS_SAMPLE)
    sample = [read_image(p) for p in paths[::step]]
    bands = {a.shape[0] for a in sample}
    if len(bands) > 1:
        raise DataError(f"images in {root} have different band counts {sorted(bands)}; pretrain on one sensor at a time")
    return paths, Normalization.from_stats(band_stats(sample), source=f"images:{root.name}")


def collate_views(batch: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    """[[v0, v1], [v0, v1], ...] -> [V0 (B,C,H,W), V1 (B,C,H,W)]."""
    return [torch.stack(views) for views in zip(*batch)]
