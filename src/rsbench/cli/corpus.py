"""`rsbench corpus ...`: build and inspect a tiled, filtered pretraining corpus."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from rsbench.cli.common import ConfigOption, console, handle_errors, split_csv

app = typer.Typer(help="Build and inspect tiled pretraining corpora (WebDataset shards).", no_args_is_help=True)

FILTERS = "Filters"
SAMPLING = "Windows and sampling"
PARALLEL = "Parallel execution"


@app.callback()
def _corpus() -> None:
    """Build and inspect tiled pretraining corpora (WebDataset shards)."""


def _log(message: str) -> None:
    style = "yellow" if message.startswith(("warning", "  ")) else None
    console.print(escape(message), style=style, highlight=False, soft_wrap=True)


def _opt(*names: str, help: str, panel: str | None = None):
    return typer.Option(None, *names, help=help, rich_help_panel=panel, show_default=False)


@app.command("build")
@handle_errors
def build_command(
    inputs: list[str] | None = typer.Argument(
        None,
        metavar="INPUT",
        show_default=False,
        help="Raster files, folders (searched recursively for *.tif), quoted globs ('data/**/*.tif') "
        "or GDAL paths (/vsis3/...).",
    ),
    input_list: list[Path] | None = _opt("--input-list", help="Text file listing one input per line (repeatable)."),
    out: Path | None = _opt("--out", help="Output corpus directory."),
    tile_size: int | None = _opt("--tile-size", help="Tile width/height in pixels."),
    bands: str | None = _opt(
        "--bands", help="Band selection and order, e.g. '4,3,2' (1-based) or 'red,green,blue' (descriptions)."
    ),
    gsd: float | None = _opt(
        "--gsd", help="Resample rasters to this ground sampling distance in metres.", panel=SAMPLING
    ),
    resampling: str | None = _opt(
        "--resampling", help="--gsd kernel: bilinear (default), nearest, cubic, average.", panel=SAMPLING
    ),
    stride: int | None = _opt("--stride", help="Grid step in pixels (default: the tile size).", panel=SAMPLING),
    tiles_per_raster: int | None = _opt(
        "--tiles-per-raster", help="N random (seeded) windows per raster instead of the grid.", panel=SAMPLING
    ),
    max_tiles: int | None = _opt(
        "--max-tiles", help="Cap on kept tiles, balanced across rasters (or clusters).", panel=SAMPLING
    ),
    diversity: bool | None = typer.Option(
        None,
        "--diversity/--no-diversity",
        rich_help_panel=SAMPLING,
        show_default=False,
        help="Reach --max-tiles evenly across k-means clusters of tile features.",
    ),
    clusters: int | None = _opt("--clusters", help="k of the diversity k-means (default 16).", panel=SAMPLING),
    seed: int | None = _opt("--seed", help="Seed of random windows and sampling (default 0).", panel=SAMPLING),
    max_nodata_fraction: float | None = _opt(
        "--max-nodata-fraction", help="Reject tiles with more invalid pixels (default 0.5; 1 = off).", panel=FILTERS
    ),
    implicit_nodata: bool | None = typer.Option(
        None,
        "--implicit-nodata/--no-implicit-nodata",
        rich_help_panel=FILTERS,
        show_default=False,
        help="In rasters without declared nodata, pixels 0 in every band are fill (default on).",
    ),
    blank_filter: bool | None = typer.Option(
        None,
        "--blank-filter/--no-blank-filter",
        rich_help_panel=FILTERS,
        show_default=False,
        help="Reject low-information tiles (default on).",
    ),
    min_std: float | None = _opt(
        "--min-std", help="Blank if every band's std < this fraction of its p2-p98 range (default 0.04).", panel=FILTERS
    ),
    min_entropy: float | None = _opt(
        "--min-entropy", help="Blank if the quicklook entropy < this many bits (default 3).", panel=FILTERS
    ),
    cloud_filter: bool | None = typer.Option(
        None,
        "--cloud-filter/--no-cloud-filter",
        rich_help_panel=FILTERS,
        show_default=False,
        help="Reject cloudy tiles (bright in every band; default on).",
    ),
    cloud_brightness: float | None = _opt(
        "--cloud-brightness",
        help="Cloud pixel: every band above this fraction of its p2-p98 range (default 0.7).",
        panel=FILTERS,
    ),
    max_cloud_fraction: float | None = _opt(
        "--max-cloud-fraction", help="Reject tiles with a larger cloud fraction (default 0.2).", panel=FILTERS
    ),
    saturation_filter: bool | None = typer.Option(
        None,
        "--saturation-filter/--no-saturation-filter",
        rich_help_panel=FILTERS,
        show_default=False,
        help="Reject tiles with many pixels at the dtype maximum (default on).",
    ),
    max_saturated_fraction: float | None = _opt(
        "--max-saturated-fraction", help="Reject tiles with a larger saturated fraction (default 0.2).", panel=FILTERS
    ),
    dedup: bool | None = typer.Option(
        None,
        "--dedup/--no-dedup",
        rich_help_panel=FILTERS,
        show_default=False,
        help="Reject near-duplicate tiles by perceptual hash (default on).",
    ),
    dedup_distance: int | None = _opt(
        "--dedup-distance", help="Max Hamming distance of duplicate hashes, of 64 bits (default 4).", panel=FILTERS
    ),
    exclude: list[str] | None = _opt(
        "--exclude",
        help="Vector file or raster of evaluation areas; overlapping tiles are rejected (repeatable).",
        panel=FILTERS,
    ),
    shard_size: int | None = _opt("--shard-size", help="Samples per shard (default 1000)."),
    workers: int | None = _opt(
        "--workers",
        help="Local Dask worker processes (default: all cores, but in-process for builds under 20k windows; "
        "1 = in-process).",
        panel=PARALLEL,
    ),
    scheduler: str | None = _opt(
        "--scheduler", help="Address of a running Dask scheduler (tcp://host:8786).", panel=PARALLEL
    ),
    slurm: bool | None = typer.Option(
        None,
        "--slurm/--no-slurm",
        rich_help_panel=PARALLEL,
        show_default=False,
        help="Run on SLURM through a dask-jobqueue SLURMCluster.",
    ),
    slurm_queue: str | None = _opt("--slurm-queue", help="SLURM partition.", panel=PARALLEL),
    slurm_account: str | None = _opt("--slurm-account", help="SLURM account.", panel=PARALLEL),
    slurm_walltime: str | None = _opt("--slurm-walltime", help="SLURM walltime (default 01:00:00).", panel=PARALLEL),
    slurm_jobs: int | None = _opt(
        "--slurm-jobs", help="SLURM jobs, each with one worker process per core (default 1).", panel=PARALLEL
    ),
    slurm_cores: int | None = _opt("--slurm-cores", help="Cores per SLURM job (default 4).", panel=PARALLEL),
    slurm_memory: str | None = _opt("--slurm-memory", help="Memory per SLURM job (default 16GB).", panel=PARALLEL),
    task_tiles: int | None = _opt("--task-tiles", help="Windows per parallel task (default 2048).", panel=PARALLEL),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Rebuild even if DIR holds a corpus or an unfinished build with other settings."
    ),
    config: Path | None = ConfigOption,
) -> None:
    """Tile rasters into WebDataset shards with a manifest, per-band stats and corpus.json (resumable)."""
    # Imported here so `rsbench --help` stays fast (rasterio/torch are heavy).
    from rsbench.corpus import CorpusBuildConfig, build_corpus
    from rsbench.settings import resolve_config

    given = {
        k: v
        for k, v in locals().items()
        if k not in {"config", "overwrite", "resolve_config", "CorpusBuildConfig", "build_corpus"}
    }
    given["input_lists"] = [str(p) for p in given.pop("input_list")] if input_list else None
    given["inputs"] = list(inputs) if inputs else None
    given["out"] = str(out) if out is not None else None
    given["bands"] = split_csv(bands)
    cfg = resolve_config(CorpusBuildConfig, config, **given)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    with progress:
        corpus = build_corpus(cfg, overwrite=overwrite, log=_log, progress=progress)
    counts = corpus["counts"]
    groups = ", ".join(f"{g['bands']}-band: {g['tiles']}" for g in corpus["band_groups"].values())
    rejected = ", ".join(f"{k} {v}" for k, v in counts["rejected"].items() if v) or "none"
    console.print(
        f"corpus: {escape(corpus['settings']['out'])}\n"
        f"  rasters {counts['rasters']} ok, {counts['rasters_failed']} failed, "
        f"{counts.get('rasters_skipped', 0)} skipped; "
        f"tiles {counts['tiles_kept']} kept of {counts['tiles_total']} (rejected: {rejected}); "
        f"{len(corpus['shards'])} shard(s)\n"
        f"  band groups (tiles): {groups}",
        highlight=False,
    )


@app.command("inspect")
@handle_errors
def inspect_command(
    corpus_dir: Path = typer.Argument(..., metavar="DIR", help="A corpus built by `rsbench corpus build`."),
    out: Path | None = typer.Option(None, "--out", help="Folder for the quicklook PNGs (default: DIR/inspect)."),
    per_grid: int = typer.Option(16, "--per-grid", min=1, help="Tiles per quicklook grid."),
    seed: int = typer.Option(0, "--seed", help="Seed of the tile sample shown."),
) -> None:
    """Summary tables (rasters, kept/rejected per reason, band stats) and quicklook grids of kept and rejected tiles."""
    from rsbench.corpus.quicklook import inspect_corpus, summary_tables

    report = inspect_corpus(corpus_dir, out_dir=out, per_grid=per_grid, seed=seed, log=_log)
    for table in summary_tables(report):
        console.print(table)
    for path in report["pngs"]:
        console.print(f"wrote {escape(str(path))}", highlight=False)
