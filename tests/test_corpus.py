"""Corpus stage on the real rasters: tiling, nodata filter, shards, manifest, stats, CLI, loader."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
import torch
from rasterio.windows import Window
from typer.testing import CliRunner

from rsbench.cli import app
from rsbench.corpus import CorpusBuildConfig, CorpusDataset, build_corpus, corpus_normalization, read_corpus_info
from rsbench.errors import RsbenchError

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
    # Small shards so that every band group spans several shards (needed for the rank split test).
    info = build_corpus(CorpusBuildConfig(inputs=[str(rasters_dir)], out=str(out), tile_size=T, shard_size=40))
    return out, info, pq.read_table(out / "manifest.parquet").to_pylist()


def _read_window(path, row_off, col_off, size=T):
    with rasterio.open(path) as src:
        return src.read(window=Window(col_off, row_off, size, size))


def _shard_samples(corpus_dir: Path, shard: str) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(corpus_dir / shard) as tar:
        for member in tar.getmembers():
            key, ext = member.name.split(".", 1)
            samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return samples


def _by_name(rows, name):
    return [r for r in rows if Path(r["source"]).name == name]


def test_tile_counts_follow_the_grid_formula(corpus, rasters_dir):
    out, info, rows = corpus
    assert len(rows) == sum(EXPECTED_TILES.values()) == 608
    for raster in info["rasters"]:
        name = Path(raster["path"]).name
        with rasterio.open(raster["path"]) as src:
            assert (raster["width"], raster["height"], raster["bands"]) == (src.width, src.height, src.count)
            formula = ((src.width - T) // T + 1) * ((src.height - T) // T + 1)
        assert raster["tiles_total"] == formula == EXPECTED_TILES[name] == len(_by_name(rows, name))
    # Row-major order within a raster, offsets on the stride grid, full windows only.
    sn6 = _by_name(rows, SN6)
    assert [(r["row_off"], r["col_off"]) for r in sn6] == [(y, x) for y in range(0, 193, 64) for x in range(0, 193, 64)]
    assert info["rasters"][[Path(r["path"]).name for r in info["rasters"]].index(S2)]["band_names"][0] == "B05_rededge1"


def test_landsat7_collar_rejected_interior_kept(corpus, rasters_dir):
    out, info, rows = corpus
    l7 = _by_name(rows, L7)
    rejected = [r for r in l7 if not r["kept"]]
    assert len(rejected) > 0 and all(r["reject_reason"] == "nodata" and r["shard"] is None for r in rejected)
    # Independent check of the fraction: nodata=0 and GDAL's dataset mask marks a pixel invalid
    # when every band holds the nodata value.
    for r in l7[::7]:
        arr = _read_window(rasters_dir / L7, r["row_off"], r["col_off"])
        frac = float((arr == 0).all(axis=0).mean())
        assert r["nodata_fraction"] == pytest.approx(frac)
        assert r["kept"] == (frac <= 0.5)
    centre = next(r for r in l7 if r["row_off"] == 256 and r["col_off"] == 320)
    assert centre["kept"] and centre["nodata_fraction"] == 0.0 and centre["reject_reason"] is None
    corner = next(r for r in l7 if r["row_off"] == 0 and r["col_off"] == 0)
    assert not corner["kept"] and corner["nodata_fraction"] == 1.0
    # Rasters without nodata keep everything.
    assert all(r["kept"] for r in _by_name(rows, L8) + _by_name(rows, S2) + _by_name(rows, SN6))


@pytest.mark.parametrize("name,dtype", [(L8, np.uint16), (SN6, np.float64)])
def test_shard_sample_equals_direct_read(corpus, rasters_dir, name, dtype):
    out, info, rows = corpus
    row = [r for r in _by_name(rows, name) if r["kept"]][5]
    sample = _shard_samples(out, row["shard"])[row["key"]]
    arr = np.load(io.BytesIO(sample["npy"]))
    direct = _read_window(rasters_dir / name, row["row_off"], row["col_off"])
    assert arr.dtype == direct.dtype == dtype
    assert arr.shape == direct.shape == (row["bands"], T, T)
    np.testing.assert_array_equal(arr, direct)
    meta = json.loads(sample["json"])
    assert meta["window"] == {"col_off": row["col_off"], "row_off": row["row_off"], "width": T, "height": T}
    with rasterio.open(rasters_dir / name) as src:
        expected_transform = list(src.window_transform(Window(row["col_off"], row["row_off"], T, T)))[:6]
        assert meta["crs"] == f"EPSG:{src.crs.to_epsg()}" == row["crs"]
        assert meta["band_names"] == [d or f"B{i + 1}" for i, d in enumerate(src.descriptions)]
    assert meta["transform"] == pytest.approx(expected_transform)
    assert meta["dtype"] == np.dtype(dtype).name and meta["nodata"] is None
    # The manifest centre is the window centre in raster CRS units.
    a, b, c, d, e, f = expected_transform
    assert (row["center_x"], row["center_y"]) == pytest.approx((c + a * T / 2 + b * T / 2, f + d * T / 2 + e * T / 2))


def test_corpus_json_consistent_with_manifest_and_shards(corpus):
    out, info, rows = corpus
    kept = [r for r in rows if r["kept"]]
    assert info["counts"] == {
        "rasters": 5,
        "rasters_failed": 0,
        "tiles_total": len(rows),
        "tiles_kept": len(kept),
        "rejected": {"nodata": len(rows) - len(kept)},
    }
    assert info["failures"] == []
    assert read_corpus_info(out) == info
    assert sorted(info["shards"]) == sorted(f"shards/{p.name}" for p in (out / "shards").iterdir())
    keys = [r["key"] for r in rows]
    assert len(set(keys)) == len(keys) and not any("." in k for k in keys)
    # Every kept tile is in exactly the shard the manifest says; shards hold one band count each.
    in_shards = {}
    for shard in info["shards"]:
        samples = _shard_samples(out, shard)
        assert 0 < len(samples) <= 40
        assert len({np.load(io.BytesIO(s["npy"])).shape[0] for s in samples.values()}) == 1
        in_shards.update({k: shard for k in samples})
    assert in_shards == {r["key"]: r["shard"] for r in kept}
    for bands, group in info["band_groups"].items():
        assert group["tiles"] == sum(r["bands"] == int(bands) for r in kept)
        assert {in_shards[r["key"]] for r in kept if r["bands"] == int(bands)} == set(group["shards"])
    assert {g: info["band_groups"][g]["tiles"] for g in info["band_groups"]} == {"3": 95, "4": 170, "6": 225, "7": 81}
    per_raster = {Path(r["path"]).name: (r["tiles_kept"], r["tiles_rejected"]) for r in info["rasters"]}
    for name, (k, rej) in per_raster.items():
        mine = _by_name(rows, name)
        assert (k, rej) == (sum(r["kept"] for r in mine), sum(not r["kept"] for r in mine))


@pytest.mark.parametrize("bands", [3, 4])
def test_band_group_stats_match_numpy(corpus, bands):
    """Group 3 exercises the valid-pixel mask (Landsat 7 collar), group 4 the merge of two rasters."""
    out, info, rows = corpus
    pixels = []
    for r in rows:
        if r["kept"] and r["bands"] == bands:
            arr = _read_window(r["source"], r["row_off"], r["col_off"]).astype(np.float64)
            with rasterio.open(r["source"]) as src:
                nodata = src.nodata
            valid = ~(arr == nodata).all(axis=0) if nodata is not None else np.ones(arr.shape[1:], bool)
            pixels.append(arr[:, valid])
    x = np.concatenate(pixels, axis=1)
    stats = info["band_groups"][str(bands)]["stats"]
    assert stats["count"] == x.shape[1]
    np.testing.assert_allclose(stats["mean"], x.mean(axis=1), rtol=1e-9)
    np.testing.assert_allclose(stats["std"], x.std(axis=1, ddof=1), rtol=1e-9)
    np.testing.assert_array_equal(stats["min"], x.min(axis=1))
    np.testing.assert_array_equal(stats["max"], x.max(axis=1))
    if bands == 3:
        assert x.shape[1] < len(pixels) * T * T  # some collar pixels really were excluded
    norm = corpus_normalization(out, bands)
    assert norm.mean == stats["mean"] and norm.std == stats["std"]


def test_same_inputs_give_identical_bytes(tmp_path, rasters_dir):
    inputs = [str(rasters_dir / SN6), str(rasters_dir / L7)]
    a = build_corpus(CorpusBuildConfig(inputs=inputs, out=str(tmp_path / "a"), tile_size=T, shard_size=30))
    b = build_corpus(CorpusBuildConfig(inputs=inputs, out=str(tmp_path / "b"), tile_size=T, shard_size=30))
    assert a["shards"] == b["shards"] and len(a["shards"]) >= 2
    for shard in a["shards"]:
        assert (tmp_path / "a" / shard).read_bytes() == (tmp_path / "b" / shard).read_bytes()
    assert pq.read_table(tmp_path / "a" / "manifest.parquet").equals(pq.read_table(tmp_path / "b" / "manifest.parquet"))


def _cli(*args):
    return runner.invoke(app, ["corpus", "build", *map(str, args)])


def test_bad_inputs_are_reported_and_skipped(tmp_path, rasters_dir):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "corrupt.tif").write_bytes(np.random.default_rng(0).bytes(4096))
    (bad / "notes.txt").write_text("not a raster\n")
    # Truncated real GeoTIFF: the header opens, reads fail part-way through the grid.
    data = (rasters_dir / L8).read_bytes()
    (bad / "truncated.tif").write_bytes(data[: len(data) // 2])
    out = tmp_path / "c"
    res = _cli(bad / "corrupt.tif", bad / "notes.txt", bad / "truncated.tif", rasters_dir / SN6, "--out", out, "--tile-size", T)
    assert res.exit_code == 0, res.output
    info = read_corpus_info(out)
    assert sorted(Path(f["path"]).name for f in info["failures"]) == ["corrupt.tif", "notes.txt", "truncated.tif"]
    assert all(f["reason"] and "\n" not in f["reason"] for f in info["failures"])
    assert info["counts"]["rasters"] == 1 and info["counts"]["rasters_failed"] == 3
    # The truncated raster produced tiles before failing; none of them may survive.
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    assert {Path(r["source"]).name for r in rows} == {SN6} and len(rows) == 16
    assert sum(len(_shard_samples(out, s)) for s in info["shards"]) == 16
    assert "corrupt.tif" in res.stderr and "truncated.tif" in res.stderr

    res = _cli(bad / "corrupt.tif", bad / "notes.txt", "--out", tmp_path / "c2", "--tile-size", T)
    assert res.exit_code == 1
    # Per-file warnings first, then the error itself as one line, no traceback.
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no input raster could be read (2 failed") and "corrupt.tif" in last
    assert "Traceback" not in res.output and "notes.txt" in res.stderr
    assert not (tmp_path / "c2" / "corpus.json").exists() and not (tmp_path / "c2" / "shards").exists()


def test_missing_or_empty_inputs(tmp_path):
    (tmp_path / "empty").mkdir()
    res = _cli(tmp_path / "empty", "--out", tmp_path / "c", "--tile-size", T)
    assert res.exit_code == 1 and "empty" in res.stderr and "no GeoTIFF" in res.stderr
    res = _cli(tmp_path / "nope.tif", "--out", tmp_path / "c", "--tile-size", T)
    assert res.exit_code == 1 and "nope.tif" in res.stderr


def test_rerun_is_noop_and_changed_settings_need_overwrite(tmp_path, rasters_dir):
    out = tmp_path / "c"
    args = [rasters_dir / SN6, "--out", out, "--tile-size", T]
    assert _cli(*args).exit_code == 0
    before = {p.name: p.stat().st_mtime_ns for p in [out / "corpus.json", out / "manifest.parquet", *(out / "shards").iterdir()]}
    res = _cli(*args)
    assert res.exit_code == 0 and "corpus already built" in res.stderr
    after = {p.name: p.stat().st_mtime_ns for p in [out / "corpus.json", out / "manifest.parquet", *(out / "shards").iterdir()]}
    assert before == after
    # Explicit stride equal to the tile size is the same build.
    assert "corpus already built" in _cli(*args, "--stride", T).stderr

    res = _cli(rasters_dir / SN6, "--out", out, "--tile-size", 100)
    assert res.exit_code == 1 and str(out) in res.stderr and "tile_size" in res.stderr and "--overwrite" in res.stderr
    assert read_corpus_info(out)["settings"]["tile_size"] == T  # untouched

    res = _cli(rasters_dir / SN6, "--out", out, "--tile-size", 100, "--stride", 50, "--overwrite")
    assert res.exit_code == 0, res.output
    info = read_corpus_info(out)
    assert info["settings"]["tile_size"] == 100 and info["counts"]["tiles_total"] == 5 * 5
    assert len(pq.read_table(out / "manifest.parquet")) == 25
    assert not list(out.glob("**/*.tmp")) and not (out / ".staging").exists()


def test_config_file_values_and_bad_key(tmp_path, rasters_dir):
    good = tmp_path / "good.yaml"
    good.write_text(f"inputs: ['{rasters_dir / SN6}']\ntile_size: 150\nshard_size: 3\n")
    res = _cli("--config", good, "--out", tmp_path / "c")
    assert res.exit_code == 0, res.output
    saved = (tmp_path / "c" / "config.yaml").read_text()
    assert "tile_size: 150" in saved and "stride: 150" in saved
    assert len(read_corpus_info(tmp_path / "c")["shards"]) == 2  # 4 tiles, 3 per shard

    bad = tmp_path / "bad.yaml"
    bad.write_text("tile_sise: 64\n")
    res = _cli(rasters_dir / SN6, "--out", tmp_path / "d", "--tile-size", T, "--config", bad)
    assert res.exit_code != 0 and "tile_sise" in res.stderr
    assert not (tmp_path / "d").exists()


def test_read_corpus_info_rejects_non_corpus(tmp_path):
    with pytest.raises(RsbenchError, match="not an rsbench corpus"):
        read_corpus_info(tmp_path)


def test_dataset_yields_normalized_tensors(corpus, rasters_dir):
    out, info, rows = corpus
    ds = CorpusDataset(out, shuffle=False, return_key=True)
    assert ds.bands == 6 and ds.num_samples == 225  # the largest group: Sentinel-2
    items = list(ds)
    assert len(items) == 225 and len({k for k, _ in items}) == 225
    x = torch.stack([t for _, t in items])
    assert x.dtype == torch.float32 and x.shape == (225, 6, T, T)
    # All S2 pixels are valid, so the normalized group has mean 0 and std 1 per band.
    flat = x.permute(1, 0, 2, 3).reshape(6, -1).double()
    np.testing.assert_allclose(flat.mean(dim=1), 0.0, atol=1e-4)
    np.testing.assert_allclose(flat.std(dim=1), 1.0, atol=1e-4)
    key, t = items[17]
    row = next(r for r in rows if r["key"] == key)
    raw = _read_window(rasters_dir / S2, row["row_off"], row["col_off"]).astype(np.float64)
    stats = info["band_groups"]["6"]["stats"]
    expected = (raw - np.array(stats["mean"])[:, None, None]) / np.array(stats["std"])[:, None, None]
    np.testing.assert_allclose(t.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_dataset_nodata_pixels_become_zero_and_bad_band_count(corpus):
    out, info, rows = corpus
    ds = CorpusDataset(out, bands=3, shuffle=False, return_key=True)
    collar_keys = {r["key"] for r in rows if r["kept"] and r["bands"] == 3 and r["nodata_fraction"] > 0}
    key, t = next((k, t) for k, t in ds if k in collar_keys)
    raw = np.load(io.BytesIO(_shard_samples(out, next(r["shard"] for r in rows if r["key"] == key))[key]["npy"]))
    invalid = torch.from_numpy((raw == 0).all(axis=0))
    assert invalid.any() and (t[:, invalid] == 0).all() and (t[:, ~invalid] != 0).any()
    with pytest.raises(RsbenchError, match="no 5-band tiles"):
        CorpusDataset(out, bands=5)


def test_dataset_shuffles_reproducibly_and_works_with_workers(corpus):
    out, _, _ = corpus
    keys = lambda ds: [k for k, _ in ds]  # noqa: E731
    a = keys(CorpusDataset(out, bands=7, seed=3, shuffle_buffer=50, return_key=True))
    b = keys(CorpusDataset(out, bands=7, seed=3, shuffle_buffer=50, return_key=True))
    plain = keys(CorpusDataset(out, bands=7, shuffle=False, return_key=True))
    assert a == b and a != plain and sorted(a) == sorted(plain) and len(plain) == 81
    ds = CorpusDataset(out, bands=7, seed=3, return_key=True)
    ds.set_epoch(1)
    assert keys(ds) != a
    loader = torch.utils.data.DataLoader(CorpusDataset(out, bands=7, return_key=True), batch_size=16, num_workers=2)
    seen = [k for batch_keys, batch in loader for k in batch_keys]
    assert sorted(seen) == sorted(plain)  # each sample once across the two workers


def test_dataset_splits_shards_across_ranks(corpus, monkeypatch):
    out, info, rows = corpus
    group_shards = info["band_groups"]["6"]["shards"]
    assert len(group_shards) >= 2
    per_rank = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        per_rank.append([k for k, _ in CorpusDataset(out, bands=6, return_key=True)])
    a, b = map(set, per_rank)
    assert a and b and not a & b
    assert a | b == {r["key"] for r in rows if r["kept"] and r["bands"] == 6}
    shard_of = {r["key"]: r["shard"] for r in rows}
    assert not {shard_of[k] for k in a} & {shard_of[k] for k in b}  # split by whole shards
