"""Corpus builder throughput, scaling, loader speed and memory bound, on the real rasters.

    .venv/bin/python benchmarks/corpus_bench.py [--copies 3] [--tile 64] [--stride 32] [--skip-big]

Three jobs, each timed side by side against the bare loop (rasterio open, read every grid window,
np.save to memory: the floor any tiler must beat) on the same windows:
  * archive: 1,000 real 128 x 128 4-band chips cut from the shared NAIP raster (4,000 windows of 64 px);
  * tiling: the five shared rasters, --copies times each (64 px windows, stride 32);
  * scaling: the five rasters --scaling-copies times at stride 16 (over 30 s of work for 1 worker);
each with `build_corpus` on 1 worker (in-process; every filter on, and every filter off) and on 2 Dask
worker processes (cluster started before timing), output checked identical, with a pure-CPU control
(2 processes vs 1) just before and after the 2-worker build and the load average;
  * planning memory: peak RSS of the planning step alone on synthetic archives of 64 x 64 GeoTIFFs
    (--plan-sizes, 100,000 by default: written once into --work and reused), and the per-raster slope;
  * assembly memory (--assembly-windows, on its own): peak RSS and time of assembly alone on fabricated
    part records of millions of windows;
  * torchgeo RasterDataset + RandomGeoSampler + DataLoader producing as many 64 px tiles from the
    Sentinel-2 raster as the build tiles from it (torchgeo only reads, it writes nothing);
  * loader: CorpusDataset over the shards vs np.load of the bare loop's .npy files, same samples;
  * block rows: a generated 16,384 px wide 8-band uint16 raster whose 512 px block rows fill GDAL's 128 MiB
    cache, built as it is and with the row-sized cache and block-row parts turned off, beside the bare loop;
  * peak RSS (process tree) while tiling a generated > 4 GiB raster (sparse tiled DEFLATE GeoTIFF).
Writes benchmarks/results/corpus_bench.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import rasterio
from rasterio.windows import Window

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RSBENCH_SHARED_DATA", REPO.parent / "shared" / "data"))
S2 = "sentinel2_l1c_T18SVG_20160112_20m_6band.tif"
NAIP = "naip_m_4709963_se_14_1_20190904_rgbn_5m.tif"
sys.path.insert(0, str(REPO / "src"))

from rsbench.corpus import (  # noqa: E402
    CorpusBuildConfig,
    build_corpus,
    discover_inputs,
    plan_windows,
    probe_raster,
)
from rsbench.corpus.parallel import local_cluster  # noqa: E402

CPU = {}  # process CPU seconds of the last timed() call (this process only: in-process runs)


def timed(fn):
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    CPU["last"] = time.process_time() - cpu
    return time.perf_counter() - start, out


def _burn(n: int) -> int:
    s = 0
    for i in range(n):
        s += i * i
    return s


def cpu_control(n: int = 4_000_000) -> float:
    """Speed-up of a pure-CPU job on 2 processes vs 1, right now: what 2 cores can give on this machine."""
    import multiprocessing as mp

    serial, _ = timed(lambda: [_burn(n) for _ in range(4)])
    with mp.Pool(2) as pool:
        parallel, _ = timed(lambda: pool.map(_burn, [n] * 4))
    return serial / parallel


def workload(work: Path, copies: int) -> list[Path]:
    """The real rasters, `copies` times each (renamed copies: more, unequal rasters to spread)."""
    folder = work / "rasters"
    if folder.exists():
        return sorted(folder.glob("*.tif"))
    folder.mkdir(parents=True)
    for src in sorted((SHARED / "rasters").glob("*.tif")):
        for i in range(copies):
            shutil.copy(src, folder / f"{src.stem}_copy{i}.tif")
    return sorted(folder.glob("*.tif"))


def bare_loop(rasters: list[Path], tile: int, stride: int, out: Path) -> tuple[float, int]:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)

    def run():
        n = 0
        for path in rasters:
            rows, cols = plan_windows(probe_raster(str(path)), tile, stride, None, 0)
            with rasterio.open(path) as src:
                for r, c in zip(rows.tolist(), cols.tolist()):
                    np.save(out / f"{path.stem}_{r}_{c}.npy", src.read(window=Window(c, r, tile, tile)))
                    n += 1
        return n

    return timed(run)


def archive_chips(work: Path, n: int, size: int = 128, step: int = 20) -> list[Path]:
    """`n` real size x size 4-band chips: overlapping cuts of the shared NAIP raster (an archive of small files)."""
    folder = work / f"chips{n}"
    if folder.exists() and len(list(folder.glob("*.tif"))) == n:
        return sorted(folder.glob("*.tif"))
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    with rasterio.open(SHARED / "rasters" / NAIP) as src:
        profile = {**src.profile, "width": size, "height": size, "tiled": False, "compress": None}
        profile.pop("blockxsize", None), profile.pop("blockysize", None)
        offsets = [(r, c) for r in range(0, src.height - size, step) for c in range(0, src.width - size, step)]
        assert len(offsets) >= n, f"the NAIP raster gives {len(offsets)} chips of {size} px at step {step}"
        for k, (r, c) in enumerate(offsets[:n]):
            window = Window(c, r, size, size)
            chip = profile | {"transform": src.window_transform(window)}
            with rasterio.open(folder / f"chip{k:05d}.tif", "w", **chip) as dst:
                dst.write(src.read(window=window))
    return sorted(folder.glob("*.tif"))


def bare_loop_memory(rasters: list[Path], tile: int, stride: int) -> tuple[float, int]:
    """The floor: open each raster, read every grid window, np.save it to memory."""

    def run():
        n = 0
        for path in rasters:
            with rasterio.open(path) as src:
                for r in range(0, src.height - tile + 1, stride):
                    for c in range(0, src.width - tile + 1, stride):
                        np.save(io.BytesIO(), src.read(window=Window(c, r, tile, tile)))
                        n += 1
        return n

    return timed(run)


def open_only(rasters: list[Path]) -> float:
    """The bare loop's opens alone (same GDAL defaults): how much of the floor is opening files."""

    def run():
        for path in rasters:
            with rasterio.open(path):
                pass

    return timed(run)[0]


def stage_seconds(corpus: Path) -> dict[str, float]:
    """Seconds per stage of a finished build (its progress.json); assembly and manifest are the rest."""
    return {k: v["elapsed_s"] for k, v in json.loads((corpus / "progress.json").read_text())["stages"].items()}


def synthetic_archive(work: Path, n: int) -> Path:
    """`n` small synthetic GeoTIFFs (64 x 64, 1 band, uint8, distinct pixels and positions) in one folder."""
    folder = work / f"synthetic{n}"
    if folder.exists() and len(os.listdir(folder)) == n:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    profile = {"driver": "GTiff", "width": 64, "height": 64, "count": 1, "dtype": "uint8", "crs": "EPSG:32614"}
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="TRUE"):
        for k in range(n):
            transform = rasterio.Affine(5.0, 0, 500000 + 320 * (k % 1000), 0, -5.0, 5300000 - 320 * (k // 1000))
            with rasterio.open(folder / f"s{k:06d}.tif", "w", **profile, transform=transform) as dst:
                dst.write(rng.integers(0, 255, (1, 64, 64), dtype=np.uint8))
    return folder


def plan_only(folder: Path, out: Path) -> None:
    """The planning step alone (probe every input, write the plan), in this process; prints its peak RSS."""
    from rsbench.corpus.build import _resolve
    from rsbench.corpus.parallel import Runner
    from rsbench.corpus.plan import make_plan

    cfg = _resolve(CorpusBuildConfig(inputs=[str(folder)], out=str(out), tile_size=32, workers=1))
    paths = discover_inputs(cfg.inputs)
    shutil.rmtree(out, ignore_errors=True)
    with Runner(cfg) as runner:
        plan = make_plan(cfg, paths, cfg.output_settings(), runner, out / ".staging", lambda n: None)
    # VmHWM, not getrusage's ru_maxrss: Linux keeps the parent's (this benchmark's) peak in ru_maxrss across exec.
    status = Path("/proc/self/status").read_text()
    peak = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 2**10
    print(json.dumps({"rasters": plan.raster_count, "windows": plan.windows(), "peak_rss_mib": peak}))


FULL_BUILD_MAX_RASTERS = 20_000  # the whole build of the smallest planning archive, when it is this small


def planning_memory(work: Path, sizes: list[int]) -> dict:
    """Peak RSS of the planning step on growing synthetic archives: the per-raster slope, extrapolated."""
    runs = []
    for n in sizes:
        folder = synthetic_archive(work, n)
        start = time.perf_counter()
        cmd = [sys.executable, __file__, "--plan-only", str(folder), "--work", str(work / "plan")]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        runs.append(json.loads(res.stdout.strip().splitlines()[-1]) | {"seconds": time.perf_counter() - start})
        print(json.dumps(runs[-1]), flush=True)
    (a, b) = runs[0], runs[-1]
    slope = (b["peak_rss_mib"] - a["peak_rss_mib"]) / (b["rasters"] - a["rasters"])
    at_100k = b["peak_rss_mib"] + slope * (100_000 - b["rasters"])
    result = {
        "runs": runs,
        "slope_kib_per_raster": slope * 1024,
        "peak_rss_mib_100k": at_100k if b["rasters"] < 100_000 else b["peak_rss_mib"],
        "measured_at_100k": b["rasters"] >= 100_000,
        "under_2_gib": (at_100k if b["rasters"] < 100_000 else b["peak_rss_mib"]) < 2048,
    }
    if a["rasters"] > FULL_BUILD_MAX_RASTERS:
        return result
    # The whole build of the smallest archive, for comparison (assembly included).
    # Cloud and blank filters off: the synthetic pixels are uniform noise, which they reject.
    cmd = [str(Path(sys.executable).parent / "rsbench"), "corpus", "build", str(synthetic_archive(work, sizes[0]))]
    cmd += ["--out", str(work / "build-memory"), "--tile-size", "32", "--workers", "1", "--overwrite"]
    seconds, peak = peak_rss([*cmd, "--no-cloud-filter", "--no-blank-filter"])
    build = {"rasters": a["rasters"], "windows": a["windows"], "peak_rss_mib": peak, "seconds": seconds}
    print(json.dumps(build), flush=True)
    return result | {
        "full_build": build,
        "full_build_kib_per_window_over_planning": (peak - a["peak_rss_mib"]) * 1024 / a["windows"],
    }


ASSEMBLY_PART_WINDOWS = 50_000  # windows per fabricated part (500 rasters of 100 windows)


def fabricated_info(r: int) -> dict:
    """A probe-like description of synthetic raster r (a 640 x 640 4-band uint8 scene: 100 windows of 64 px)."""
    x0, y0 = 500000 + 3200.0 * (r % 300), 5300000 - 3200.0 * (r // 300)
    names = ["red", "green", "blue", "nir"]
    return {
        "path": f"/archive/scene{r:07d}.tif",
        "width": 640,
        "height": 640,
        "source_size": [640, 640],
        "bands": 4,
        "band_indexes": [1, 2, 3, 4],
        "band_names": names,
        "source_band_names": names,
        "band_names_source": "descriptions",
        "sensor": None,
        "units": "uint8",
        "band_group": "red,green,blue,nir|uint8",
        "dtype": "uint8",
        "mixed_dtypes": False,
        "crs": "EPSG:32614",
        "transform": [5.0, 0.0, x0, 0.0, -5.0, y0],
        "resampled": False,
        "resampling": "bilinear",
        "gsd": [5.0, 5.0],
        "nodata": None,
        "nodata_source": "none",
        "implicit_nodata": True,
        "date": "2019-09-04",
        "date_source": "filename",
        "center_lonlat": [-99.0, 47.0],
        "reference": {"low": [10.0] * 4, "high": [200.0] * 4},
    }


def fabricate_records(work: Path, windows: int) -> Path:
    """Per-part record files exactly as tiling writes them (tiling.PART_SCHEMA), for `windows` windows of
    100 per raster: ~8 % rejected by the per-tile filters, random 64-bit hashes (no near-duplicates:
    the slowest case of the hash index), per-band min/max. Reused when present."""
    import pyarrow as pa

    from rsbench.corpus.filters import REASONS
    from rsbench.corpus.tiling import PART_SCHEMA, parquet_bytes, part_paths

    staging = work / f"assembly{windows}" / ".staging"
    if (staging / "complete").is_file():
        return staging
    shutil.rmtree(staging.parent, ignore_errors=True)
    (staging / "parts").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for part, start in enumerate(range(0, windows, ASSEMBLY_PART_WINDOWS)):
        index = np.arange(start, min(windows, start + ASSEMBLY_PART_WINDOWS))
        n, raster = len(index), index // 100
        row, col = (index % 100) // 10 * 64, index % 10 * 64
        passed = rng.random(n) >= 0.08
        reason = np.where(passed, None, np.asarray(REASONS[1:5], dtype=object)[rng.integers(0, 4, n)])
        low = rng.integers(0, 40, (n, 4)).astype(np.float64)
        columns = {
            "key": [f"scene{r:07d}_r{y:06d}_c{x:06d}" for r, y, x in zip(raster.tolist(), row.tolist(), col.tolist())],
            "raster": raster,
            "row_off": row,
            "col_off": col,
            "center_x": 500000 + 5.0 * col,
            "center_y": 5300000 - 5.0 * row,
            "lon": rng.uniform(-100, -99, n),
            "lat": rng.uniform(47, 48, n),
            "nodata_fraction": np.where(rng.random(n) < 0.02, 0.1, 0.0),
            "saturated_fraction": np.zeros(n),
            "cloud_fraction": rng.uniform(0, 0.1, n),
            "std": rng.uniform(5, 50, n),
            "entropy": rng.uniform(3, 7, n),
            "reject_reason": reason.tolist(),
            "phash": pa.array(rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64), mask=~passed),
            "features": [None] * n,
            "stats_min": np.where(passed[:, None], low, np.nan).tolist(),
            "stats_max": (low + rng.integers(100, 215, (n, 4))).tolist(),
            "mask": [None] * n,
            "spool_offset": np.cumsum(passed) * 16512,
            "spool_size": np.where(passed, 16512, 0),
        }
        table = pa.Table.from_pydict(columns, schema=PART_SCHEMA)
        (part_paths(staging, part)["records"]).write_bytes(parquet_bytes(table))
    (staging / "complete").write_text(str(windows))
    return staging


def assembly_only(staging: Path) -> None:
    """Assembly alone (load the windows, select, band-group statistics, shard plan, manifest) on fabricated
    parts, in this process; prints its time and peak RSS (VmHWM) before and after."""
    from rsbench.corpus import assemble

    windows = int((staging / "complete").read_text())
    parts = -(-windows // ASSEMBLY_PART_WINDOWS)
    rasters = -(-windows // 100)
    infos = {r: fabricated_info(r) for r in range(rasters)}
    cfg = CorpusBuildConfig(inputs=["/archive"], out=str(staging.parent), tile_size=64, workers=1)
    before = _vm("VmRSS")
    start = time.perf_counter()
    w = assemble.load_windows(parts, staging, np.ones(rasters, dtype=bool), cfg)
    loaded = time.perf_counter()
    assemble.select(w, cfg)
    selected = time.perf_counter()
    groups = assemble.kept_groups(w, infos, staging)
    tasks, names, _, shard_of = assemble.shard_tasks(w, infos, groups, cfg, staging.parent, staging)
    assemble.write_manifest(staging.parent / "manifest.parquet", w, infos, cfg, staging, names, shard_of)
    seconds = time.perf_counter() - start
    peak = _vm("VmHWM")
    print(
        json.dumps(
            {
                "windows": len(w),
                "rasters": rasters,
                "kept": len(w.kept()),
                "shards": len(names),
                "seconds": seconds,
                "seconds_load": loaded - start,
                "seconds_select": selected - loaded,
                "rss_before_mib": before,
                "peak_rss_mib": peak,
                "bytes_per_window_over_start": (peak - before) * 2**20 / len(w),
            }
        )
    )


def _vm(field: str) -> float:
    """VmRSS / VmHWM of this process in MiB (VmHWM, not ru_maxrss: Linux keeps a parent's peak across exec)."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith(f"{field}:"))) / 2**10


def assembly_memory(work: Path, sizes: list[int]) -> dict:
    """Peak RSS and time of assembly alone on fabricated part records of growing size, each in a child."""
    runs = []
    for n in sizes:
        start = time.perf_counter()
        staging = fabricate_records(work, n)
        made = time.perf_counter() - start
        cmd = [sys.executable, __file__, "--assembly-only", str(staging)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        runs.append(json.loads(res.stdout.strip().splitlines()[-1]) | {"fabricate_s": made})
        print(json.dumps(runs[-1]), flush=True)
    return {
        "runs": runs,
        "note": "assembly of `rsbench corpus build` alone (windows loaded as columns, dedup at distance 4 on "
        "random hashes, band-group min/max, shard plan, manifest in row groups) on fabricated part records "
        "of 100 windows per raster; shard writing (pixel I/O) not included. Peak RSS includes the child's "
        "imports and the fabricated raster descriptions (held as corpus.json lists them).",
        "load_avg": os.getloadavg(),
    }


FILTERS_OFF = dict(
    blank_filter=False, cloud_filter=False, saturation_filter=False, dedup=False, max_nodata_fraction=1.0
)


def same_corpus(a: Path, b: Path, shards: list[str]) -> bool:
    return (a / "manifest.parquet").read_bytes() == (b / "manifest.parquet").read_bytes() and all(
        (a / s).read_bytes() == (b / s).read_bytes() for s in shards
    )


def versus_bare(rasters: list[Path], work: Path, tile: int, stride: int, client, rounds: int = 2) -> dict:
    """Bare loop, build (1 worker, every filter on / off) and build on the 2-worker cluster, same windows."""
    # Every build timed `rounds` times, 1 and 2 workers interleaved, the fastest of each kept: this machine's
    # speed drifts by 10-30 % within minutes (other tenants), which one run per figure mistook for effects.
    t_bare, n = bare_loop_memory(rasters, tile, stride)
    cpu_bare = CPU["last"]
    ones, twos, controls, stages, cpu_one = [], [], [], [], float("inf")
    for _ in range(rounds):
        ones.append(build(rasters, work / "one", tile, stride, workers=1))
        cpu_one = min(CPU["last"], cpu_one)
        stages.append(stage_seconds(work / "one"))
        controls.append(cpu_control())
        twos.append(build(rasters, work / "two", tile, stride, client=client))
    t_one, one = min(ones, key=lambda r: r[0])
    t_two = min(t for t, _ in twos)
    control_before, control_after = controls[0], controls[-1]
    t_off, _ = build(rasters, work / "off", tile, stride, workers=1, **FILTERS_OFF)
    cpu_off = CPU["last"]
    t_bare2, _ = bare_loop_memory(rasters, tile, stride)
    cpu_bare = min(cpu_bare, CPU["last"])
    bare = min(t_bare, t_bare2)
    return {
        "rasters": len(rasters),
        "windows": n,
        "kept": one["counts"]["tiles_kept"],
        "tile": tile,
        "stride": stride,
        "bare_loop_s": [t_bare, t_bare2],
        "build_1_worker_s": t_one,
        "build_1_worker_runs_s": [t for t, _ in ones],
        # Of the faster 1-worker run; the rest of its time is assembly (selection, manifest, corpus.json).
        "build_1_worker_stages_s": stages[min(range(rounds), key=lambda k: ones[k][0])],
        "bare_loop_opens_only_s": open_only(rasters),
        "build_1_worker_filters_off_s": t_off,
        "build_2_workers_s": t_two,
        "build_2_workers_runs_s": [t for t, _ in twos],
        "ratio_1_worker_vs_bare": bare / t_one,
        "ratio_filters_off_vs_bare": bare / t_off,
        "ratio_2_workers_vs_bare": bare / t_two,
        # CPU seconds of this process (bare loop and in-process builds): less sensitive than wall time to
        # other jobs on a shared machine.
        "bare_loop_cpu_s": cpu_bare,
        "build_1_worker_cpu_s": cpu_one,
        "build_filters_off_cpu_s": cpu_off,
        "cpu_ratio_1_worker_vs_bare": cpu_bare / cpu_one,
        "cpu_ratio_filters_off_vs_bare": cpu_bare / cpu_off,
        **speedups(ones, twos, controls),
        "control_cpu_speedup_2_processes": [control_before, control_after],
        "identical_output_1_vs_2_workers": same_corpus(work / "one", work / "two", one["shards"]),
        "load_avg": os.getloadavg(),
    }


def speedups(ones: list, twos: list, controls: list[float]) -> dict:
    """1 -> 2 workers from (seconds, corpus) runs of each round: the median of the rounds' ratios (each round's
    two builds are minutes apart, so a drift of the machine's speed cancels out), beside the ratio of the fastest
    runs; and each round's ratio over the pure-CPU control taken between its two builds (what 2 cores gave)."""
    ratios = [one[0] / two[0] for one, two in zip(ones, twos)]
    return {
        "speedup_1_to_2_workers": float(np.median(ratios)),
        "speedup_1_to_2_workers_per_round": ratios,
        "speedup_1_to_2_workers_fastest_runs": min(t for t, _ in ones) / min(t for t, _ in twos),
        "control_cpu_speedup_all_rounds": controls,
        "speedup_over_control": float(np.median([r / c for r, c in zip(ratios, controls)])),
    }


def archive_case(work: Path, chips: int) -> dict:
    """The archive case alone, with its own 2-worker cluster (started before timing)."""
    from dask.distributed import Client

    paths = archive_chips(work, chips)
    with local_cluster(2) as cluster:  # the cluster `--workers 2` starts
        with Client(cluster) as client:
            result = versus_bare(paths, work / "archive", 64, 64, client)
    print(json.dumps(result, indent=2), flush=True)
    return result


def wide_raster(path: Path, width: int = 16384, height: int = 1024, bands: int = 8, block: int = 512) -> None:
    """bands x uint16, width x height, 512 px DEFLATE blocks, every block written (noise over real NAIP values):
    one block row holds width x block x bands x 2 bytes (128 MiB at the defaults, GDAL_OPTIONS' whole cache)."""
    if path.exists():
        return
    with rasterio.open(SHARED / "rasters" / NAIP) as src:
        patch = src.read(window=Window(0, 0, block, block)).astype(np.uint16) * 10
        crs, res = src.crs, src.res
    patch = np.concatenate([patch] * (bands // patch.shape[0] + 1))[:bands]
    rng = np.random.default_rng(0)
    profile = {
        "driver": "GTiff", "width": width, "height": height, "count": bands, "dtype": "uint16", "crs": crs,
        "transform": rasterio.Affine(res[0], 0, 500000, 0, -res[1], 5300000), "tiled": True,
        "blockxsize": block, "blockysize": block, "compress": "deflate",
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        for bi in range(height // block):
            for bj in range(width // block):
                noise = rng.integers(0, 64, size=patch.shape, dtype=np.uint16)
                dst.write(np.roll(patch, bi + bj, axis=2) + noise, window=Window(bj * block, bi * block, block, block))


def block_rows_case(work: Path, rounds: int = 2) -> dict:
    """A raster whose block rows fill GDAL_OPTIONS' 128 MiB cache, 1 worker, interleaved rounds: the build as it is
    (cache raised to hold a row of windows' blocks, raster.row_cache_bytes; parts ending with block rows,
    plan.BLOCK_ROW_PART_MAX) vs the same build with both turned off (what it did before), and the bare loop
    (GDAL's default cache, 5 % of RAM, holds the block rows)."""
    from rsbench.corpus import plan, raster

    path = work / "wide" / "wide_16384x1024_8band_uint16.tif"
    path.parent.mkdir(parents=True, exist_ok=True)
    wide_raster(path)
    now, before, bares = [], [], []
    for _ in range(rounds):
        bares.append(bare_loop_memory([path], 64, 64)[0])
        t, corpus = build([path], work / "wide_now", 64, 64, workers=1)
        now.append(t)
        now_stages = stage_seconds(work / "wide_now")
        saved = raster.ROW_CACHE_MAX, plan.BLOCK_ROW_PART_MAX
        raster.ROW_CACHE_MAX, plan.BLOCK_ROW_PART_MAX = raster.GDAL_OPTIONS["GDAL_CACHEMAX"], 0
        try:
            before.append(build([path], work / "wide_before", 64, 64, workers=1)[0])
        finally:
            raster.ROW_CACHE_MAX, plan.BLOCK_ROW_PART_MAX = saved
        before_stages = stage_seconds(work / "wide_before")
    with rasterio.open(path) as src:
        cache = raster.row_cache_bytes(src, 64)
    return {
        "raster": path.name,
        "windows": corpus["counts"]["tiles_total"],
        "kept": corpus["counts"]["tiles_kept"],
        "block_row_mib": 16384 * 512 * 8 * 2 / 2**20,
        "row_cache_mib": cache / 2**20,
        "build_s": now,
        "build_before_s": before,
        "bare_loop_s": bares,
        "stages_s": now_stages,
        "stages_before_s": before_stages,
        "speedup_over_before": float(np.median([b / n for b, n in zip(before, now)])),
        "ratio_vs_bare": min(bares) / min(now),
        "ratio_before_vs_bare": min(bares) / min(before),
        "identical_output": same_corpus(work / "wide_now", work / "wide_before", corpus["shards"]),
        "load_avg": os.getloadavg(),
    }


PROFILED = {  # stage -> (end of the module's path, function) whose cumulative time cProfile reports
    "build": ("rsbench/corpus/build.py", "build_corpus"),
    "planning": ("rsbench/corpus/plan.py", "make_plan"),
    "probe": ("rsbench/corpus/raster.py", "probe_raster"),
    "tiling": ("rsbench/corpus/build.py", "_tile_parts"),
    "tile_one_segment": ("rsbench/corpus/tiling.py", "_tile"),
    "reference": ("rsbench/corpus/filters.py", "percentile_reference"),
    "assembly": ("rsbench/corpus/build.py", "_assemble"),
    "write_shard": ("rsbench/corpus/shards.py", "write_shard"),
    "rasterio_open": ("rasterio/__init__.py", "open"),
}


def profile_archive(work: Path, chips: int) -> dict:
    """cProfile of a 1-worker build of the first `chips` archive chips: cumulative seconds and calls per stage,
    beside the bare loop on the same chips (profiling slows the build, not the bare loop: compare stages)."""
    import cProfile
    import pstats

    paths = archive_chips(work, 1000)[:chips]
    out = work / "profiled"
    shutil.rmtree(out, ignore_errors=True)
    cfg = CorpusBuildConfig(inputs=[str(p) for p in paths], out=str(out), tile_size=64, stride=64, workers=1)
    profiler = cProfile.Profile()
    profiler.runcall(build_corpus, cfg)
    stats = pstats.Stats(profiler).stats
    found = {}
    for stage, (file, name) in PROFILED.items():
        rows = [v for (f, _, fn), v in stats.items() if fn == name and f.endswith(file)]
        found[stage] = {"calls": sum(r[1] for r in rows), "seconds": sum(r[3] for r in rows)}
    bare, _ = bare_loop_memory(paths, 64, 64)
    return {"chips": chips, "stages": found, "bare_loop_s": bare, "load_avg": os.getloadavg()}


def build(rasters, out: Path, tile: int, stride: int, client=None, **kw) -> tuple[float, dict]:
    shutil.rmtree(out, ignore_errors=True)
    cfg = CorpusBuildConfig(inputs=[str(p) for p in rasters], out=str(out), tile_size=tile, stride=stride, **kw)
    return timed(lambda: build_corpus(cfg, client=client))


def torchgeo_tiles(path: Path, n: int, tile: int) -> float:
    import torch
    from torch.utils.data import DataLoader
    from torchgeo.datasets import RasterDataset, stack_samples
    from torchgeo.samplers import RandomGeoSampler

    class Scene(RasterDataset):
        filename_glob = path.name
        is_image = True

    def run():
        ds = Scene(paths=str(path.parent))
        sampler = RandomGeoSampler(ds, size=tile, length=n, generator=torch.Generator().manual_seed(0))
        loader = DataLoader(ds, sampler=sampler, batch_size=32, num_workers=0, collate_fn=stack_samples)
        return sum(batch["image"].shape[0] for batch in loader)

    seconds, produced = timed(run)
    assert produced == n
    return seconds


def loader_speed(corpus: Path, npy_files: list[Path]) -> dict:
    import torch  # not at the top: the planning-memory child process must not load it

    from rsbench.corpus import CorpusDataset

    ds = CorpusDataset(corpus, bands=6, shuffle=True, seed=0)
    norm = ds.normalization

    class Files(torch.utils.data.Dataset):
        def __len__(self):
            return len(npy_files)

        def __getitem__(self, i):
            return norm(torch.from_numpy(np.load(npy_files[i]).astype(np.float32)))

    def drain(dataset, **kw):
        return sum(b.shape[0] for b in torch.utils.data.DataLoader(dataset, batch_size=64, num_workers=0, **kw))

    # A pass takes a fraction of a second: best of 5 alternating passes each, against machine noise.
    shards, files = [], []
    for _ in range(5):
        shards.append(timed(lambda: drain(ds)))
        files.append(timed(lambda: drain(Files(), shuffle=True)))
    (t_shards, n_shards), (t_files, n_files) = min(shards), min(files)
    return {
        "samples_shards": n_shards,
        "samples_files": n_files,
        "shards_samples_per_s": n_shards / t_shards,
        "npy_files_samples_per_s": n_files / t_files,
        "ratio": (n_shards / t_shards) / (n_files / t_files),
        "note": "npy files are in the page cache (just written): the best case for per-file reads",
    }


def big_raster(path: Path, size: int, block: int = 512) -> None:
    """3-band uint8, size x size, tiled DEFLATE, sparse: one block in 16 holds a real NAIP patch."""
    if path.exists():
        return
    with rasterio.open(SHARED / "rasters" / "naip_m_4709963_se_14_1_20190904_rgbn_5m.tif") as src:
        patch = src.read([1, 2, 3], window=Window(0, 0, block, block))
        crs, res = src.crs, src.res
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 3,
        "dtype": "uint8",
        "crs": crs,
        "transform": rasterio.Affine(res[0], 0, 500000, 0, -res[1], 5300000),
        "tiled": True,
        "blockxsize": block,
        "blockysize": block,
        "compress": "deflate",
        "sparse_ok": True,
        "bigtiff": "yes",
    }
    with rasterio.open(path, "w", **profile) as dst:
        for bi in range(size // block):
            for bj in range(size // block):
                if (bi * 7 + bj * 3) % 16 == 0:
                    dst.write(np.roll(patch, bi + bj, axis=2), window=Window(bj * block, bi * block, block, block))


def peak_rss(cmd: list[str]) -> tuple[float, float]:
    """(seconds, peak resident set size in MiB of the process and its children, polled every 20 ms)."""
    start = time.perf_counter()
    proc = psutil.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        try:
            rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.02)
    if proc.returncode != 0:
        raise SystemExit(f"big-raster build failed: {proc.stderr.read().decode()[-2000:]}")
    return time.perf_counter() - start, peak / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/rsbench-corpus-bench"))
    ap.add_argument("--copies", type=int, default=3)
    ap.add_argument("--tile", type=int, default=64)
    ap.add_argument("--stride", type=int, default=32)
    ap.add_argument("--big-size", type=int, default=40960, help="side of the generated raster (40960: 4.7 GiB raw)")
    ap.add_argument("--skip-big", action="store_true", help="keep the big-raster figures of the previous JSON")
    ap.add_argument(
        "--skip-planning", action="store_true", help="keep the planning-memory figures of the previous JSON"
    )
    ap.add_argument("--chips", type=int, default=1000, help="real 128 px chips of the archive case")
    ap.add_argument("--scaling-copies", type=int, default=6, help="copies of the five rasters in the scaling job")
    ap.add_argument(
        "--plan-sizes", default="5000,100000", help="synthetic archive sizes for planning memory (comma-separated)"
    )
    ap.add_argument("--plan-only", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--assembly-only", type=Path, help=argparse.SUPPRESS)
    ap.add_argument(
        "--assembly-windows",
        help="measure assembly alone on fabricated records of these window counts (comma-separated), "
        "into the existing JSON (key assembly_memory), and stop",
    )
    ap.add_argument(
        "--only-planning", action="store_true", help="re-measure planning memory only, into the existing JSON"
    )
    ap.add_argument("--only-archive", action="store_true", help="re-run the archive case only, into the existing JSON")
    ap.add_argument("--profile-chips", type=int, default=200, help="chips of the profiled build (--only-archive)")
    ap.add_argument(
        "--only-block-rows", action="store_true", help="re-run the wide-block-rows case only, into the existing JSON"
    )
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "corpus_bench.json")
    args = ap.parse_args()
    work = args.work
    if args.plan_only:
        return plan_only(args.plan_only, work)
    if args.assembly_only:
        return assembly_only(args.assembly_only)
    previous = json.loads(args.json.read_text()) if args.json.is_file() else {}
    if args.assembly_windows:
        sizes = [int(n) for n in args.assembly_windows.split(",")]
        previous["assembly_memory"] = assembly_memory(work, sizes)
        args.json.write_text(json.dumps(previous, indent=2) + "\n")
        return print(f"wrote {args.json}")
    if args.only_planning:
        sizes = [int(n) for n in args.plan_sizes.split(",")]
        previous["planning_memory"] = planning_memory(work, sizes) | {"load_avg": os.getloadavg()}
        args.json.write_text(json.dumps(previous, indent=2) + "\n")
        return print(f"wrote {args.json}")
    if args.only_block_rows:
        previous["block_rows"] = block_rows_case(work)
        print(json.dumps(previous["block_rows"], indent=2), flush=True)
        args.json.write_text(json.dumps(previous, indent=2) + "\n")
        return print(f"wrote {args.json}")
    if args.only_archive:
        previous["archive_profile"] = profile_archive(work, args.profile_chips)
        print(json.dumps(previous["archive_profile"], indent=2), flush=True)
        previous["archive"] = archive_case(work, args.chips)
        previous.setdefault("machine", {})["load_avg_archive_end"] = os.getloadavg()
        args.json.write_text(json.dumps(previous, indent=2) + "\n")
        return print(f"wrote {args.json}")
    rasters = workload(work, args.copies)
    res: dict = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg_start": os.getloadavg()},
        "settings": vars(args) | {"work": str(work), "json": str(args.json)},
    }

    from dask.distributed import Client

    t_start, cluster = timed(lambda: local_cluster(2))  # the cluster `--workers 2` starts
    res["dask_cluster_start_s"] = t_start
    with cluster, Client(cluster) as client:
        chips = archive_chips(work, args.chips)
        res["archive"] = versus_bare(chips, work / "archive", 64, 64, client)
        print(json.dumps(res["archive"], indent=2), flush=True)
        res["tiling"] = versus_bare(rasters, work / "five", args.tile, args.stride, client)
        print(json.dumps(res["tiling"], indent=2), flush=True)
        many = workload(work / "scaling", args.scaling_copies)
        res["scaling"] = versus_bare(many, work / "scale", args.tile, 16, client, rounds=3)
        res["scaling"]["control_reaches_1_7"] = min(res["scaling"]["control_cpu_speedup_2_processes"]) >= 1.7
        print(json.dumps(res["scaling"], indent=2), flush=True)
    res["block_rows"] = block_rows_case(work)
    print(json.dumps(res["block_rows"], indent=2), flush=True)
    if args.skip_planning and "planning_memory" in previous:
        res["planning_memory"] = previous["planning_memory"]
    else:
        res["planning_memory"] = planning_memory(work, [int(n) for n in args.plan_sizes.split(",")])
        res["planning_memory"]["load_avg"] = os.getloadavg()
        print(json.dumps(res["planning_memory"], indent=2), flush=True)
    bare_loop(rasters, args.tile, args.stride, work / "bare")  # .npy files for the loader comparison

    s2 = next(p for p in rasters if p.name.startswith(S2[:-4]))
    t_s2, s2_info = build([s2], work / "s2", args.tile, args.stride, workers=1)
    m = s2_info["counts"]["tiles_total"]
    cpu_s2 = CPU["last"]
    t_tg = torchgeo_tiles(s2, m, args.tile)
    res["torchgeo"] = {
        "raster": s2.name,
        "tiles": m,
        "build_s": t_s2,
        "torchgeo_s": t_tg,
        "speedup_vs_torchgeo": t_tg / t_s2,
        "build_cpu_s": cpu_s2,
        "torchgeo_cpu_s": CPU["last"],
        "cpu_speedup_vs_torchgeo": CPU["last"] / cpu_s2,
    }
    print(json.dumps(res["torchgeo"], indent=2), flush=True)

    kept = [f"{s2.stem}_{r['row_off']}_{r['col_off']}.npy" for r in _kept_rows(work / "s2")]
    res["loader"] = loader_speed(work / "s2", [work / "bare" / k for k in kept])
    print(json.dumps(res["loader"], indent=2), flush=True)

    if args.skip_big and "big_raster" in previous:
        res["big_raster"] = previous["big_raster"] | {"note": "not re-run (--skip-big): from the previous run"}
    if not args.skip_big:
        big = work / "big.tif"
        seconds_gen, _ = timed(lambda: big_raster(big, args.big_size))
        with rasterio.open(big) as src:
            raw = src.width * src.height * src.count
        cmd = [
            str(Path(sys.executable).parent / "rsbench"),
            "corpus",
            "build",
            str(big),
            "--out",
            str(work / "bigc"),
            "--tile-size",
            "256",
            "--workers",
            "1",
            "--overwrite",
        ]
        seconds, peak = peak_rss(cmd)
        info = json.loads((work / "bigc" / "corpus.json").read_text())
        res["big_raster"] = {
            "uncompressed_gib": raw / 2**30,
            "file_mib": big.stat().st_size / 2**20,
            "generate_s": seconds_gen,
            "windows": info["counts"]["tiles_total"],
            "kept": info["counts"]["tiles_kept"],
            "build_s": seconds,
            "peak_rss_mib": peak,
            "under_1_gib": peak < 1024,
        }
        print(json.dumps(res["big_raster"], indent=2), flush=True)
    for key in ("assembly_memory", "archive_profile", "notes"):  # measured by their own options: kept
        if key in previous and key not in res:
            res[key] = previous[key]
    res["machine"]["load_avg_end"] = os.getloadavg()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {args.json}")


def _kept_rows(corpus: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return [r for r in pq.read_table(corpus / "manifest.parquet").to_pylist() if r["kept"]]


if __name__ == "__main__":
    main()
