"""Corpus build on the real rasters: grid, shards, manifest, statistics, re-runs, config."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
from pyproj import Transformer
from rasterio.windows import Window
from typer.testing import CliRunner

from rsbench.cli import app
from rsbench.contracts.corpus_info import choose_group
from rsbench.corpus import REASONS, CorpusBuildConfig, build_corpus, corpus_normalization, read_corpus_info
from rsbench.errors import DataError, RsbenchError

T = 64
L7 = "landsat7_etm_RGB.byte.tif"
L8 = "landsat8_oli_LC80200392015216LGN00_B1-B7_30m.tif"
S2 = "sentinel2_l1c_T18SVG_20160112_20m_6band.tif"
NAIP = "naip_m_4709963_se_14_1_20190904_rgbn_5m.tif"
SN6 = "spacenet6_rotterdam_ms1_4band.tif"
# floor((W-64)/64+1) * floor((H-64)/64+1) for the sizes listed in the data's SOURCE.md
EXPECTED_TILES = {L7: 12 * 11, L8: 9 * 9, S2: 15 * 15, NAIP: 14 * 11, SN6: 4 * 4}

runner = CliRunner()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, rasters_dir):
    out = tmp_path_factory.mktemp("corpus") / "c"
    info = build_corpus(
        CorpusBuildConfig(inputs=[str(rasters_dir)], out=str(out), tile_size=T, shard_size=40, workers=1)
    )
    return out, info, pq.read_table(out / "manifest.parquet").to_pylist()


def read_window(path, row_off, col_off, size=T):
    with rasterio.open(path) as src:
        return src.read(window=Window(col_off, row_off, size, size))


def shard_samples(corpus_dir: Path, shard: str) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(corpus_dir / shard) as tar:
        for member in tar.getmembers():
            key, ext = member.name.split(".", 1)
            samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return samples


def by_name(rows, name):
    return [r for r in rows if Path(r["source"]).name == name]


def test_tile_counts_follow_the_grid_formula(corpus):
    out, info, rows = corpus
    assert len(rows) == sum(EXPECTED_TILES.values()) == 608
    for raster in info["rasters"]:
        name = Path(raster["path"]).name
        with rasterio.open(raster["path"]) as src:
            assert (raster["width"], raster["height"], raster["bands"]) == (src.width, src.height, src.count)
            formula = ((src.width - T) // T + 1) * ((src.height - T) // T + 1)
        assert raster["tiles_total"] == formula == EXPECTED_TILES[name] == len(by_name(rows, name))
    sn6 = by_name(rows, SN6)
    assert [(r["row_off"], r["col_off"]) for r in sn6] == [(y, x) for y in range(0, 193, 64) for x in range(0, 193, 64)]
    s2 = next(r for r in info["rasters"] if Path(r["path"]).name == S2)
    # Band names in the canonical vocabulary, the file's own descriptions beside them.
    assert s2["band_names"][0] == "rededge1" and s2["source_band_names"][0] == "B05_rededge1"
    assert s2["band_indexes"] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("name,dtype", [(L8, np.uint16), (SN6, np.float64)])
def test_shard_sample_equals_direct_read(corpus, rasters_dir, name, dtype):
    out, info, rows = corpus
    row = [r for r in by_name(rows, name) if r["kept"]][5]
    sample = shard_samples(out, row["shard"])[row["key"]]
    arr = np.load(io.BytesIO(sample["npy"]))
    direct = read_window(rasters_dir / name, row["row_off"], row["col_off"])
    assert arr.dtype == direct.dtype == dtype and arr.shape == direct.shape == (row["bands"], T, T)
    np.testing.assert_array_equal(arr, direct)
    meta = json.loads(sample["json"])
    assert meta["window"] == {"col_off": row["col_off"], "row_off": row["row_off"], "width": T, "height": T}
    with rasterio.open(rasters_dir / name) as src:
        expected_transform = list(src.window_transform(Window(row["col_off"], row["row_off"], T, T)))[:6]
        assert meta["crs"] == f"EPSG:{src.crs.to_epsg()}" == row["crs"]
        assert meta["source_band_names"] == [d or f"B{i + 1}" for i, d in enumerate(src.descriptions)]
        assert meta["gsd"] == pytest.approx(list(src.res)) and row["gsd"] == pytest.approx(np.mean(src.res))
    assert meta["transform"] == pytest.approx(expected_transform)
    # No declared nodata: the recorded nodata is None, the implicit zero fill is the fill value.
    assert meta["dtype"] == np.dtype(dtype).name and meta["nodata"] is None and meta["fill_value"] == 0
    a, b, c, d, e, f = expected_transform
    assert (row["center_x"], row["center_y"]) == pytest.approx((c + a * T / 2 + b * T / 2, f + d * T / 2 + e * T / 2))


def test_centre_lonlat_and_acquisition_date(corpus):
    out, info, rows = corpus
    for name, date in [(L8, "2015-08-04"), (S2, "2016-01-12"), (NAIP, "2019-09-04"), (L7, None), (SN6, None)]:
        mine = by_name(rows, name)
        assert {r["date"] for r in mine} == {date}
        to_lonlat = Transformer.from_crs(mine[0]["crs"], "EPSG:4326", always_xy=True)
        for r in mine[::9]:
            assert (r["lon"], r["lat"]) == pytest.approx(to_lonlat.transform(r["center_x"], r["center_y"]), abs=1e-7)
    # Sanity: the Sentinel-2 tile 18SVG lies on the US east coast, SpaceNet-6 in Rotterdam.
    assert all(-78 < r["lon"] < -74 and 36 < r["lat"] < 40 for r in by_name(rows, S2))
    assert all(4.0 < r["lon"] < 4.7 and 51.7 < r["lat"] < 52.1 for r in by_name(rows, SN6))
    l8 = next(r for r in info["rasters"] if Path(r["path"]).name == L8)
    assert l8["date_source"] == "filename"  # its ACQUISITIONDATETIME tag is the 1970 placeholder


def test_corpus_json_consistent_with_manifest_and_shards(corpus):
    out, info, rows = corpus
    kept = [r for r in rows if r["kept"]]
    assert info["counts"] == {
        "rasters": 5,
        "rasters_failed": 0,
        "rasters_skipped": 0,
        "tiles_total": len(rows),
        "tiles_kept": len(kept),
        "rejected": {reason: sum(r["reject_reason"] == reason for r in rows) for reason in REASONS},
    }
    assert all((r["reject_reason"] is None) == r["kept"] and (r["shard"] is None) != r["kept"] for r in rows)
    assert info["failures"] == [] and info["skipped"] == [] and read_corpus_info(out) == info
    assert sorted(info["shards"]) == sorted(f"shards/{p.name}" for p in (out / "shards").iterdir())
    keys = [r["key"] for r in rows]
    assert len(set(keys)) == len(keys) and not any("." in k for k in keys)
    in_shards = {}
    for shard in info["shards"]:
        samples = shard_samples(out, shard)
        assert 0 < len(samples) <= 40
        assert len({np.load(io.BytesIO(s["npy"])).shape[0] for s in samples.values()}) == 1
        in_shards.update({k: shard for k in samples})
    assert in_shards == {r["key"]: r["shard"] for r in kept}
    # Band groups by band names and units: NAIP (uint8) and SpaceNet-6 (float64), both 4 unnamed bands, apart.
    assert sorted(info["band_groups"]) == [
        "B1,B2,B3,B4|float64",
        "B1,B2,B3,B4|uint8",
        "B1,B2,B3|uint8",
        "coastal,blue,green,red,nir,swir1,swir2|uint16",
        "rededge1,rededge2,rededge3,rededge4,swir1,swir2|uint16",
    ]
    assert info["warnings"] == [] and not any(g["pooled_sensors"] for g in info["band_groups"].values())
    for group in info["band_groups"].values():
        mine = [r for r in kept if (r["bands"], r["dtype"]) == (group["bands"], group["dtype"])]
        assert group["tiles"] == len(mine) == sum(group["sensors"].values())
        assert {in_shards[r["key"]] for r in mine} == set(group["shards"])
    for raster in info["rasters"]:
        mine = by_name(rows, Path(raster["path"]).name)
        assert (raster["tiles_kept"], raster["tiles_rejected"]) == (
            sum(r["kept"] for r in mine),
            sum(not r["kept"] for r in mine),
        )


def _valid_pixels(rows, bands, dtype):
    pixels = []
    for r in rows:
        if r["kept"] and (r["bands"], r["dtype"]) == (bands, dtype):
            arr = read_window(r["source"], r["row_off"], r["col_off"]).astype(np.float64)
            # Declared nodata (Landsat 7) or implicit zero fill: invalid = 0 in every band.
            pixels.append(arr[:, ~(arr == 0).all(axis=0)])
    return np.concatenate(pixels, axis=1)


@pytest.mark.parametrize("bands,dtype", [(3, "uint8"), (6, "uint16"), (4, "float64")])
def test_band_group_stats_match_numpy(corpus, bands, dtype):
    """3: uint8 with the collar mask; 6: uint16; 4: float64 SpaceNet (histogram bins)."""
    out, info, rows = corpus
    x = _valid_pixels(rows, bands, dtype)
    group = next(g for g in info["band_groups"].values() if (g["bands"], g["dtype"]) == (bands, dtype))
    stats = group["stats"]
    assert stats["count"] == x.shape[1]
    np.testing.assert_allclose(stats["mean"], x.mean(axis=1), rtol=1e-9)
    np.testing.assert_allclose(stats["std"], x.std(axis=1, ddof=1), rtol=1e-9)
    np.testing.assert_array_equal(stats["min"], x.min(axis=1))
    np.testing.assert_array_equal(stats["max"], x.max(axis=1))
    p1, p99 = np.percentile(x, 1, axis=1), np.percentile(x, 99, axis=1)
    if dtype == "float64":  # float data -> 2^16 uniform bins: within one bin width
        width = stats["percentile_bin_width"]
        assert 0 < width < 0.05
        np.testing.assert_allclose(stats["p1"], p1, atol=width)
        np.testing.assert_allclose(stats["p99"], p99, atol=width)
    else:  # integer data: one bin per value, exact
        assert stats["percentile_bin_width"] == 1.0
        np.testing.assert_allclose(stats["p1"], p1, rtol=1e-12)
        np.testing.assert_allclose(stats["p99"], p99, rtol=1e-12)
    if bands == 3:
        assert x.shape[1] < sum(r["kept"] and r["bands"] == 3 for r in rows) * T * T  # collar pixels excluded
    norm = corpus_normalization(out, group["key"])
    assert norm.mean == stats["mean"] and norm.std == stats["std"]


def _cli(*args):
    return runner.invoke(app, ["corpus", "build", *map(str, args)])


def _mtimes(out: Path) -> dict[str, int]:
    return {
        p.name: p.stat().st_mtime_ns
        for p in [out / "corpus.json", out / "manifest.parquet", *(out / "shards").iterdir()]
    }


def test_rerun_is_noop_and_changed_settings_need_overwrite(tmp_path, rasters_dir):
    out = tmp_path / "c"
    args = [rasters_dir / SN6, "--out", out, "--tile-size", T, "--workers", 1]
    assert _cli(*args).exit_code == 0
    before = _mtimes(out)
    res = _cli(*args)
    assert res.exit_code == 0 and "corpus already built" in res.stderr and _mtimes(out) == before
    # Same output settings spelled differently, or other execution options: still the same corpus.
    for extra in (["--stride", T], ["--workers", 2, "--task-tiles", 3]):
        assert "corpus already built" in _cli(*args, *extra).stderr
    assert _mtimes(out) == before

    # A stale .staging/ beside the finished corpus is removed with a word; the corpus is left as it was.
    (out / ".staging").mkdir()
    (out / ".staging" / "plan.json").write_text("{truncated")
    res = _cli(*args)
    assert res.exit_code == 0 and "removed the leftover build state" in res.stderr, res.output
    assert not (out / ".staging").exists() and _mtimes(out) == before

    for changed, key in ((["--tile-size", 100], "tile_size"), (["--min-entropy", 1], "min_entropy")):
        res = _cli(rasters_dir / SN6, "--out", out, "--tile-size", T, *changed)
        assert res.exit_code == 1 and str(out) in res.stderr and key in res.stderr and "--overwrite" in res.stderr
    assert read_corpus_info(out)["settings"]["tile_size"] == T and _mtimes(out) == before

    res = _cli(rasters_dir / SN6, "--out", out, "--tile-size", 100, "--stride", 50, "--overwrite")
    assert res.exit_code == 0, res.output
    info = read_corpus_info(out)
    assert info["settings"]["tile_size"] == 100 and info["counts"]["tiles_total"] == 5 * 5
    assert len(pq.read_table(out / "manifest.parquet")) == 25
    assert not list(out.glob("**/*.tmp")) and not (out / ".staging").exists()


def test_moved_corpus_is_the_same_corpus(tmp_path, rasters_dir):
    """The output folder is not part of a corpus's identity, also for corpora that recorded it."""
    out = tmp_path / "c"
    assert _cli(rasters_dir / SN6, "--out", out, "--tile-size", T, "--workers", 1).exit_code == 0
    moved = tmp_path / "moved"
    out.rename(moved)
    before = _mtimes(moved)
    res = _cli(rasters_dir / SN6, "--out", moved, "--tile-size", T, "--workers", 1)
    assert res.exit_code == 0 and "corpus already built" in res.stderr and _mtimes(moved) == before
    # A corpus.json written before `out` was an execution key holds it in its output settings.
    info = json.loads((moved / "corpus.json").read_text())
    info["output_settings"]["out"] = str(out)
    (moved / "corpus.json").write_text(json.dumps(info))
    res = _cli(rasters_dir / SN6, "--out", moved, "--tile-size", T, "--workers", 1)
    assert res.exit_code == 0 and "corpus already built" in res.stderr


def test_new_input_file_counts_as_a_change(tmp_path, rasters_dir):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.tif").symlink_to(rasters_dir / SN6)
    args = [folder, "--out", tmp_path / "c", "--tile-size", T, "--workers", 1]
    assert _cli(*args).exit_code == 0
    (folder / "b.tif").symlink_to(rasters_dir / L8)
    res = _cli(*args)
    assert res.exit_code == 1 and "input_files" in res.stderr


def test_config_file_values_and_bad_key(tmp_path, rasters_dir):
    good = tmp_path / "good.yaml"
    good.write_text(f"inputs: ['{rasters_dir / SN6}']\ntile_size: 150\nshard_size: 3\nbands: [4, 3]\nworkers: 1\n")
    res = _cli("--config", good, "--out", tmp_path / "c")
    assert res.exit_code == 0, res.output
    saved = (tmp_path / "c" / "config.yaml").read_text()
    assert "tile_size: 150" in saved and "stride: 150" in saved
    info = read_corpus_info(tmp_path / "c")
    assert len(info["shards"]) == 2 and choose_group(info, 2)["tiles"] == 4  # 4 tiles of 2 bands, 3 per shard

    bad = tmp_path / "bad.yaml"
    bad.write_text("tile_sise: 64\n")
    res = _cli(rasters_dir / SN6, "--out", tmp_path / "d", "--tile-size", T, "--config", bad)
    assert res.exit_code != 0 and "tile_sise" in res.stderr
    res = _cli(rasters_dir / SN6, "--out", tmp_path / "d", "--tile-size", T, "--diversity")
    assert res.exit_code != 0 and "max_tiles" in res.stderr
    assert not (tmp_path / "d").exists()


def test_read_corpus_info_rejects_non_corpus(tmp_path):
    with pytest.raises(RsbenchError, match="not an rsbench corpus"):
        read_corpus_info(tmp_path)


def test_missing_or_truncated_shard_fails_before_training(corpus, tmp_path):
    from rsbench.corpus import CorpusDataset

    out, info, _ = corpus
    assert info["shard_bytes"] == {n: (out / n).stat().st_size for n in info["shards"]}
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    group = max(info["band_groups"].values(), key=lambda g: g["tiles"])
    victim = copy / group["shards"][-1]
    victim.write_bytes(victim.read_bytes()[:1024])
    with pytest.raises(DataError, match=f"shard {group['shards'][-1]} has 1024 bytes, corpus.json recorded"):
        CorpusDataset(copy, bands=group["bands"])
    victim.unlink()
    res = runner.invoke(
        app, ["pretrain", "--corpus", str(copy), "--bands", str(group["bands"]), "--out", str(tmp_path / "run")]
    )
    assert res.exit_code == 1 and f"shard {group['shards'][-1]} is missing" in res.stderr, res.output
    assert not (tmp_path / "run" / "checkpoints").exists()
