"""Windows of a raster and the per-part worker that reads, measures and filters them.

A *part* is a run of segments (consecutive windows of one raster), many small rasters or a slice of a
large one (plan.py lays them out). Its output is a pure function of (raster descriptions, windows,
settings): no shared state, so Dask can run parts anywhere in any order and the corpus stays
byte-identical. A part writes three files in the staging folder: `.spool` (the .npy bytes of tiles
that passed the per-tile filters), `.parquet` (one record per window) and, last and atomically,
`.done.json`: the completion record that lets a killed build resume without redoing the part.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import rasterio
from affine import Affine
from rasterio.windows import Window

from rsbench.corpus import filters as F
from rsbench.corpus.exclude import overlapping
from rsbench.corpus.raster import GDAL_OPTIONS, key_prefix, lonlat, open_grid, read_block, whole_raster
from rsbench.corpus.shards import npy_bytes
from rsbench.io import atomic_write_bytes, write_json

MAX_STRIP_BYTES = 32 * 2**20  # consecutive windows of a row are read as one strip up to this size

PART_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("raster", pa.int32()),
        ("row_off", pa.int32()),
        ("col_off", pa.int32()),
        ("center_x", pa.float64()),
        ("center_y", pa.float64()),
        ("lon", pa.float64()),
        ("lat", pa.float64()),
        ("nodata_fraction", pa.float64()),
        ("saturated_fraction", pa.float64()),
        ("cloud_fraction", pa.float64()),
        ("std", pa.float64()),
        ("entropy", pa.float64()),
        ("reject_reason", pa.string()),
        ("phash", pa.int64()),
        ("features", pa.list_(pa.float32(), F.FEATURE_DIM)),
        ("stats_min", pa.list_(pa.float64())),
        ("stats_max", pa.list_(pa.float64())),
        ("mask", pa.binary()),
        ("spool_offset", pa.int64()),
        ("spool_size", pa.int64()),
    ]
)


def one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    line = text[0] if text else type(err).__name__
    # rasterio wraps GDAL's specific message ("...TIFFReadEncodedTile() failed") as the cause of a
    # generic "Read failed. See previous exception for details."; surface the specific one.
    cause = err.__cause__
    if cause is not None and str(cause).strip():
        line = f"{line.removesuffix(' See previous exception for details.')} {str(cause).strip().splitlines()[0]}"
    return line


def _offsets(size: int, tile: int, stride: int) -> np.ndarray:
    return np.arange(0, size - tile + 1, stride) if size >= tile else np.zeros(0, dtype=np.int64)


def plan_windows(info: dict[str, Any], tile: int, stride: int | None, per_raster: int | None, seed: int):
    """(rows, cols) of the raster's windows in row-major order: the full grid, or N seeded random ones.

    The random generator is seeded from the settings' seed and the raster's key prefix, so a raster
    gets the same windows whatever its position in the input list or the worker that tiles it.
    """
    width, height = info["width"], info["height"]
    if per_raster is None:
        rows, cols = _offsets(height, tile, stride or tile), _offsets(width, tile, stride or tile)
        r, c = np.meshgrid(rows, cols, indexing="ij")
        return r.ravel().astype(np.int64), c.ravel().astype(np.int64)
    if width < tile or height < tile:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    positions = (height - tile + 1) * (width - tile + 1)
    salt = int(key_prefix(info["path"]).rsplit("_", 1)[1], 16)
    rng = np.random.default_rng([seed, salt])
    flat = np.sort(rng.choice(positions, size=min(per_raster, positions), replace=False))
    return (flat // (width - tile + 1)).astype(np.int64), (flat % (width - tile + 1)).astype(np.int64)


def part_paths(staging: str | Path, part: int) -> dict[str, Path]:
    base = Path(staging) / "parts" / f"p{part:06d}"
    return {k: base.with_suffix(s) for k, s in (("spool", ".spool"), ("records", ".parquet"), ("done", ".done.json"))}


def _runs(rows: np.ndarray, cols: np.ndarray, skip: np.ndarray, max_span: int) -> Iterator[list[int]]:
    """Groups of window indexes read as one strip: same row, increasing columns, bounded width."""
    run: list[int] = []
    for i in range(len(rows)):
        if skip[i]:
            continue
        if run and (rows[i] != rows[run[0]] or cols[i] <= cols[run[-1]] or cols[i] - cols[run[0]] >= max_span):
            yield run
            run = []
        run.append(i)
    if run:
        yield run


def _corners(transform: Affine, rows: np.ndarray, cols: np.ndarray, tile: int) -> np.ndarray:
    px = np.stack([cols, cols + tile, cols + tile, cols], axis=1).astype(np.float64)
    py = np.stack([rows, rows, rows + tile, rows + tile], axis=1).astype(np.float64)
    a, b, c, d, e, f = transform[:6]
    return np.stack([a * px + b * py + c, d * px + e * py + f], axis=2)


def run_part(task: dict[str, Any]) -> dict[str, Any]:
    """Tile one part (its segments in order); returns its completion record (also written as `.done.json`).

    One commit per part: the spool is fsynced once, then the records, then the completion record,
    whatever the number of rasters in the part. The completion record also holds the radiometric
    references of the small rasters, which tiling takes from its one read of each
    (raster.whole_raster). A raster that fails (truncated, corrupt) loses its
    rows and spool bytes; the others in the part are kept, and the failure is recorded per raster.
    """
    paths = part_paths(task["staging"], task["part"])
    tmp = paths["spool"].with_name(paths["spool"].name + ".tmp")
    failures, references, passed, hashes = {}, {}, 0, []
    columns: dict[str, list] = {name: [] for name in PART_SCHEMA.names}  # one table per part, not per raster
    with rasterio.Env(**GDAL_OPTIONS), open(tmp, "wb") as spool:
        for seg in task["segments"]:
            offset = spool.tell()
            try:
                records, n, to_hash, reference = _tile(task, seg, spool)
            except Exception as e:  # a truncated/corrupt raster fails here; the caller drops the whole raster
                spool.seek(offset)
                spool.truncate()
                failures[str(seg["raster"])] = one_line(e)
                continue
            if reference is not None:
                references[str(seg["raster"])] = reference
            rows = len(columns["key"])
            hashes.extend((rows + i, small) for i, small in to_hash)
            for name, values in records.items():
                columns[name].extend(values)
            passed += n
        spool.flush()
        os.fsync(spool.fileno())
    os.replace(tmp, paths["spool"])
    if hashes:  # one batched pass over the whole part
        for (i, _), h in zip(hashes, F.perceptual_hashes(np.stack([small for _, small in hashes])).tolist()):
            columns["phash"][i] = h
    table = pa.Table.from_pydict(columns, schema=PART_SCHEMA)
    atomic_write_bytes(paths["records"], parquet_bytes(table))
    windows = sum(s["stop"] - s["start"] for s in task["segments"])
    done = {"part": task["part"], "tiles": windows, "passed": passed, "failures": failures, "references": references}
    write_json(paths["done"], done)
    return done


def parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def _tile(task: dict[str, Any], seg: dict[str, Any], spool) -> tuple[dict[str, list], int, list, dict | None]:
    """Records (columns) of one segment's windows; the passing tiles' .npy bytes appended to `spool`; the raster's
    reference when this read made it (a small raster, planned without one), else None."""
    info, tile, f = seg["info"], task["tile_size"], task["filters"]
    rows, cols = plan_windows(info, tile, task["stride"], task["tiles_per_raster"], task["seed"])
    rows, cols = rows[seg["start"] : seg["stop"]], cols[seg["start"] : seg["stop"]]
    n = len(rows)
    transform = Affine(*info["transform"])
    corners = _corners(transform, rows, cols, tile)
    centres = corners.mean(axis=1)
    lon, lat = lonlat(info["crs"], centres[:, 0], centres[:, 1]) if n else (np.zeros(0), np.zeros(0))
    excluded = overlapping(task["exclusions"], info["crs"], corners)
    prefix = key_prefix(info["path"])
    cols_out: dict[str, list] = {name: [None] * n for name in PART_SCHEMA.names}
    cols_out.update(
        key=[f"{prefix}_r{r:06d}_c{c:06d}" for r, c in zip(rows.tolist(), cols.tolist())],
        raster=[seg["raster"]] * n,
        row_off=rows.tolist(),
        col_off=cols.tolist(),
        center_x=centres[:, 0].tolist(),
        center_y=centres[:, 1].tolist(),
        lon=lon.tolist(),
        lat=lat.tolist(),
    )
    for i in np.flatnonzero(excluded):
        cols_out["reject_reason"][i] = F.REJECT_OVERLAPS_EVAL
    itemsize = np.dtype(info["dtype"]).itemsize
    max_span = max(tile, MAX_STRIP_BYTES // (tile * info["bands"] * itemsize))
    offset = spool.tell()
    passed = 0
    to_hash: list[tuple[int, np.ndarray]] = []
    reference = whole = None
    with open_grid(info) as reader:
        if "reference" not in info:  # a small raster: one read gives its reference and, unless resampled, its tiles
            whole, whole_valid, reference = whole_raster(reader, info)
            info = {**info, "reference": reference}
            if info["resampled"]:  # a warped window is not exactly a slice of the warped whole: read strips
                whole = None
        for run in _runs(rows, cols, excluded, max_span):
            c0, row = int(cols[run[0]]), int(rows[run[0]])
            c1 = int(cols[run[-1]]) + tile
            if whole is not None:
                strip, strip_valid = whole[:, row : row + tile, c0:c1], whole_valid[row : row + tile, c0:c1]
            else:
                strip, strip_valid = read_block(reader, info, Window(c0, row, c1 - c0, tile))
            scaled = F.ScaledStrip(strip, info["reference"], f["cloud_brightness"])  # shared by the run's windows
            for i in run:
                x0 = int(cols[i]) - c0
                array = np.ascontiguousarray(strip[:, :, x0 : x0 + tile])
                valid = strip_valid[:, x0 : x0 + tile]
                metrics, grey = F.tile_metrics(array, valid, info, f, task["dedup"] or task["features"], scaled, x0)
                for name, value in metrics.items():
                    cols_out[name][i] = value
                reason = F.reject_reason(metrics, f)
                cols_out["reject_reason"][i] = reason
                if reason is not None:
                    continue
                if task["dedup"]:
                    to_hash.append((i, F.hash_quicklook(grey)))
                cols_out["features"][i] = F.features(grey, valid, metrics["entropy"]) if task["features"] else None
                # Min/max fix the percentile histogram's bins; the moments are taken when packing.
                pixels = F.valid_pixels(array, valid)
                cols_out["stats_min"][i] = pixels.min(axis=1).astype(np.float64).tolist()
                cols_out["stats_max"][i] = pixels.max(axis=1).astype(np.float64).tolist()
                if not valid.all():
                    cols_out["mask"][i] = np.packbits(valid).tobytes()
                blob = npy_bytes(array)
                spool.write(blob)
                cols_out["spool_offset"][i], cols_out["spool_size"][i] = offset, len(blob)
                offset += len(blob)
                passed += 1
    return cols_out, passed, to_hash, reference
