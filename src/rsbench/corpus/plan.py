"""The build plan: which rasters are usable (probe), their windows, and how they group into parts.

The plan lives in the staging folder in a form that is written and read as a stream, so that an
archive of 100,000 rasters is planned without holding every raster's description in memory:
  * `rasters.parquet`: one row per input, in input order (path, status, reason, the probe's JSON
    description, window count), written in row groups as the probes finish;
  * `parts.parquet`: the part layout as segments (part, raster, first and last window);
  * `plan.json`, written last: the output settings the plan was made for, and its counts.

A *part* is the unit of parallel work and of commit: a run of consecutive segments, at most
`task_tiles` windows and `task_mib` MiB of pixels (plus a fixed cost per raster opened). Small
rasters are grouped into one part, so task and commit overhead is paid per group; a large raster
is split across parts. A re-run with the same settings reuses the saved plan (including the part
layout, even if the execution options changed), so the parts' completion records stay valid.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import rasterio

from rsbench.contracts.corpus_build import FILTER_KEYS, output_identity
from rsbench.corpus.band_names import BandMismatch
from rsbench.corpus.build_config import CorpusBuildConfig
from rsbench.corpus.raster import GDAL_OPTIONS, is_small, probe_raster
from rsbench.corpus.tiling import one_line, plan_windows
from rsbench.io import atomic_write_bytes, read_json, write_json

PLAN = "plan.json"
RASTERS = "rasters.parquet"
PARTS = "parts.parquet"
PLAN_FORMAT = 2  # plan.json of format 1 (one JSON with every probe) is not resumed: its staging is cleared
PROBE_BATCH = 32  # inputs per probe task: the task overhead (Dask round trip, imports) is paid per batch
# ... but a short list is cut into at least this many tasks: 30 large rasters in one task of 32 probed their
# reference samples on one worker while the others waited (1 s of the scaling case's 13 s on 2 workers).
PROBE_TASKS = 16
ROW_GROUP = 4096  # rasters per row group of rasters.parquet
# What opening a raster costs, in pixel bytes read: a part of many small rasters closes sooner.
RASTER_COST_BYTES = 256 * 2**10
# A large raster's part ends where a GDAL block row ends, even past the part's budget, up to this many times
# --task-tiles windows: each part opens the raster afresh, so a block row split across parts is decompressed once
# by each (a 16,384 px wide raster in 512 px blocks, 64 px windows: 4 parts of 2 window rows per block row).
BLOCK_ROW_PART_MAX = 16

RASTER_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("info", pa.string()),
        ("windows", pa.int64()),
    ]
)
SEGMENT_SCHEMA = pa.schema([("part", pa.int64()), ("raster", pa.int64()), ("start", pa.int64()), ("stop", pa.int64())])


def _probe_one(path: str, opts: dict[str, Any]) -> dict[str, Any]:
    try:
        return {"path": path, "status": "ok", "info": probe_raster(path, **opts)}
    except BandMismatch as e:
        return {"path": path, "status": "skipped", "reason": str(e)}
    except Exception as e:  # any unreadable input is reported, never fatal on its own
        return {"path": path, "status": "failed", "reason": one_line(e)}


def probe_task(args: tuple[list[tuple[str, dict[str, Any] | None]], dict[str, Any]]) -> list[dict[str, Any]]:
    """Probe a batch of rasters, each with its own band options (names, sensor, units from an input list
    or sidecar): status 'ok' with the description, 'skipped' (band selection) or 'failed'."""
    items, opts = args
    with rasterio.Env(**GDAL_OPTIONS):
        return [_probe_one(p, {**opts, "band_options": band_opts}) for p, band_opts in items]


@dataclass
class Plan:
    """A saved plan: its settings and segments in memory (a few numbers per raster), descriptions on disk."""

    staging: Path
    settings: dict[str, Any]
    segments: dict[str, np.ndarray]  # part, raster, start, stop: sorted by part, then raster
    raster_count: int

    @property
    def part_count(self) -> int:
        return int(self.segments["part"][-1]) + 1 if len(self.segments["part"]) else 0

    def windows(self) -> int:
        return int(np.sum(self.segments["stop"] - self.segments["start"], dtype=np.int64))

    def part_windows(self) -> np.ndarray:
        return np.bincount(
            self.segments["part"], weights=self.segments["stop"] - self.segments["start"], minlength=self.part_count
        ).astype(np.int64)

    def statuses(self) -> pa.Table:
        """path, status, reason of every input (small columns; the descriptions stay on disk)."""
        return pq.read_table(self.staging / RASTERS, columns=["path", "status", "reason"])

    def infos(self, wanted: set[int] | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
        """(raster index, description) of the usable rasters in input order, one row group at a time."""
        source = pq.ParquetFile(self.staging / RASTERS)
        first = 0
        for g in range(source.num_row_groups):
            group = source.read_row_group(g, columns=["status", "info"]).to_pydict()
            for j, (status, info) in enumerate(zip(group["status"], group["info"])):
                if status == "ok" and (wanted is None or first + j in wanted):
                    yield first + j, json.loads(info)
            first += len(group["status"])

    def part_tasks(self, cfg: CorpusBuildConfig, todo: set[int], exclusions) -> Iterator[tuple[int, dict[str, Any]]]:
        """(part, task) for the parts in `todo`, in part order; reads descriptions as it goes."""
        seg = self.segments
        wanted = {int(r) for p, r in zip(seg["part"], seg["raster"]) if int(p) in todo}
        infos = self.infos(wanted)
        current: tuple[int, dict[str, Any]] | None = None
        for part in sorted(todo):
            segments = []
            for i in _rows_of(seg["part"], part):
                raster = int(seg["raster"][i])
                while current is None or current[0] < raster:
                    current = next(infos)
                segments.append(
                    {"raster": raster, "info": current[1], "start": int(seg["start"][i]), "stop": int(seg["stop"][i])}
                )
            yield part, _task(cfg, part, segments, exclusions, self.staging)


def _rows_of(parts: np.ndarray, part: int) -> range:
    # parts is sorted: a binary search instead of a scan of every segment per part.
    return range(int(np.searchsorted(parts, part, "left")), int(np.searchsorted(parts, part, "right")))


def _task(cfg: CorpusBuildConfig, part: int, segments: list[dict], exclusions, staging: Path) -> dict[str, Any]:
    return {
        "part": part,
        "staging": str(staging),
        "segments": segments,
        "tile_size": cfg.tile_size,
        "stride": cfg.stride,
        "tiles_per_raster": cfg.tiles_per_raster,
        "seed": cfg.seed,
        "filters": {k: getattr(cfg, k) for k in FILTER_KEYS},
        "dedup": cfg.dedup,
        "features": cfg.diversity,
        "exclusions": exclusions,
    }


def _read_plan(staging: Path) -> dict[str, Any] | None:
    try:
        plan = read_json(staging / PLAN)
    except (OSError, ValueError):
        return None
    return plan if isinstance(plan, dict) and plan.get("format") == PLAN_FORMAT else None


def load_plan(staging: Path, output_settings: dict[str, Any]) -> Plan | None:
    """The saved plan when it was made for these settings; None when there is none."""
    saved = _read_plan(staging)
    if saved is None or output_identity(saved.get("settings") or {}) != output_settings:
        return None
    try:
        table = pq.read_table(staging / PARTS)
    except (OSError, pa.ArrowInvalid):
        return None
    segments = {name: table[name].to_numpy() for name in SEGMENT_SCHEMA.names}
    return Plan(staging, saved["settings"], segments, saved["rasters"])


def saved_settings(staging: Path) -> dict[str, Any] | None:
    saved = _read_plan(staging)
    return output_identity(saved.get("settings") or {}) if saved is not None else None


class _Layout:
    """Cuts rasters' window lists into parts as the probes arrive, in input order."""

    def __init__(self, cfg: CorpusBuildConfig, group: bool) -> None:
        self.max_windows, self.max_bytes, self.group = cfg.task_tiles, cfg.task_mib * 2**20, group
        self.tile = cfg.tile_size
        self.part, self.windows, self.bytes = 0, 0, 0
        self.rows: dict[str, list[int]] = {name: [] for name in SEGMENT_SCHEMA.names}

    def add(self, raster: int, rows: np.ndarray, info: dict[str, Any]) -> None:
        """Lay out a raster's windows (`rows`: their row offsets, in grid order)."""
        windows = len(rows)
        window_bytes = self.tile * self.tile * info["bands"] * np.dtype(info["dtype"]).itemsize
        block = info.get("block")  # absent from plans made before it was probed
        block_row = rows // block[0] if block and not is_small(info) else None
        start = 0
        if not self.group:
            self._close()
        while start < windows:
            room = (self.max_bytes - self.bytes - RASTER_COST_BYTES) // window_bytes
            if self.windows and (self.windows >= self.max_windows or room < 1):
                self._close()
                continue
            take = int(max(1, min(windows - start, self.max_windows - self.windows, room)))
            if block_row is not None and start + take < windows:
                end = int(np.searchsorted(block_row, block_row[start + take - 1], side="right"))
                take = max(take, min(end, start + BLOCK_ROW_PART_MAX * self.max_windows) - start)
            for name, value in zip(SEGMENT_SCHEMA.names, (self.part, raster, start, start + take)):
                self.rows[name].append(value)
            self.windows += take
            self.bytes += take * window_bytes + RASTER_COST_BYTES
            start += take

    def _close(self) -> None:
        if self.windows:
            self.part, self.windows, self.bytes = self.part + 1, 0, 0


def make_plan(
    cfg: CorpusBuildConfig,
    paths: list[str],
    output_settings: dict[str, Any],
    runner,
    staging: Path,
    on_probe: Callable[[int], None],
    band_options: dict[str, dict[str, Any]] | None = None,
) -> Plan:
    """Probe every input and split the usable rasters into parts; `band_options`: per path, the band names,
    sensor and units given in an input list or sidecar (rsbench.corpus.band_names.raster_options)."""
    opts = {
        "selection": cfg.bands,
        "gsd": cfg.gsd,
        "implicit_nodata": cfg.implicit_nodata,
        "resampling": cfg.resampling,
        "reference": False,  # a small raster's reference comes from its one read in tiling
    }
    band_options = band_options or {}
    items = [(p, band_options.get(p)) for p in paths]
    size = max(1, min(PROBE_BATCH, -(-len(items) // PROBE_TASKS)))
    batches = [(items[i : i + size], opts) for i in range(0, len(items), size)]
    layout = _Layout(cfg, cfg.group_rasters)
    pending: dict[int, list[dict[str, Any]]] = {}
    rows: dict[str, list] = {name: [] for name in RASTER_SCHEMA.names}
    next_batch = next_raster = 0
    (staging / "parts").mkdir(parents=True, exist_ok=True)
    tmp = staging / f"{RASTERS}.tmp"
    with pq.ParquetWriter(tmp, RASTER_SCHEMA) as writer:
        # A probe reads at most 64 small reference windows: count it as 100 windows of work.
        for i, result in runner.map_unordered(probe_task, batches, work=100 * len(paths)):
            pending[i] = result
            on_probe(len(result))
            # Results arrive in completion order; they are laid out and written in input order.
            while next_batch in pending:
                for probe in pending.pop(next_batch):
                    windows = 0
                    if probe["status"] == "ok":
                        info = probe["info"]
                        rows_of = plan_windows(info, cfg.tile_size, cfg.stride, cfg.tiles_per_raster, cfg.seed)[0]
                        windows = len(rows_of)
                        layout.add(next_raster, rows_of, info)
                    rows["path"].append(probe["path"])
                    rows["status"].append(probe["status"])
                    rows["reason"].append(probe.get("reason"))
                    rows["info"].append(json.dumps(probe["info"]) if "info" in probe else None)
                    rows["windows"].append(windows)
                    next_raster += 1
                next_batch += 1
                if len(rows["path"]) >= ROW_GROUP:
                    writer.write_table(pa.Table.from_pydict(rows, schema=RASTER_SCHEMA))
                    rows = {name: [] for name in RASTER_SCHEMA.names}
        writer.write_table(pa.Table.from_pydict(rows, schema=RASTER_SCHEMA))
    tmp.replace(staging / RASTERS)
    segments = pa.Table.from_pydict(layout.rows, schema=SEGMENT_SCHEMA)
    sink = pa.BufferOutputStream()
    pq.write_table(segments, sink)
    atomic_write_bytes(staging / PARTS, sink.getvalue().to_pybytes())
    # plan.json last: its presence says the two tables beside it are complete.
    plan = Plan(staging, output_settings, {n: segments[n].to_numpy() for n in SEGMENT_SCHEMA.names}, len(paths))
    saved = {"format": PLAN_FORMAT, "settings": output_settings, "rasters": len(paths), "parts": plan.part_count}
    write_json(staging / PLAN, saved)
    return plan


def finished_parts(plan: Plan, staging: Path) -> dict[int, dict[str, Any]]:
    """Completion records of parts that finished in an earlier (interrupted) run."""
    from rsbench.corpus.tiling import part_paths

    done = {}
    for i in range(plan.part_count):
        paths = part_paths(staging, i)
        if paths["done"].is_file() and paths["records"].is_file():
            try:
                done[i] = read_json(paths["done"])
            except ValueError:  # cannot happen with atomic writes, but never trust a half-written marker
                continue
    return done
