"""Band names -> canonical bands -> where ImageNet's R, G, B filters go. Real band lists of Sentinel-2,
Landsat 8 and Landsat 7, the band descriptions of the shared rasters, and GeoTIFF chips cut from them."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import rasterio
import timm
import torch
from rasterio.windows import Window
from rich.console import Console
from typer.testing import CliRunner

from rsbench.bands import CANONICAL_BANDS, band_code, canonical_band, infer_sensor, pick_bands
from rsbench.cli import app
from rsbench.errors import ConfigError
from rsbench.evaluate import EvaluateConfig, evaluate
from rsbench.evaluate.band_mapping import imagenet_band_mapping, rgb_indices
from rsbench.evaluate.cls_data import geotiff_band_names, load_classification

L8 = "landsat8_oli_LC80200392015216LGN00_B1-B7_30m.tif"  # B1_coastal, B2_blue, ..., B7_swir2
S2 = "sentinel2_l1c_T18SVG_20160112_20m_6band.tif"  # B05_rededge1 ... B12_swir2: no visible band
NAIP = "naip_m_4709963_se_14_1_20190904_rgbn_5m.tif"  # R, G, B, NIR, no descriptions
L7 = "landsat7_etm_RGB.byte.tif"  # 3 bands, no descriptions

S2_BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
S2_CANON = [
    "coastal",
    "blue",
    "green",
    "red",
    "rededge1",
    "rededge2",
    "rededge3",
    "nir",
    "rededge4",
    "water_vapour",
    "cirrus",
    "swir1",
    "swir2",
]
L8_BANDS = [f"B{i}" for i in range(1, 12)]
L8_CANON = ["coastal", "blue", "green", "red", "nir", "swir1", "swir2", "pan", "cirrus", "tir1", "tir2"]
L7_BANDS = [f"B{i}" for i in range(1, 9)]
L7_CANON = ["blue", "green", "red", "nir", "swir1", "tir", "swir2", "pan"]


def descriptions(path: Path) -> list[str | None]:
    with rasterio.open(path) as src:
        return list(src.descriptions)


@pytest.mark.parametrize(
    "sensor,bands,expected",
    [
        ("sentinel2", S2_BANDS, S2_CANON),
        (
            "sentinel2",
            ["B1", "B2", "B3", "B4", "B8", "b8a", "B08A", "B11"],
            ["coastal", "blue", "green", "red", "nir", "rededge4", "rededge4", "swir1"],
        ),
        ("landsat8", L8_BANDS, L8_CANON),
        ("landsat9", ["SR_B2", "SR_B3", "SR_B4", "SR_B5"], ["blue", "green", "red", "nir"]),
        ("landsat7", L7_BANDS, L7_CANON),
    ],
)
def test_canonical_names_of_sensor_band_lists(sensor, bands, expected):
    assert [canonical_band(b, sensor) for b in bands] == expected
    assert set(expected) <= set(CANONICAL_BANDS)


def test_band_4_is_ambiguous_without_a_sensor():
    # Sentinel-2 B04 and Landsat 8 B4 are red; Landsat 7 ETM+ B4 is near-infrared.
    assert [canonical_band("B4", s) for s in ("sentinel2", "landsat8", "landsat7")] == ["red", "red", "nir"]
    for name in ("B4", "B04", "band 4", "4", "SR_B4"):
        with pytest.raises(ConfigError, match="bare band number") as e:
            canonical_band(name)
        assert "\n" not in str(e.value) and "--rgb-bands" in str(e.value) and "Landsat 7" in str(e.value)
    with pytest.raises(ConfigError, match="unknown sensor 'landsat6'"):
        canonical_band("B4", "landsat6")


@pytest.mark.parametrize(
    "name,expected",
    [
        ("red", "red"),
        ("R", "red"),
        ("Red", "red"),
        ("G", "green"),
        ("b", "blue"),
        ("NIR", "nir"),
        ("B4_red", "red"),
        ("Band 4 (red)", "red"),
        ("red (B4)", "red"),
        ("B04 - Red", "red"),
        ("Red Edge 1", "rededge1"),
        ("B05_rededge1", "rededge1"),
        ("B8A_narrownir", "rededge4"),
        ("Band 8A (narrow NIR)", "rededge4"),
        ("near-infrared", "nir"),
        ("SWIR 1", "swir1"),
        ("swir16", "swir1"),
        ("swir22", "swir2"),
        ("Coastal aerosol", "coastal"),
        ("panchromatic", "pan"),
        ("VV", None),
        ("elevation", None),
        ("", None),
    ],
)
def test_names_and_descriptions_resolve_by_the_word(name, expected):
    # The word decides, whatever the sensor: Landsat 7's B4 would be near-infrared.
    assert canonical_band(name) == expected
    assert canonical_band(name, "landsat7") == expected


def test_descriptions_of_the_shared_rasters(rasters_dir):
    l8, s2 = descriptions(rasters_dir / L8), descriptions(rasters_dir / S2)
    assert [canonical_band(d) for d in l8] == ["coastal", "blue", "green", "red", "nir", "swir1", "swir2"]
    assert [canonical_band(d) for d in s2] == ["rededge1", "rededge2", "rededge3", "rededge4", "swir1", "swir2"]
    assert [band_code(d) for d in l8] == L8_BANDS[:7] and band_code(s2[3]) == "B8A"
    assert rgb_indices(l8) == (3, 2, 1)
    m = imagenet_band_mapping(7, l8)
    assert m == {"red": 3, "green": 2, "blue": 1, "others": "mean RGB filter", "source": "band names", "bands": l8}
    with pytest.raises(ConfigError, match="two|more than one"):
        canonical_band("red green")


def test_rgb_indices_from_names_and_rgb_bands():
    assert rgb_indices(["B02", "B03", "B04", "B08"]) == (2, 1, 0)  # Sentinel-2 spelling: no sensor needed
    assert infer_sensor(["B02", "B03", "B04", "B08"]) == "sentinel2" and infer_sensor(["B2", "B3", "B4"]) is None
    assert rgb_indices(S2_BANDS) == (3, 2, 1)
    assert rgb_indices(["B2", "B3", "B4", "B5"], sensor="landsat8") == (2, 1, 0)
    assert rgb_indices(["B1", "B2", "B3", "B4"], sensor="landsat7") == (2, 1, 0)
    assert rgb_indices(["blue", "green", "red"]) == (2, 1, 0)  # BGR
    assert rgb_indices(["red", "green", "blue", "nir"]) == (0, 1, 2)
    # --rgb-bands: 1-based indices (also as ints), exact names, or colour words matched to the names.
    assert rgb_indices(None, ["4", "3", "2"], in_chans=4) == (3, 2, 1)
    assert rgb_indices(None, [3, 2, 1], in_chans=3) == (2, 1, 0)
    assert rgb_indices(["B4", "B3", "B2", "B5"], ["B4", "B3", "B2"]) == (0, 1, 2)
    assert rgb_indices(["B02", "B03", "B04", "B08"], ["red", "green", "blue"]) == (2, 1, 0)
    assert rgb_indices(["nir", "red", "green"], ["1", "2", "3"]) == (0, 1, 2)  # false colour, on purpose
    # 3 unnamed bands: RGB, recorded as an assumption.
    assert imagenet_band_mapping(3) == {
        "red": 0,
        "green": 1,
        "blue": 2,
        "others": "mean RGB filter",
        "source": "assumed RGB order (3 unnamed bands)",
    }
    s2 = imagenet_band_mapping(4, ["B02", "B03", "B04", "B08"])
    assert s2["sensor"] == "sentinel2 (inferred from the band names)"
    assert imagenet_band_mapping(1)["red"] is None


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"in_chans": 6, "bands": "S2"}, "no band is red"),
        ({"in_chans": 4}, "4 unnamed bands"),
        ({"in_chans": 4, "bands": ["B4", "B3", "B2", "B5"]}, "bare band number"),
        ({"in_chans": 4, "bands": ["red", "red", "green", "blue"]}, "are all red"),
        ({"in_chans": 3, "bands": ["nir", "red", "green"]}, "no band is blue"),
        ({"in_chans": 4, "bands": ["red", "green", "blue"]}, "names 3 band"),
        ({"in_chans": 4, "rgb_bands": ["5", "3", "2"]}, "out of range"),
        ({"in_chans": 4, "rgb_bands": ["4", "3"]}, "exactly 3"),
        ({"in_chans": 4, "rgb_bands": ["2", "2", "1"]}, "same band twice"),
        ({"in_chans": 4, "rgb_bands": ["B04", "B03", "B02"]}, "not named"),
        ({"in_chans": 4, "bands": ["B02", "B03", "B04", "B08"], "rgb_bands": ["B05", "B03", "B02"]}, "not among"),
    ],
)
def test_rgb_errors_are_one_line_naming_the_fix(rasters_dir, kwargs, match):
    if kwargs.get("bands") == "S2":
        kwargs = {**kwargs, "bands": descriptions(rasters_dir / S2)}
    with pytest.raises(ConfigError, match=match) as e:
        imagenet_band_mapping(**kwargs)
    assert "\n" not in str(e.value) and "--rgb-bands" in str(e.value)


# ---------------------------------------------------------------- GeoTIFF chips of the shared rasters


def write_chips(
    src_path: Path, root: Path, per_class: int = 6, size: int = 32, names: list[str] | None | str = "keep"
) -> Path:
    """An ImageFolder of `size` px GeoTIFF chips: class 'a' from the raster's top rows, 'b' from further down.
    names: 'keep' the raster's band descriptions, a list to write, or None to write none."""
    with rasterio.open(src_path) as src:
        profile = {
            "driver": "GTiff",
            "width": size,
            "height": size,
            "count": src.count,
            "dtype": src.dtypes[0],
            "crs": src.crs,
        }
        desc = list(src.descriptions) if names == "keep" else names
        for c, row in (("a", 100), ("b", 400)):
            (root / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                win = Window(100 + i * size, row, size, size)
                with rasterio.open(root / c / f"{i}.tif", "w", transform=src.window_transform(win), **profile) as dst:
                    dst.write(src.read(window=win))
                    for b, d in enumerate(desc or [], start=1):
                        dst.set_band_description(b, d)
    return root


def test_geotiff_descriptions_become_band_names(rasters_dir, tmp_path):
    l8 = write_chips(rasters_dir / L8, tmp_path / "l8")
    data = load_classification(EvaluateConfig(data=l8, init="random", out=tmp_path))
    assert data.band_names == descriptions(rasters_dir / L8)
    naip = write_chips(rasters_dir / NAIP, tmp_path / "naip", names=None)
    assert load_classification(EvaluateConfig(data=naip, init="random", out=tmp_path)).band_names is None
    # Not the same in every file: unknown.
    with rasterio.open(l8 / "b" / "0.tif", "r+") as dst:
        dst.set_band_description(4, "red")
    assert geotiff_band_names(sorted(l8.rglob("*.tif"))) is None


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def features(out: Path, row: dict) -> torch.Tensor:
    return torch.load(out / "features" / f"{row['features_key']}.pt", weights_only=True)["features"]


def test_imagenet_on_landsat8_chips_maps_rgb_by_the_band_descriptions(rasters_dir, tmp_path):
    """Described chips (B1_coastal ... B7_swir2) need no flag and give the features of the same pixels
    without descriptions and --rgb-bands 4,3,2; channels 0-2 (coastal, blue, green) as R, G, B differ."""
    torch.save(timm.create_model("resnet18").state_dict(), tmp_path / "in1k.pth")
    named = write_chips(rasters_dir / L8, tmp_path / "named")
    plain = write_chips(rasters_dir / L8, tmp_path / "plain", names=None)
    kw = {"init": "imagenet", "weights": tmp_path / "in1k.pth", "image_size": 32, "protocol": ["knn"], "seeds": [0]}
    by_names = evaluate(EvaluateConfig(data=named, out=tmp_path / "o1", **kw), console=quiet())
    by_flag = evaluate(
        EvaluateConfig(data=plain, out=tmp_path / "o2", rgb_bands=["4", "3", "2"], **kw), console=quiet()
    )
    first3 = evaluate(EvaluateConfig(data=plain, out=tmp_path / "o3", rgb_bands=["1", "2", "3"], **kw), console=quiet())
    a, b, c = (features(tmp_path / o, r[0]) for o, r in (("o1", by_names), ("o2", by_flag), ("o3", first3)))
    assert torch.equal(a, b) and not torch.allclose(a, c, atol=1e-3)
    assert by_names[0]["band_mapping"] == imagenet_band_mapping(7, descriptions(rasters_dir / L8))
    assert by_flag[0]["band_mapping"]["source"] == "--rgb-bands"

    res = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--data",
            str(plain),
            "--init",
            "imagenet",
            "--weights",
            str(tmp_path / "in1k.pth"),
            "--out",
            str(tmp_path / "o4"),
        ],
    )
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 1 and len(lines) == 1, res.output
    assert "7 unnamed bands" in lines[0] and "--bands" in lines[0] and "--rgb-bands 4,3,2" in lines[0]
    assert not (tmp_path / "o4" / "results.jsonl").exists()


def test_naip_rgbn_needs_its_band_names(rasters_dir, tmp_path):
    naip = write_chips(rasters_dir / NAIP, tmp_path / "naip", per_class=3, names=None)
    base = {"data": naip, "out": tmp_path, "init": "imagenet", "protocol": ["knn"]}
    from rsbench.evaluate.inits import resolve_init

    with pytest.raises(ConfigError, match="4 unnamed bands"):
        resolve_init(EvaluateConfig(**base), 4, quiet())
    init = resolve_init(EvaluateConfig(**base, bands=["red", "green", "blue", "nir"]), 4, quiet())
    assert init.band_mapping == {
        "red": 0,
        "green": 1,
        "blue": 2,
        "others": "mean RGB filter",
        "source": "band names",
        "bands": ["red", "green", "blue", "nir"],
    }
    # The Landsat 7 colour composite: 3 unnamed bands, taken as RGB (and recorded as an assumption).
    l7 = write_chips(rasters_dir / L7, tmp_path / "l7", per_class=3, names=None)
    cfg = EvaluateConfig(**{**base, "data": l7})
    assert load_classification(cfg).band_names is None
    init = resolve_init(cfg, 3, quiet())
    assert init.band_mapping["source"] == "assumed RGB order (3 unnamed bands)"
    assert [init.band_mapping[c] for c in ("red", "green", "blue")] == [0, 1, 2]
    assert "rgb" not in init.identity  # the weights rsbench always built for RGB: feature caches stay valid


def test_pick_bands_by_any_spelling_and_missing_named():
    # An RGB teacher on a Sentinel-2 corpus: red, green, blue are B04, B03, B02 (Sentinel-2 spelling inferred).
    assert pick_bands(["red", "green", "blue"], S2_BANDS) == [3, 2, 1]
    # Landsat 8 descriptions carry the colour word; exact names win over canonical ones.
    l8 = ["B1_coastal", "B2_blue", "B3_green", "B4_red", "B5_nir", "B6_swir1", "B7_swir2"]
    assert pick_bands(["B4_red", "nir"], l8) == [3, 4]
    with pytest.raises(ConfigError, match=r"band\(s\) red, green not found in the corpus"):
        pick_bands(["red", "green", "nir"], ["B05", "B06", "B07", "B08", "B11", "B12"], what="the corpus")
