"""`rsbench corpus build`: rasters -> filtered tiles -> WebDataset shards + manifest + corpus.json.

Stages (each parallel stage runs through `parallel.Runner`):
  1. probe every input (parallel, in batches) -> the plan (plan.py): usable rasters, windows, parts
     (groups of small rasters, slices of large ones);
  2. tile every part (parallel) -> per-part records + completion record (one commit per part), and a spool
     of the passing tiles of small rasters (a large raster's kept tiles are read again in step 4);
  3. select centrally (duplicates, --max-tiles, diversity) and plan the shards;
  4. write the shards (parallel), summing their histograms for the percentiles;
  5. manifest.parquet (in row groups), config.yaml, then corpus.json last: the marker of a finished corpus.

Resuming: everything before step 5 lives in `.staging/` next to the settings it was made for. A
killed build re-run with the same settings reuses the plan and every part with a completion
record; steps 3-5 are recomputed (cheap, deterministic), so no tile is duplicated, lost or partial.
Progress (stage, counts, rates, ETA) goes to the terminal and to `<out>/progress.json` (build_progress.py).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rsbench import __version__
from rsbench.contracts.corpus_build import output_identity
from rsbench.contracts.corpus_info import CorpusInfo
from rsbench.corpus import assemble
from rsbench.corpus.band_names import describe_group, raster_options
from rsbench.corpus.build_config import CorpusBuildConfig
from rsbench.corpus.build_progress import BuildProgress
from rsbench.corpus.exclude import load_exclusions
from rsbench.corpus.inputs import discover_inputs, is_gdal_path
from rsbench.corpus.parallel import Runner
from rsbench.corpus.plan import Plan, finished_parts, load_plan, make_plan, saved_settings
from rsbench.corpus.shards import write_shard
from rsbench.corpus.stats import group_summary, merge_tile_stats
from rsbench.corpus.swap import beside, finish_swap, swap_in
from rsbench.corpus.tiling import one_line, run_part
from rsbench.errors import DataError, RsbenchError
from rsbench.io import read_json, stable_hash, write_json
from rsbench.settings import save_config

Log = Callable[[str], None]


def _resolve(cfg: CorpusBuildConfig) -> CorpusBuildConfig:
    """Effective values (absolute paths, explicit stride) so equivalent commands compare equal."""
    settings = cfg.model_dump(mode="json")
    absolute = lambda p: p if is_gdal_path(p) else str(Path(p).expanduser().resolve())  # noqa: E731
    settings.update(
        inputs=[absolute(p) for p in cfg.inputs],
        input_lists=[absolute(p) for p in cfg.input_lists],
        exclude=[absolute(p) for p in cfg.exclude],
        out=str(Path(cfg.out).expanduser().resolve()),
        stride=None if cfg.tiles_per_raster else (cfg.stride or cfg.tile_size),
    )
    return CorpusBuildConfig.model_validate(settings)


def _clear(out: Path, staging_too: bool) -> None:
    corpus = CorpusInfo(out)
    # corpus.json first: from here on the directory no longer claims to hold a finished corpus.
    for path in (corpus.corpus_json, corpus.manifest, corpus.config):
        path.unlink(missing_ok=True)
    shutil.rmtree(corpus.shards, ignore_errors=True)
    if staging_too:
        shutil.rmtree(corpus.staging, ignore_errors=True)


def _drop_leftover_staging(out: Path, log: Log) -> None:
    """A finished corpus needs no `.staging/` (a build killed after writing corpus.json, or a copy of an
    unfinished folder over a finished one): it can only mislead a later resume, so it goes, with a word."""
    staging = CorpusInfo(out).staging
    if staging.exists():
        shutil.rmtree(staging, ignore_errors=True)
        log(f"removed the leftover build state {staging} (the corpus in {out} is complete)")


def _changed(old: dict[str, Any], new: dict[str, Any]) -> str:
    return ", ".join(sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k)))


def _check_existing(out: Path, key: dict[str, Any], overwrite: bool) -> dict[str, Any] | None:
    """The finished corpus when built with the same output settings; error when different."""
    marker = CorpusInfo(out).corpus_json
    if not marker.is_file() or overwrite:
        return None
    try:
        existing = read_json(marker)
    except ValueError as e:
        raise DataError(f"{marker} is not valid JSON ({e}); pass --overwrite to rebuild") from None
    old = output_identity(existing.get("output_settings", {})) if isinstance(existing, dict) else {}
    if old == key:
        return existing
    raise RsbenchError(
        f"{out} already holds a corpus built with different settings ({_changed(old, key)}); "
        "pass --overwrite to replace it"
    )


def build_corpus(
    cfg: CorpusBuildConfig, overwrite: bool = False, log: Log | None = None, progress=None, client=None
) -> dict:
    """Build, resume, or return the already-built corpus described by `cfg`; returns corpus.json's content.

    `log` receives one-line messages; `progress` is an optional `rich.progress.Progress`; `client` an
    optional `dask.distributed.Client` to run on (else cfg.workers / scheduler / slurm decide).
    --overwrite of a finished corpus builds the new one beside it and swaps it in when complete (swap.py).
    """
    log = log or (lambda msg: None)
    cfg = _resolve(cfg)
    out = Path(cfg.out)
    finish_swap(out)
    paths = discover_inputs(cfg.inputs, log, cfg.input_lists)
    band_options = raster_options(paths, cfg.input_lists)
    # Inputs are part of the identity: new or removed files in an input folder change the corpus, and so
    # do band names given per raster (kept out of the hash when there are none, as before they existed).
    inputs_hash = stable_hash([paths, band_options]) if band_options else stable_hash(paths)
    key = {**cfg.output_settings(), "input_files": inputs_hash, "input_count": len(paths)}
    existing = _check_existing(out, key, overwrite)
    if existing is not None:
        log(f"corpus already built: {out}")
        _drop_leftover_staging(out, log)
        return existing
    # A finished corpus is replaced only once its successor is complete: build that one beside it.
    target = beside(out) if overwrite and CorpusInfo(out).is_built() else out
    staging = CorpusInfo(target).staging
    old = saved_settings(staging)
    if old is not None and old != key and not overwrite:
        raise RsbenchError(
            f"{out} holds an unfinished build with different settings ({_changed(old, key)}); "
            "re-run it with its settings to resume, or pass --overwrite to start over"
        )
    exclusions = load_exclusions(cfg.exclude)  # before anything is deleted: a bad file changes nothing
    # An unfinished successor built beside the corpus is resumed; one in the corpus folder is restarted.
    _clear(target, staging_too=old != key or (overwrite and target == out))
    target.mkdir(parents=True, exist_ok=True)
    report = BuildProgress(CorpusInfo(out).progress, progress)
    try:
        corpus = _build(cfg, paths, band_options, key, target, staging, exclusions, log, report, client)
    except BaseException as e:
        report.end("failed", error=one_line(e) if isinstance(e, Exception) else type(e).__name__)
        raise
    if target != out:
        swap_in(out, target)
        log(f"replaced the corpus in {out}")
    report.end("done")
    return corpus


def _build(
    cfg, paths, band_options, key, target: Path, staging: Path, exclusions, log: Log, report: BuildProgress, client
) -> dict:
    with Runner(cfg, client=client, log=log) as runner:
        plan = load_plan(staging, key)
        if plan is not None:
            log(f"resuming the unfinished build in {target}")
        else:
            staging.mkdir(parents=True, exist_ok=True)
            report.stage("probing", "rasters", len(paths))
            plan = make_plan(cfg, paths, key, runner, staging, report.advance, band_options)
        done = _tile_parts(cfg, plan, runner, staging, exclusions, report)
        try:
            corpus = _assemble(cfg, plan, done, key, runner, target, staging, log, report)
        except RsbenchError:
            _clear(target, staging_too=True)  # nothing usable was produced; a re-run starts clean
            if target != Path(cfg.out):
                shutil.rmtree(target, ignore_errors=True)
            raise
    shutil.rmtree(staging, ignore_errors=True)
    return corpus


def _tile_parts(cfg, plan: Plan, runner: Runner, staging: Path, exclusions, report: BuildProgress) -> dict:
    done = finished_parts(plan, staging)
    windows = plan.part_windows()
    todo = {i for i in range(plan.part_count) if i not in done}
    report.stage("tiling", "windows", plan.windows(), done=int(sum(windows[i] for i in done)))
    tasks = plan.part_tasks(cfg, todo, exclusions)
    parts: list[int] = []

    def numbered():  # the runner numbers tasks 0, 1, ...: remember which part each one is
        for part, task in tasks:
            parts.append(part)
            yield task

    work = int(sum(windows[i] for i in todo))
    for j, record in runner.map_unordered(run_part, numbered(), work=work, count=len(todo)):
        done[parts[j]] = record
        report.advance(record["tiles"])
    return done


def _assemble(cfg, plan: Plan, done, key, runner: Runner, out: Path, staging: Path, log: Log, report) -> dict:
    failures, skipped, ok = [], [], []
    part_failure = {int(r): reason for _, d in sorted(done.items()) for r, reason in d["failures"].items()}
    statuses = plan.statuses().to_pydict()
    for r, (path, status, reason) in enumerate(zip(statuses["path"], statuses["status"], statuses["reason"])):
        if status == "skipped":
            skipped.append({"path": path, "reason": reason})
        elif status == "failed" or r in part_failure:
            failures.append({"path": path, "reason": reason or part_failure[r]})
        else:
            ok.append(r)
    _warn(log, failures, skipped, plan.raster_count)
    if not ok:
        raise DataError(_nothing_usable(cfg, failures, skipped))
    infos = dict(plan.infos(set(ok)))
    _add_references(infos, done)
    usable = np.zeros(plan.raster_count, dtype=bool)
    usable[ok] = True
    windows = assemble.load_windows(plan.part_count, staging, usable, cfg)
    selection = assemble.select(windows, cfg)
    rejected = windows.reason_counts()
    kept = len(windows.kept())
    if not kept:
        counts = {k: n for k, n in rejected.items() if n}
        raise DataError(
            f"no tiles kept from {len(ok)} raster(s) ({len(windows)} windows of {cfg.tile_size}px; "
            f"rejected: {counts or 'none fit in the rasters'})"
        )
    groups = assemble.kept_groups(windows, infos, staging)
    pooled = _pooled_sensors(groups, log)
    stamps = {int(r): stamp for d in done.values() for r, stamp in (d.get("sources") or {}).items()}
    tasks, shard_names, group_shards, shard_of = assemble.shard_tasks(windows, infos, groups, cfg, out, staging, stamps)
    CorpusInfo(out).shards.mkdir(parents=True, exist_ok=True)
    report.stage("packing", "tiles", kept)
    packed: dict[str, dict[str, Any]] = {}
    for j, result in runner.map_unordered(write_shard, tasks, work=kept):
        packed[tasks[j]["name"]] = result
        report.advance(result["count"])
    assemble.write_manifest(CorpusInfo(out).manifest, windows, infos, cfg, staging, shard_names, shard_of)
    save_config(cfg, CorpusInfo(out).config)
    corpus = {
        "rsbench_version": __version__,
        "settings": cfg.model_dump(mode="json"),
        "output_settings": key,
        "rasters": _raster_entries(infos, windows, ok),
        "failures": failures,
        "skipped": skipped,
        "counts": {
            "rasters": len(ok),
            "rasters_failed": len(failures),
            "rasters_skipped": len(skipped),
            "tiles_total": len(windows),
            "tiles_kept": kept,
            "rejected": rejected,
        },
        "selection": selection,
        "band_groups": {name: _group_entry(name, g, group_shards[name], packed) for name, g in sorted(groups.items())},
        "warnings": pooled,
        "shards": shard_names,
        "shard_bytes": {name: (out / name).stat().st_size for name in shard_names},
    }
    write_json(CorpusInfo(out).corpus_json, corpus)
    return corpus


def _add_references(infos: dict[int, dict[str, Any]], done: dict[int, dict[str, Any]]) -> None:
    """Small rasters are planned without a radiometric reference: tiling takes it from its one read of each
    (in the parts' completion records). One too small for any window is never tiled: it is read here."""
    for record in done.values():
        for r, reference in (record.get("references") or {}).items():
            if int(r) in infos:
                infos[int(r)]["reference"] = reference
    missing = [info for info in infos.values() if "reference" not in info]
    if not missing:
        return
    import rasterio

    from rsbench.corpus.raster import GDAL_OPTIONS, open_grid, radiometric_reference

    with rasterio.Env(**GDAL_OPTIONS):
        for info in missing:
            try:
                with open_grid(info) as reader:
                    info["reference"] = radiometric_reference(reader, info)
            except Exception as e:
                raise DataError(f"{info['path']}: {one_line(e)}") from None


def _warn(log: Log, failures: list, skipped: list, total: int) -> None:
    if failures:
        log(f"warning: {len(failures)} of {total} input(s) could not be read and were skipped:")
        for f in failures:
            log(f"  {f['path']}: {f['reason']}")
    if skipped:
        log(f"warning: {len(skipped)} of {total} input(s) do not have the selected bands and were skipped:")
        for s in skipped:
            log(f"  {s['path']}: {s['reason']}")


def _raster_entries(infos: dict[int, dict[str, Any]], windows: assemble.Windows, ok: list[int]) -> list[dict[str, Any]]:
    total = np.bincount(windows.raster, minlength=len(windows.invalid_seen))
    kept = np.bincount(windows.raster[windows.kept()], minlength=len(windows.invalid_seen))
    entries = []
    for r in ok:
        info = infos[r]
        # No declared nodata, yet invalid pixels: the implicit zero-fill rule found a collar.
        implicit = info["nodata_source"] == "none" and info["implicit_nodata"] and windows.invalid_seen[r]
        entries.append(
            {
                **info,
                "implicit_fill_detected": bool(implicit),
                "tiles_total": int(total[r]),
                "tiles_kept": int(kept[r]),
                "tiles_rejected": int(total[r] - kept[r]),
            }
        )
    return entries


def _nothing_usable(cfg: CorpusBuildConfig, failures: list, skipped: list) -> str:
    """The error when no raster is usable: unreadable ones and ones without the selected bands are told apart."""
    first = (failures or skipped)[0]
    if not failures:
        return (
            f"none of the {len(skipped)} input raster(s) has the selected bands (--bands "
            f"{','.join(map(str, cfg.bands or []))}); first: {first['path']}: {first['reason']}"
        )
    if not skipped:
        return f"no input raster could be read ({len(failures)} failed; first: {first['path']}: {first['reason']})"
    return (
        f"no usable input raster: {len(failures)} could not be read, {len(skipped)} do not have the selected "
        f"bands; first: {first['path']}: {first['reason']}"
    )


def _pooled_sensors(groups: dict[str, dict[str, Any]], log: Log) -> list[str]:
    """A warning (logged and returned for corpus.json) per band group that pools tiles of several sensors."""
    warnings = []
    for g in groups.values():
        sensors = g.get("sensors") or {}
        if len(sensors) > 1:
            each = "; ".join(f"{name}: {n} tiles" for name, n in sensors.items())
            warnings.append(
                f"band group {describe_group(g)} pools {len(sensors)} sensors into one mean/std ({each}); "
                f"give them different units= (input list or .bands sidecar) to keep them apart"
            )
    for w in warnings:
        log(f"warning: {w}")
    return warnings


def _group_entry(key: str, g: dict[str, Any], shards: list[str], packed: dict[str, dict[str, Any]]) -> dict[str, Any]:
    # Shard order, then batch order within a shard: a fixed merge order, whatever ran the shards.
    batches = [m for name in shards for m in packed[name]["moments"]]
    stats = merge_tile_stats(
        np.asarray([m["count"] for m in batches], dtype=np.int64),
        np.asarray([m["mean"] for m in batches], dtype=np.float64),
        np.asarray([m["m2"] for m in batches], dtype=np.float64),
        np.asarray([g["min"]]),
        np.asarray([g["max"]]),
    )
    hist = sum(packed[name]["hist"] for name in shards)
    sensors = g.get("sensors") or {}
    return {
        "key": key,
        "bands": len(g["band_names"]),
        "tiles": g["tiles"],
        "band_names": g["band_names"],
        "units": g.get("units"),
        "dtype": np.result_type(*sorted(g["dtypes"])).name,
        "sensors": sensors,
        "pooled_sensors": len(sensors) > 1,
        "stats": group_summary(stats, hist, g["spec"]),
        "shards": shards,
    }
