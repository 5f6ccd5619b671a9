"""`rsbench corpus inspect`: what is in a corpus, and quicklooks to check the filters by eye.

Kept tiles are read back from the shards; rejected tiles (never written to shards) are re-read from
their source raster window, through the same grid/resampling as the build.
"""

from __future__ import annotations

import io
import math
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from rasterio.windows import Window

from rsbench.bands import RGB, pick_bands
from rsbench.contracts.corpus_info import CorpusInfo, describe_group
from rsbench.corpus.filters import REASONS
from rsbench.corpus.raster import open_grid, read_pixels
from rsbench.errors import ConfigError

Log = Callable[[str], None]
_METRIC = {"nodata": "nodata_fraction", "saturated": "saturated_fraction", "cloud": "cloud_fraction"}


def _sample(rows: list[dict], n: int, seed: int) -> list[dict]:
    if len(rows) <= n:
        return rows
    idx = np.sort(np.random.default_rng(seed).choice(len(rows), size=n, replace=False))
    return [rows[i] for i in idx]


def _rgb_indexes(names: list[str]) -> list[int]:
    """Red, green, blue by band name (rsbench.bands); else the first three bands (or the first)."""
    try:
        return pick_bands(RGB, names)
    except ConfigError:
        return [0, 1, 2] if len(names) >= 3 else [0]


def _display(array: np.ndarray, raster: dict[str, Any]) -> np.ndarray:
    """H x W x 3 float image in [0, 1], stretched with the raster's own p2..p98 reference.

    The same stretch for every tile of a raster (rather than a per-tile one) so that a blank tile
    looks blank and a cloudy one looks bright, as the filters saw them.
    """
    pick = _rgb_indexes(raster["band_names"])
    x = array[pick].astype(np.float64)
    x = np.where(np.isfinite(x), x, 0.0)
    lo = np.asarray(raster["reference"]["low"])[pick]
    hi = np.asarray(raster["reference"]["high"])[pick]
    x = np.clip((x - lo[:, None, None]) / (hi - lo)[:, None, None], 0, 1)
    if x.shape[0] == 1:
        x = np.repeat(x, 3, axis=0)
    return x.transpose(1, 2, 0)


def _from_shard(corpus_dir: Path, row: dict) -> np.ndarray:
    with tarfile.open(corpus_dir / row["shard"]) as tar:
        return np.load(io.BytesIO(tar.extractfile(f"{row['key']}.npy").read()), allow_pickle=False)


def _from_source(raster: dict, row: dict) -> np.ndarray:
    with open_grid(raster) as reader:
        array = read_pixels(reader, raster, Window(row["col_off"], row["row_off"], row["width"], row["height"]))
    return array


def _caption(row: dict) -> str:
    name = row["key"].rsplit("_", 3)[0][:14]
    text = f"{name} r{row['row_off']} c{row['col_off']}"
    reason = row["reject_reason"]
    if reason == "blank":
        text += f"\nstd={row['std']:.3f} H={row['entropy']:.1f}b"
    elif reason in _METRIC and row[_METRIC[reason]] is not None:
        text += f"\n{_METRIC[reason]}={row[_METRIC[reason]]:.2f}"
    elif reason == "duplicate":
        text += f"\nof {row['duplicate_of'].rsplit('_', 3)[0][:10]} {row['duplicate_of'].rsplit('_', 2)[1]}"
    return text


def _grid(tiles: list[tuple[np.ndarray, str]], title: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows + 0.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (image, caption) in zip(axes.ravel(), tiles):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(caption, fontsize=6)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)
    return path


def inspect_corpus(
    corpus_dir: str | Path, out_dir: str | Path | None = None, per_grid: int = 16, seed: int = 0, log: Log | None = None
) -> dict[str, Any]:
    """Summary of a corpus plus quicklook PNGs: kept.png and rejected_<reason>.png."""
    log = log or (lambda msg: None)
    corpus_dir = Path(corpus_dir)
    corpus = CorpusInfo(corpus_dir)
    info = corpus.read()
    out_dir = Path(out_dir) if out_dir is not None else corpus_dir / "inspect"
    rows = pq.read_table(corpus.manifest).to_pylist()
    rasters = info["rasters"]
    pngs = []
    kept = _sample([r for r in rows if r["kept"]], per_grid, seed)
    tiles = [(_display(_from_shard(corpus_dir, r), rasters[r["raster_index"]]), _caption(r)) for r in kept]
    pngs.append(_grid(tiles, f"kept tiles ({len(kept)} of {info['counts']['tiles_kept']})", out_dir / "kept.png"))
    for reason in REASONS:
        mine = [r for r in rows if r["reject_reason"] == reason]
        if not mine:
            continue
        tiles = []
        for r in _sample(mine, per_grid, seed):
            try:
                raster = rasters[r["raster_index"]]
                tiles.append((_display(_from_source(raster, r), raster), _caption(r)))
            except Exception as e:  # the source may have moved since the build; show what can be shown
                log(f"warning: cannot re-read {r['source']} for a '{reason}' quicklook: {e}")
        if tiles:
            pngs.append(
                _grid(tiles, f"rejected: {reason} ({len(tiles)} of {len(mine)})", out_dir / f"rejected_{reason}.png")
            )
    return {"corpus": str(corpus_dir), "info": info, "pngs": pngs, "per_raster": _per_raster(rows, len(rasters))}


def _per_raster(rows: list[dict], n: int) -> list[dict[str, int]]:
    out = [dict.fromkeys(("total", "kept", *REASONS), 0) for _ in range(n)]
    for r in rows:
        c = out[r["raster_index"]]
        c["total"] += 1
        c["kept" if r["kept"] else r["reject_reason"]] += 1
    return out


def summary_tables(report: dict[str, Any]) -> list:
    """Rich tables: rasters, rejections per reason, per-band statistics of each band group."""
    from rich.table import Table

    info = report["info"]
    counts = info["counts"]
    rasters = Table(
        title=f"corpus {report['corpus']}: {counts['rasters']} rasters, {counts.get('rasters_failed', 0)} failed, "
        f"{counts.get('rasters_skipped', 0)} skipped; {counts['tiles_kept']} of {counts['tiles_total']} tiles kept"
    )
    for col in ("raster", "bands", "dtype", "gsd m", "date", "windows", "kept", "rejected (reason: n)"):
        rasters.add_column(col)
    for raster, c in zip(info["rasters"], report["per_raster"]):
        why = ", ".join(f"{k}: {c[k]}" for k in REASONS if c[k])
        rasters.add_row(
            Path(raster["path"]).name,
            str(raster["bands"]),
            raster["dtype"],
            f"{np.mean(raster.get('gsd', [0])):.2f}",
            raster.get("date") or "-",
            str(c["total"]),
            str(c["kept"]),
            why or "-",
        )
    for f in info.get("failures", []) + info.get("skipped", []):
        rasters.add_row(Path(f["path"]).name, "-", "-", "-", "-", "0", "0", f"not used: {f['reason']}")
    reasons = Table(title="rejected windows per reason")
    reasons.add_column("reason")
    reasons.add_column("tiles", justify="right")
    reasons.add_column("% of windows", justify="right")
    for reason, n in counts["rejected"].items():
        reasons.add_row(reason, str(n), f"{100 * n / max(1, counts['tiles_total']):.1f}")
    tables = [rasters, reasons]
    for group in info["band_groups"].values():
        t = Table(
            title=f"band group {describe_group(group)}: {group['tiles']} tiles in {len(group['shards'])} shard(s)"
        )
        for col in ("band", "mean", "std", "p1", "p99", "min", "max"):
            t.add_column(col, justify="right" if col != "band" else "left")
        s = group["stats"]
        for i, name in enumerate(group["band_names"]):
            t.add_row(name, *(f"{s[k][i]:.4g}" if k in s else "-" for k in ("mean", "std", "p1", "p99", "min", "max")))
        tables.append(t)
    return tables
