"""From finished parts to the corpus: global selection, shard plan, statistics, manifest rows.

Everything here runs in the coordinating process on metadata (records without pixels), in global
order: rasters in input order, windows in row-major order within a raster.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rsbench.corpus import filters as F
from rsbench.corpus.build_config import CorpusBuildConfig
from rsbench.corpus.selection import balanced_pick, cluster_tiles, find_duplicates
from rsbench.corpus.shards import assign_shards, sample_metadata
from rsbench.corpus.stats import histogram_spec
from rsbench.corpus.tiling import part_paths

RECORD_COLUMNS = [
    "key",
    "row_off",
    "col_off",
    "center_x",
    "center_y",
    "lon",
    "lat",
    "nodata_fraction",
    "saturated_fraction",
    "cloud_fraction",
    "std",
    "entropy",
    "reject_reason",
    "phash",
    "features",
    "stats_min",
    "stats_max",
]

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


def load_records(part_count: int, staging: Path, rasters: set[int]) -> dict[str, Any]:
    """All window records of the given (successful) rasters, in global order, as column lists.

    Parts hold consecutive segments in input order, so reading the parts in order gives global order.
    """
    tables = []
    wanted = pa.array(sorted(rasters), pa.int32())
    for i in range(part_count):
        t = pq.read_table(part_paths(staging, i)["records"], columns=["raster", *RECORD_COLUMNS])
        t = t.append_column("part", pa.array(np.full(len(t), i), pa.int32())).append_column(
            "row_in_part", pa.array(np.arange(len(t)), pa.int32())
        )
        tables.append(t.filter(pc.is_in(t["raster"], value_set=wanted)))
    if not tables:
        return {name: [] for name in ["raster", *RECORD_COLUMNS, "part", "row_in_part"]}
    return pa.concat_tables(tables).to_pydict()


def select(records: dict[str, Any], cfg: CorpusBuildConfig) -> dict[str, Any]:
    """Apply duplicates and max_tiles in place (reject_reason); returns what the selection found."""
    reasons = records["reject_reason"]
    n = len(reasons)
    records["duplicate_of"] = [None] * n
    records["cluster"] = [None] * n
    summary: dict[str, Any] = {}
    cand = [i for i in range(n) if reasons[i] is None]
    if cfg.dedup and cand:
        matches = find_duplicates([records["phash"][i] for i in cand], cfg.dedup_distance)
        for i, m in zip(cand, matches):
            if m is not None:
                reasons[i] = F.REJECT_DUPLICATE
                records["duplicate_of"][i] = records["key"][cand[m]]
        cand = [i for i in cand if reasons[i] is None]
    if cfg.diversity and cand:
        labels = cluster_tiles(np.stack([records["features"][i] for i in cand]), cfg.clusters, cfg.seed)
        for i, label in zip(cand, labels.tolist()):
            records["cluster"][i] = label
        summary["clusters"] = np.bincount(labels).tolist()
        buckets = labels
    else:
        buckets = np.asarray([records["raster"][i] for i in cand], dtype=np.int64)
    if cfg.max_tiles is not None and len(cand) > cfg.max_tiles:
        chosen = balanced_pick(buckets, cfg.max_tiles, cfg.seed)
        for i, keep in zip(cand, chosen.tolist()):
            if not keep:
                reasons[i] = F.REJECT_MAX_TILES
    return summary


def raster_group(info: dict[str, Any]) -> str:
    """The band group key of a probed raster (band names and units; see rsbench.corpus.band_names)."""
    return info.get("band_group") or str(info["bands"])  # plans probed before band groups had names


def kept_groups(records: dict[str, Any], infos: dict[int, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per band group (band names + units): kept record indexes (global order), exact min/max, histogram
    spec, band names, units, and the tiles of each sensor pooled into it."""
    groups: dict[str, dict[str, Any]] = {}
    for i, reason in enumerate(records["reject_reason"]):
        if reason is None:
            info = infos[records["raster"][i]]
            g = groups.setdefault(
                raster_group(info),
                {"rows": [], "band_names": info["band_names"], "units": info.get("units"), "dtypes": set()},
            )
            g["rows"].append(i)
            g["dtypes"].add(info["dtype"])
            sensors = g.setdefault("sensors", {})
            sensor = info.get("sensor") or info["dtype"]
            sensors[sensor] = sensors.get(sensor, 0) + 1
    for g in groups.values():
        rows = g["rows"]
        g["min"] = np.asarray([records["stats_min"][i] for i in rows], dtype=np.float64).min(axis=0).tolist()
        g["max"] = np.asarray([records["stats_max"][i] for i in rows], dtype=np.float64).max(axis=0).tolist()
        dtype = np.result_type(*sorted(g["dtypes"])).name
        g["spec"] = histogram_spec(dtype, g["min"], g["max"])
    return groups


def shard_tasks(
    records: dict[str, Any],
    infos: dict[int, dict[str, Any]],
    groups: dict[str, dict[str, Any]],
    cfg: CorpusBuildConfig,
    out: Path,
    staging: Path,
):
    """(shard write tasks, shard names, shards per group); also fills records['shard']."""
    kept = [i for i, r in enumerate(records["reject_reason"]) if r is None]
    bands = [raster_group(infos[records["raster"][i]]) for i in kept]
    index, names, group_shards = assign_shards(bands, cfg.shard_size)
    records["shard"] = [None] * len(records["key"])
    tasks = [
        {
            "out": str(out),
            "name": name,
            "staging": str(staging),
            "items": [],
            "spec": None,
            "bands": None,
            "tile": cfg.tile_size,
        }
        for name in names
    ]
    for i, s, b in zip(kept, index, bands):
        records["shard"][i] = names[s]
        rec = {k: records[k][i] for k in ("key", "row_off", "col_off", "nodata_fraction", "lon", "lat")}
        info = infos[records["raster"][i]]
        meta = sample_metadata(rec, info, cfg.tile_size)
        tasks[s]["items"].append(
            (records["part"][i], records["row_in_part"][i], records["key"][i], meta, info["dtype"])
        )
        tasks[s]["spec"], tasks[s]["bands"] = groups[b]["spec"], len(groups[b]["band_names"])
    return tasks, names, group_shards


MANIFEST_ROW_GROUP = 65_536  # rows per Parquet row group: the manifest is built and written one group at a time


def write_manifest(path: Path, records: dict[str, Any], infos: dict[int, dict[str, Any]], cfg: CorpusBuildConfig):
    """manifest.parquet, one row group at a time (never the whole manifest as one Arrow table), atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with pq.ParquetWriter(tmp, MANIFEST_SCHEMA) as writer:
            for start in range(0, max(1, len(records["key"])), MANIFEST_ROW_GROUP):
                writer.write_table(_manifest_rows(records, infos, cfg, start, start + MANIFEST_ROW_GROUP))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _manifest_rows(records, infos, cfg: CorpusBuildConfig, start: int, stop: int) -> pa.Table:
    raster = records["raster"][start:stop]
    n = len(raster)

    def per_raster(fn):
        return [fn(infos[r]) for r in raster]

    columns = {
        "key": records["key"][start:stop],
        "source": per_raster(lambda i: i["path"]),
        "raster_index": records["raster_index"][start:stop],
        "row_off": records["row_off"][start:stop],
        "col_off": records["col_off"][start:stop],
        "width": [cfg.tile_size] * n,
        "height": [cfg.tile_size] * n,
        "bands": per_raster(lambda i: i["bands"]),
        "dtype": per_raster(lambda i: i["dtype"]),
        "gsd": per_raster(lambda i: float(np.mean(i["gsd"]))),
        "phash": [None if h is None else f"{h & 0xFFFF_FFFF_FFFF_FFFF:016x}" for h in records["phash"][start:stop]],
        "kept": [r is None for r in records["reject_reason"][start:stop]],
        "crs": per_raster(lambda i: i["crs"]),
        "date": per_raster(lambda i: i["date"]),
    }
    for name in MANIFEST_SCHEMA.names:
        if name not in columns:
            columns[name] = records[name][start:stop]
    return pa.Table.from_pydict(columns, schema=MANIFEST_SCHEMA)
