"""GeoTIFF + vector labels: polygons (GeoJSON, Shapefile, GeoPackage) reprojected to the raster's CRS and
rasterized onto its pixel grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rsbench.errors import DataError
from rsbench.evaluate.datasets.masks import IGNORE_INDEX, ClassTable

VECTOR_EXTENSIONS = (".geojson", ".json", ".shp", ".gpkg", ".fgb")


def _read_vector(path: Path, class_field: str | None):
    import pyogrio
    import shapely

    try:
        meta, _, wkb, fields = pyogrio.raw.read(path, columns=[class_field] if class_field else [])
    except Exception as e:  # GDAL/OGR errors all mean an unreadable label file
        raise DataError(f"cannot read vector labels {path}: {str(e).splitlines()[0]}") from e
    if class_field is not None and class_field not in list(meta["fields"]):
        raise DataError(
            f"vector labels {path} have no attribute '{class_field}' "
            f"(attributes: {', '.join(map(str, meta['fields']))})"
        )
    geoms = shapely.from_wkb(wkb)
    values = fields[0] if class_field else None
    return meta["crs"], geoms, values


def rasterize_labels(
    image: Path,
    labels: Path,
    table: ClassTable,
    class_field: str | None = None,
    nodata_ignore: bool = True,
    ignore_index: int = IGNORE_INDEX,
) -> np.ndarray:
    """H x W uint8 mask on `image`'s grid: 0 = background (classes[0]), each polygon its class index.

    Without `class_field` every polygon is class 1; with it the attribute holds a class name (or index).
    Later polygons overwrite earlier ones where they overlap; pixels invalid in the image (nodata) become
    `ignore_index` when `nodata_ignore`."""
    import rasterio
    from rasterio.features import rasterize
    from rasterio.warp import transform_geom

    try:
        with rasterio.open(image) as src:
            crs, transform, shape = src.crs, src.transform, (src.height, src.width)
            valid = src.dataset_mask() > 0 if nodata_ignore else None
    except rasterio.RasterioIOError as e:
        raise DataError(f"cannot read image {image}: {str(e).splitlines()[0]}") from e
    if crs is None:
        raise DataError(f"image {image} has no CRS, so vector labels {labels} cannot be placed on it")
    vector_crs, geoms, values = _read_vector(labels, class_field)
    if vector_crs is None:
        raise DataError(f"vector labels {labels} have no CRS")
    if values is None and len(table.names) != 2:
        raise DataError(
            f"vector labels {labels}: {len(table.names)} classes need class_field to say which class each polygon is"
        )
    shapes = []
    for i, geom in enumerate(geoms):
        if geom is None or geom.is_empty:
            continue
        cls = 1 if values is None else _class_index(values[i], table, labels)
        mapping = geom.__geo_interface__
        if rasterio.crs.CRS.from_user_input(vector_crs) != crs:
            mapping = transform_geom(vector_crs, crs, mapping)
        shapes.append((mapping, cls))
    mask = (
        rasterize(shapes, out_shape=shape, transform=transform, fill=0, dtype="uint8")
        if shapes
        else np.zeros(shape, dtype=np.uint8)
    )
    if valid is not None:
        mask[~valid] = ignore_index
    return mask


def _class_index(value, table: ClassTable, path: Path) -> int:
    if str(value) in table.names:
        return table.names.index(str(value))
    if isinstance(value, (int, np.integer)) and 0 <= int(value) < len(table.names):
        return int(value)
    raise DataError(f"vector labels {path}: unknown class '{value}' (classes: {', '.join(table.names)})")
