"""Segmentation adapter `torchgeo`: a torchgeo NonGeo segmentation dataset (samples with `image` and `mask`)
read from a local root, never downloaded.

Options: `dataset` (the class, e.g. LoveDA), `split` (default train) and `test_split` (default test: the
split read when this adapter loads a task's test data), `class_values` (the mask value of each class, in
`classes` order; default 0, 1, ...), `ignore_values` (mask values of unlabelled pixels, e.g. LoveDA's 0),
and any other keyword argument of the class (scene, bands, checksum, ...). Classes: `classes`, else the
class's own `classes`. Samples are read lazily, one at a time, like the `masks` adapter's files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rsbench.errors import ConfigError, DataError
from rsbench.evaluate.datasets.masks import IGNORE_INDEX
from rsbench.evaluate.datasets.torchgeo_open import open_torchgeo


@dataclass
class TorchgeoSegmentationData:
    """What the segmentation task reads from a dataset (as SegmentationData): name, classes, ignore_index,
    `pairs` (image, mask) names of each sample, and `read(i)`."""

    name: str
    dataset: Any  # the torchgeo dataset instance
    dataset_name: str  # its class name
    split: str
    root: Path
    classes: list[str]
    class_values: list[int]
    ignore_values: list[int]
    pairs: list[tuple[str, str]]
    adapter: str = "torchgeo"
    ignore_index: int = IGNORE_INDEX
    _lut: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        top = max([*self.class_values, *self.ignore_values, 255])
        self._lut = np.full(top + 1, -1, dtype=np.int16)  # -1: a value that is neither a class nor ignored
        self._lut[self.ignore_values] = self.ignore_index
        self._lut[self.class_values] = np.arange(len(self.class_values))

    def describe(self, i: int) -> str:
        return f"sample {i} of torchgeo's {self.dataset_name} (split {self.split}) in {self.root}"

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Image i (C x H x W, the smallest integer dtype that holds it exactly, else float32) and its mask
        (H x W uint8 class indices, ignore_index = unlabelled)."""
        sample = self.dataset[i]
        if "mask" not in sample:
            raise DataError(
                f"torchgeo's {self.dataset_name} has no masks in split {self.split} (sample keys: "
                f"{', '.join(sample)}); use a labelled split (options.split / options.test_split)"
            )
        image = _compact(np.asarray(sample["image"]))
        raw = np.asarray(sample["mask"])
        if raw.ndim == 3 and raw.shape[0] == 1:
            raw = raw[0]
        if image.ndim != 3 or raw.ndim != 2:
            raise DataError(
                f"{self.describe(i)}: expected a C x H x W image and an H x W mask, got {image.shape} and {raw.shape}"
            )
        if raw.shape != image.shape[1:]:
            raise DataError(
                f"{self.describe(i)}: mask is {raw.shape[1]}x{raw.shape[0]} but the image is "
                f"{image.shape[2]}x{image.shape[1]} (width x height)"
            )
        raw = raw.astype(np.int64)
        bad = (raw < 0) | (raw >= len(self._lut))
        mask = self._lut[np.where(bad, 0, raw)]
        mask[bad] = -1
        if (mask < 0).any():
            values = sorted(int(v) for v in np.unique(raw[mask < 0])[:5])
            raise DataError(
                f"{self.describe(i)}: mask value(s) {', '.join(map(str, values))} are neither class values "
                f"({', '.join(map(str, self.class_values))}) nor ignore values "
                f"({', '.join(map(str, self.ignore_values)) or 'none'}); set options.class_values / ignore_values"
            )
        return image, mask.astype(np.uint8)


def _compact(image: np.ndarray) -> np.ndarray:
    """torchgeo returns float tensors; 8/16-bit pixels go back to uint8/uint16 (4x/2x less memory, exact)."""
    if image.dtype.kind != "f" or image.size == 0:
        return image
    lo, hi = float(image.min()), float(image.max())
    if lo >= 0 and hi <= 65535 and np.array_equal(image, np.floor(image)):
        return image.astype(np.uint8 if hi <= 255 else np.uint16)
    return image.astype(np.float32, copy=False)


def _int_list(value: Any, key: str) -> list[int] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and 0 <= v < 65536 for v in value):
        raise ConfigError(f"invalid config key 'options.{key}' for adapter 'torchgeo': a list of mask values 0-65535")
    return list(value)


def _sample_files(ds: Any, n: int, root: Path, split: str) -> list[tuple[str, str]]:
    """(image, mask) file of each sample where the class keeps them (LoveDA's `files`, DeepGlobe's
    `image_fns`/`mask_fns`), else a name for the sample."""
    files = getattr(ds, "files", None)
    if isinstance(files, list) and len(files) == n and all(isinstance(f, dict) and "image" in f for f in files):
        return [(str(f["image"]), str(f.get("mask", f["image"]))) for f in files]
    images, masks = getattr(ds, "image_fns", None), getattr(ds, "mask_fns", None)
    if isinstance(images, list) and isinstance(masks, list) and len(images) == len(masks) == n:
        return [(str(a), str(b)) for a, b in zip(images, masks)]
    return [(f"{root}#{split}/{i}", f"{root}#{split}/{i}") for i in range(n)]


def load_torchgeo_segmentation(
    root: Path, classes: list[str] | None, options: dict | None, name: str | None, test: bool = False
) -> TorchgeoSegmentationData:
    """The `split` (or, for a task's test data, `test_split`) of a torchgeo segmentation dataset in `root`."""
    opts = dict(options or {})
    dataset = opts.pop("dataset", None)
    split = str(opts.pop("split", None) or "train")
    test_split = str(opts.pop("test_split", None) or "test")
    values = _int_list(opts.pop("class_values", None), "class_values")
    ignore = _int_list(opts.pop("ignore_values", None), "ignore_values") or []
    split = test_split if test else split
    ds = open_torchgeo(dataset, root, split, opts)
    if len(ds) == 0:
        raise DataError(f"torchgeo dataset {dataset} (split {split}) in {root} has no samples")
    names = list(classes) if classes is not None else [str(c) for c in getattr(ds, "classes", None) or []]
    if not names:
        raise ConfigError(f"torchgeo dataset {dataset} names no classes: give 'classes' (in mask value order)")
    values = values if values is not None else list(range(len(names)))
    if len(values) != len(names):
        raise ConfigError(
            f"invalid config key 'options.class_values' for adapter 'torchgeo': {len(values)} value(s) for "
            f"{len(names)} classes"
        )
    if len(set(values)) != len(values) or set(values) & set(ignore):
        raise ConfigError(
            "invalid config key 'options.class_values' for adapter 'torchgeo': values repeat or are also ignore_values"
        )
    pairs = _sample_files(ds, len(ds), root, split)
    label = name or Path(root).resolve().name
    return TorchgeoSegmentationData(label, ds, str(dataset), split, Path(root), names, values, ignore, pairs)
