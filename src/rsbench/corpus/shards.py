"""Shards: WebDataset tars that each hold one band group, planned centrally, written in parallel.

Why one band group (band names + units) per shard: a corpus can mix sensors (3-, 4-, 6-, 7-band rasters,
uint8 and uint16). Homogeneous shards let the loader open only the shards of the band group it trains on,
so splitting shards across ranks/workers splits the actual training data rather than mostly-discarded samples.

Why planned centrally: which tile lands in which shard is decided from the final kept list in
global order (`assign_shards`), so the shard contents do not depend on the number of workers; each
shard is then written by one task (`write_shard`) from the parts' spools (small and warped rasters) or
read again from the rasters (large ones), to `<name>.tmp` and renamed when complete. The same task
returns the histogram of its pixels for the percentiles.

Why not webdataset's TarWriter: importing webdataset imports torch (about 700 MiB resident and
2 s per process), which would dominate the memory of every tiling worker. The tars written here
follow TarWriter's layout exactly (USTAR, `<key>.<ext>` members in sorted extension order, mode
0444, fixed mtime), and webdataset reads them in the loader.
"""

from __future__ import annotations

import functools
import io
import json
import os
import tarfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import rasterio
from rasterio.windows import Window

from rsbench.contracts.corpus_info import shard_name
from rsbench.corpus.raster import GDAL_OPTIONS, open_grid, read_pixels, row_cache
from rsbench.corpus.stats import histogram, histogram_moments, tile_moments
from rsbench.errors import DataError


class TarShard:
    """Sequential writer of WebDataset samples; mtime 0 so that identical inputs give identical bytes."""

    def __init__(self, fileobj) -> None:
        self._tar = tarfile.open(fileobj=fileobj, mode="w", format=tarfile.USTAR_FORMAT)

    def write(self, key: str, members: dict[str, bytes]) -> None:
        for ext in sorted(members):
            data = members[ext]
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(data), 0, 0o444
            info.uname = info.gname = "bigdata"
            self._tar.addfile(info, io.BytesIO(data))

    def close(self) -> None:
        self._tar.close()


def npy_bytes(array: np.ndarray) -> bytes:
    """What np.save writes for `array`: its .npy header (made once per shape and dtype) + its C-order bytes,
    without np.save's per-call overhead (tiles are written by the thousand)."""
    return _npy_header(array.shape, array.dtype.str) + array.tobytes()


@functools.lru_cache(maxsize=64)
def _npy_header(shape: tuple[int, ...], dtype: str) -> bytes:
    buf = io.BytesIO()
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue()


def assign_shards(groups: np.ndarray, shard_size: int) -> tuple[np.ndarray, list[str], dict[int, list[str]]]:
    """Shard index of each kept tile (in global order) from its band group code; shards are numbered in
    the order they open.

    Each band group has one open shard at a time, closed after `shard_size` samples: a tile's shard is
    its group's (rank of the tile within its group) // shard_size-th, and shards open at ranks that are
    multiples of shard_size. Vectorized: a build of millions of tiles plans its shards without a Python loop.
    """
    groups = np.asarray(groups, dtype=np.int64)
    order = np.argsort(groups, kind="stable")  # by group, global order within a group
    sorted_groups = groups[order]
    group_start = np.searchsorted(sorted_groups, sorted_groups, "left")
    rank = np.empty(len(groups), dtype=np.int64)
    rank[order] = np.arange(len(groups)) - group_start
    opening = np.flatnonzero(rank % shard_size == 0)  # tiles that open a shard, in global order
    shard_at_opening = np.full(len(groups), -1, dtype=np.int64)
    shard_at_opening[opening] = np.arange(len(opening))
    # Each tile's shard is the one its group's tile of rank (rank // shard_size) * shard_size opened.
    first_of_shard = order[np.searchsorted(sorted_groups, groups, "left") + rank // shard_size * shard_size]
    index = shard_at_opening[first_of_shard]
    names = [shard_name(i) for i in range(len(opening))]
    group_shards: dict[int, list[str]] = {}
    for g, s in zip(groups[opening].tolist(), range(len(opening))):
        group_shards.setdefault(g, []).append(names[s])
    return index, names, group_shards


METADATA_FIELDS = ("key", "row_off", "col_off", "nodata_fraction", "lon", "lat")  # a tile's record in its .json
SHARD_RECORD_COLUMNS = ["raster", *METADATA_FIELDS, "spool_offset", "spool_size", "mask"]
HIST_BATCH_PIXELS = 1 << 18  # valid pixels gathered before one histogram (+ moments) pass: bounded memory


def _pixels(blob: bytes, dtype: str, bands: int, tile: int, mask: bytes | None) -> np.ndarray:
    """C x N valid pixels of a tile, viewed straight from the .npy bytes this build wrote.

    An .npy file is a header followed by the C-order data, so the data is the blob's tail; parsing
    the header (numpy does it with `ast`) would cost more than the histogram itself.
    """
    nbytes = bands * tile * tile * np.dtype(dtype).itemsize
    flat = np.frombuffer(blob, dtype=dtype, offset=len(blob) - nbytes).reshape(bands, tile * tile)
    if mask is not None:
        valid = np.unpackbits(np.frombuffer(mask, np.uint8), count=tile * tile).astype(bool)
        flat = np.compress(valid, flat, axis=1)
    return flat


def write_shard(task: dict[str, Any]) -> dict[str, Any]:
    """Write one shard from spool slices; returns its sample count, pixel histogram and moments
    (count/mean/m2 per batch of pixels, in order, merged by the caller).

    task: out, name, staging, spec (histogram bins), bands, tile, parts and rows (the tiles' rows in
    their parts' records, in shard order), rasters (raster id -> description, for the tiles' metadata),
    stamps (raster id -> size and mtime when tiled, for the rasters whose tiles are read again here).
    """
    from rsbench.corpus.tiling import part_paths  # tiling imports this module

    final = Path(task["out"]) / task["name"]
    tmp = final.with_name(final.name + ".tmp")
    parts: dict[int, dict[str, list]] = {}
    spools: dict[int, Any] = {}
    hist = np.zeros((task["bands"], task["spec"]["bins"]), dtype=np.int64)
    moments: list[dict[str, Any]] = []
    batch: list[np.ndarray] = []
    batch_pixels = 0

    def flush() -> None:
        # Whole batches of pixels: vectorized over millions of values, not per tile.
        pixels = np.concatenate(batch, axis=1)
        hist[:] += histogram(pixels, task["spec"])
        if task["spec"]["kind"] != "integer":  # integer data: exact moments from the histogram instead
            moments.append(tile_moments(pixels))

    rasters = _RasterTiles(task)
    try:
        with rasters, open(tmp, "wb", buffering=1 << 20) as f:
            writer = TarShard(f)
            for part, row in zip(task["parts"].tolist(), task["rows"].tolist()):
                if part not in parts:
                    paths = part_paths(task["staging"], part)
                    parts[part] = pq.read_table(paths["records"], columns=SHARD_RECORD_COLUMNS).to_pydict()
                    spools[part] = open(paths["spool"], "rb")
                rec = parts[part]
                info = task["rasters"][rec["raster"][row]]
                if rec["spool_size"][row] is None:  # a large raster's tile: read again from the raster
                    blob = rasters.tile(rec["raster"][row], rec["row_off"][row], rec["col_off"][row])
                else:
                    spools[part].seek(rec["spool_offset"][row])
                    blob = spools[part].read(rec["spool_size"][row])
                meta = sample_metadata({k: rec[k][row] for k in METADATA_FIELDS}, info, task["tile"])
                writer.write(rec["key"][row], {"npy": blob, "json": meta})
                batch.append(_pixels(blob, info["dtype"], task["bands"], task["tile"], rec["mask"][row]))
                batch_pixels += batch[-1].shape[1]
                if batch_pixels >= HIST_BATCH_PIXELS:
                    flush()
                    batch, batch_pixels = [], 0
            if batch:
                flush()
            writer.close()
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        for spool in spools.values():
            spool.close()
    if task["spec"]["kind"] == "integer":
        moments = [histogram_moments(hist, task["spec"])]
    return {"name": task["name"], "count": len(task["rows"]), "hist": hist, "moments": moments}


class _RasterTiles:
    """The .npy bytes of tiles read again from their (large, not warped) rasters, which tiling did not spool:
    one raster open at a time (a shard's tiles come in global order, raster after raster). A window read alone
    from the file is bit for bit the slice of the strip tiling read it from. A raster whose size or mtime
    changed since it was tiled is refused: its tiles would not be the ones measured."""

    def __init__(self, task: dict[str, Any]) -> None:
        self.task, self.current, self.stack = task, None, ExitStack()
        self.reader = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stack.close()

    def tile(self, raster: int, row: int, col: int) -> bytes:
        from rsbench.corpus.tiling import source_stamp

        info, size = self.task["rasters"][raster], self.task["tile"]
        if self.current != raster:
            self.stack.close()
            stamp = self.task["stamps"].get(raster)
            if stamp is not None and source_stamp(info["path"]) != stamp:
                raise DataError(
                    f"{info['path']}: changed since it was tiled (size or modification time); "
                    "re-run the build with --overwrite"
                )
            self.stack.enter_context(rasterio.Env(**GDAL_OPTIONS))
            self.reader, self.current = self.stack.enter_context(open_grid(info)), raster
            self.stack.enter_context(row_cache(self.reader, size))
        return npy_bytes(read_pixels(self.reader, info, Window(col, row, size, size)))


def sample_metadata(record: dict[str, Any], info: dict[str, Any], tile: int) -> bytes:
    """The `<key>.json` stored beside each tile's pixels in the shards."""
    a, b, c, d, e, f = info["transform"]
    col, row = record["col_off"], record["row_off"]
    transform = [a, b, a * col + b * row + c, d, e, d * col + e * row + f]
    fill = info["nodata"]
    if fill is None and info["nodata_source"] == "none" and info["implicit_nodata"]:
        fill = 0  # implicit zero fill: the loader must treat all-zero pixels as nodata too
    meta = {
        "key": record["key"],
        "source": info["path"],
        "window": {"col_off": col, "row_off": row, "width": tile, "height": tile},
        "crs": info["crs"],
        "transform": transform,
        "band_names": info["band_names"],
        "source_band_names": info.get("source_band_names", info["band_names"]),
        "band_indexes": info["band_indexes"],
        "dtype": info["dtype"],
        "nodata": info["nodata"],
        "fill_value": fill,
        "nodata_fraction": record["nodata_fraction"],
        "gsd": info["gsd"],
        "lon": record["lon"],
        "lat": record["lat"],
        "date": info["date"],
    }
    return json.dumps(meta).encode("utf-8")
