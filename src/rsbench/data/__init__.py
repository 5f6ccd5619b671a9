"""Data helpers shared by the stages: image folders, image reading, normalization.

`normalization` (torch) loads on first use, so the image helpers serve commands that never load torch
(`rsbench corpus check`)."""

from rsbench.data.images import IMAGE_EXTENSIONS, ImageFolderIndex, index_image_folder, list_images, read_image

_NORMALIZATION = ("BandStats", "Normalization", "band_stats")

__all__ = [
    "IMAGE_EXTENSIONS",
    "BandStats",
    "ImageFolderIndex",
    "Normalization",
    "band_stats",
    "index_image_folder",
    "list_images",
    "read_image",
]


def __getattr__(name: str):
    if name in _NORMALIZATION:
        from rsbench.data import normalization

        return getattr(normalization, name)
    raise AttributeError(f"module 'rsbench.data' has no attribute {name!r}")
