"""Band names as the key of a corpus: per-raster names (input list, sidecar, descriptions), selection by
canonical name into one band order, band groups keyed by names and units, pooled sensors reported.

All on the real shared rasters: NAIP is R,G,B,NIR (uint8), the SpaceNet-6 chip B,G,R,NIR (float64),
Landsat 8 is described B1_coastal ... B7_swir2 (uint16), Landsat 7 an R,G,B composite (uint8).
"""

from __future__ import annotations

import io
import shutil
import tarfile

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from rsbench.contracts.corpus_info import choose_group, upgrade_band_groups
from rsbench.corpus import CorpusBuildConfig, build_corpus
from rsbench.corpus.inputs import list_line_options
from rsbench.errors import DataError, RsbenchError

L7 = "landsat7_etm_RGB.byte.tif"
L8 = "landsat8_oli_LC80200392015216LGN00_B1-B7_30m.tif"
NAIP = "naip_m_4709963_se_14_1_20190904_rgbn_5m.tif"
S2 = "sentinel2_l1c_T18SVG_20160112_20m_6band.tif"
SN6 = "spacenet6_rotterdam_ms1_4band.tif"
T = 64


def _build(out, input_list=None, inputs=(), **settings):
    logs: list[str] = []
    cfg = CorpusBuildConfig(
        inputs=[str(p) for p in inputs],
        input_lists=[str(input_list)] if input_list else [],
        out=str(out),
        tile_size=T,
        workers=1,
        **settings,
    )
    return build_corpus(cfg, log=logs.append), logs


def _tile(out, info, raster_name):
    """(stored array, its window) of the first kept tile of one raster."""
    import pyarrow.parquet as pq

    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    row = next(r for r in rows if r["kept"] and r["source"].endswith(raster_name))
    with tarfile.open(out / row["shard"]) as tar:
        array = np.load(io.BytesIO(tar.extractfile(f"{row['key']}.npy").read()))
    return array, Window(row["col_off"], row["row_off"], T, T)


def test_rgb_by_band_name_from_every_sensor(tmp_path, rasters_dir):
    listing = tmp_path / "archive.txt"
    listing.write_text(
        f"# band names per raster: NAIP is R,G,B,NIR; the SpaceNet-6 chip B,G,R,NIR\n"
        f"{rasters_dir / L7}  bands=red,green,blue\n"
        f"{rasters_dir / L8}\n"
        f"{rasters_dir / NAIP}  bands=red,green,blue,nir\n"
        f"{rasters_dir / S2}\n"
        f"{rasters_dir / SN6}  bands=blue,green,red,nir\n"
    )
    out = tmp_path / "rgb"
    info, logs = _build(out, listing, bands=["red", "green", "blue"])
    assert [s["path"].endswith(S2) for s in info["skipped"]] == [True]  # no red, green, blue: skipped, not failed
    assert info["failures"] == [] and info["counts"]["rasters"] == 4
    assert sorted(info["band_groups"]) == ["red,green,blue|float64", "red,green,blue|uint16", "red,green,blue|uint8"]
    # Every raster's tile holds red, green, blue in that order, whatever the file's band order.
    for name, file_bands in [(NAIP, [1, 2, 3]), (SN6, [3, 2, 1]), (L8, [4, 3, 2]), (L7, [1, 2, 3])]:
        array, window = _tile(out, info, name)
        with rasterio.open(rasters_dir / name) as src:
            np.testing.assert_array_equal(array, src.read(file_bands, window=window))
    # NAIP and Landsat 7 (both uint8 RGB) share a group: two sensors, one mean/std, said out loud.
    uint8 = info["band_groups"]["red,green,blue|uint8"]
    assert uint8["pooled_sensors"] and sorted(uint8["sensors"].values()) == sorted(
        r["tiles_kept"] for r in info["rasters"] if r["path"].endswith((NAIP, L7))
    )
    assert len(info["warnings"]) == 1 and "red,green,blue (uint8) pools 2 sensors" in info["warnings"][0]
    assert any(line == f"warning: {info['warnings'][0]}" for line in logs)
    assert not info["band_groups"]["red,green,blue|uint16"]["pooled_sensors"]

    # Without names the unnamed rasters have no 'red': all but Landsat 8 skipped, and the error for none
    # left says the bands are missing (they were read).
    with pytest.raises(DataError, match=r"none of the 2 input raster\(s\) has the selected bands"):
        _build(tmp_path / "none", inputs=[rasters_dir / NAIP, rasters_dir / SN6], bands=["red", "green", "blue"])


def test_naip_and_spacenet6_pooled_only_when_declared_one_scale(tmp_path, rasters_dir):
    # Unnamed and of different dtypes: two groups, nothing pooled (they used to share one 4-band group).
    info, logs = _build(tmp_path / "apart", inputs=[rasters_dir / NAIP, rasters_dir / SN6])
    assert sorted(info["band_groups"]) == ["B1,B2,B3,B4|float64", "B1,B2,B3,B4|uint8"]
    assert info["warnings"] == [] and not any("pools" in line for line in logs)

    # Declared one unit: pooled into one RGBN group, with a warning naming both sensors.
    listing = tmp_path / "pooled.txt"
    listing.write_text(
        f"{rasters_dir / NAIP}  bands=red,green,blue,nir  sensor=naip  units=dn\n"
        f"{rasters_dir / SN6}  bands=blue,green,red,nir  sensor=spacenet6  units=dn\n"
    )
    info, logs = _build(tmp_path / "pooled", listing, bands=["red", "green", "blue", "nir"])
    (group,) = info["band_groups"].values()
    kept = {r["path"].rsplit("/", 1)[1]: r["tiles_kept"] for r in info["rasters"]}
    assert group["key"] == "red,green,blue,nir|dn" and group["pooled_sensors"]
    assert group["sensors"] == {"naip": kept[NAIP], "spacenet6": kept[SN6]} and group["tiles"] == sum(kept.values())
    assert any("pools 2 sensors" in line and "naip" in line and "spacenet6" in line for line in logs)


def test_band_names_from_a_sidecar(tmp_path, rasters_dir):
    folder = tmp_path / "archive"
    folder.mkdir()
    shutil.copy(rasters_dir / SN6, folder / SN6)  # a copy: inputs are resolved, a symlink would point elsewhere
    (folder / f"{SN6}.bands").write_text("# SpaceNet-6 chip band order\nblue,green,red,nir\n")
    info, _ = _build(tmp_path / "c", inputs=[folder], bands=["red", "green", "blue"])
    assert list(info["band_groups"]) == ["red,green,blue|float64"]
    assert info["rasters"][0]["band_names_source"] == "input list or sidecar"
    array, window = _tile(tmp_path / "c", info, SN6)
    with rasterio.open(rasters_dir / SN6) as src:
        np.testing.assert_array_equal(array, src.read([3, 2, 1], window=window))
    # A sidecar naming the wrong number of bands fails that raster, naming the count.
    (folder / f"{SN6}.bands").write_text("bands=red,green,blue\n")
    with pytest.raises(RsbenchError, match=r"names 3 band\(s\) but the raster has 4"):
        _build(tmp_path / "bad", inputs=[folder])


def test_input_list_options_parse_and_bad_key(tmp_path):
    assert list_line_options("my scenes/a b.tif  bands=red,green sensor=naip") == (
        "my scenes/a b.tif",
        {"bands": "red,green", "sensor": "naip"},
    )
    assert list_line_options("/data/x=y.tif") == ("/data/x=y.tif", {})
    listing = tmp_path / "l.txt"
    (tmp_path / "a.tif").write_bytes(b"")
    listing.write_text("a.tif  colour=red\n")
    with pytest.raises(DataError, match=r"input list .*l.txt line 1: unknown option\(s\) colour"):
        _build(tmp_path / "c", listing)


def test_old_corpus_json_keyed_by_count_is_upgraded_and_chosen():
    old = {
        "band_groups": {
            "3": {"bands": 3, "tiles": 82, "band_names": ["B1", "B2", "B3"], "stats": {}, "shards": []},
            "4": {"bands": 4, "tiles": 166, "band_names": ["B1", "B2", "B3", "B4"], "stats": {}, "shards": []},
        },
        "shards": [],
        "settings": {},
    }
    info = upgrade_band_groups(old)
    assert info["band_groups"]["4"]["key"] == "4" and info["band_groups"]["4"]["sensors"] == {}
    assert choose_group(old)["bands"] == 4 and choose_group(old, "3")["tiles"] == 82
    with pytest.raises(DataError, match="no 6-band band group"):
        choose_group(old, 6)


def test_choose_group_by_names_count_and_key():
    def group(key, names, tiles):
        return {"key": key, "bands": len(names), "tiles": tiles, "band_names": names, "units": key.split("|")[1]}

    info = {
        "band_groups": {
            g["key"]: g
            for g in (
                group("red,green,blue|uint8", ["red", "green", "blue"], 228),
                group("red,green,blue|uint16", ["red", "green", "blue"], 74),
                group("B1,B2,B3,B4|uint8", ["B1", "B2", "B3", "B4"], 300),
            )
        }
    }
    assert choose_group(info)["key"] == "B1,B2,B3,B4|uint8"  # default: the most tiles, not the most bands
    assert choose_group(info, "red,green,blue")["key"] == "red,green,blue|uint8"  # the larger of two units
    assert choose_group(info, ["R", "G", "B"])["key"] == "red,green,blue|uint8"  # any spelling
    assert choose_group(info, "red,green,blue|uint16")["tiles"] == 74
    assert choose_group(info, 3)["key"] == "red,green,blue|uint8"
    with pytest.raises(DataError, match="no 'blue,green,red' band group"):
        choose_group(info, "blue,green,red")  # another order is another group


def test_benchmark_refuses_a_run_whose_band_group_misses_the_task_bands(tmp_path, rasters_dir, eurosat_dir):
    """A 4-band group pretrained for a 3-band (RGB) task fails at plan time, naming both and the fix."""
    from rsbench.benchmark.plan import load_plan

    listing = tmp_path / "archive.txt"
    listing.write_text(f"{rasters_dir / NAIP}  bands=red,green,blue,nir\n")
    _build(tmp_path / "rgbn", listing)  # one group: red,green,blue,nir|uint8
    _build(tmp_path / "both", listing, bands=["red", "green", "blue"])  # one group: red,green,blue|uint8

    def experiment(corpus, bands=None):
        path = tmp_path / "exp.yaml"
        extra = f"\n    bands: {bands}" if bands else ""
        path.write_text(
            f"name: fit\nout: {tmp_path / 'out'}\npretrain:\n  defaults:\n    corpus: {corpus}{extra}\n"
            f"    max_steps: 2\n  runs:\n    - name: simclr\n      method: simclr\n"
            f"tasks:\n  - name: eurosat\n    data: {eurosat_dir}\nprotocols: [knn]\nseeds: [0]\n"
        )
        return path

    with pytest.raises(RsbenchError) as err:
        load_plan(experiment(tmp_path / "rgbn"), check=True)
    message = str(err.value)
    assert (
        "band group of 4 band(s): red,green,blue,nir (uint8)" in message and "task 'eurosat' has 3 band(s)" in message
    )
    assert "rsbench corpus build ... --out" in message and "--bands red,green,blue --overwrite" in message
    with pytest.raises(RsbenchError, match="no 'red,green' band group"):
        load_plan(experiment(tmp_path / "rgbn", "red,green"), check=True)
    plan = load_plan(experiment(tmp_path / "both", "red,green,blue"), check=True)
    assert any(c.kind == "pretrain" for c in plan.cells)
