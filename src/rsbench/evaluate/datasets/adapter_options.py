"""Adapter names and their options (the `options:` mapping of a task spec / `--config`) for dense tasks.

Segmentation
  masks (default): <data>/**/images/<name>.<ext> + sibling masks/<name>.png. Options: colors (name ->
    colour, a list aligned with `classes`, or a colour-table file; RGB-coded masks), ignore_colors,
    image_dir, mask_dir, ignore_index. Without `classes`/colors: classes.json|yaml|txt in <data>.
  vector: GeoTIFFs + polygons rasterized onto each image. Options: images (globs), labels (one file, or a
    pattern with {stem}), class_field (attribute holding each polygon's class), nodata_ignore, ignore_index.
Detection
  voc | coco | csvboxes (default: what <data>/annotations holds, VOC first). Options: images (folder,
    default images), annotations (globs relative to <data>), single_class (one label for every box).
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from rsbench.errors import ConfigError
from rsbench.evaluate.datasets.masks import IGNORE_INDEX
from rsbench.settings import StrictModel

CLASS_TABLE_FILES = ("classes.json", "classes.yaml", "classes.yml", "classes.txt")


class MaskOptions(StrictModel):
    colors: Any = None
    ignore_colors: list[Any] = Field(default_factory=list)
    image_dir: str = "images"
    mask_dir: str = "masks"
    ignore_index: int = Field(IGNORE_INDEX, ge=0, le=255)


class VectorOptions(StrictModel):
    images: list[str] = Field(default_factory=lambda: ["*.tif", "*.tiff"])
    labels: str
    class_field: str | None = None
    nodata_ignore: bool = True
    ignore_index: int = Field(IGNORE_INDEX, ge=0, le=255)


class BoxOptions(StrictModel):
    images: str = "images"
    annotations: list[str] | None = None
    single_class: str | None = None  # class-agnostic detection: every box gets this label


SEGMENTATION_ADAPTERS: dict[str, type[StrictModel]] = {"masks": MaskOptions, "vector": VectorOptions}
DETECTION_ADAPTERS: dict[str, type[StrictModel]] = {
    "voc": BoxOptions,
    "coco": BoxOptions,
    "csvboxes": BoxOptions,
    "csv": BoxOptions,
}


def parse_options(adapters: dict[str, type[StrictModel]], adapter: str, options: dict | None, task: str) -> Any:
    if adapter not in adapters:
        raise ConfigError(
            f"invalid config key 'adapter': '{adapter}' is not an adapter of task '{task}' ({', '.join(adapters)})"
        )
    values = dict(options or {})
    model = adapters[adapter]
    for key in ("annotations", "images"):  # a single glob is as good as a list of one
        if isinstance(values.get(key), str) and "list" in str(model.model_fields[key].annotation):
            values[key] = [values[key]]
    try:
        return model.model_validate(values)
    except ValidationError as e:
        first = e.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "<root>"
        msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        raise ConfigError(f"invalid config key 'options.{key}' for adapter '{adapter}': {msg}") from None


def find_files(root: Path, patterns: list[str]) -> list[Path]:
    """Files matching glob patterns, relative to `root` unless absolute; sorted, without duplicates."""
    found = set()
    for pattern in patterns:
        full = pattern if Path(pattern).is_absolute() else str(Path(root) / pattern)
        found.update(Path(p) for p in glob.glob(full, recursive=True) if Path(p).is_file())
    return sorted(found)
