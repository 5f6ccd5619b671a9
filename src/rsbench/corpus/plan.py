"""The build plan: which rasters are usable (probe), their windows, and how they split into parts.

The plan is saved as `.staging/plan.json` before any tiling, together with the output settings it
was made for. A re-run with the same settings reuses it (including the part layout, even if
--task-tiles changed), so the parts' completion records stay valid across restarts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rsbench.contracts.corpus_build import FILTER_KEYS, output_identity
from rsbench.corpus.band_names import BandMismatch
from rsbench.corpus.build_config import CorpusBuildConfig
from rsbench.corpus.raster import probe_raster
from rsbench.corpus.tiling import one_line, part_paths, plan_windows
from rsbench.io import read_json, write_json

PLAN = "plan.json"


def probe_task(args: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    """Probe one raster: status 'ok' with its description, 'skipped' (band selection) or 'failed'."""
    path, opts = args
    try:
        return {"path": path, "status": "ok", "info": probe_raster(path, **opts)}
    except BandMismatch as e:
        return {"path": path, "status": "skipped", "reason": str(e)}
    except Exception as e:  # any unreadable input is reported, never fatal on its own
        return {"path": path, "status": "failed", "reason": one_line(e)}


def load_plan(staging: Path, output_settings: dict[str, Any]) -> dict[str, Any] | None:
    """The saved plan when it was made for these settings; None when there is none."""
    try:
        plan = read_json(staging / PLAN)
    except (OSError, ValueError):
        return None
    if not isinstance(plan, dict) or output_identity(plan.get("settings") or {}) != output_settings:
        return None
    return plan


def saved_settings(staging: Path) -> dict[str, Any] | None:
    try:
        plan = read_json(staging / PLAN)
    except (OSError, ValueError):
        return None
    return output_identity(plan.get("settings") or {}) if isinstance(plan, dict) else None


def make_plan(
    cfg: CorpusBuildConfig,
    paths: list[str],
    output_settings: dict[str, Any],
    runner,
    staging: Path,
    on_probe: Callable[[], None],
    band_options: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Probe every input and split the usable rasters into parts; `band_options`: per path, the band names,
    sensor and units given in an input list or sidecar (rsbench.corpus.band_names.raster_options)."""
    opts = {
        "selection": cfg.bands,
        "gsd": cfg.gsd,
        "implicit_nodata": cfg.implicit_nodata,
        "resampling": cfg.resampling,
    }
    probes: list[dict[str, Any] | None] = [None] * len(paths)
    # A probe reads up to 64 small reference windows: count it as 100 windows of work.
    for i, result in runner.map_unordered(
        probe_task, [(p, {**opts, "band_options": (band_options or {}).get(p)}) for p in paths], work=100 * len(paths)
    ):
        probes[i] = result
        on_probe()
    parts = []
    for r, probe in enumerate(probes):
        if probe["status"] != "ok":
            continue
        rows, _ = plan_windows(probe["info"], cfg.tile_size, cfg.stride, cfg.tiles_per_raster, cfg.seed)
        probe["windows"] = len(rows)
        for start in range(0, len(rows), cfg.task_tiles):
            parts.append({"raster": r, "start": start, "stop": min(len(rows), start + cfg.task_tiles)})
    plan = {"settings": output_settings, "task_tiles": cfg.task_tiles, "rasters": probes, "parts": parts}
    (staging / "parts").mkdir(parents=True, exist_ok=True)
    write_json(staging / PLAN, plan)
    return plan


def part_task(cfg: CorpusBuildConfig, plan: dict[str, Any], index: int, exclusions, staging: Path) -> dict[str, Any]:
    part = plan["parts"][index]
    info = plan["rasters"][part["raster"]]["info"]
    rows, cols = plan_windows(info, cfg.tile_size, cfg.stride, cfg.tiles_per_raster, cfg.seed)
    return {
        "part": index,
        "staging": str(staging),
        "info": info,
        "rows": rows[part["start"] : part["stop"]],
        "cols": cols[part["start"] : part["stop"]],
        "tile_size": cfg.tile_size,
        "filters": {k: getattr(cfg, k) for k in FILTER_KEYS},
        "dedup": cfg.dedup,
        "features": cfg.diversity,
        "exclusions": exclusions,
    }


def finished_parts(plan: dict[str, Any], staging: Path) -> dict[int, dict[str, Any]]:
    """Completion records of parts that finished in an earlier (interrupted) run."""
    done = {}
    for i in range(len(plan["parts"])):
        path = part_paths(staging, i)["done"]
        if path.is_file():
            try:
                record = read_json(path)
            except ValueError:  # cannot happen with atomic writes, but never trust a half-written marker
                continue
            if record.get("failure") is not None or part_paths(staging, i)["records"].is_file():
                done[i] = record
    return done


def window_count(plan: dict[str, Any]) -> int:
    return int(np.sum([p["stop"] - p["start"] for p in plan["parts"]], dtype=np.int64))
