"""Reading image files (JPEG/PNG via Pillow, GeoTIFF via rasterio) as C x H x W arrays."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rsbench.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
_RASTER_EXTENSIONS = (".tif", ".tiff")


def read_image(path: str | Path) -> np.ndarray:
    """Return the image as a C x H x W array in its stored dtype (any band count)."""
    path = Path(path)
    try:
        if path.suffix.lower() in _RASTER_EXTENSIONS:
            import rasterio

            with rasterio.open(path) as src:
                arr = src.read()
        else:
            from PIL import Image

            with Image.open(path) as im:
                arr = np.asarray(im)
            arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    except Exception as e:  # any decoder failure means an unreadable file
        raise DataError(f"cannot read image {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    if arr.size == 0:
        raise DataError(f"image {path} is empty")
    return np.ascontiguousarray(arr)


def photo_band_names(paths: list[Path], bands: int) -> list[str] | None:
    """red, green, blue for 3-band photos (JPEG/PNG: Pillow decodes them as R, G, B); None otherwise
    (GeoTIFF bands are named by their descriptions, not here)."""
    if bands != 3 or any(Path(p).suffix.lower() in _RASTER_EXTENSIONS for p in paths):
        return None
    return ["red", "green", "blue"]


def list_images(root: str | Path) -> list[Path]:
    """All image files below `root` (recursive, sorted); an error when there are none."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {root}")
    return paths


@dataclass(frozen=True)
class ImageFolderIndex:
    """An ImageFolder layout: root/<class>/<image>. Labels index into `classes` (sorted names)."""

    root: Path
    paths: list[Path]
    labels: np.ndarray
    classes: list[str]


def index_image_folder(root: str | Path) -> ImageFolderIndex:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"dataset folder {root} has no class sub-folders (expected root/<class>/<image>)")
    paths, labels, empty = [], [], []
    for i, name in enumerate(classes):
        files = sorted(p for p in (root / name).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        paths += files
        labels += [i] * len(files)
        if not files:
            empty.append(name)
    if not paths:
        raise DataError(f"dataset folder {root} has class folders but no images")
    if empty:
        # A class without images would still count as a class (chance level, per-class metrics): refuse it.
        raise DataError(
            f"class folder(s) without images in {root}: {', '.join(empty)} (add images or remove the folder)"
        )
    return ImageFolderIndex(root=root, paths=paths, labels=np.asarray(labels, dtype=np.int64), classes=classes)
