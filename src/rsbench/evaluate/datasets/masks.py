"""Image/mask folders: pairing, class tables (names, optionally RGB colours) and pixel-exact mask decoding."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rsbench.data.images import IMAGE_EXTENSIONS
from rsbench.errors import ConfigError, DataError

IGNORE_INDEX = 255
_RASTER_EXTENSIONS = (".tif", ".tiff")

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class ClassTable:
    """Class names; with `colors`, masks are RGB-coded (colour i = class i), else they hold class indices."""

    names: tuple[str, ...]
    colors: tuple[RGB, ...] | None = None
    ignore_colors: tuple[RGB, ...] = field(default=())
    source: str = "the class table"  # where the table came from, for error messages

    def __post_init__(self) -> None:
        if not self.names:
            raise ConfigError("the class table lists no classes")
        if len(self.names) >= IGNORE_INDEX:
            raise ConfigError(f"{len(self.names)} classes; at most {IGNORE_INDEX - 1} are supported")
        if len(set(self.names)) != len(self.names):
            raise ConfigError(f"duplicate class names in the class table: {', '.join(self.names)}")
        if self.colors is not None:
            all_colors = list(self.colors) + list(self.ignore_colors)
            if len(set(all_colors)) != len(all_colors):
                raise ConfigError("the colour table gives the same colour to two entries")


def parse_color(value: Any, where: str) -> RGB:
    """'#3C1098', '60,16,152' or [60, 16, 152] -> (60, 16, 152)."""
    if isinstance(value, str) and re.fullmatch(r"#?[0-9a-fA-F]{6}", value.strip()):
        h = value.strip().lstrip("#")
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)
    if isinstance(value, str):
        value = value.split(",")
    try:
        rgb = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        rgb = ()
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        raise ConfigError(f"invalid colour {value!r} in {where} (use '#RRGGBB' or [R, G, B])")
    return rgb  # type: ignore[return-value]


def parse_class_table(value: Any, where: str, ignore_colors: Any = ()) -> ClassTable:
    """Class names, `{name: colour}`, `[{name|title, color}]`, a Supervisely `{"classes": [...]}` or a
    .json / .yaml / .txt file holding one of those."""
    if isinstance(value, (str, Path)) and Path(value).suffix.lower() in (".json", ".yaml", ".yml", ".txt"):
        return parse_class_table(_read_table_file(Path(value)), f"class table {value}", ignore_colors)
    if isinstance(value, dict) and "classes" in value:
        value = value["classes"]
    ignored = tuple(parse_color(c, where) for c in (ignore_colors or ()))
    if isinstance(value, dict):
        names = tuple(str(k) for k in value)
        return ClassTable(names, tuple(parse_color(c, where) for c in value.values()), ignored, where)
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        names, colors = [], []
        for entry in value:
            name = entry.get("name", entry.get("title"))
            if name is None:
                raise ConfigError(f"class entry {entry} in {where} has no 'name'")
            names.append(str(name))
            colors.append(entry.get("color", entry.get("colour")))
        if all(c is None for c in colors):
            return ClassTable(tuple(names), source=where)
        if any(c is None for c in colors):
            raise ConfigError(f"some classes in {where} have a colour and some do not")
        return ClassTable(tuple(names), tuple(parse_color(c, where) for c in colors), ignored, where)
    if isinstance(value, list) and value:
        return ClassTable(tuple(str(v) for v in value), source=where)
    raise ConfigError(f"invalid class table in {where}: expected class names or name -> colour entries")


def _read_table_file(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"class table file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        if path.suffix.lower() == ".txt":
            return [line.strip() for line in text.splitlines() if line.strip()]
        import yaml

        return yaml.safe_load(text)
    except (json.JSONDecodeError, ValueError) as e:
        raise ConfigError(f"cannot parse class table {path}: {str(e).splitlines()[0]}") from None


def pair_images_masks(root: Path, image_dir: str = "images", mask_dir: str = "masks") -> list[tuple[Path, Path]]:
    """Every image below a folder named `image_dir`, with the same-stem file in the sibling `mask_dir`."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")
    image_dirs = sorted(d for d in _walk_dirs(root) if d.name == image_dir)
    pairs = []
    for d in image_dirs:
        masks = d.parent / mask_dir
        if not masks.is_dir():
            raise DataError(f"image folder {d} has no sibling mask folder {masks}")
        files = sorted(Path(top) / f for top, _, names in os.walk(d, followlinks=True) for f in names)
        for img in (p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS):
            stem = masks / img.relative_to(d).with_suffix("")
            found = [
                stem.with_suffix(ext)
                for ext in (".png", ".tif", ".tiff", ".bmp", ".gif", img.suffix)
                if stem.with_suffix(ext).is_file()
            ]
            if not found:
                raise DataError(f"no mask for image {img} (expected {stem}.png or .tif)")
            pairs.append((img, found[0]))
    if not pairs:
        raise DataError(
            f"no images found in '{image_dir}/' folders under {root} (expected "
            f"<dir>/{image_dir}/<name>.<ext> with masks in <dir>/{mask_dir}/<name>.png)"
        )
    return pairs


def _walk_dirs(root: Path) -> list[Path]:
    # os.walk with followlinks: datasets are often assembled from symlinked folders.
    return [Path(top) for top, _, _ in os.walk(root, followlinks=True)]


def decode_rgb_mask(rgb: np.ndarray, table: ClassTable, path: Path, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """H x W x 3 colours -> H x W class indices, exact colour matches only."""
    if table.colors is None:
        raise ConfigError(f"mask {path} is RGB-coded but the class table has no colours")
    rgb = np.asarray(rgb)
    codes = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2].astype(np.int32)
    colors = list(table.colors) + list(table.ignore_colors)
    table_codes = np.array([(r << 16) | (g << 8) | b for r, g, b in colors], dtype=np.int32)
    values = np.array(list(range(len(table.colors))) + [ignore_index] * len(table.ignore_colors), dtype=np.uint8)
    order = np.argsort(table_codes)
    pos = np.clip(np.searchsorted(table_codes[order], codes), 0, len(order) - 1)
    hit = table_codes[order][pos] == codes
    if not hit.all():
        r, c = (int(v[0]) for v in np.nonzero(~hit))
        color = tuple(int(v) for v in rgb[r, c, :3])
        hex_color = "".join(f"{v:02X}" for v in color)
        raise DataError(
            f"mask {path} has colour {color} (#{hex_color}) at pixel (x={c}, y={r}), "
            f"which is not in the colours of {table.source} ({', '.join(table.names)})"
        )
    return values[order][pos]


def read_mask(path: Path, table: ClassTable, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """A mask file -> H x W uint8 class indices (ignore_index where unlabeled)."""
    try:
        if path.suffix.lower() in _RASTER_EXTENSIONS:
            import rasterio

            with rasterio.open(path) as src:
                arr = src.read()
            arr = arr[0] if table.colors is None or arr.shape[0] == 1 else arr[:3].transpose(1, 2, 0)
        else:
            from PIL import Image

            with Image.open(path) as im:
                # Palette PNGs are colour images when the table has colours, index masks otherwise.
                arr = np.asarray(im.convert("RGB") if table.colors is not None else im)
    except Exception as e:  # any decoder failure means an unreadable mask
        raise DataError(f"cannot read mask {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    if table.colors is not None:
        if arr.ndim != 3:
            raise DataError(f"mask {path} has one band but the class table gives colours (RGB-coded masks)")
        return decode_rgb_mask(arr, table, path, ignore_index)
    if arr.ndim != 2:
        raise DataError(
            f"mask {path} has {arr.shape[-1]} channels; index masks need one band "
            f"(for RGB-coded masks give the classes with colours)"
        )
    return check_index_mask(arr, table, path, ignore_index)


def check_index_mask(arr: np.ndarray, table: ClassTable, path: Path, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    bad = (arr >= len(table.names)) & (arr != ignore_index) | (arr < 0)
    if bad.any():
        value = int(arr[bad].flat[0])
        raise DataError(
            f"mask {path} has value {value}, which is not a class index (0..{len(table.names) - 1} "
            f"for {', '.join(table.names)}) or the ignore index {ignore_index}"
        )
    return arr.astype(np.uint8)
