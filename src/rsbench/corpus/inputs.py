"""Turning the user's inputs (files, folders, globs, list files, GDAL paths) into a raster list.

Files named explicitly are kept whatever their suffix: they are tried, and an unreadable one is
recorded as a failure, never silently dropped. Folders and globs contribute only *.tif/*.tiff so that
sidecar files (.xml, .txt, .ovr) beside the rasters do not show up as failures.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Callable
from pathlib import Path

from rsbench.errors import DataError

RASTER_SUFFIXES = {".tif", ".tiff"}
GLOB_CHARS = set("*?[")
# A per-raster option on an input-list line (`bands=red,green,blue`): a word of the form key=value.
_WITH_OPTIONS = re.compile(r"(\S.*?)((?:\s+[A-Za-z_]+=\S+)+)\s*")

Log = Callable[[str], None]


def is_gdal_path(item: str) -> bool:
    """Paths only GDAL can resolve (/vsis3/, /vsicurl/, /vsizip/..., s3://...): passed through as given."""
    return item.startswith("/vsi") or "://" in item


def _rasters_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in RASTER_SUFFIXES and p.is_file())


def list_line_options(line: str) -> tuple[str, dict[str, str]]:
    """(input, {key: value}) of one list line: trailing `key=value` words (e.g. `bands=red,green,blue`) are
    per-raster options (see rsbench.corpus.band_names), the rest is the input, spaces included."""
    m = _WITH_OPTIONS.fullmatch(line.strip())
    if m is None:
        return line.strip(), {}
    options = dict(word.split("=", 1) for word in m.group(2).split())
    return m.group(1), {k.lower(): v for k, v in options.items()}


def read_input_list_lines(path: str | Path) -> list[tuple[int, tuple[str, dict[str, str]]]]:
    """(line number, (input, options)) of each input of a list file; relative paths are relative to the list
    file's folder."""
    path = Path(path).expanduser()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read input list {path}: {e}") from None
    items = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        item, options = list_line_options(line)
        if not is_gdal_path(item) and not Path(item).expanduser().is_absolute():
            item = str(path.parent / item)
        items.append((number, (item, options)))
    if not items:
        raise DataError(f"input list {path} names no inputs")
    return items


def read_input_list(path: str | Path) -> list[str]:
    """The inputs of a list file (without their per-raster options)."""
    return [item for _, (item, _) in read_input_list_lines(path)]


def _expand(item: str, empty: list[str]) -> list[str]:
    if is_gdal_path(item):
        return [item]
    path = Path(item).expanduser()
    if path.is_dir():
        files = _rasters_in(path)
        if not files:
            empty.append(item)
        return [str(p.resolve()) for p in files]
    if path.exists():
        return [str(path.resolve())]
    if GLOB_CHARS & set(item):
        matches = sorted(glob.glob(str(path), recursive=True))
        files = [Path(m) for m in matches if Path(m).is_file() and Path(m).suffix.lower() in RASTER_SUFFIXES]
        for folder in (Path(m) for m in matches if Path(m).is_dir()):
            files.extend(_rasters_in(folder))
        if not files:
            empty.append(item)
        return [str(p.resolve()) for p in files]
    raise DataError(f"input not found: {item}")


def discover_inputs(inputs: list[str], log: Log | None = None, input_lists: list[str] | None = None) -> list[str]:
    """Expand inputs into a de-duplicated list of raster paths, in a stable order (as given, folders sorted)."""
    log = log or (lambda msg: None)
    items = list(inputs)
    for list_file in input_lists or []:
        items.extend(read_input_list(list_file))
    found: list[str] = []
    empty: list[str] = []
    for item in items:
        found.extend(_expand(item, empty))
    unique = list(dict.fromkeys(found))
    if not unique:
        raise DataError(f"no GeoTIFF (*.tif, *.tiff) inputs found in {', '.join(empty)}")
    for item in empty:
        log(f"warning: no GeoTIFF (*.tif, *.tiff) files in {item}")
    return unique
