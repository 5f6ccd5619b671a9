"""Data helpers shared by the stages: image folders, image reading, normalization."""

from rsbench.data.images import IMAGE_EXTENSIONS, ImageFolderIndex, index_image_folder, list_images, read_image
from rsbench.data.normalization import BandStats, Normalization, band_stats

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
