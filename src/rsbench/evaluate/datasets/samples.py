"""Training samples for the dense tasks: random crops (segmentation) and grid chips (detection) of the
training regions, with the same random flip/rot90 applied to image and target; and the padded,
normalized windows that sliding-window inference reads."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from rsbench.data.normalization import Normalization
from rsbench.evaluate.datasets.tiling import ArrayWindow, Region, clip_boxes, grid_windows

CHIP_OVERLAP = 0.25  # detection chips and inference windows overlap so objects cut at one edge are whole in the next


def overlap_stride(size: int) -> int:
    return max(1, int(round(size * (1 - CHIP_OVERLAP))))


def read_window(image: np.ndarray, window: ArrayWindow, size: int, norm: Normalization) -> torch.Tensor:
    """C x size x size float tensor: the normalized window, zero-padded (= the band mean) bottom/right."""
    patch = image[:, window.row : window.row + window.height, window.col : window.col + window.width]
    x = norm(torch.from_numpy(np.ascontiguousarray(patch, dtype=np.float32)))
    return F.pad(x, (0, size - x.shape[2], 0, size - x.shape[1]))


def dihedral(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    """Rotate the last two dims by k * 90 degrees counter-clockwise, after an optional left-right flip."""
    if flip:
        x = x.flip(-1)
    return torch.rot90(x, k, dims=(-2, -1))


def dihedral_boxes(boxes: torch.Tensor, k: int, flip: bool, height: int, width: int) -> torch.Tensor:
    """The boxes (x0, y0, x1, y1) of an image transformed by `dihedral(image, k, flip)`."""
    b = boxes.clone()
    if flip:
        b = torch.stack([width - b[:, 2], b[:, 1], width - b[:, 0], b[:, 3]], dim=1)
    for _ in range(k % 4):
        # rot90 counter-clockwise maps (x, y) -> (y, width - x); the image becomes width x height tall.
        b = torch.stack([b[:, 1], width - b[:, 2], b[:, 3], width - b[:, 0]], dim=1)
        height, width = width, height
    return b


def read_mask(mask: np.ndarray, window: ArrayWindow, size: int, ignore_index: int) -> torch.Tensor:
    """`size` x `size` int64 labels of `window`, padded with `ignore_index` (the twin of `read_window`)."""
    w = window
    y = torch.from_numpy(mask[w.row : w.row + w.height, w.col : w.col + w.width].astype(np.int64))
    return F.pad(y, (0, size - y.shape[1], 0, size - y.shape[0]), value=ignore_index)


class SegmentationCrops(Dataset):
    """Random crops from the training regions (area-weighted); an epoch holds as many crops as tile them."""

    def __init__(
        self,
        images: Sequence[np.ndarray],
        masks: Sequence[np.ndarray],
        regions: Sequence[Region],
        size: int,
        norm: Normalization,
        ignore_index: int,
    ):
        self.images, self.masks, self.regions = images, masks, list(regions)
        self.size, self.norm, self.ignore_index = size, norm, ignore_index
        areas = [r.window.height * r.window.width for r in self.regions]
        self.weights = torch.tensor(areas, dtype=torch.float64)
        self.length = sum(math.ceil(r.window.height / size) * math.ceil(r.window.width / size) for r in self.regions)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        region = self.regions[int(torch.multinomial(self.weights, 1))]
        w = region.window
        r = w.row + int(torch.randint(0, max(1, w.height - self.size + 1), ()))
        c = w.col + int(torch.randint(0, max(1, w.width - self.size + 1), ()))
        win = ArrayWindow(r, c, min(self.size, w.height), min(self.size, w.width))
        x = read_window(self.images[region.scene], win, self.size, self.norm)
        y = read_mask(self.masks[region.scene], win, self.size, self.ignore_index)
        k, flip = int(torch.randint(0, 4, ())), bool(torch.randint(0, 2, ()))
        return dihedral(x, k, flip), dihedral(y, k, flip)


def region_windows(regions: Sequence[Region], size: int) -> list[tuple[int, ArrayWindow]]:
    """(scene, window) of every overlapping grid window of each region, in image coordinates: the chips
    detection trains on, the windows inference slides over, and the fixed crops of cached frozen heads."""
    out = []
    for region in regions:
        rw = region.window
        for w in grid_windows(rw.height, rw.width, size, overlap_stride(size)):
            out.append((region.scene, ArrayWindow(rw.row + w.row, rw.col + w.col, w.height, w.width)))
    return out


class FixedCrops(Dataset):
    """The grid windows of the training regions (region_windows) as (image, mask) pairs, no augmentation:
    a frozen encoder sees the same inputs every epoch, so its maps are extracted once
    (rsbench.evaluate.dense_cache); this is also the uncached reference of that path."""

    def __init__(
        self,
        images: Sequence[np.ndarray],
        masks: Sequence[np.ndarray],
        regions: Sequence[Region],
        size: int,
        norm: Normalization,
        ignore_index: int,
    ):
        self.images, self.masks, self.size, self.norm, self.ignore_index = images, masks, size, norm, ignore_index
        self.windows = region_windows(regions, size)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        scene, win = self.windows[index]
        return read_window(self.images[scene], win, self.size, self.norm), self.mask(index)

    def mask(self, index: int) -> torch.Tensor:
        scene, win = self.windows[index]
        return read_mask(self.masks[scene], win, self.size, self.ignore_index)


class DetectionChips(Dataset):
    """Overlapping grid chips of the training regions, boxes clipped to each chip (tiny remnants dropped).

    Targets follow torchvision: labels start at 1 (0 is the background class). `augment`: a random
    flip/rot90 per chip; without it a chip is the same every epoch (cached frozen heads)."""

    def __init__(
        self,
        images: Sequence[np.ndarray],
        boxes: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        regions: Sequence[Region],
        size: int,
        norm: Normalization,
        augment: bool = True,
    ):
        self.images, self.size, self.norm, self.augment = images, size, norm, augment
        self.chips: list[tuple[int, ArrayWindow, np.ndarray, np.ndarray]] = []
        for scene, win in region_windows(regions, size):
            b, lab = clip_boxes(boxes[scene], labels[scene], win)
            self.chips.append((scene, win, b, lab))

    def __len__(self) -> int:
        return len(self.chips)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        scene, win, _, _ = self.chips[index]
        x = read_window(self.images[scene], win, self.size, self.norm)
        if not self.augment:
            return x, self.target(index)
        k, flip = int(torch.randint(0, 4, ())), bool(torch.randint(0, 2, ()))
        target = self.target(index)
        b = dihedral_boxes(target["boxes"], k, flip, self.size, self.size)
        return dihedral(x, k, flip), {**target, "boxes": b.reshape(-1, 4)}

    def target(self, index: int) -> dict:
        _, _, boxes, labels = self.chips[index]
        return {"boxes": torch.from_numpy(boxes).float().reshape(-1, 4), "labels": torch.from_numpy(labels).long() + 1}

    @property
    def windows(self) -> list[tuple[int, ArrayWindow]]:
        return [(scene, win) for scene, win, _, _ in self.chips]

    def n_boxes(self) -> int:
        return sum(len(c[2]) for c in self.chips)


def collate_detection(batch):
    return [x for x, _ in batch], [t for _, t in batch]
