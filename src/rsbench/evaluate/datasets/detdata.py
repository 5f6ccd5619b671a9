"""A detection dataset: images with validated pixel boxes and class indices, from VOC / COCO / CSV files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rsbench.data.images import read_image
from rsbench.errors import DataError
from rsbench.evaluate.datasets.adapter_options import DETECTION_ADAPTERS, BoxOptions, find_files, parse_options
from rsbench.evaluate.datasets.boxes import ImageBoxes, check_boxes, read_coco, read_csv_boxes, read_voc

_SUFFIX_FORMAT = {".xml": "voc", ".json": "coco", ".csv": "csvboxes"}
_AUTO_ORDER = ("voc", "coco", "csvboxes")  # a folder with several kinds of annotation files uses the first


@dataclass
class DetectionData:
    name: str
    adapter: str
    classes: list[str]
    items: list[ImageBoxes]  # one per image

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image i as C x H x W, its boxes (N x 4 float32) and class indices (N int64); boxes are checked."""
        item = self.items[i]
        image = read_image(item.image)
        check_boxes(item, image.shape[1], image.shape[2])
        labels = np.asarray([self.classes.index(lab) for lab in item.labels], dtype=np.int64)
        return image, item.boxes, labels


def _annotation_files(root: Path, adapter: str | None, opts: BoxOptions) -> tuple[str, list[Path]]:
    if opts.annotations:
        files = find_files(root, opts.annotations)
        if not files:
            raise DataError(f"no annotation files matching {', '.join(opts.annotations)} in {root}")
    else:
        folder = root / "annotations" if (root / "annotations").is_dir() else root
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _SUFFIX_FORMAT)
        if not files:
            raise DataError(f"no annotation files (.xml, .json, .csv) in {folder}")
    if adapter is None:
        kinds = {_SUFFIX_FORMAT.get(p.suffix.lower()) for p in files}
        adapter = next((k for k in _AUTO_ORDER if k in kinds), None)
        if adapter is None:
            raise DataError(f"cannot tell the annotation format of {files[0]} (set 'adapter': voc, coco or csvboxes)")
    return adapter, [p for p in files if _SUFFIX_FORMAT.get(p.suffix.lower()) == adapter]


def load_detection_data(
    root: Path,
    adapter: str | None = None,
    classes: list[str] | None = None,
    options: dict | None = None,
    name: str | None = None,
) -> DetectionData:
    """Read the annotations of the dataset in folder `root` (images are decoded later, by `read`)."""
    root = Path(root)
    adapter = "csvboxes" if adapter == "csv" else adapter
    opts = parse_options(DETECTION_ADAPTERS, adapter or "voc", options, "detection")
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")
    images_dir = root / opts.images
    if not images_dir.is_dir():
        raise DataError(f"image folder not found: {images_dir}")
    adapter, files = _annotation_files(root, adapter, opts)
    readers = {
        "voc": lambda f: [read_voc(f, images_dir)],
        "coco": lambda f: read_coco(f, images_dir),
        "csvboxes": lambda f: read_csv_boxes(f, images_dir),
    }
    items: list[ImageBoxes] = [it for f in files for it in readers[adapter](f)]
    merged: dict[Path, ImageBoxes] = {}
    for it in items:  # several files may annotate one image (e.g. one CSV per annotator)
        key = it.image.resolve()
        if key in merged:
            m = merged[key]
            merged[key] = ImageBoxes(m.image, m.source, np.concatenate([m.boxes, it.boxes]), m.labels + it.labels)
        else:
            merged[key] = it
    items = [merged[k] for k in sorted(merged)]
    if not items:
        raise DataError(f"no annotated images in {root}")
    if opts.single_class is not None:
        items = [ImageBoxes(it.image, it.source, it.boxes, [opts.single_class] * len(it.labels)) for it in items]
    if classes is not None:
        for it in items:
            unknown = sorted(set(it.labels) - set(classes))
            if unknown:
                raise DataError(f"{it.source}: unknown class '{unknown[0]}' (classes: {', '.join(classes)})")
        classes = list(classes)
    else:
        classes = sorted({lab for it in items for lab in it.labels})
        if not classes:
            raise DataError(f"annotations in {root} hold no boxes")
    return DetectionData(name or root.resolve().name, adapter, classes, items)
