"""`rsbench corpus ...`: build and inspect a tiled, filtered pretraining corpus."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from rsbench.cli.common import ConfigOption, console, handle_errors
from rsbench.cli.model_options import GIVEN, SLURM_RESOURCE_OPTIONS, Opt, model_options, with_section
from rsbench.contracts.corpus_build import FILTER_KEYS, CorpusBuildConfig, CorpusSlurm
from rsbench.errors import ConfigError
from rsbench.progress import progress_bar
from rsbench.settings import load_yaml_mapping, resolve_config

app = typer.Typer(help="Build and inspect tiled pretraining corpora (WebDataset shards).", no_args_is_help=True)

FILTERS = "Filters"
SAMPLING = "Windows and sampling"
PARALLEL = "Parallel execution"
STALE_S = 300  # a running build's progress.json is rewritten at least every stage change; older: likely killed


@app.callback()
def _corpus() -> None:
    """Build and inspect tiled pretraining corpora (WebDataset shards)."""


def _log(message: str) -> None:
    style = "yellow" if message.startswith(("warning", "  ")) else None
    console.print(escape(message), style=style, highlight=False, soft_wrap=True)


# Panels and older names; everything else about an option comes from CorpusBuildConfig / CorpusSlurm.
BUILD_OPTIONS = {
    "input_lists": Opt(decls=("--input-list",), repeat=True),
    "exclude": Opt(repeat=True, panel=FILTERS),
    **{
        k: Opt(panel=SAMPLING)
        for k in ("gsd", "resampling", "stride", "tiles_per_raster", "max_tiles", "diversity", "clusters", "seed")
    },
    **{k: Opt(panel=FILTERS) for k in (*FILTER_KEYS, "implicit_nodata", "dedup", "dedup_distance")},
    **{
        k: Opt(panel=PARALLEL)
        for k in ("workers", "scheduler", "scheduler_timeout_s", "task_tiles", "task_mib", "group_rasters")
    },
}
# Not flags: `inputs` (the INPUT arguments), `slurm` (--slurm, and its fields are the --slurm-* options).
BUILD_EXCLUDE = frozenset({"inputs", "slurm"})
# --slurm-* options: the SlurmResources names, and the names older rsbench versions used as aliases.
SLURM_OPTIONS = {
    **SLURM_RESOURCE_OPTIONS,
    "partition": Opt(aliases=("--slurm-queue",)),
    "time": Opt(type=str, aliases=("--slurm-walltime",)),
    "cpus_per_task": Opt(aliases=("--slurm-cores",)),
    "mem": Opt(aliases=("--slurm-memory",)),
}
# YAML only (under `slurm:`): GPUs, the checkpoint signal and extra sbatch options mean nothing to Dask workers.
SLURM_EXCLUDE = frozenset({"gpus_per_node", "signal_delay_s", "extra"})


@app.command("build")
@handle_errors
@model_options(
    CorpusSlurm, into="slurm_given", prefix="slurm_", exclude=SLURM_EXCLUDE, options=SLURM_OPTIONS, panel=PARALLEL
)
@model_options(CorpusBuildConfig, exclude=BUILD_EXCLUDE, options=BUILD_OPTIONS)
def build_command(
    inputs: list[str] | None = typer.Argument(
        None,
        metavar="INPUT",
        show_default=False,
        help="Raster files, folders (searched recursively for *.tif), quoted globs ('data/**/*.tif') "
        "or GDAL paths (/vsis3/...).",
    ),
    given: dict[str, Any] = GIVEN,
    slurm: bool | None = typer.Option(
        None,
        "--slurm/--no-slurm",
        rich_help_panel=PARALLEL,
        show_default=False,
        help="Run on SLURM through a dask-jobqueue SLURMCluster (the --slurm-* options size its jobs).",
    ),
    slurm_given: dict[str, Any] = GIVEN,
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Rebuild even if DIR holds a corpus or an unfinished build with other settings."
    ),
    config: Path | None = ConfigOption,
) -> None:
    """Tile rasters into WebDataset shards with a manifest, per-band stats and corpus.json (resumable)."""
    # Imported here so `rsbench --help` stays fast (rasterio/torch are heavy).
    from rsbench.corpus import build_corpus

    if inputs:
        given["inputs"] = list(inputs)
    if slurm is not None or slurm_given:
        from_file = load_yaml_mapping(config).get("slurm") if config else None
        if not (slurm if slurm is not None else bool(from_file)):
            if slurm_given:
                raise ConfigError(f"--slurm-{next(iter(slurm_given)).replace('_', '-')} only applies with --slurm")
            given["slurm"] = False
        else:
            given["slurm"] = with_section(config, "slurm", slurm_given)
    cfg = resolve_config(CorpusBuildConfig, config, **given)
    progress = progress_bar(console)
    with progress:
        corpus = build_corpus(cfg, overwrite=overwrite, log=_log, progress=progress)
    counts = corpus["counts"]
    from rsbench.contracts.corpus_info import describe_group, upgrade_band_groups

    groups = "; ".join(
        f"{describe_group(g)}: {g['tiles']}" for g in upgrade_band_groups(corpus)["band_groups"].values()
    )
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


@app.command("check")
@handle_errors
def check_command(
    corpus_dir: Path = typer.Argument(..., metavar="DIR", help="A corpus built by `rsbench corpus build`."),
    against: list[Path] = typer.Option(
        ..., "--against", help="Downstream data (folder of images, or an image file); repeatable.", show_default=False
    ),
    max_distance: int | None = typer.Option(
        None, "--max-distance", min=0, max=64, help="Largest pHash Hamming distance counted as the same content."
    ),
    out: Path | None = typer.Option(None, "--out", help="Write the findings as JSON to this file."),
    fail: bool = typer.Option(False, "--fail/--no-fail", help="Exit 1 when any near-duplicate is found."),
) -> None:
    """Contamination check: downstream images (train and test) that are also pretraining tiles, by content
    (perceptual hashes), for data without footprints that `--exclude` cannot guard."""
    from rich.table import Table

    from rsbench.corpus.contamination import DEFAULT_MAX_DISTANCE, check_contamination
    from rsbench.errors import DataError
    from rsbench.io import write_json

    progress = progress_bar(console, transient=False)
    with progress:
        task = progress.add_task("hashing downstream images", total=None)
        found = check_contamination(
            corpus_dir,
            against,
            DEFAULT_MAX_DISTANCE if max_distance is None else max_distance,
            on_start=lambda total: progress.update(task, total=total),
            on_image=lambda: progress.advance(task),
        )
    table = Table(title=f"near-duplicates of corpus tiles (Hamming distance <= {found['max_distance']} of 64)")
    for column in ("data", "images", "duplicates", "closest"):
        table.add_column(column)
    for d in found["datasets"]:
        closest = min(d["duplicates"], key=lambda x: x["distance"], default=None)
        table.add_row(
            escape(d["data"]),
            str(d["images"]),
            str(len(d["duplicates"])),
            escape(f"{closest['image']} ~ {closest['tile']} ({closest['distance']})") if closest else "-",
        )
    console.print(table)
    if out is not None:
        write_json(out, found)
        console.print(f"wrote {escape(str(out))}", highlight=False)
    n = sum(len(d["duplicates"]) for d in found["datasets"])
    if fail and n:
        raise DataError(f"{n} downstream image(s) are near-duplicates of tiles of {corpus_dir}")


def _gone(state: dict[str, Any]) -> bool:
    """The build's process no longer exists (only known when it ran on this host)."""
    import os
    import socket

    if state.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(state["pid"]), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


@app.command("status")
@handle_errors
def status_command(
    corpus_dir: Path = typer.Argument(..., metavar="DIR", help="The output folder of a running or finished build."),
) -> None:
    """Stage, counts, rates and ETA of the build writing DIR (read from DIR/progress.json), or its end."""
    import time

    from rsbench.contracts.corpus_info import CorpusInfo
    from rsbench.errors import DataError
    from rsbench.io import read_json

    corpus = CorpusInfo(corpus_dir)
    try:
        state = read_json(corpus.progress)
    except FileNotFoundError:
        if corpus.is_built():
            console.print(f"{escape(str(corpus_dir))}: finished corpus (no progress record)", highlight=False)
            return
        raise DataError(f"{corpus_dir}: no build has started here ({corpus.progress.name} not found)") from None
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {corpus.progress}: {e}") from None
    age = time.time() - state["updated_at"]
    head = {"running": "building", "done": "finished", "failed": "failed"}.get(state["status"], state["status"])
    if state["status"] == "running" and (_gone(state) or age > STALE_S):
        head = f"stopped: no update for {age:.0f} s and the build process is gone (re-run the same command to resume)"
        if not _gone(state):
            head = f"no update for {age:.0f} s (killed? re-run the same command to resume)"
    lines = [f"{corpus_dir}: {head}" + (f": {state['error']}" if state.get("error") else "")]
    for name, s in state["stages"].items():
        share = f" ({100 * s['done'] / s['total']:.0f}%)" if s["total"] else ""
        eta = f", ETA {s['eta_s']:.0f} s" if s["eta_s"] is not None and s["done"] < s["total"] else ""
        lines.append(
            f"  {name}: {s['done']}/{s['total']} {s['unit']}{share}, {s['rate_per_s']:.1f} {s['unit']}/s, "
            f"{s['elapsed_s']:.0f} s{eta}"
        )
    lines.append(f"  updated {age:.0f} s ago by pid {state['pid']} on {state['host']}")
    console.print(escape("\n".join(lines)), highlight=False)
