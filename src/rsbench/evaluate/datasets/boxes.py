"""Bounding-box annotations: Pascal VOC XML, COCO JSON and CSV (columns found by name), as pixel boxes
(x0, y0, x1, y1) with origin top-left. Coordinates are taken as written (no VOC 1-based shift), so a VOC
file and a CSV of the same boxes agree."""

from __future__ import annotations

import csv
import json
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rsbench.errors import DataError

# Accepted CSV header names (lower-case, spaces/dashes as underscores), per role.
CSV_COLUMNS = {
    "image": ("image_path", "image", "image_name", "filename", "file_name", "file", "path", "img", "img_path"),
    "xmin": ("xmin", "x_min", "x1", "left", "minx"),
    "ymin": ("ymin", "y_min", "y1", "top", "miny"),
    "xmax": ("xmax", "x_max", "x2", "right", "maxx"),
    "ymax": ("ymax", "y_max", "y2", "bottom", "maxy"),
    "label": ("label", "class", "class_name", "category", "category_name", "name", "species"),
}
DEFAULT_LABEL = "object"  # CSVs without a label column describe a single class


@dataclass
class ImageBoxes:
    image: Path
    source: Path  # the annotation file, named in errors
    boxes: np.ndarray  # N x 4 float32
    labels: list[str]


def _find_image(name: str, images_dir: Path, source: Path) -> Path:
    for candidate in (images_dir / name, images_dir / Path(name).name, source.parent / name):
        if candidate.is_file():
            return candidate
    raise DataError(f"{source}: image '{name}' not found in {images_dir}")


def _number(text: str | None, what: str, source: Path) -> float:
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DataError(f"{source}: {what} is not a number ({text!r})") from None
    if not math.isfinite(value):
        raise DataError(f"{source}: {what} is not finite ({text!r})")
    return value


def read_voc(path: Path, images_dir: Path) -> ImageBoxes:
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise DataError(f"cannot read VOC annotation {path}: {e}") from None
    filename = root.findtext("filename")
    if not filename:
        raise DataError(f"VOC annotation {path} has no <filename>")
    boxes, labels = [], []
    for i, obj in enumerate(root.iter("object")):
        bb = obj.find("bndbox")
        if bb is None:
            raise DataError(f"{path}: object {i} has no <bndbox>")
        boxes.append([_number(bb.findtext(k), f"object {i} {k}", path) for k in ("xmin", "ymin", "xmax", "ymax")])
        labels.append((obj.findtext("name") or "").strip() or DEFAULT_LABEL)
    return ImageBoxes(
        _find_image(filename, images_dir, path), path, np.asarray(boxes, dtype=np.float32).reshape(-1, 4), labels
    )


def read_coco(path: Path, images_dir: Path) -> list[ImageBoxes]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        cats = {c["id"]: str(c["name"]) for c in data.get("categories", [])}
        images = {im["id"]: im["file_name"] for im in data["images"]}
        per_image: dict = {i: ([], []) for i in images}
        for a in data.get("annotations", []):
            if a.get("iscrowd", 0):
                continue
            x, y, w, h = (float(v) for v in a["bbox"])  # COCO boxes are x, y, width, height
            if a["image_id"] not in per_image:
                raise DataError(f"{path}: annotation {a.get('id')} refers to unknown image id {a['image_id']}")
            if a["category_id"] not in cats:
                raise DataError(f"{path}: annotation {a.get('id')} has unknown category id {a['category_id']}")
            per_image[a["image_id"]][0].append([x, y, x + w, y + h])
            per_image[a["image_id"]][1].append(cats[a["category_id"]])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise DataError(f"{path} is not a valid COCO annotation file ({type(e).__name__}: {e})") from None
    return [
        ImageBoxes(_find_image(images[i], images_dir, path), path, np.asarray(b, dtype=np.float32).reshape(-1, 4), lab)
        for i, (b, lab) in per_image.items()
    ]


def csv_columns(header: list[str], path: Path) -> dict[str, int]:
    """Role -> column index, found by (normalised) header name."""
    norm = [h.strip().lower().replace(" ", "_").replace("-", "_") for h in header]
    found = {}
    for role, names in CSV_COLUMNS.items():
        idx = next((norm.index(n) for n in names if n in norm), None)
        if idx is None and role != "label":
            raise DataError(
                f"CSV {path}: no column for {role} (accepted names: {', '.join(names)}; header: {', '.join(header)})"
            )
        if idx is not None:
            found[role] = idx
    return found


def read_csv_boxes(path: Path, images_dir: Path) -> list[ImageBoxes]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read CSV {path}: {e}") from None
    if not rows:
        raise DataError(f"CSV {path} is empty")
    cols = csv_columns(rows[0], path)
    per_image: dict[str, tuple[list, list]] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(cols.values()):
            raise DataError(f"CSV {path} line {line}: {len(row)} fields, expected {len(rows[0])}")
        name = row[cols["image"]].strip()
        boxes, labels = per_image.setdefault(name, ([], []))
        coords = [row[cols[k]].strip() for k in ("xmin", "ymin", "xmax", "ymax")]
        # An image listed with empty coordinates is an image without objects (DeepForest convention).
        if not any(coords):
            continue
        boxes.append([_number(v, f"line {line} {k}", path) for v, k in zip(coords, ("xmin", "ymin", "xmax", "ymax"))])
        labels.append(row[cols["label"]].strip() if "label" in cols else DEFAULT_LABEL)
    return [
        ImageBoxes(_find_image(name, images_dir, path), path, np.asarray(b, dtype=np.float32).reshape(-1, 4), lab)
        for name, (b, lab) in per_image.items()
    ]


def check_boxes(item: ImageBoxes, height: int, width: int) -> None:
    """Every box must be non-degenerate and inside the image."""
    for i, (x0, y0, x1, y1) in enumerate(item.boxes.tolist()):
        if x1 <= x0 or y1 <= y0:
            raise DataError(
                f"{item.source}: box {i} ({x0:g}, {y0:g}, {x1:g}, {y1:g}) of image {item.image.name} "
                f"is degenerate (needs xmax > xmin and ymax > ymin)"
            )
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            raise DataError(
                f"{item.source}: box {i} ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies outside image "
                f"{item.image.name} ({width}x{height})"
            )
