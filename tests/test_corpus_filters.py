"""Every filter on the real rasters, each checked against an independent recomputation in the test.

Filters are switched on one at a time so that each rejection reason is attributable.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
import torch
from rasterio.windows import Window

from rsbench.contracts.corpus_info import choose_group
from rsbench.corpus import CorpusBuildConfig, CorpusDataset, build_corpus

T = 64
L7 = "landsat7_etm_RGB.byte.tif"
L8 = "landsat8_oli_LC80200392015216LGN00_B1-B7_30m.tif"
S2 = "sentinel2_l1c_T18SVG_20160112_20m_6band.tif"
SN6 = "spacenet6_rotterdam_ms1_4band.tif"
OFF = dict(blank_filter=False, cloud_filter=False, saturation_filter=False, dedup=False, max_nodata_fraction=1.0)


def build(out, inputs, **kw):
    cfg = CorpusBuildConfig(inputs=[str(p) for p in inputs], out=str(out), tile_size=T, workers=1, **{**OFF, **kw})
    info = build_corpus(cfg)
    return info, pq.read_table(out / "manifest.parquet").to_pylist()


def windows(path, rows):
    with rasterio.open(path) as src:
        for r in rows:
            yield r, src.read(window=Window(r["col_off"], r["row_off"], T, T)).astype(np.float64)


def scaled(arr, raster):
    lo, hi = np.array(raster["reference"]["low"]), np.array(raster["reference"]["high"])
    return np.clip((arr - lo[:, None, None]) / (hi - lo)[:, None, None], 0, 1)


def test_nodata_collar_of_landsat7(tmp_path, rasters_dir):
    info, rows = build(tmp_path / "c", [rasters_dir / L7], max_nodata_fraction=0.5)
    assert info["rasters"][0]["nodata_source"] == "declared" and not info["rasters"][0]["implicit_fill_detected"]
    for r, arr in windows(rasters_dir / L7, rows):
        frac = float((arr == 0).all(axis=0).mean())  # GDAL's dataset mask: nodata in every band
        assert r["nodata_fraction"] == pytest.approx(frac)
        assert r["kept"] == (frac <= 0.5) and (r["reject_reason"] == "nodata") == (frac > 0.5)
    assert 0 < sum(not r["kept"] for r in rows) < len(rows)


def _strip_nodata_tag(src_path, dst_path):
    with rasterio.open(src_path) as src:
        profile = {**src.profile, "nodata": None}
        with rasterio.open(dst_path, "w", **profile) as dst:
            dst.write(src.read())
            dst.update_tags(**src.tags())


def test_implicit_zero_fill_detected_when_nodata_tag_is_removed(tmp_path, rasters_dir):
    untagged = tmp_path / "l7_untagged.tif"
    _strip_nodata_tag(rasters_dir / L7, untagged)
    with rasterio.open(untagged) as src:
        assert src.nodata is None and src.mask_flag_enums[0] == [rasterio.enums.MaskFlags.all_valid]
    tagged, tagged_rows = build(tmp_path / "a", [rasters_dir / L7], max_nodata_fraction=0.5)
    info, rows = build(tmp_path / "b", [untagged], max_nodata_fraction=0.5, shard_size=1000)
    raster = info["rasters"][0]
    assert raster["nodata_source"] == "none" and raster["implicit_fill_detected"]
    # Same collar, same fractions, same decisions as with the declared nodata value.
    assert [r["nodata_fraction"] for r in rows] == pytest.approx([r["nodata_fraction"] for r in tagged_rows])
    assert [r["reject_reason"] for r in rows] == [r["reject_reason"] for r in tagged_rows]
    assert info["counts"]["rejected"]["nodata"] == tagged["counts"]["rejected"]["nodata"] > 0
    assert choose_group(info, 3)["stats"] == choose_group(tagged, 3)["stats"]  # collar not in the stats
    # The loader treats the implicit fill as nodata too.
    ds = CorpusDataset(tmp_path / "b", shuffle=False, return_key=True)
    partial = {r["key"] for r in rows if r["kept"] and r["nodata_fraction"] > 0}
    key, x = next((k, x) for k, x in ds if k in partial)
    row = next(r for r in rows if r["key"] == key)
    _, raw = next(windows(untagged, [row]))
    fill = torch.from_numpy((raw == 0).all(axis=0))
    assert fill.any() and (x[:, fill] == 0).all() and (x[:, ~fill] != 0).any()
    # Switched off, zeros are data.
    off, off_rows = build(tmp_path / "c", [untagged], max_nodata_fraction=0.5, implicit_nodata=False)
    assert not off["rasters"][0]["implicit_fill_detected"] and all(r["nodata_fraction"] == 0 for r in off_rows)


def test_blank_sea_tiles_of_sentinel2(tmp_path, rasters_dir):
    info, rows = build(tmp_path / "c", [rasters_dir / S2], blank_filter=True)
    raster = info["rasters"][0]
    expected = []
    for r, arr in windows(rasters_dir / S2, rows):
        s = scaled(arr, raster)
        grey = np.rint(s.mean(axis=0) * 255).astype(np.uint8)
        p = np.bincount(grey.ravel(), minlength=256) / grey.size
        entropy = -(p[p > 0] * np.log2(p[p > 0])).sum()
        std = s.reshape(6, -1).std(axis=1).max()
        # float32 in the build vs float64 here: a few pixels may round to the neighbouring grey level.
        assert r["std"] == pytest.approx(std, abs=1e-5) and r["entropy"] == pytest.approx(entropy, abs=0.02)
        if abs(std - 0.04) > 1e-4 and abs(entropy - 3.0) > 0.02:
            expected.append((r["key"], std < 0.04 or entropy < 3.0))
    decided = {r["key"]: r["reject_reason"] == "blank" for r in rows}
    assert len(expected) > 0.9 * len(rows) and all(decided[k] == e for k, e in expected)
    blank = [r for r in rows if r["reject_reason"] == "blank"]
    # The scene's open sea lies east of the coast (right part of the raster).
    assert len(blank) > 40 and np.mean([r["col_off"] >= 576 for r in blank]) > 0.8


def test_clouds_of_landsat8_and_none_on_clear_scenes(tmp_path, rasters_dir):
    info, rows = build(tmp_path / "c", [rasters_dir / L8, rasters_dir / SN6], cloud_filter=True)
    rasters = {r["path"]: r for r in info["rasters"]}
    for r, arr in windows(rasters_dir / L8, [r for r in rows if L8 in r["source"]]):
        frac = float((scaled(arr, rasters[r["source"]]).min(axis=0) >= 0.7).mean())  # bright in every band
        assert r["cloud_fraction"] == pytest.approx(frac)
        assert (r["reject_reason"] == "cloud") == (frac > 0.2)
    cloudy = [r for r in rows if r["reject_reason"] == "cloud"]
    # The cumulus field crosses the scene's left half around rows 192-320.
    assert cloudy and all(L8 in r["source"] and 192 <= r["row_off"] <= 320 and r["col_off"] < 320 for r in cloudy)


def test_saturated_pixels_of_landsat7(tmp_path, rasters_dir):
    info, rows = build(tmp_path / "c", [rasters_dir / L7], saturation_filter=True)
    for r, arr in windows(rasters_dir / L7, rows):
        valid = ~(arr == 0).all(axis=0)
        if not valid.any():
            assert r["saturated_fraction"] is None and r["reject_reason"] == "nodata"
            continue
        frac = float((arr[:, valid] == 255).any(axis=0).mean())
        assert r["saturated_fraction"] == pytest.approx(frac)
        assert (r["reject_reason"] == "saturated") == (frac > 0.2)
    assert sum(r["reject_reason"] == "saturated" for r in rows) >= 5
    assert info["counts"]["rejected"]["saturated"] == sum(r["reject_reason"] == "saturated" for r in rows)


def test_duplicates_across_and_within_rasters(tmp_path, rasters_dir):
    copy = tmp_path / "copy_of_spacenet.tif"
    shutil.copy(rasters_dir / SN6, copy)
    # Within one raster: the same real 128 x 128 patch twice side by side, the second one +1 DN
    # (not byte-identical: a near-duplicate).
    with rasterio.open(rasters_dir / L8) as src:
        patch = src.read(window=Window(0, 448, 128, 128))
        profile = {
            **src.profile,
            "width": 256,
            "height": 128,
            "transform": src.window_transform(Window(0, 448, 256, 128)),
        }
    twin = tmp_path / "twin.tif"
    with rasterio.open(twin, "w", **profile) as dst:
        dst.write(np.concatenate([patch, patch + 1], axis=2))
    info, rows = build(tmp_path / "c", [rasters_dir / SN6, copy, twin], dedup=True)
    keys = {r["key"]: r for r in rows}
    original, copied, twins = (rows[i:j] for i, j in ((0, 16), (16, 32), (32, 40)))
    assert all(r["kept"] for r in original)
    for a, b in zip(original, copied):
        assert b["reject_reason"] == "duplicate" and b["duplicate_of"] == a["key"] and b["phash"] == a["phash"]
    left = [r for r in twins if r["col_off"] < 128]
    right = [r for r in twins if r["col_off"] >= 128]
    assert all(r["kept"] for r in left)
    for r in right:
        assert r["reject_reason"] == "duplicate"
        twin_of = keys[r["duplicate_of"]]
        assert (twin_of["row_off"], twin_of["col_off"]) == (r["row_off"], r["col_off"] - 128)
        distance = bin(int(r["phash"], 16) ^ int(twin_of["phash"], 16)).count("1")
        assert distance <= 4
    assert info["counts"]["rejected"]["duplicate"] == 16 + 4
    # Switched off: nothing is a duplicate.
    off, off_rows = build(tmp_path / "d", [rasters_dir / SN6, copy])
    assert off["counts"]["tiles_kept"] == 32 and all(r["phash"] is None for r in off_rows)


def _eval_raster_in_wgs84(src_path, dst_path, window):
    """A 'test set' raster: a window of the source, reprojected to EPSG:4326."""
    from rasterio.warp import calculate_default_transform, reproject

    with rasterio.open(src_path) as src:
        bounds = rasterio.windows.bounds(window, src.transform)
        transform, w, h = calculate_default_transform(src.crs, "EPSG:4326", window.width, window.height, *bounds)
        profile = {**src.profile, "crs": "EPSG:4326", "transform": transform, "width": w, "height": h, "count": 1}
        with rasterio.open(dst_path, "w", **profile) as dst:
            reproject(
                src.read(1, window=window),
                rasterio.band(dst, 1),
                src_transform=src.window_transform(window),
                src_crs=src.crs,
                dst_transform=transform,
                dst_crs="EPSG:4326",
            )


def _overlaps(rows, footprint_lonlat, crs):
    """Independent reference: tile boxes projected to lon/lat with pyproj, shapely overlap test."""
    import shapely
    from pyproj import Transformer

    to_ll = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    out = []
    for r in rows:
        x0, y0 = r["center_x"] - r["gsd"] * T / 2, r["center_y"] - r["gsd"] * T / 2
        ring = [(x0 + dx * r["gsd"] * T / 8, y0) for dx in range(9)] + [
            (x0 + r["gsd"] * T, y0 + dy * r["gsd"] * T / 8) for dy in range(9)
        ]
        ring += [(x0 + r["gsd"] * T - dx * r["gsd"] * T / 8, y0 + r["gsd"] * T) for dx in range(9)]
        ring += [(x0, y0 + r["gsd"] * T - dy * r["gsd"] * T / 8) for dy in range(9)]
        tile = shapely.Polygon([to_ll.transform(x, y) for x, y in ring])
        out.append(tile.intersection(footprint_lonlat).area > 1e-9 * tile.area)
    return out


def test_exclude_raster_footprint_and_vector_file(tmp_path, rasters_dir):
    import shapely

    eval_raster = tmp_path / "eval_chip.tif"
    _eval_raster_in_wgs84(rasters_dir / S2, eval_raster, Window(300, 200, 180, 150))
    with rasterio.open(eval_raster) as src:
        raster_fp = shapely.box(*src.bounds)
    info, rows = build(tmp_path / "a", [rasters_dir / S2], exclude=[str(eval_raster)])
    assert [r["reject_reason"] == "overlaps_eval" for r in rows] == _overlaps(rows, raster_fp, rows[0]["crs"])
    hit = [r for r in rows if r["reject_reason"] == "overlaps_eval"]
    assert 9 <= len(hit) <= 30 and info["counts"]["rejected"]["overlaps_eval"] == len(hit)
    assert all(r["std"] is None for r in hit)  # never read: the guard runs before any pixel read

    # A GeoJSON polygon (lon/lat, CRS84) around the centre of the Landsat 8 scene, and one far away.
    l8 = [r for r in build(tmp_path / "b", [rasters_dir / L8])[1]]
    centre = next(r for r in l8 if (r["row_off"], r["col_off"]) == (256, 256))
    poly = shapely.Point(centre["lon"], centre["lat"]).buffer(0.02)
    far = shapely.box(10, 10, 11, 11)
    geojson = tmp_path / "test_areas.geojson"
    geojson.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {"type": "Feature", "properties": {"name": n}, "geometry": shapely.geometry.mapping(g)}
                    for n, g in (("a", poly), ("b", far))
                ],
            }
        )
    )
    info, rows = build(tmp_path / "c", [rasters_dir / L8], exclude=[str(geojson)])
    expected = _overlaps(rows, poly, rows[0]["crs"])
    assert [r["reject_reason"] == "overlaps_eval" for r in rows] == expected and 4 <= sum(expected) <= 16
    assert next(r for r in rows if r["key"] == centre["key"])["reject_reason"] == "overlaps_eval"


def test_band_selection_by_description_and_index(tmp_path, rasters_dir):
    info, rows = build(tmp_path / "a", [rasters_dir], bands=["B4_red", "b3_green", "B2_BLUE"])
    assert [r["path"].endswith(L8) for r in info["rasters"]] == [True]
    assert len(info["skipped"]) == 4 and all("no band named 'B4_red'" in s["reason"] for s in info["skipped"])
    group = choose_group(info, 3)
    assert group["band_names"] == ["red", "green", "blue"] and group["key"] == "red,green,blue|uint16"
    row = next(r for r in rows if r["kept"])
    with tarfile.open(tmp_path / "a" / row["shard"]) as tar:
        arr = np.load(io.BytesIO(tar.extractfile(f"{row['key']}.npy").read()))
    with rasterio.open(rasters_dir / L8) as src:
        np.testing.assert_array_equal(arr, src.read([4, 3, 2], window=Window(row["col_off"], row["row_off"], T, T)))

    info, _ = build(tmp_path / "b", [rasters_dir], bands=[4, 1])
    assert sorted(s["path"].endswith(L7) for s in info["skipped"]) == [True]
    assert "band 4 selected but the raster has 3 band(s)" in info["skipped"][0]["reason"]
    assert info["counts"]["rasters"] == 4 and {g["bands"] for g in info["band_groups"].values()} == {2}


def test_gsd_resampling_matches_gdal_warp(tmp_path, rasters_dir):
    from rasterio.warp import Resampling, reproject

    info, rows = build(tmp_path / "c", [rasters_dir / S2], gsd=40.0)
    raster = info["rasters"][0]
    assert (raster["width"], raster["height"]) == (round(967 / 2), round(973 / 2)) and raster["resampled"]
    assert raster["gsd"] == pytest.approx([40.0, 40.0], rel=2e-3) and rows[0]["gsd"] == pytest.approx(40.0, rel=2e-3)
    assert len(rows) == (raster["width"] // T) * (raster["height"] // T) == 7 * 7
    with rasterio.open(rasters_dir / S2) as src:
        dst = np.zeros((6, raster["height"], raster["width"]), np.uint16)
        reproject(
            src.read(),
            dst,
            src_transform=src.transform,
            src_crs=src.crs,
            dst_crs=src.crs,
            dst_transform=rasterio.Affine(*raster["transform"]),
            resampling=Resampling.bilinear,
        )
    for row in [r for r in rows if r["kept"]][::7]:
        with tarfile.open(tmp_path / "c" / row["shard"]) as tar:
            arr = np.load(io.BytesIO(tar.extractfile(f"{row['key']}.npy").read()))
        ref = dst[:, row["row_off"] : row["row_off"] + T, row["col_off"] : row["col_off"] + T]
        assert np.abs(arr.astype(int) - ref.astype(int)).max() <= 1


def test_batched_phash_matches_imagehash_on_real_images(eurosat_dir, rasters_dir):
    """The corpus hashes whole batches with two matrix products; imagehash.phash is the reference."""
    import imagehash
    from PIL import Image

    from rsbench.corpus.filters import hash_quicklook, perceptual_hashes

    greys = [np.asarray(Image.open(p).convert("L")) for p in sorted(eurosat_dir.rglob("*.jpg"))[::8]]
    with rasterio.open(rasters_dir / "naip_m_4709963_se_14_1_20190904_rgbn_5m.tif") as src:  # 4-band uint8 aerial
        block = src.read(1, window=Window(0, 0, 640, 640))
    greys += [np.ascontiguousarray(block[r : r + 64, c : c + 64]) for r in range(0, 640, 64) for c in range(0, 640, 64)]
    smalls = np.stack([hash_quicklook(g) for g in greys])
    ours = perceptual_hashes(smalls)
    ref = [
        int.from_bytes(
            np.packbits(imagehash.phash(Image.fromarray(g).resize((32, 32), Image.BOX)).hash.ravel()).tobytes(),
            "big",
            signed=True,
        )
        for g in greys
    ]
    assert len(ref) > 300 and ours.dtype == np.int64
    assert ours.tolist() == ref


def test_box_reduce_is_pils_box_resize_to_the_last_bit():
    """The numpy path of hash_quicklook (power-of-two factors) against PIL itself, on random and posterised
    greys; other sizes go through PIL."""
    from PIL import Image

    from rsbench.corpus.filters import QUICKLOOK, hash_quicklook

    rng = np.random.default_rng(0)
    for size in (32, 64, 128, 256, 96, 100):
        for k in range(60):
            grey = (
                rng.integers(0, 256, (size, size), dtype=np.uint8)
                if k % 2
                else (rng.integers(0, 4, (size, size)) * 85).astype(np.uint8)
            )
            pil = np.asarray(Image.fromarray(grey).resize((QUICKLOOK, QUICKLOOK), Image.BOX))
            assert np.array_equal(hash_quicklook(grey), pil), (size, k)


@pytest.mark.parametrize("chunk_columns", [None, 100])
def test_window_metrics_of_a_strip_equal_their_definitions(rasters_dir, monkeypatch, chunk_columns):
    """Overlapping windows (stride 16) of a Landsat 7 strip with a nodata collar, measured together from the
    shared scaled strip (also when it is scaled in pieces of 100 columns, windows straddling the pieces' ends):
    each window's metrics equal their definitions computed on the window alone with plain numpy, its quicklook
    equals `quicklook` of the window alone bit for bit, and the reject codes follow the filters' precedence."""
    from rsbench.corpus import filters as F
    from rsbench.corpus.raster import probe_raster, read_block
    from rsbench.corpus.tiling import _windows

    if chunk_columns:
        monkeypatch.setattr(F, "SCALED_CHUNK_BYTES", 4 * 3 * 64 * chunk_columns)

    info = probe_raster(str(rasters_dir / "landsat7_etm_RGB.byte.tif"))
    f = {
        "max_nodata_fraction": 0.9,
        "saturation_filter": True,
        "max_saturated_fraction": 0.02,
        "cloud_filter": True,
        "max_cloud_fraction": 0.05,
        "blank_filter": True,
        "min_std": 0.08,
        "min_entropy": 4.5,
        "cloud_brightness": 0.6,
    }
    with rasterio.open(info["path"]) as src:
        strip, valid = read_block(src, info, Window(0, 300, 640, 64))
    assert 0 < valid.mean() < 1, "the strip crosses the collar"
    shared = F.ScaledStrip(strip, info["reference"], f["cloud_brightness"])
    x = np.arange(0, 640 - 64 + 1, 16)
    compared, codes = 0, []
    for first in range(0, len(x), 5):  # batches of 5 windows, as tiling measures them
        offsets = x[first : first + 5] - x[first]
        x0, width = int(x[first]), int(offsets[-1]) + 64
        at = (0 * offsets, offsets)
        s, grey, bright = shared.window(x0, width)
        arrays = _windows(strip[:, :, x0 : x0 + width], *at, 64)
        wvalid = _windows(valid[None, :, x0 : x0 + width], *at, 64)[:, 0]
        pieces = [_windows(s, *at, 64), _windows(grey[None], *at, 64)[:, 0], _windows(bright[None], *at, 64)[:, 0]]
        metrics, looks = F.window_metrics(arrays, wvalid, lambda which, p=pieces: tuple(a[which] for a in p), f, True)
        codes.extend(F.reject_codes(metrics, f).tolist())
        for k, array in enumerate(arrays):
            v = wvalid[k]
            assert np.array_equal(array, strip[:, :, x0 + offsets[k] : x0 + offsets[k] + 64])
            assert metrics["nodata_fraction"][k] == 1.0 - v.mean()
            if v.mean() < 0.1:
                assert np.isnan(metrics["std"][k]) and np.isnan(metrics["cloud_fraction"][k])
                continue
            alone = F.scaled(array, info["reference"])
            pixels = F.valid_pixels(alone, v)  # the definitions, by hand, on the window alone
            assert metrics["cloud_fraction"][k] == float((pixels.min(axis=0) >= 0.6).mean())
            assert metrics["saturated_fraction"][k] == float((F.valid_pixels(array, v) >= 255).any(axis=0).mean())
            assert metrics["std"][k] == pytest.approx(float(pixels.astype(np.float64).std(axis=1).max()), rel=1e-6)
            look = F.quicklook(alone, v)
            assert np.array_equal(looks[k], look)
            p = np.bincount(look[v], minlength=256) / v.sum()
            p = p[p > 0]
            assert metrics["entropy"][k] == pytest.approx(float(-(p * np.log2(p)).sum()), rel=1e-12)
            compared += 1
    assert compared > 10
    assert F.REASONS.index(F.REJECT_NODATA) in codes and -1 in codes


def test_npy_bytes_is_what_np_save_writes():
    """Tiling writes a tile's .npy as one cached header + its bytes: the same bytes np.save writes, for every
    dtype and band count a corpus holds."""
    import io

    from rsbench.corpus.shards import npy_bytes

    for dtype in ("uint8", "uint16", "int16", "float32", "float64"):
        for bands in (1, 3, 13):
            tile = np.arange(bands * 64 * 48).astype(dtype).reshape(bands, 64, 48)
            buf = io.BytesIO()
            np.save(buf, tile, allow_pickle=False)
            assert npy_bytes(tile) == buf.getvalue()
