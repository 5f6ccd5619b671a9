"""`rsbench corpus build`: rasters -> tiles -> WebDataset shards + manifest + corpus.json.

Commit protocol: shards, manifest.parquet and config.yaml are written first (each atomically);
corpus.json is written last and is the marker of a finished corpus. A directory without it is
treated as an interrupted build and its rsbench artefacts are cleared before building again.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from rsbench import __version__
from rsbench.config import StrictModel, save_config
from rsbench.corpus.shards import SHARDS_DIRNAME, ShardPacker, Spool
from rsbench.corpus.tiling import REJECT_NODATA, probe_raster, sample_metadata, tile_count, tile_raster
from rsbench.data.normalization import BandStats
from rsbench.errors import DataError, RsbenchError
from rsbench.io import atomic_write_bytes, read_json, write_json

RASTER_SUFFIXES = {".tif", ".tiff"}
CORPUS_JSON = "corpus.json"
MANIFEST = "manifest.parquet"
CONFIG_YAML = "config.yaml"
STAGING = ".staging"

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
        ("nodata_fraction", pa.float64()),
        ("kept", pa.bool_()),
        ("reject_reason", pa.string()),
        ("shard", pa.string()),
        ("crs", pa.string()),
        ("center_x", pa.float64()),
        ("center_y", pa.float64()),
    ]
)

Log = Callable[[str], None]


class CorpusBuildConfig(StrictModel):
    inputs: list[str] = Field(min_length=1, description="GeoTIFF files or folders (searched recursively for *.tif/*.tiff)")
    out: str = Field(description="output corpus directory")
    tile_size: int = Field(gt=0, description="tile width and height in pixels")
    stride: int | None = Field(None, gt=0, description="grid step in pixels (None: tile_size, no overlap)")
    max_nodata_fraction: float = Field(0.5, ge=0.0, le=1.0, description="reject tiles with more invalid pixels")
    shard_size: int = Field(1000, gt=0, description="samples per shard")


def discover_inputs(inputs: list[str], log: Log) -> list[str]:
    """Expand files/folders into a de-duplicated list of absolute raster paths, in a stable order.

    Files named explicitly are kept whatever their suffix (they are tried, and recorded as failures
    if unreadable); folders contribute only *.tif/*.tiff, sorted.
    """
    found: list[str] = []
    empty: list[str] = []
    for item in inputs:
        path = Path(item).expanduser()
        if not path.exists():
            raise DataError(f"input not found: {item}")
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in RASTER_SUFFIXES and p.is_file())
            if not files:
                empty.append(item)
            found.extend(str(p.resolve()) for p in files)
        else:
            found.append(str(path.resolve()))
    unique = list(dict.fromkeys(found))
    if not unique:
        raise DataError(f"no GeoTIFF (*.tif, *.tiff) inputs found in {', '.join(empty)}")
    for item in empty:
        log(f"warning: no GeoTIFF (*.tif, *.tiff) files in {item}")
    return unique


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    line = text[0] if text else type(err).__name__
    # rasterio wraps GDAL's specific message ("...TIFFReadEncodedTile() failed") as the cause of a
    # generic "Read failed. See previous exception for details."; surface the specific one.
    cause = err.__cause__
    if cause is not None and str(cause).strip():
        line = f"{line.removesuffix(' See previous exception for details.')} {str(cause).strip().splitlines()[0]}"
    return line


def _clear_artefacts(out: Path) -> None:
    # corpus.json first: from here on the directory no longer claims to hold a finished corpus.
    for name in (CORPUS_JSON, MANIFEST, CONFIG_YAML):
        (out / name).unlink(missing_ok=True)
    for name in (SHARDS_DIRNAME, STAGING):
        shutil.rmtree(out / name, ignore_errors=True)


def _check_existing(out: Path, settings: dict[str, Any], overwrite: bool) -> dict[str, Any] | None:
    """Return the existing corpus when it was built with the same settings (and no overwrite)."""
    marker = out / CORPUS_JSON
    if not marker.is_file() or overwrite:
        return None
    try:
        existing = read_json(marker)
    except ValueError as e:
        raise DataError(f"{marker} is not valid JSON ({_one_line(e)}); pass --overwrite to rebuild") from None
    old = existing.get("settings", {}) if isinstance(existing, dict) else {}
    if old == settings:
        return existing
    changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
    raise RsbenchError(
        f"{out} already holds a corpus built with different settings ({', '.join(changed)}); "
        "pass --overwrite to replace it"
    )


class _Group:
    """Running totals of one band group (tiles with the same band count)."""

    def __init__(self, bands: int, band_names: list[str]) -> None:
        self.bands = bands
        self.band_names = band_names
        self.tiles = 0
        self.stats = BandStats.empty(bands)


def _stage_raster(path: str, cfg: CorpusBuildConfig, spool: Spool, advance: Callable[[int], None]):
    """Tile one raster fully into its spool; returns (tile records, per-kept-tile stats)."""
    records: list[dict[str, Any]] = []
    stats: list[BandStats] = []
    for tile in tile_raster(path, cfg.tile_size, cfg.stride, cfg.max_nodata_fraction):
        records.append(tile.record)
        if tile.kept:
            spool.add(tile.array)
            stats.append(tile.stats)
        advance(1)
    return records, stats


def build_corpus(cfg: CorpusBuildConfig, overwrite: bool = False, log: Log | None = None, progress=None) -> dict:
    """Build (or return the already-built) corpus described by `cfg`; returns corpus.json's content.

    `log` receives one-line human messages (warnings, "already built"); `progress` is an optional
    `rich.progress.Progress` advanced once per tile, so the function also runs without a terminal.
    """
    log = log or (lambda msg: None)
    out = Path(cfg.out).expanduser().resolve()
    # Record the effective values (absolute paths, explicit stride) so that equivalent commands
    # compare equal and the saved config replays the same build from any working directory.
    paths = discover_inputs(cfg.inputs, log)
    settings = cfg.model_dump(mode="json")
    settings.update(
        inputs=[str(Path(p).expanduser().resolve()) for p in cfg.inputs],
        out=str(out),
        stride=cfg.stride or cfg.tile_size,
    )
    cfg = CorpusBuildConfig.model_validate(settings)

    existing = _check_existing(out, settings, overwrite)
    if existing is not None:
        log(f"corpus already built: {out}")
        return existing

    out.mkdir(parents=True, exist_ok=True)
    _clear_artefacts(out)
    try:
        corpus = _build(cfg, out, paths, settings, log, progress)
    except BaseException:
        _clear_artefacts(out)
        raise
    shutil.rmtree(out / STAGING, ignore_errors=True)
    return corpus


def _build(cfg: CorpusBuildConfig, out: Path, paths: list[str], settings: dict, log: Log, progress) -> dict:
    failures: list[dict[str, str]] = []
    probed: list[tuple[str, dict]] = []
    for path in paths:
        try:
            probed.append((path, probe_raster(path)))
        except Exception as e:  # any unreadable input is skipped and reported, never fatal alone
            failures.append({"path": path, "reason": _one_line(e)})

    def count(info: dict) -> int:
        return tile_count(info["width"], info["height"], cfg.tile_size, cfg.stride)

    task = progress.add_task("tiling", total=sum(count(i) for _, i in probed)) if progress else None

    def advance(n: int) -> None:
        if progress is not None:
            progress.advance(task, n)

    staging = out / STAGING
    staging.mkdir(exist_ok=True)
    packer = ShardPacker(out, cfg.shard_size)
    rasters: list[dict[str, Any]] = []
    manifest: list[dict[str, Any]] = []
    groups: dict[int, _Group] = {}
    try:
        for path, info in probed:
            spool = Spool(staging / f"raster-{len(rasters):06d}.npy-spool")
            done = 0

            def step(n: int) -> None:
                nonlocal done
                done += n
                advance(n)

            try:
                records, stats = _stage_raster(path, cfg, spool, step)
            except Exception as e:  # e.g. a truncated file that fails half-way through
                spool.discard()
                failures.append({"path": path, "reason": _one_line(e)})
                advance(count(info) - done)
                continue

            raster_index = len(rasters)
            blobs = spool.blobs()
            kept_stats = iter(stats)
            for record in records:
                record["raster_index"] = raster_index
                record["shard"] = None
                if record["kept"]:
                    record["shard"] = packer.add(info["bands"], record["key"], next(blobs), sample_metadata(record, info))
                    # A group takes its band names from the first raster that contributes a tile.
                    group = groups.setdefault(info["bands"], _Group(info["bands"], info["band_names"]))
                    group.tiles += 1
                    group.stats = group.stats.merge(next(kept_stats))
                manifest.append(record)
            spool.discard()
            kept = sum(r["kept"] for r in records)
            rasters.append({**info, "tiles_total": len(records), "tiles_kept": kept, "tiles_rejected": len(records) - kept})
        packer.close()
    except BaseException:
        packer.abort()
        raise

    if failures:
        log(f"warning: {len(failures)} of {len(paths)} input(s) could not be read and were skipped:")
        for f in failures:
            log(f"  {f['path']}: {f['reason']}")
    if not rasters:
        first = failures[0]
        raise DataError(f"no input raster could be read ({len(failures)} failed; first: {first['path']}: {first['reason']})")
    tiles_kept = sum(r["tiles_kept"] for r in rasters)
    if tiles_kept == 0:
        raise DataError(
            f"no tiles kept from {len(rasters)} raster(s): every {cfg.tile_size}px window was either off the "
            f"raster or had more than {cfg.max_nodata_fraction:.0%} nodata"
        )

    _write_manifest(out / MANIFEST, manifest)
    save_config(cfg, out / CONFIG_YAML)
    corpus = {
        "rsbench_version": __version__,
        "settings": settings,
        "rasters": rasters,
        "failures": failures,
        "counts": {
            "rasters": len(rasters),
            "rasters_failed": len(failures),
            "tiles_total": len(manifest),
            "tiles_kept": tiles_kept,
            "rejected": {REJECT_NODATA: sum(r["reject_reason"] == REJECT_NODATA for r in manifest)},
        },
        "band_groups": {
            str(b): {
                "bands": b,
                "tiles": g.tiles,
                "band_names": g.band_names,
                "stats": g.stats.summary(),
                "shards": packer.group_shards.get(b, []),
            }
            for b, g in sorted(groups.items())
        },
        "shards": packer.shards,
    }
    write_json(out / CORPUS_JSON, corpus)
    return corpus


def _write_manifest(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = {name: [r[name] for r in rows] for name in MANIFEST_SCHEMA.names}
    table = pa.Table.from_pydict(columns, schema=MANIFEST_SCHEMA)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    atomic_write_bytes(path, sink.getvalue().to_pybytes())
