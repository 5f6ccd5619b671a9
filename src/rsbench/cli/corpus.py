"""`rsbench corpus ...`: build a tiled pretraining corpus from GeoTIFFs."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from rsbench.cli.common import ConfigOption, console, handle_errors

app = typer.Typer(help="Build and inspect tiled pretraining corpora (WebDataset shards).", no_args_is_help=True)


@app.callback()
def _corpus() -> None:
    """Build and inspect tiled pretraining corpora (WebDataset shards)."""


def _log(message: str) -> None:
    style = "yellow" if message.startswith(("warning", "  ")) else None
    console.print(escape(message), style=style, highlight=False, soft_wrap=True)


@app.command("build")
@handle_errors
def build_command(
    inputs: Optional[List[Path]] = typer.Argument(None, metavar="INPUT", help="GeoTIFF files or folders (searched recursively).", show_default=False),
    out: Optional[Path] = typer.Option(None, "--out", help="Output corpus directory."),
    tile_size: Optional[int] = typer.Option(None, "--tile-size", help="Tile width/height in pixels."),
    stride: Optional[int] = typer.Option(None, "--stride", help="Grid step in pixels (default: the tile size)."),
    max_nodata_fraction: Optional[float] = typer.Option(
        None, "--max-nodata-fraction", help="Reject tiles with a larger fraction of invalid pixels (default 0.5)."
    ),
    shard_size: Optional[int] = typer.Option(None, "--shard-size", help="Samples per shard (default 1000)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Rebuild even if DIR already holds a corpus."),
    config: Optional[Path] = ConfigOption,
) -> None:
    """Tile rasters into WebDataset shards with a manifest, per-band stats and corpus.json."""
    # Imported here so `rsbench --help` stays fast (rasterio/torch are heavy).
    from rsbench.config import resolve_config
    from rsbench.corpus import CorpusBuildConfig, build_corpus

    cfg = resolve_config(
        CorpusBuildConfig,
        config,
        inputs=[str(p) for p in inputs] if inputs else None,
        out=str(out) if out is not None else None,
        tile_size=tile_size,
        stride=stride,
        max_nodata_fraction=max_nodata_fraction,
        shard_size=shard_size,
    )
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=console, transient=True,
    )
    with progress:
        corpus = build_corpus(cfg, overwrite=overwrite, log=_log, progress=progress)
    counts = corpus["counts"]
    groups = ", ".join(f"{g['bands']}-band: {g['tiles']}" for g in corpus["band_groups"].values())
    console.print(
        f"corpus: {escape(corpus['settings']['out'])}\n"
        f"  rasters {counts['rasters']} ok, {counts['rasters_failed']} failed; "
        f"tiles {counts['tiles_kept']} kept of {counts['tiles_total']} "
        f"(rejected: {', '.join(f'{k} {v}' for k, v in counts['rejected'].items())}); "
        f"{len(corpus['shards'])} shard(s)\n"
        f"  band groups (tiles): {groups}",
        highlight=False,
    )
