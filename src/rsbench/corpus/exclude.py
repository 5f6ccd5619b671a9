"""Leakage guard: footprints of evaluation data that pretraining tiles must not overlap.

`--exclude` takes vector files (anything OGR reads: GeoJSON, GeoPackage, Shapefile...; read with
pyogrio) or rasters (their bounds are the footprint). Geometries travel to the workers as WKB plus
their CRS and are reprojected into each raster's CRS there (after densifying edges, so a box stays
a faithful footprint after reprojection), then queried with a shapely STRtree. A tile overlaps when
its footprint shares interior area/points with a geometry; touching along an edge does not count.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import rasterio
import shapely
from rasterio.warp import transform_geom

from rsbench.corpus.raster import crs_string
from rsbench.errors import DataError

Exclusions = tuple[tuple[str, tuple[bytes, ...]], ...]  # ((crs, (wkb, ...)), ...) per file; hashable
_SEGMENTS = 64


def _vector(path: str) -> list[tuple[str, tuple[bytes, ...]]] | None:
    import pyogrio  # only the coordinating process reads exclusion files; workers get WKB

    try:
        layers = pyogrio.list_layers(path)
    except Exception:  # not a vector dataset: maybe a raster
        return None
    out = []
    for name, geometry_type in layers:
        if geometry_type is None:
            continue
        meta, _, wkb, _ = pyogrio.raw.read(path, layer=name, read_geometry=True)
        if meta.get("crs") is None:
            raise DataError(f"exclusion file {path} (layer {name}) has no CRS")
        out.append((meta["crs"], tuple(bytes(g) for g in wkb if g is not None)))
    return out or None


def _raster(path: str) -> list[tuple[str, tuple[bytes, ...]]]:
    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise DataError(f"exclusion raster {path} has no CRS")
            footprint = shapely.box(*src.bounds)
            return [(crs_string(src.crs), (shapely.to_wkb(footprint),))]
    except rasterio.errors.RasterioIOError as e:
        raise DataError(f"exclusion file {path} is neither a vector file nor a raster ({e})") from None


def load_exclusions(paths: list[str]) -> Exclusions:
    """Read every --exclude file; a missing or unreadable one is an error (never silently skipped)."""
    out = []
    for path in paths:
        if not Path(path).exists() and not path.startswith("/vsi"):
            raise DataError(f"exclusion file not found: {path}")
        out.extend(_vector(path) or _raster(path))
    if paths and not any(wkbs for _, wkbs in out):
        raise DataError(f"exclusion files hold no geometry: {', '.join(paths)}")
    return tuple(out)


def _densify(geom):
    x0, y0, x1, y1 = geom.bounds
    step = max(x1 - x0, y1 - y0) / _SEGMENTS
    return shapely.segmentize(geom, step) if step > 0 else geom


@lru_cache(maxsize=8)
def _index(exclusions: Exclusions, crs: str) -> tuple[shapely.STRtree, np.ndarray]:
    geoms = []
    for src_crs, wkbs in exclusions:
        shapes = [_densify(g) for g in shapely.from_wkb(list(wkbs))]
        if src_crs == crs:
            geoms.extend(shapes)
            continue
        mapped = transform_geom(src_crs, crs, [shapely.geometry.mapping(g) for g in shapes])
        geoms.extend(shapely.geometry.shape(m) for m in mapped)
    arr = np.asarray(geoms, dtype=object)
    return shapely.STRtree(arr), arr


def overlapping(exclusions: Exclusions, crs: str, corners: np.ndarray) -> np.ndarray:
    """Boolean per tile: does its footprint (N x 4 x 2 corner coordinates in `crs`) overlap any exclusion?"""
    if not exclusions or len(corners) == 0:
        return np.zeros(len(corners), dtype=bool)
    tree, geoms = _index(exclusions, crs)
    rings = np.concatenate([corners, corners[:, :1]], axis=1)
    tiles = shapely.polygons(rings)
    tile_idx, geom_idx = tree.query(tiles, predicate="intersects")
    hit = ~shapely.touches(tiles[tile_idx], geoms[geom_idx])
    out = np.zeros(len(corners), dtype=bool)
    out[tile_idx[hit]] = True
    return out
