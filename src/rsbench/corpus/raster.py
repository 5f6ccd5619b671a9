"""One raster: header probe, band selection, the (optionally resampled) pixel grid, validity masks.

`probe_raster` returns a JSON-able description that every later step works from, so workers never
have to agree on anything but that dict: the grid (after --gsd), the selected bands, how invalid
pixels are marked, the radiometric reference used by the quicklook-based filters, the date.
"""

from __future__ import annotations

import hashlib
import math
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform as warp_points
from rasterio.windows import Window

from rsbench.corpus.band_names import describe_raster_bands, group_key, label, select
from rsbench.corpus.filters import percentile_reference
from rsbench.errors import DataError

# Radiometric reference sample: a lattice of REFERENCE_WINDOW px windows covering about 1/16 of the raster,
# 8 to 32 windows per axis. A raster no larger than the smallest lattice (8 x 8 windows = 262,144 px, e.g. a
# 512 x 512 chip) is read whole instead, in one read: the same number of pixels or fewer, 1 read instead of 64
# (benchmarks/corpus_bench.py, archive case).
REFERENCE_WINDOW = 64
REFERENCE_LATTICE = (8, 32)
REFERENCE_FRACTION = 1 / 16
WHOLE_READ_PIXELS = REFERENCE_LATTICE[0] ** 2 * REFERENCE_WINDOW**2
# GDAL environment of every raster access of the build. An archive keeps thousands of rasters in one
# folder: GDAL would list that folder on every open to look for sidecar files; it probes them by name instead.
# The cache is bounded: GDAL's default (5% of RAM) would let a huge raster grow it.
GDAL_OPTIONS = {"GDAL_DISABLE_READDIR_ON_OPEN": "TRUE", "GDAL_CACHEMAX": 128 * 2**20}
# ... except while a raster is read row of windows after row of windows (tiling's strips, packing's re-reads):
# the next row of windows shares block rows with this one, so the cache must hold every block one row of
# windows touches, or each block is decompressed once per row of windows that crosses it (a 16,384 px wide,
# 8-band uint16 raster in 512 px blocks: 128 MiB a block row; tiling + packing 22 s with 128 MiB, 12 s with
# room for its rows). Raised up to ROW_CACHE_MAX.
ROW_CACHE_MAX = 2**30
DATE_TAGS = (
    "ACQUISITION_DATE",
    "ACQUISITIONDATE",
    "ACQUISITIONDATETIME",
    "DATE_ACQUIRED",
    "SENSING_TIME",
    "SENSING_DATE",
    "PRODUCT_START_TIME",
    "DATATAKE_1_DATATAKE_SENSING_START",
    "DATE",
)
# Pre-collection Landsat scene ids (LC80200392015216LGN00): year + day of year.
_LANDSAT_ID = re.compile(r"L[CETOM]\d\d{6}(\d{4})(\d{3})[A-Z]{3}\d{2}")
_YMD = re.compile(r"(?<!\d)(19[7-9]\d|20\d\d)[-_:]?(0[1-9]|1[0-2])[-_:]?(0[1-9]|[12]\d|3[01])(?!\d)")


def key_prefix(path: str | Path) -> str:
    """Sample-key prefix: the stem made webdataset-safe (no '.'), plus a hash of the full path."""
    stem = re.sub(r"[^A-Za-z0-9_-]", "_", Path(str(path)).stem) or "raster"
    return f"{stem}_{hashlib.sha1(str(path).encode('utf-8')).hexdigest()[:8]}"


def crs_string(crs) -> str | None:
    if crs is None:
        return None
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg is not None else crs.to_wkt()


def json_number(value: float | None) -> float | str | None:
    # JSON has no NaN; a NaN nodata value is common for float rasters, so spell it out.
    return "nan" if value is not None and math.isnan(value) else value


def _parse_date(text: str) -> str | None:
    m = _LANDSAT_ID.search(text)
    if m:
        year, doy = int(m.group(1)), int(m.group(2))
        if 1 <= doy <= 366:
            return date.fromordinal(date(year, 1, 1).toordinal() + doy - 1).isoformat()
    m = _YMD.search(text)
    if m:
        try:
            return date(int(m.group(1)), int(m.group(2)), int(m.group(3))).isoformat()
        except ValueError:
            return None
    return None


def acquisition_date(src, path: str) -> tuple[str | None, str | None]:
    """(ISO date, where it came from): a date metadata tag first, then the file name."""
    for domain in (None, "IMAGERY"):
        tags = {k.upper(): v for k, v in src.tags(ns=domain).items()}
        for name in DATE_TAGS:
            if name in tags and (found := _parse_date(tags[name])) and found > "1970-01-01":
                return found, f"tag:{name}"
    found = _parse_date(Path(str(path)).name)
    return (found, "filename") if found else (None, None)


def _metres_per_unit(crs: CRS, transform: Affine, width: int, height: int) -> tuple[float, float]:
    if crs.is_geographic:
        # Degrees: scale by the local size of a degree at the raster centre.
        lat = math.radians((transform * (width / 2, height / 2))[1])
        return 111_320.0 * math.cos(lat), 110_574.0
    factor = crs.linear_units_factor[1]
    return factor, factor


def _nodata_source(src, indexes: list[int]) -> str:
    every_band = src.mask_flag_enums  # computed for all bands on each access
    flags = [every_band[i - 1] for i in indexes]
    if any(MaskFlags.per_dataset in f or MaskFlags.alpha in f for f in flags):
        return "mask"
    return "declared" if src.nodata is not None else "none"


def probe_raster(
    path: str,
    selection: list[int | str] | None = None,
    gsd: float | None = None,
    implicit_nodata: bool = True,
    resampling: str = "bilinear",
    band_options: dict[str, Any] | None = None,
    reference: bool = True,
) -> dict[str, Any]:
    """The raster's description; raises DataError/rasterio errors (failed) or BandMismatch (skipped).

    `band_options`: the raster's `bands`, `sensor`, `units` from the input list or a sidecar
    (rsbench.corpus.band_names); `selection` picks bands by index or by (canonical) name.
    `reference=False` (the build's planning) leaves out the reference of a small raster: its pixels are
    read once, when it is tiled, and the reference is taken from that read (`whole_raster`)."""
    with rasterio.open(path) as src:
        if src.count == 0:
            subs = src.subdatasets
            hint = f" (a container of {len(subs)} subdatasets such as {subs[0]}: give those as inputs)" if subs else ""
            raise DataError(f"raster has zero bands{hint}")
        if src.crs is None:
            raise DataError("raster has no CRS (georeferencing); tiles could not be located")
        layout = describe_raster_bands(src.count, src.descriptions, src.dtypes[0], band_options)
        indexes = select(selection, layout["names"], layout["number_sensor"])
        mpu_x, mpu_y = _metres_per_unit(src.crs, src.transform, src.width, src.height)
        native = (abs(src.res[0]) * mpu_x, abs(src.res[1]) * mpu_y)
        width, height, transform = src.width, src.height, src.transform
        if gsd is not None and not (math.isclose(native[0], gsd) and math.isclose(native[1], gsd)):
            width = max(1, round(src.width * native[0] / gsd))
            height = max(1, round(src.height * native[1] / gsd))
            transform = src.transform * Affine.scale(src.width / width, src.height / height)
        resampled = (width, height) != (src.width, src.height)
        dates = acquisition_date(src, path)
        cx, cy = transform * (width / 2, height / 2)
        (lon,), (lat,) = warp_points(src.crs, "EPSG:4326", [cx], [cy])
        dtypes = [src.dtypes[i - 1] for i in indexes]
        names = [label(layout["names"][i - 1], layout["number_sensor"]) for i in indexes]
        dtype = np.result_type(*dtypes).name
        units = layout["units"] if band_options and band_options.get("units") else dtype
        info = {
            "path": path,
            "width": width,
            "height": height,
            "source_size": [src.width, src.height],
            "bands": len(indexes),
            "band_indexes": indexes,
            "band_names": names,
            "source_band_names": [layout["names"][i - 1] for i in indexes],
            "band_names_source": layout["names_source"],
            "sensor": layout["sensor"],
            "units": units,
            "band_group": group_key(names, units),
            "dtype": dtype,
            "mixed_dtypes": len(set(dtypes)) > 1,
            "crs": crs_string(src.crs),
            "transform": list(transform)[:6],
            "resampled": resampled,
            "resampling": resampling,
            "gsd": [native[0] * src.width / width, native[1] * src.height / height],
            "nodata": json_number(src.nodata),
            "nodata_source": _nodata_source(src, indexes),
            "implicit_nodata": implicit_nodata,
            "date": dates[0],
            "date_source": dates[1],
            "center_lonlat": [lon, lat],
            # GDAL's block (rows, columns) of the file: a large raster's parts end where block rows end (plan.py).
            "block": None if resampled else list(src.block_shapes[0]),
        }
        if not reference and is_small(info):
            return info  # tiling reads it whole once and takes the reference from that read
        if not info["resampled"]:  # the file is the grid: no second open for the reference sample
            info["reference"] = radiometric_reference(src, info)
            return info
    with open_grid(info) as reader:
        info["reference"] = radiometric_reference(reader, info)
    return info


def is_small(info: dict[str, Any]) -> bool:
    """A raster whose reference comes from all its pixels, in one read (see REFERENCE_*)."""
    return info["width"] * info["height"] <= WHOLE_READ_PIXELS


@contextmanager
def open_grid(info: dict[str, Any]) -> Iterator[Any]:
    """The raster as the tiling grid sees it: the file itself or a WarpedVRT at the --gsd resolution.

    The file itself is opened for its pixels only: its georeferencing, already in `info`, is not read again
    (parsing a GeoTIFF's CRS is most of an open, 0.8 of 1 ms for a small chip). Drivers without the
    GEOREF_SOURCES open option ignore it."""
    if not info["resampled"]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            src = rasterio.open(info["path"], GEOREF_SOURCES="NONE")
        with src:
            yield src
        return
    with rasterio.open(info["path"]) as src:
        with WarpedVRT(
            src,
            crs=src.crs,
            transform=Affine(*info["transform"]),
            width=info["width"],
            height=info["height"],
            resampling=Resampling[info["resampling"]],
        ) as vrt:
            yield vrt


def row_cache_bytes(reader, tile: int) -> int:
    """GDAL block cache that holds every block one row of `tile` px high windows touches: up to
    ceil(tile / block height) + 1 block rows across the whole width, every band of the file (a pixel-interleaved
    block holds them all), plus an eighth for GDAL's own bookkeeping; within GDAL_OPTIONS' cache and
    ROW_CACHE_MAX."""
    block_h, block_w = reader.block_shapes[0]
    itemsize = max(np.dtype(d).itemsize for d in reader.dtypes)
    block_rows = -(-tile // block_h) + 1
    width = -(-reader.width // block_w) * block_w
    need = block_rows * block_h * width * reader.count * itemsize
    return int(min(ROW_CACHE_MAX, max(GDAL_OPTIONS["GDAL_CACHEMAX"], need * 9 // 8)))


def row_cache(reader, tile: int) -> rasterio.Env:
    """The GDAL environment for reading `reader` row of windows after row of windows (see ROW_CACHE_MAX)."""
    return rasterio.Env(GDAL_CACHEMAX=row_cache_bytes(reader, tile))


def read_block(reader, info: dict[str, Any], window: Window) -> tuple[np.ndarray, np.ndarray]:
    """(pixels C x H x W in the selected band order, valid mask H x W) of one window of the grid."""
    array = read_pixels(reader, info, window)
    return array, valid_mask(reader, info, window, array)


def read_pixels(reader, info: dict[str, Any], window: Window) -> np.ndarray:
    """Pixels C x H x W of one window of the grid, in the selected band order and the raster's dtype."""
    out_dtype = info["dtype"] if info["mixed_dtypes"] else None
    return reader.read(indexes=info["band_indexes"], window=window, out_dtype=out_dtype)


def valid_mask(reader, info: dict[str, Any], window: Window, array: np.ndarray) -> np.ndarray:
    """Valid pixels, the way GDAL's dataset mask defines them (invalid = nodata in every band).

    Computed from the pixels already read whenever the rule is a nodata value, so a window is read
    once; only internal/sidecar masks and alpha bands need GDAL's mask read.
    """
    source = info["nodata_source"]
    if source == "mask":
        valid = reader.dataset_mask(window=window) != 0
    elif source == "declared":
        nodata = info["nodata"]
        valid = ~(np.isnan(array).all(axis=0) if nodata == "nan" else (array == nodata).all(axis=0))
    else:
        valid = np.ones(array.shape[1:], dtype=bool)
        if info["implicit_nodata"]:
            # No declared nodata: a pixel that is exactly 0 in every band is fill (Landsat collars).
            valid &= ~(array == 0).all(axis=0)
    if np.issubdtype(array.dtype, np.floating):
        valid &= ~np.isnan(array).any(axis=0)
    return valid


def _lattice(size: int, window: int, n: int) -> list[int]:
    if size <= window:
        return [0]
    return sorted({round(i * (size - window) / (n - 1)) for i in range(n)})


def reference_lattice(width: int, height: int) -> int:
    """Windows per axis of the reference sample: about REFERENCE_FRACTION of the raster, within the bounds."""
    side = math.sqrt(width * height * REFERENCE_FRACTION) / REFERENCE_WINDOW
    return int(min(REFERENCE_LATTICE[1], max(REFERENCE_LATTICE[0], math.ceil(side))))


def radiometric_reference(reader, info: dict[str, Any]) -> dict[str, list[float]]:
    """Per-band 2nd/98th percentiles of valid pixels: of the whole raster when it is small, else of a
    lattice of small windows that grows with the area (see REFERENCE_*).

    The quicklook-based filters (blank, cloud, duplicates, diversity features) need values on a
    common scale; a per-raster reference from a bounded sample keeps the probe cheap on huge rasters and
    the result independent of how the raster is split later.
    """
    width, height = info["width"], info["height"]
    if is_small(info):
        return whole_raster(reader, info)[2]
    n = reference_lattice(width, height)
    w, h = min(REFERENCE_WINDOW, width), min(REFERENCE_WINDOW, height)
    windows = [Window(col, row, w, h) for row in _lattice(height, h, n) for col in _lattice(width, w, n)]
    pixels = []
    for window in windows:
        array, valid = read_block(reader, info, window)
        pixels.append(np.compress(valid.ravel(), array.reshape(array.shape[0], -1), axis=1))
    return percentile_reference(np.concatenate(pixels, axis=1))


def whole_raster(reader, info: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, dict[str, list[float]]]:
    """(pixels, valid mask, radiometric reference) of a small raster, from one read of the whole grid."""
    array, valid = read_block(reader, info, Window(0, 0, info["width"], info["height"]))
    pixels = np.compress(valid.ravel(), array.reshape(array.shape[0], -1), axis=1)
    return array, valid, percentile_reference(pixels)


def lonlat(crs: str, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lon, lat = warp_points(CRS.from_user_input(crs), "EPSG:4326", list(xs), list(ys))
    return np.asarray(lon), np.asarray(lat)
