"""Per-raster tiling: open one raster, walk its window grid, filter by nodata, yield tiles.

Everything here is a pure function of (path, tiling settings): no shared state, no output files.
That is what lets a later scheduler (Dask) run rasters in parallel and still produce identical
corpora, because keys, bytes and statistics depend only on the raster and the settings.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import rasterio
from rasterio.windows import Window

from rsbench.data.normalization import BandStats

REJECT_NODATA = "nodata"


@dataclass
class Tile:
    """One grid window: its manifest record, and for kept tiles the pixels and their valid-pixel stats."""

    record: dict[str, Any]
    array: np.ndarray | None = None
    stats: BandStats | None = None

    @property
    def kept(self) -> bool:
        return self.array is not None


def grid_offsets(size: int, tile: int, stride: int) -> range:
    """Offsets of full windows along one axis; partial edge windows are dropped."""
    if size < tile:
        return range(0)
    return range(0, size - tile + 1, stride)


def tile_count(width: int, height: int, tile: int, stride: int) -> int:
    return len(grid_offsets(width, tile, stride)) * len(grid_offsets(height, tile, stride))


def key_prefix(path: str | Path) -> str:
    """Sample-key prefix for a raster: its stem made webdataset-safe, plus a hash of the full path.

    webdataset splits a tar member name at the first '.', so keys hold only [A-Za-z0-9_-]; the hash
    keeps two rasters with the same file name in different folders apart.
    """
    path = Path(path)
    stem = re.sub(r"[^A-Za-z0-9_-]", "_", path.stem) or "raster"
    digest = hashlib.sha1(str(path).encode("utf-8")).hexdigest()[:8]
    return f"{stem}_{digest}"


def _crs_string(crs) -> str | None:
    if crs is None:
        return None
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg is not None else crs.to_wkt()


def _json_number(value: float | None) -> float | str | None:
    # JSON has no NaN; a NaN nodata value is common for float rasters, so spell it out.
    if value is not None and math.isnan(value):
        return "nan"
    return value


def raster_info(src: rasterio.io.DatasetReader, path: str) -> dict[str, Any]:
    """The per-raster metadata that corpus.json records (tile counts are added by the caller)."""
    dtype = np.result_type(*src.dtypes).name
    return {
        "path": path,
        "width": src.width,
        "height": src.height,
        "bands": src.count,
        "dtype": dtype,
        "crs": _crs_string(src.crs),
        "nodata": _json_number(src.nodata),
        "band_names": [d if d else f"B{i + 1}" for i, d in enumerate(src.descriptions)],
        "res": list(src.res),
    }


def probe_raster(path: str) -> dict[str, Any]:
    """Open a raster just to read its header; raises whatever rasterio raises for a bad file."""
    with rasterio.open(path) as src:
        return raster_info(src, path)


def tile_raster(path: str, tile_size: int, stride: int, max_nodata_fraction: float) -> Iterator[Tile]:
    """Yield every full grid window of `path` in row-major order, kept or rejected.

    Only windowed reads: the mask is read first and the pixels only for tiles that pass the filter.
    Raises on unreadable data; the caller decides what a failure means for the raster's tiles.
    """
    prefix = key_prefix(path)
    with rasterio.open(path) as src:
        info = raster_info(src, path)
        # Mixed per-band dtypes are rare; reading into their common type keeps one array per tile.
        out_dtype = None if len(set(src.dtypes)) == 1 else info["dtype"]
        for row_off in grid_offsets(src.height, tile_size, stride):
            for col_off in grid_offsets(src.width, tile_size, stride):
                window = Window(col_off, row_off, tile_size, tile_size)
                transform = src.window_transform(window)
                # dataset_mask is 0 where GDAL considers the pixel invalid in every band: the nodata
                # value, an internal/sidecar mask or an alpha band, whichever the file uses.
                valid = src.dataset_mask(window=window) != 0
                nodata_fraction = float(1.0 - valid.mean())
                centre_x, centre_y = transform @ (tile_size / 2, tile_size / 2)
                record = {
                    "key": f"{prefix}_r{row_off:06d}_c{col_off:06d}",
                    "source": path,
                    "row_off": row_off,
                    "col_off": col_off,
                    "width": tile_size,
                    "height": tile_size,
                    "bands": info["bands"],
                    "dtype": info["dtype"],
                    "nodata_fraction": nodata_fraction,
                    "kept": nodata_fraction <= max_nodata_fraction,
                    "reject_reason": None,
                    "crs": info["crs"],
                    "center_x": float(centre_x),
                    "center_y": float(centre_y),
                    "transform": list(transform)[:6],
                }
                if not record["kept"]:
                    record["reject_reason"] = REJECT_NODATA
                    yield Tile(record)
                    continue
                array = src.read(window=window, out_dtype=out_dtype)
                yield Tile(record, np.ascontiguousarray(array), BandStats.of(array[:, valid]))


def sample_metadata(record: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """The `<key>.json` stored beside each tile's pixels in the shards."""
    return {
        "key": record["key"],
        "source": record["source"],
        "window": {k: record[k] for k in ("col_off", "row_off", "width", "height")},
        "crs": info["crs"],
        "transform": record["transform"],
        "band_names": info["band_names"],
        "dtype": record["dtype"],
        "nodata": info["nodata"],
        "nodata_fraction": record["nodata_fraction"],
    }
