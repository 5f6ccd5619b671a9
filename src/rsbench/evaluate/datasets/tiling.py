"""Windows over large images: train/test regions, training chips, sliding-window inference, box clipping
and merging per-tile detections back onto the whole image."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from rsbench.errors import DataError

# A clipped box keeps its label only if this share of its area and this many pixels per side survive:
# slivers of a crown cut by a chip edge teach the detector nothing but noise.
MIN_VISIBLE_FRACTION = 0.25
MIN_BOX_SIDE = 2.0
# A single image is split into a grid of regions with sides of at least this many crops.
REGION_CROPS = 2


@dataclass(frozen=True)
class ArrayWindow:
    """A window in numpy order: array[:, row : row + height, col : col + width]. (rasterio's Window takes
    (col_off, row_off, width, height): the other order, hence the other name.)"""

    row: int
    col: int
    height: int
    width: int


@dataclass(frozen=True)
class Region:
    """One unit of the train/test split: a window of scene `scene` (the whole image, or a grid cell)."""

    scene: int
    window: ArrayWindow


def _starts(extent: int, size: int, stride: int) -> list[int]:
    if extent <= size:
        return [0]
    starts = list(range(0, extent - size + 1, stride))
    if starts[-1] + size < extent:
        starts.append(extent - size)  # the last window is shifted back so it ends at the border
    return starts


def grid_windows(height: int, width: int, size: int, stride: int | None = None) -> list[ArrayWindow]:
    """Windows of `size` x `size` (stride `stride`) covering a height x width area completely.

    A side shorter than `size` gets one window of that side's length (the caller pads it)."""
    stride = stride or size
    return [
        ArrayWindow(r, c, min(size, height), min(size, width))
        for r in _starts(height, size, stride)
        for c in _starts(width, size, stride)
    ]


def _grid_regions(scene: int, height: int, width: int, min_side: int) -> list[Region]:
    # Near-equal cells, none smaller than min_side, at least 2 per axis when the image allows it.
    def edges(extent: int) -> np.ndarray:
        n = max(1, min(4, extent // min_side))
        return np.linspace(0, extent, n + 1).round().astype(int)

    rows, cols = edges(height), edges(width)
    return [
        Region(scene, ArrayWindow(int(r0), int(c0), int(r1 - r0), int(c1 - c0)))
        for r0, r1 in zip(rows[:-1], rows[1:])
        for c0, c1 in zip(cols[:-1], cols[1:])
    ]


def split_regions(
    shapes: Sequence[tuple[int, int]], test_fraction: float, seed: int, crop: int
) -> tuple[list[Region], list[Region], str]:
    """Seeded train/test split of whole images, or of grid regions when there is a single image."""
    if len(shapes) >= 2:
        units = [Region(i, ArrayWindow(0, 0, h, w)) for i, (h, w) in enumerate(shapes)]
        how = f"by image, test_fraction={test_fraction}"
    else:
        h, w = shapes[0]
        units = _grid_regions(0, h, w, REGION_CROPS * crop)
        if len(units) < 2:
            raise DataError(
                f"a single {w}x{h} image cannot be split into train/test regions of at least "
                f"{REGION_CROPS * crop} px; use a smaller --image-size or pass --test-data"
            )
        how = f"by {len(units)} grid regions of the single image, test_fraction={test_fraction}"
    order = np.random.default_rng(seed).permutation(len(units))
    n_test = min(max(int(round(test_fraction * len(units))), 1), len(units) - 1)
    test = sorted(order[:n_test].tolist())
    train = sorted(order[n_test:].tolist())
    return [units[i] for i in train], [units[i] for i in test], how


def whole_images(shapes: Sequence[tuple[int, int]]) -> list[Region]:
    return [Region(i, ArrayWindow(0, 0, h, w)) for i, (h, w) in enumerate(shapes)]


def select_fraction(items: Sequence, fraction: float, seed: int) -> list:
    """A seeded subset holding round(fraction * n) items, at least one, in the original order."""
    if fraction >= 1.0:
        return list(items)
    n = max(1, int(round(fraction * len(items))))
    keep = np.sort(np.random.default_rng([seed, 2]).permutation(len(items))[:n])
    return [items[i] for i in keep]


def clip_boxes(
    boxes: np.ndarray,
    labels: np.ndarray,
    window: ArrayWindow,
    min_visible: float = MIN_VISIBLE_FRACTION,
    min_side: float = MIN_BOX_SIDE,
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (x0, y0, x1, y1) cut to `window`, in window coordinates; tiny remnants are dropped."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    offset = np.array([window.col, window.row, window.col, window.row], dtype=np.float32)
    limit = np.array([window.width, window.height, window.width, window.height], dtype=np.float32)
    local = np.clip(boxes - offset, 0, limit)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    w, h = local[:, 2] - local[:, 0], local[:, 3] - local[:, 1]
    keep = (w >= min_side) & (h >= min_side) & (w * h >= min_visible * area)
    return local[keep], np.asarray(labels)[keep]


def merge_tile_detections(
    tiles: Sequence[tuple[ArrayWindow, torch.Tensor, torch.Tensor, torch.Tensor]], iou_threshold: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-tile (window, boxes, scores, labels) -> whole-image detections: offset, then class-wise NMS
    so an object seen by two overlapping tiles is counted once."""
    from torchvision.ops import batched_nms

    if not tiles:
        return torch.zeros((0, 4)), torch.zeros(0), torch.zeros(0, dtype=torch.int64)
    boxes = torch.cat([b + torch.tensor([w.col, w.row, w.col, w.row], dtype=b.dtype) for w, b, _, _ in tiles])
    scores = torch.cat([s for _, _, s, _ in tiles])
    labels = torch.cat([lab for _, _, _, lab in tiles])
    keep = batched_nms(boxes, scores, labels, iou_threshold)
    return boxes[keep], scores[keep], labels[keep]
