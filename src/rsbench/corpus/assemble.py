"""From finished parts to the corpus: global selection, shard plan, statistics, manifest rows.

Everything here runs in the coordinating process on metadata (records without pixels), in global
order: rasters in input order, windows in row-major order within a raster.

Why columns and passes over the parts: an archive build has millions of windows. Only what the global
decisions need is held for every window, as numpy columns (`Windows`: raster, reason code, position in
its part, hash, about 30 bytes a window; the 12 diversity features when asked for); everything else
(keys, metrics, per-band statistics) is read again from the parts' record files, one part at a time,
when the band-group statistics and the manifest are made.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rsbench.corpus import filters as F
from rsbench.corpus.build_config import CorpusBuildConfig
from rsbench.corpus.selection import balanced_pick, cluster_tiles, find_duplicates
from rsbench.corpus.shards import assign_shards
from rsbench.corpus.stats import histogram_spec
from rsbench.corpus.tiling import part_paths

KEPT = -1  # reason code of a kept window; a rejected one holds its reason's index in F.REASONS
_REASONS = pa.array(F.REASONS, pa.string())

MANIFEST_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("source", pa.string()),
        ("raster_index", pa.int32()),
        ("row_off", pa.int32()),
        ("col_off", pa.int32()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("bands", pa.int32()),
        ("dtype", pa.string()),
        ("gsd", pa.float64()),
        ("nodata_fraction", pa.float64()),
        ("saturated_fraction", pa.float64()),
        ("cloud_fraction", pa.float64()),
        ("std", pa.float64()),
        ("entropy", pa.float64()),
        ("phash", pa.string()),
        ("kept", pa.bool_()),
        ("reject_reason", pa.string()),
        ("duplicate_of", pa.string()),
        ("cluster", pa.int32()),
        ("shard", pa.string()),
        ("crs", pa.string()),
        ("center_x", pa.float64()),
        ("center_y", pa.float64()),
        ("lon", pa.float64()),
        ("lat", pa.float64()),
        ("date", pa.string()),
    ]
)
# Manifest columns copied as they are from the parts' records.
_RECORD_COLUMNS = [
    "key",
    "row_off",
    "col_off",
    "nodata_fraction",
    "saturated_fraction",
    "cloud_fraction",
    "std",
    "entropy",
    "center_x",
    "center_y",
    "lon",
    "lat",
]
# Manifest columns that are the raster's (one value per raster, repeated on its windows).
_RASTER_COLUMNS = ["source", "raster_index", "bands", "dtype", "gsd", "crs", "date"]


@dataclass
class Windows:
    """Every window of the usable rasters, in global order, as columns; `reason` and the selection's
    columns are filled in by `select`."""

    raster: np.ndarray  # int32 raster id (input position)
    part: np.ndarray  # int32 part of the window
    row: np.ndarray  # int32 row in that part's records file
    reason: np.ndarray  # int8: KEPT or the index of the reject reason in F.REASONS
    phash: np.ndarray | None  # uint64 perceptual hash (dedup only; 0 where the tile was not hashed)
    features: np.ndarray | None  # float32 (windows, FEATURE_DIM) of filter-passing tiles (diversity only)
    duplicate_of: np.ndarray  # int64 global index of the tile a duplicate repeats, else -1
    cluster: np.ndarray  # int32 diversity cluster, else -1
    invalid_seen: np.ndarray  # bool per raster id: one of its windows has nodata pixels
    part_bounds: np.ndarray  # int64 (parts + 1): global index of each part's first window

    def __len__(self) -> int:
        return len(self.raster)

    def kept(self) -> np.ndarray:
        return np.flatnonzero(self.reason == KEPT)

    def reason_counts(self) -> dict[str, int]:
        counts = np.bincount(self.reason[self.reason != KEPT], minlength=len(F.REASONS))
        return {name: int(n) for name, n in zip(F.REASONS, counts)}

    def part_slice(self, part: int) -> slice:
        return slice(int(self.part_bounds[part]), int(self.part_bounds[part + 1]))


def _reason_codes(column: pa.ChunkedArray) -> np.ndarray:
    return pc.fill_null(pc.index_in(column, value_set=_REASONS), KEPT).to_numpy().astype(np.int8)


def load_windows(part_count: int, staging: Path, usable: np.ndarray, cfg: CorpusBuildConfig) -> Windows:
    """The windows of the usable rasters (`usable`: bool per raster id), one part's records at a time.

    Parts hold consecutive segments in input order, so reading the parts in order gives global order.
    """
    columns = ["raster", "reject_reason", "nodata_fraction"] + ["phash"] * cfg.dedup + ["features"] * cfg.diversity
    pieces: dict[str, list[np.ndarray]] = {n: [] for n in ("raster", "part", "row", "reason", "phash", "features")}
    invalid_seen = np.zeros(len(usable), dtype=bool)
    bounds = [0]
    for p in range(part_count):
        t = pq.read_table(part_paths(staging, p)["records"], columns=columns)
        raster = t["raster"].to_numpy().astype(np.int32)
        rows = np.flatnonzero(usable[raster]).astype(np.int32)
        t, raster = t.take(rows), raster[rows]
        reason = _reason_codes(t["reject_reason"])
        invalid_seen[raster[pc.fill_null(t["nodata_fraction"], 0.0).to_numpy() > 0]] = True
        pieces["raster"].append(raster)
        pieces["part"].append(np.full(len(rows), p, dtype=np.int32))
        pieces["row"].append(rows)
        pieces["reason"].append(reason)
        if cfg.dedup:
            pieces["phash"].append(pc.fill_null(t["phash"], 0).to_numpy().view(np.uint64))
        if cfg.diversity:
            features = np.zeros((len(rows), F.FEATURE_DIM), dtype=np.float32)
            passing = np.flatnonzero(reason == KEPT)  # only tiles that passed the filters have features
            flat = pc.list_flatten(t["features"].take(passing)).to_numpy()
            features[passing] = flat.reshape(len(passing), F.FEATURE_DIM)
            pieces["features"].append(features)
        bounds.append(bounds[-1] + len(rows))

    def joined(name: str, dtype, shape=(0,)) -> np.ndarray:
        return np.concatenate(pieces[name]) if pieces[name] else np.zeros(shape, dtype=dtype)

    n = bounds[-1]
    return Windows(
        raster=joined("raster", np.int32),
        part=joined("part", np.int32),
        row=joined("row", np.int32),
        reason=joined("reason", np.int8),
        phash=joined("phash", np.uint64) if cfg.dedup else None,
        features=joined("features", np.float32, (0, F.FEATURE_DIM)) if cfg.diversity else None,
        duplicate_of=np.full(n, -1, dtype=np.int64),
        cluster=np.full(n, -1, dtype=np.int32),
        invalid_seen=invalid_seen,
        part_bounds=np.asarray(bounds, dtype=np.int64),
    )


def select(w: Windows, cfg: CorpusBuildConfig) -> dict[str, Any]:
    """Apply duplicates and max_tiles in place (w.reason); returns what the selection found."""
    summary: dict[str, Any] = {}
    cand = w.kept()
    if cfg.dedup and len(cand):
        matches = find_duplicates(w.phash[cand], cfg.dedup_distance)
        duplicate = matches >= 0
        w.reason[cand[duplicate]] = F.REASONS.index(F.REJECT_DUPLICATE)
        w.duplicate_of[cand[duplicate]] = cand[matches[duplicate]]
        cand = cand[~duplicate]
    if cfg.diversity and len(cand):
        labels = cluster_tiles(w.features[cand], cfg.clusters, cfg.seed)
        w.cluster[cand] = labels
        summary["clusters"] = np.bincount(labels).tolist()
        buckets = labels
    else:
        buckets = w.raster[cand].astype(np.int64)
    if cfg.max_tiles is not None and len(cand) > cfg.max_tiles:
        chosen = balanced_pick(buckets, cfg.max_tiles, cfg.seed)
        w.reason[cand[~chosen]] = F.REASONS.index(F.REJECT_MAX_TILES)
    return summary


def raster_group(info: dict[str, Any]) -> str:
    """The band group key of a probed raster (band names and units; see rsbench.corpus.band_names)."""
    return info.get("band_group") or str(info["bands"])  # plans probed before band groups had names


def kept_groups(w: Windows, infos: dict[int, dict[str, Any]], staging: Path) -> dict[str, dict[str, Any]]:
    """Per band group (band names + units), in order of first kept tile: kept tile count, exact min/max,
    histogram spec, band names, units, and the tiles of each sensor pooled into it."""
    kept_per_raster = np.bincount(w.raster[w.kept()], minlength=len(w.invalid_seen))
    groups: dict[str, dict[str, Any]] = {}
    group_of = np.full(len(w.invalid_seen), -1, dtype=np.int32)  # raster id -> position in groups
    for r in np.flatnonzero(kept_per_raster).tolist():
        info, tiles = infos[r], int(kept_per_raster[r])
        key = raster_group(info)
        if key not in groups:
            groups[key] = {"tiles": 0, "band_names": info["band_names"], "units": info.get("units"), "dtypes": set()}
        g = groups[key]
        group_of[r] = list(groups).index(key)  # a handful of groups: a scan is fine
        g["tiles"] += tiles
        g["dtypes"].add(info["dtype"])
        sensors = g.setdefault("sensors", {})
        sensor = info.get("sensor") or info["dtype"]
        sensors[sensor] = sensors.get(sensor, 0) + tiles
    extremes = _group_extremes(w, staging, group_of, [len(g["band_names"]) for g in groups.values()])
    for g, (low, high) in zip(groups.values(), extremes):
        g["min"], g["max"] = low.tolist(), high.tolist()
        dtype = np.result_type(*sorted(g["dtypes"])).name
        g["spec"] = histogram_spec(dtype, g["min"], g["max"])
    return groups


def _group_extremes(w: Windows, staging: Path, group_of: np.ndarray, bands: list[int]) -> list[tuple]:
    """Per group: min and max of each band over its kept tiles (the tiles' own min/max, one part at a time)."""
    low = [np.full(b, np.inf) for b in bands]
    high = [np.full(b, -np.inf) for b in bands]
    for p in range(len(w.part_bounds) - 1):
        span = w.part_slice(p)
        kept = np.flatnonzero(w.reason[span] == KEPT)
        if not len(kept):
            continue
        t = pq.read_table(part_paths(staging, p)["records"], columns=["stats_min", "stats_max"])
        t = t.take(w.row[span][kept])
        group = group_of[w.raster[span][kept]]
        for g in np.unique(group).tolist():
            sub = t.take(np.flatnonzero(group == g))
            mins = pc.list_flatten(sub["stats_min"]).to_numpy().reshape(len(sub), bands[g])
            maxs = pc.list_flatten(sub["stats_max"]).to_numpy().reshape(len(sub), bands[g])
            low[g] = np.minimum(low[g], mins.min(axis=0))
            high[g] = np.maximum(high[g], maxs.max(axis=0))
    return list(zip(low, high))


def shard_tasks(
    w: Windows,
    infos: dict[int, dict[str, Any]],
    groups: dict[str, dict[str, Any]],
    cfg: CorpusBuildConfig,
    out: Path,
    staging: Path,
    stamps: dict[int, list[int] | None],
):
    """(shard write tasks, shard names, shards per group, shard of each window or -1).

    `stamps`: size and mtime, when tiled, of the rasters whose tiles the shard writers read again.

    A task names its tiles by (part, row) and carries the descriptions of their rasters: the worker
    reads the rest (key, window, spool slice) from the parts' records, so no per-tile metadata is held here.
    """
    kept = w.kept()
    keys = list(groups)
    group_of = np.zeros(len(w.invalid_seen), dtype=np.int64)  # raster id -> position in groups
    for r in np.unique(w.raster[kept]).tolist():
        group_of[r] = keys.index(raster_group(infos[r]))
    index, names, shards_of_group = assign_shards(group_of[w.raster[kept]], cfg.shard_size)
    group_shards = {keys[g]: shards for g, shards in shards_of_group.items()}
    shard_of = np.full(len(w), -1, dtype=np.int32)
    shard_of[kept] = index
    order = np.argsort(index, kind="stable")  # tiles of each shard, in global order
    starts = np.searchsorted(index[order], np.arange(len(names) + 1))
    tasks = []
    for s, name in enumerate(names):
        tiles = kept[order[starts[s] : starts[s + 1]]]
        g = groups[keys[int(group_of[w.raster[tiles[0]]])]]
        tasks.append(
            {
                "out": str(out),
                "name": name,
                "staging": str(staging),
                "parts": w.part[tiles],
                "rows": w.row[tiles],
                "rasters": {r: infos[r] for r in np.unique(w.raster[tiles]).tolist()},
                "stamps": {r: stamps[r] for r in np.unique(w.raster[tiles]).tolist() if r in stamps},
                "spec": g["spec"],
                "bands": len(g["band_names"]),
                "tile": cfg.tile_size,
            }
        )
    return tasks, names, group_shards, shard_of


MANIFEST_ROW_GROUP = 65_536  # rows per Parquet row group: the manifest is built and written one group at a time


def write_manifest(
    path: Path,
    w: Windows,
    infos: dict[int, dict[str, Any]],
    cfg: CorpusBuildConfig,
    staging: Path,
    shard_names: list[str],
    shard_of: np.ndarray,
) -> None:
    """manifest.parquet, atomically, one row group at a time, from one part's records at a time."""
    per_raster = _raster_table(infos, len(w.invalid_seen))
    shards = pa.array(shard_names, pa.string())
    # Keys of the tiles that others duplicate: collected as their parts go by (a duplicate comes after its match).
    targets = np.unique(w.duplicate_of[w.duplicate_of >= 0])
    target_keys: dict[int, str] = {}
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with pq.ParquetWriter(tmp, MANIFEST_SCHEMA) as writer:
            pending: list[pa.Table] = []
            buffered = written = 0
            for p in range(len(w.part_bounds) - 1):
                span = w.part_slice(p)
                if span.start == span.stop:
                    continue
                records = pq.read_table(part_paths(staging, p)["records"], columns=[*_RECORD_COLUMNS, "phash"])
                records = records.take(w.row[span])
                here = np.arange(span.start, span.stop)
                found = np.isin(here, targets)
                target_keys.update(zip(here[found].tolist(), records["key"].take(np.flatnonzero(found)).to_pylist()))
                pending.append(_manifest_rows(w, span, records, per_raster, shards, shard_of, target_keys, cfg))
                buffered += span.stop - span.start
                while buffered >= MANIFEST_ROW_GROUP:
                    rest = _write_rows(writer, pending, MANIFEST_ROW_GROUP)
                    pending, buffered, written = [rest], buffered - MANIFEST_ROW_GROUP, written + 1
            if buffered or not written:
                _write_rows(writer, pending, buffered)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_rows(writer: pq.ParquetWriter, pending: list[pa.Table], n: int) -> pa.Table:
    """Write the first n pending rows as one row group (contiguous arrays: the bytes do not depend on
    how the parts cut the rows); returns the rows left over."""
    table = pa.concat_tables(pending) if pending else MANIFEST_SCHEMA.empty_table()
    writer.write_table(table.slice(0, n).combine_chunks())
    return table.slice(n)


def _raster_table(infos: dict[int, dict[str, Any]], raster_count: int) -> pa.Table:
    """The manifest's per-raster columns, one row per raster id (null for rasters that are not usable)."""
    values: dict[str, list] = {name: [None] * raster_count for name in _RASTER_COLUMNS}
    for position, (r, info) in enumerate(sorted(infos.items())):
        values["source"][r] = info["path"]
        values["raster_index"][r] = position
        values["bands"][r] = info["bands"]
        values["dtype"][r] = info["dtype"]
        values["gsd"][r] = float(np.mean(info["gsd"]))
        values["crs"][r] = info["crs"]
        values["date"][r] = info["date"]
    return pa.Table.from_pydict(values, schema=pa.schema([MANIFEST_SCHEMA.field(n) for n in _RASTER_COLUMNS]))


def _manifest_rows(w: Windows, span: slice, records, per_raster, shards, shard_of, target_keys, cfg) -> pa.Table:
    n = span.stop - span.start
    reason, cluster, shard = w.reason[span], w.cluster[span], shard_of[span]
    raster = per_raster.take(w.raster[span])
    phash = [None if h is None else f"{h & 0xFFFF_FFFF_FFFF_FFFF:016x}" for h in records["phash"].to_pylist()]
    columns = {
        **{name: records[name] for name in _RECORD_COLUMNS},
        **{name: raster[name] for name in _RASTER_COLUMNS},
        "width": pa.array(np.full(n, cfg.tile_size, dtype=np.int32)),
        "height": pa.array(np.full(n, cfg.tile_size, dtype=np.int32)),
        "phash": pa.array(phash, pa.string()),
        "kept": pa.array(reason == KEPT),
        "reject_reason": _REASONS.take(pa.array(reason, mask=reason == KEPT)),
        "duplicate_of": pa.array([target_keys.get(j) for j in w.duplicate_of[span].tolist()], pa.string()),
        "cluster": pa.array(cluster, mask=cluster < 0),
        "shard": shards.take(pa.array(shard, mask=shard < 0)),
    }
    return pa.Table.from_arrays([columns[name] for name in MANIFEST_SCHEMA.names], schema=MANIFEST_SCHEMA)
