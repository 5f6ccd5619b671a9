"""A segmentation dataset: (image, label file) pairs read into C x H x W images + H x W uint8 masks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rsbench.data.images import read_image
from rsbench.errors import ConfigError, DataError
from rsbench.evaluate.datasets.adapter_options import (
    CLASS_TABLE_FILES,
    SEGMENTATION_ADAPTERS,
    MaskOptions,
    VectorOptions,
    find_files,
    parse_options,
)
from rsbench.evaluate.datasets.masks import ClassTable, pair_images_masks, parse_class_table, read_mask
from rsbench.evaluate.datasets.torchgeo_seg import TorchgeoSegmentationData, load_torchgeo_segmentation
from rsbench.evaluate.datasets.vector import rasterize_labels

VECTOR_DEFAULT_CLASSES = ("background", "object")
# Adapters that read a dataset class instead of files: name -> loader(root, classes, options, name, test).
# `test`: the task's test data (the class's test split). Their options are checked by the loader.
CLASS_ADAPTERS = {"torchgeo": load_torchgeo_segmentation}


@dataclass
class SegmentationData:
    name: str
    adapter: str  # masks | vector
    options: MaskOptions | VectorOptions
    table: ClassTable
    pairs: list[tuple[Path, Path]]  # (image, mask or vector file)

    @property
    def classes(self) -> list[str]:
        return list(self.table.names)

    @property
    def ignore_index(self) -> int:
        return self.options.ignore_index

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Image i (C x H x W, stored dtype) and its mask (H x W uint8 class indices, ignore_index = unlabeled)."""
        image_path, label_path = self.pairs[i]
        image = read_image(image_path)
        if isinstance(self.options, VectorOptions):
            mask = rasterize_labels(
                image_path,
                label_path,
                self.table,
                self.options.class_field,
                self.options.nodata_ignore,
                self.ignore_index,
            )
        else:
            mask = read_mask(label_path, self.table, self.ignore_index)
        if mask.shape != image.shape[1:]:
            raise DataError(
                f"mask {label_path} is {mask.shape[1]}x{mask.shape[0]} but image {image_path} is "
                f"{image.shape[2]}x{image.shape[1]} (width x height)"
            )
        return image, mask


def load_segmentation_data(
    root: Path,
    adapter: str | None = None,
    classes: list[str] | None = None,
    options: dict | None = None,
    name: str | None = None,
    test: bool = False,
) -> SegmentationData | TorchgeoSegmentationData:
    """Index the dataset in folder `root` (nothing is decoded yet); see `datasets.adapter_options` for the options.
    `test`: `root` is the task's test data (adapter torchgeo reads options.test_split)."""
    root = Path(root)
    adapter = adapter or "masks"
    if adapter in CLASS_ADAPTERS:
        return CLASS_ADAPTERS[adapter](root, classes, options, name, test)
    if adapter not in SEGMENTATION_ADAPTERS:
        raise ConfigError(
            f"invalid config key 'adapter': '{adapter}' is not an adapter of task 'segmentation' "
            f"({', '.join([*SEGMENTATION_ADAPTERS, *CLASS_ADAPTERS])})"
        )
    opts = parse_options(SEGMENTATION_ADAPTERS, adapter, options, "segmentation")
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")
    if isinstance(opts, VectorOptions):
        pairs = _vector_pairs(root, opts)
        table = parse_class_table(classes or list(VECTOR_DEFAULT_CLASSES), "classes")
    else:
        pairs = pair_images_masks(root, opts.image_dir, opts.mask_dir)
        table = _mask_class_table(root, classes, opts)
    return SegmentationData(name or root.resolve().name, adapter, opts, table, pairs)


def _mask_class_table(root: Path, classes: list[str] | None, opts: MaskOptions) -> ClassTable:
    colors = opts.colors
    if isinstance(colors, str) and not Path(colors).is_absolute():
        colors = str(root / colors) if (root / colors).is_file() else colors
    if colors is None and classes is None:
        found = next((root / n for n in CLASS_TABLE_FILES if (root / n).is_file()), None)
        if found is None:
            raise ConfigError(
                f"no class table for {root}: give 'classes' (and options.colors for RGB-coded masks) "
                f"or put classes.json / classes.txt in the folder"
            )
        return parse_class_table(found, str(found), opts.ignore_colors)
    if colors is None:
        return parse_class_table(list(classes or []), "classes", opts.ignore_colors)
    if isinstance(colors, list):
        if classes is None or len(colors) != len(classes):
            raise ConfigError("options.colors as a list needs 'classes' of the same length (colour i = class i)")
        return parse_class_table(dict(zip(classes, colors)), "options.colors", opts.ignore_colors)
    table = parse_class_table(colors, "options.colors", opts.ignore_colors)
    if classes is not None:  # `classes` fixes the order; every class needs a colour
        missing = [c for c in classes if c not in table.names]
        extra = [c for c in table.names if c not in classes]
        if missing or extra:
            raise ConfigError(
                f"options.colors and classes disagree: no colour for {missing or '-'}, "
                f"colour for unlisted {extra or '-'}"
            )
        assert table.colors is not None
        by_name = dict(zip(table.names, table.colors))
        table = ClassTable(tuple(classes), tuple(by_name[c] for c in classes), table.ignore_colors, table.source)
    return table


def _vector_pairs(root: Path, opts: VectorOptions) -> list[tuple[Path, Path]]:
    images = find_files(root, opts.images)
    if not images:
        raise DataError(f"no images matching {', '.join(opts.images)} in {root}")
    pairs = []
    for img in images:
        labels = root / opts.labels.replace("{stem}", img.stem)
        if not labels.is_file():
            raise DataError(f"no vector labels for image {img} (expected {labels})")
        pairs.append((img, labels))
    return pairs
