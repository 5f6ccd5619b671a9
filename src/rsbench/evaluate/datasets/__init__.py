"""Dataset adapters for the dense tasks: image/mask folders, GeoTIFF + vector labels, VOC / COCO / CSV boxes."""

from rsbench.evaluate.datasets.detdata import DetectionData, load_detection_data
from rsbench.evaluate.datasets.masks import IGNORE_INDEX, ClassTable, decode_rgb_mask, parse_class_table, read_mask
from rsbench.evaluate.datasets.segdata import SegmentationData, load_segmentation_data

__all__ = [
    "IGNORE_INDEX",
    "ClassTable",
    "DetectionData",
    "SegmentationData",
    "decode_rgb_mask",
    "load_detection_data",
    "load_segmentation_data",
    "parse_class_table",
    "read_mask",
]
