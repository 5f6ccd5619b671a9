"""Shards: WebDataset tars that each hold one band group, planned centrally, written in parallel.

Why one band group (band names + units) per shard: a corpus can mix sensors (3-, 4-, 6-, 7-band rasters,
uint8 and uint16). Homogeneous shards let the loader open only the shards of the band group it trains on,
so splitting shards across ranks/workers splits the actual training data rather than mostly-discarded samples.

Why planned centrally: which tile lands in which shard is decided from the final kept list in
global order (`assign_shards`), so the shard contents do not depend on the number of workers; each
shard is then written by one task (`write_shard`) from the parts' spools, to `<name>.tmp` and
renamed when complete. The same task returns the histogram of its pixels for the percentiles.

Why not webdataset's TarWriter: importing webdataset imports torch (about 700 MiB resident and
2 s per process), which would dominate the memory of every tiling worker. The tars written here
follow TarWriter's layout exactly (USTAR, `<key>.<ext>` members in sorted extension order, mode
0444, fixed mtime), and webdataset reads them in the loader.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from rsbench.contracts.corpus_info import shard_name
from rsbench.corpus.stats import histogram, histogram_moments, tile_moments


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
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def assign_shards(band_groups: list[str], shard_size: int) -> tuple[list[int], list[str], dict[str, list[str]]]:
    """Shard index of each kept tile (in global order) from its band group key; shards are numbered in the
    order they open.

    Each band group has at most one open shard; it closes after `shard_size` samples.
    """
    index: list[int] = []
    names: list[str] = []
    group_shards: dict[str, list[str]] = {}
    open_shard: dict[str, tuple[int, int]] = {}  # band group -> (shard index, samples so far)
    for bands in band_groups:
        current = open_shard.get(bands)
        if current is None:
            current = (len(names), 0)
            names.append(shard_name(current[0]))
            group_shards.setdefault(bands, []).append(names[-1])
        index.append(current[0])
        count = current[1] + 1
        if count >= shard_size:
            open_shard.pop(bands, None)
        else:
            open_shard[bands] = (current[0], count)
    return index, names, group_shards


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

    task: out, name, staging, spec (histogram bins), bands, tile,
    items [(part, row in part, key, meta json bytes, dtype)].
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

    try:
        with open(tmp, "wb", buffering=1 << 20) as f:
            writer = TarShard(f)
            for part, row, key, meta, dtype in task["items"]:
                if part not in parts:
                    paths = part_paths(task["staging"], part)
                    parts[part] = pq.read_table(
                        paths["records"], columns=["spool_offset", "spool_size", "mask"]
                    ).to_pydict()
                    spools[part] = open(paths["spool"], "rb")
                rec = parts[part]
                spools[part].seek(rec["spool_offset"][row])
                blob = spools[part].read(rec["spool_size"][row])
                writer.write(key, {"npy": blob, "json": meta})
                batch.append(_pixels(blob, dtype, task["bands"], task["tile"], rec["mask"][row]))
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
    return {"name": task["name"], "count": len(task["items"]), "hist": hist, "moments": moments}


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
