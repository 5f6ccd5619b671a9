"""Windows of a raster and the per-part worker that reads, measures and filters them.

A *part* is a run of segments (consecutive windows of one raster), many small rasters or a slice of a
large one (plan.py lays them out). Its output is a pure function of (raster descriptions, windows,
settings): no shared state, so Dask can run parts anywhere in any order and the corpus stays
byte-identical. A part writes three files in the staging folder: `.spool` (the .npy bytes of the tiles
of small or warped rasters that passed the per-tile filters; a large raster's are read from it again when
packing), `.parquet` (one record per window) and, last and atomically,
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
from rsbench.corpus.raster import (
    GDAL_OPTIONS,
    key_prefix,
    lonlat,
    open_grid,
    read_block,
    row_cache,
    whole_raster,
)
from rsbench.corpus.shards import npy_bytes
from rsbench.io import atomic_write_bytes, write_json

MAX_STRIP_BYTES = 32 * 2**20  # consecutive windows of a row are read as one strip up to this size
# Windows measured at once: about this many bytes of their scaled float32 values. Enough windows to pay numpy's
# per-call overhead once for many (16 windows of 4 bands at 64 px), few enough that a batch's arrays stay in a
# core's cache (1,000 archive chips: tiling 4.2 s with 256 KiB batches, 3.4-3.6 s from 1 to 16 MiB).
WINDOW_BATCH_BYTES = 2**20

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
    (raster.whole_raster), and the size and mtime of the large ones, whose tiles packing reads again.
    The windows of consecutive small rasters are measured together (`_SmallRasters`), so an archive of
    chips pays numpy's per-call overhead per batch of windows, not per chip.
    A raster that fails (truncated, corrupt) loses its rows and spool bytes; the others in the part are
    kept, and the failure is recorded per raster.
    """
    paths = part_paths(task["staging"], task["part"])
    tmp = paths["spool"].with_name(paths["spool"].name + ".tmp")
    failures, references, sources = {}, {}, {}
    columns: dict[str, list] = {name: [] for name in PART_SCHEMA.names}  # one table per part, not per raster
    with rasterio.Env(**GDAL_OPTIONS), open(tmp, "wb") as spool:
        found = _Found(spool)
        small = _SmallRasters(found, task)
        for seg in task["segments"]:
            if not _read_whole(seg["info"]):
                small.measure()  # first: a failure of this raster then truncates only its own spool bytes
            base, mark = len(columns["key"]), spool.tell()
            try:
                records, reference, spooled = _tile(task, seg, base, found, small)
            except Exception as e:  # a truncated/corrupt raster fails here; the caller drops the whole raster
                found.drop(base, mark)
                failures[str(seg["raster"])] = one_line(e)
                continue
            if reference is not None:
                references[str(seg["raster"])] = reference
            if not spooled:
                sources[str(seg["raster"])] = source_stamp(seg["info"]["path"])
            for name, values in records.items():
                columns[name].extend(values)
        small.measure()
        spool.flush()
        os.fsync(spool.fileno())
    os.replace(tmp, paths["spool"])
    n = len(columns["key"])
    excluded = columns["reject_reason"]
    for name, values in found.columns(n).items():
        columns[name] = values
    columns["phash"] = [None] * n
    columns["reject_reason"] = [e if e is not None else r for e, r in zip(excluded, columns["reject_reason"])]
    if found.to_hash:  # one batched pass over the whole part
        hashes = F.perceptual_hashes(np.concatenate([smalls for _, smalls in found.to_hash]))
        rows = np.concatenate([rows for rows, _ in found.to_hash])
        for i, h in zip(rows.tolist(), hashes.tolist()):
            columns["phash"][i] = h
    table = pa.Table.from_pydict(columns, schema=PART_SCHEMA)
    atomic_write_bytes(paths["records"], parquet_bytes(table))
    done = {
        "part": task["part"],
        "tiles": sum(s["stop"] - s["start"] for s in task["segments"]),
        "passed": sum(r is None for r in columns["reject_reason"]),
        "failures": failures,
        "references": references,
        "sources": sources,
    }
    write_json(paths["done"], done)
    return done


def source_stamp(path: str) -> list[int] | None:
    """(size, mtime in ns) of a local input whose tiles packing reads again from it: packing refuses a raster
    that changed since it was tiled. None for a GDAL path (/vsicurl/...), which is not checked."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def _tile(
    task: dict[str, Any], seg: dict[str, Any], base: int, found: _Found, small: _SmallRasters
) -> tuple[dict[str, list], dict | None, bool]:
    """The records (columns) of one segment's windows that do not need pixels, the windows' rows in the part
    starting at `base`; its windows measured into `found`, or (a small raster) handed to `small`, measured with
    the next small rasters'. Also the raster's reference when this read made it (a small raster, planned without
    one), else None, and whether its passing tiles are spooled (small and warped rasters)."""
    info, tile = seg["info"], task["tile_size"]
    rows, cols = plan_windows(info, tile, task["stride"], task["tiles_per_raster"], task["seed"])
    rows, cols = rows[seg["start"] : seg["stop"]], cols[seg["start"] : seg["stop"]]
    n = len(rows)
    transform = Affine(*info["transform"])
    corners = _corners(transform, rows, cols, tile)
    centres = corners.mean(axis=1)
    lon, lat = lonlat(info["crs"], centres[:, 0], centres[:, 1]) if n else (np.zeros(0), np.zeros(0))
    excluded = overlapping(task["exclusions"], info["crs"], corners)
    prefix = key_prefix(info["path"])
    records: dict[str, list] = {
        "key": [f"{prefix}_r{r:06d}_c{c:06d}" for r, c in zip(rows.tolist(), cols.tolist())],
        "raster": [seg["raster"]] * n,
        "row_off": rows.tolist(),
        "col_off": cols.tolist(),
        "center_x": centres[:, 0].tolist(),
        "center_y": centres[:, 1].tolist(),
        "lon": lon.tolist(),
        "lat": lat.tolist(),
        "reject_reason": [F.REJECT_OVERLAPS_EVAL if e else None for e in excluded.tolist()],
    }
    todo = np.flatnonzero(~excluded)
    with open_grid(info) as reader:
        if "reference" not in info:  # a small raster: one read gives its reference and, unless resampled, its tiles
            whole, whole_valid, reference = whole_raster(reader, info)
            if _read_whole(info):  # measured with the next small rasters' windows, its tiles spooled
                small.add(base + todo, whole, whole_valid, reference, rows[todo], cols[todo])
                return records, reference, True
            info = {**info, "reference": reference}  # a warped window is not a slice of the warped whole
        else:
            reference = None
        # A large raster's tiles are read again from it when packing, so tiles rejected later (duplicates,
        # --max-tiles) are never written and the build's disk traffic is the shards'; a warped one's are
        # spooled (a window read alone is not bit for bit the slice of a warped strip).
        spooled = info["resampled"]
        with row_cache(reader, tile):
            _measure_strips(task, info, reader, rows, cols, excluded, base, found, spooled)
    return records, reference, spooled


def _measure_strips(task, info, reader, rows, cols, excluded, base: int, found: _Found, spool: bool) -> None:
    """Measure a raster's windows strip by strip (one read per run of windows of a grid row)."""
    tile, f = task["tile_size"], task["filters"]
    itemsize = np.dtype(info["dtype"]).itemsize
    max_span = max(tile, MAX_STRIP_BYTES // (tile * info["bands"] * itemsize))
    # Windows measured together: their scaled float32 values fit in one scaled piece of a strip, and so do
    # their stacked copies.
    batch_span = max(tile, F.SCALED_CHUNK_BYTES // (4 * info["bands"] * tile))
    batch_windows = max(1, WINDOW_BATCH_BYTES // (4 * info["bands"] * tile * tile))
    measuring = _needs_scaling(task)
    for run in _runs(rows, cols, excluded, max_span):
        c0, row = int(cols[run[0]]), int(rows[run[0]])
        c1 = int(cols[run[-1]]) + tile
        strip, strip_valid = read_block(reader, info, Window(c0, row, c1 - c0, tile))
        scaled = F.ScaledStrip(strip, info["reference"], f["cloud_brightness"]) if measuring else None
        for batch in _batches(np.asarray(run), cols[run] - c0, tile, batch_span, batch_windows):
            x0 = int(cols[batch[0]]) - c0
            offsets = cols[batch] - c0 - x0
            width = int(offsets[-1]) + tile
            at = (0 * offsets, offsets)
            arrays = _windows(strip[:, :, x0 : x0 + width], *at, tile)
            valid = _windows(strip_valid[None, :, x0 : x0 + width], *at, tile)[:, 0]

            def pieces(which: np.ndarray, x0=x0, width=width, at=at, scaled=scaled) -> tuple:
                s, grey, bright = scaled.window(x0, width)  # scaled only when a window of the batch needs it
                sub = (at[0][which], at[1][which])
                return (
                    _windows(s, *sub, tile),
                    _windows(grey[None], *sub, tile)[:, 0],
                    _windows(bright[None], *sub, tile)[:, 0],
                )

            found.measure(base + batch, arrays, valid, pieces if scaled is not None else None, task, spool)


def _read_whole(info: dict[str, Any]) -> bool:
    """Whether tiling takes the raster's windows from one read of it whole: a small raster (planned without a
    reference), unless warped (a warped window is not bit for bit the slice of the warped whole)."""
    return "reference" not in info and not info["resampled"]


def _needs_scaling(task: dict[str, Any]) -> bool:
    f = task["filters"]
    return bool(f["cloud_filter"] or f["blank_filter"] or task["dedup"] or task["features"])


class _SmallRasters:
    """The windows of consecutive small rasters of a part (each read whole once), measured together in batches
    of about WINDOW_BATCH_BYTES of scaled float32 values: scaled window by window with each one's raster
    reference, which is the same arithmetic, pixel by pixel, as scaling each raster whole."""

    def __init__(self, found: _Found, task: dict[str, Any]) -> None:
        self.found, self.task = found, task
        self.pending: list[tuple] = []
        self.windows = 0

    def add(self, part_rows, whole, whole_valid, reference, rows, cols) -> None:
        if not len(part_rows):
            return
        tile = self.task["tile_size"]
        first = self.pending[0][1] if self.pending else whole
        if (first.shape[0], first.dtype) != (whole.shape[0], whole.dtype):
            self.measure()  # windows of one batch share band count and dtype
        self.pending.append((part_rows, whole, whole_valid, reference, rows, cols))
        self.windows += len(part_rows)
        if self.windows * 4 * whole.shape[0] * tile * tile >= WINDOW_BATCH_BYTES:
            self.measure()

    def measure(self) -> None:
        if not self.pending:
            return
        tile, f = self.task["tile_size"], self.task["filters"]
        part_rows = np.concatenate([p[0] for p in self.pending])
        arrays = np.concatenate([_windows(p[1], p[4], p[5], tile) for p in self.pending])
        valid = np.concatenate([_windows(p[2][None], p[4], p[5], tile)[:, 0] for p in self.pending])
        bounds = [(p[3]["low"], p[3]["high"], len(p[0])) for p in self.pending]
        low = np.repeat(np.asarray([b[0] for b in bounds], dtype=np.float32), [b[2] for b in bounds], axis=0)
        high = np.repeat(np.asarray([b[1] for b in bounds], dtype=np.float32), [b[2] for b in bounds], axis=0)

        def pieces(which: np.ndarray) -> tuple:
            s = F.scale(arrays[which], low[which, :, None, None], high[which, :, None, None])
            return s, F.grey_image(s), s.min(axis=1) >= f["cloud_brightness"]

        self.pending, self.windows = [], 0
        self.found.measure(part_rows, arrays, valid, pieces if _needs_scaling(self.task) else None, self.task, True)


def _batches(run: np.ndarray, x: np.ndarray, tile: int, span: int, most: int) -> Iterator[np.ndarray]:
    """Consecutive windows of a run, at most `most`, whose columns (x .. x + tile) span at most `span` pixels."""
    start = 0
    while start < len(run):
        fit = int(np.searchsorted(x[start:], x[start] + span - tile, side="right"))
        stop = start + max(1, min(most, fit))
        yield run[start:stop]
        start = stop


def _windows(block: np.ndarray, rows: np.ndarray, cols: np.ndarray, tile: int) -> np.ndarray:
    """N x C x tile x tile contiguous copies of the windows at (rows, cols) of a C x H x W block; for one window,
    a view (large tiles come one per batch: copying them cost more than their measuring)."""
    if len(rows) == 1:
        r, c = int(rows[0]), int(cols[0])
        return block[None, :, r : r + tile, c : c + tile]
    view = np.lib.stride_tricks.sliding_window_view(block, (tile, tile), axis=(1, 2))  # C x H' x W' x tile x tile
    return np.ascontiguousarray(view[:, rows, cols].transpose(1, 0, 2, 3))


class _Found:
    """What a part's measured windows give, by row of the part: record columns, the passing tiles' .npy bytes
    (appended to the part's spool when asked) and the quicklooks to hash."""

    def __init__(self, spool) -> None:
        self.spool = spool
        self.values: dict[str, dict[int, Any]] = {
            name: {}
            for name in (*F.METRICS, "reject_reason", "features", "stats_min", "stats_max", "mask")
            + ("spool_offset", "spool_size")
        }
        self.to_hash: list[tuple[np.ndarray, np.ndarray]] = []  # (part rows, their 32 x 32 quicklooks)

    def measure(self, rows: np.ndarray, arrays, valid, pieces, task: dict[str, Any], write: bool) -> None:
        """Measure the windows at part rows `rows` (pixels `arrays`, masks `valid`, `pieces` as
        `filters.window_metrics` takes them) and keep what passes the per-tile filters; `write`: spool its bytes."""
        f = task["filters"]
        metrics, looks = F.window_metrics(arrays, valid, pieces, f, task["dedup"] or task["features"])
        codes = F.reject_codes(metrics, f)
        index = rows.tolist()
        for name in F.METRICS:
            self.values[name].update(zip(index, _nullable(metrics[name])))
        self.values["reject_reason"].update(
            (i, F.REASONS[c] if c >= 0 else None) for i, c in zip(index, codes.tolist())
        )
        keep = np.flatnonzero(codes < 0)
        if not len(keep):
            return
        index = rows[keep].tolist()
        if task["dedup"]:
            self.to_hash.append((rows[keep], F.hash_quicklooks(looks[keep])))
        whole = valid[keep].reshape(len(keep), -1).all(axis=1)
        flat = arrays[keep].reshape(len(keep), arrays.shape[1], -1)
        # Min/max fix the percentile histogram's bins; the moments are taken when packing.
        low, high = flat.min(axis=2).astype(np.float64), flat.max(axis=2).astype(np.float64)
        for j in np.flatnonzero(~whole).tolist():  # windows with invalid pixels: over the valid ones only
            pixels = F.valid_pixels(arrays[keep[j]], valid[keep[j]])
            low[j], high[j] = pixels.min(axis=1), pixels.max(axis=1)
            self.values["mask"][index[j]] = np.packbits(valid[keep[j]]).tobytes()
        self.values["stats_min"].update(zip(index, low.tolist()))
        self.values["stats_max"].update(zip(index, high.tolist()))
        if task["features"]:
            for i, j in zip(index, keep.tolist()):
                self.values["features"][i] = F.features(looks[j], valid[j], metrics["entropy"][j])
        if not write:  # read again from the raster when packing
            return
        offset = self.spool.tell()
        for i, j in zip(index, keep.tolist()):
            blob = npy_bytes(arrays[j])
            self.spool.write(blob)
            self.values["spool_offset"][i], self.values["spool_size"][i] = offset, len(blob)
            offset += len(blob)

    def drop(self, first_row: int, spool_offset: int) -> None:
        """Forget rows from `first_row` on (a raster that failed part-way) and their spool bytes."""
        for found in self.values.values():
            for i in [i for i in found if i >= first_row]:
                del found[i]
        self.to_hash = [(r[r < first_row], q[r < first_row]) for r, q in self.to_hash]
        self.spool.seek(spool_offset)
        self.spool.truncate()

    def columns(self, n: int) -> dict[str, list]:
        return {name: [found.get(i) for i in range(n)] for name, found in self.values.items()}


def _nullable(values: np.ndarray) -> list[float | None]:
    return [None if v != v else v for v in values.tolist()]  # NaN: not measured
