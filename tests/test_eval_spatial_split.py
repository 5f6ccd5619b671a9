"""Spatial splits (`split: spatial`, rsbench.evaluate.datasets.spatial) on real georeferenced data: the
SpaceNet-4 chip and the NAIP raster cut into GeoTIFF tiles. Distances are checked with rasterio's window
bounds and shapely, independently of the split's own footprint arithmetic."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from pydantic import ValidationError
from rasterio.windows import Window, bounds
from rich.console import Console

from rsbench.contracts.results import upgrade_row
from rsbench.errors import ConfigError
from rsbench.evaluate import EvaluateConfig, evaluate
from rsbench.evaluate.datasets.spatial import read_georefs, spatial_split
from rsbench.evaluate.datasets.tiling import grid_windows

SPACENET = "segmentation/spacenet4_atlanta_sample"
NAIP = "rasters/naip_m_4709963_se_14_1_20190904_rgbn_5m.tif"


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def _boxes(regions, paths) -> list:
    """Each region's footprint as a shapely box, from rasterio's own window bounds."""
    out = []
    for r in regions:
        with rasterio.open(paths[r.scene]) as src:
            w = r.window
            out.append(shapely.box(*bounds(Window(w.col, w.row, w.width, w.height), src.transform)))
    return out


def _check_separated(train, test, paths, block_m: float, pixel_m: float) -> None:
    train_boxes, test_boxes = _boxes(train, paths), _boxes(test, paths)
    nearest = min(a.distance(b) for a in train_boxes for b in test_boxes)
    assert nearest >= block_m - 1e-6, f"a train region lies {nearest} m from a test region"
    # Train and test never share a pixel, and every region lies inside one block (up to the pixel that a
    # block edge cuts when the pixel grid is not aligned with the block grid).
    assert not {(r.scene, r.window) for r in train} & {(r.scene, r.window) for r in test}
    for box in train_boxes + test_boxes:
        x0, y0, x1, y1 = box.bounds
        assert np.floor((x0 + pixel_m) / block_m) == np.floor((x1 - pixel_m) / block_m)
        assert np.floor((y0 + pixel_m) / block_m) == np.floor((y1 - pixel_m) / block_m)


def test_spacenet_chip_blocks_keep_train_away_from_test(shared_data: Path):
    path = shared_data / SPACENET / "spacenet4_atlanta_pan_0.5m.tif"  # 900 x 900 px at 0.5 m: 450 m
    georefs, shapes = read_georefs([path]), [(900, 900)]
    train, test, how, spec = spatial_split(shapes, georefs, 100.0, 0.2, seed=0)
    assert spec["kind"] == "spatial" and spec["crs"] == "EPSG:32616"
    assert spec["blocks"] == 30 and len(spec["test_blocks"]) == 6  # 5 x 6 blocks of 100 m touch the chip
    assert train and test and spec["dropped_regions"] > 0 and "30 blocks of 100 m" in how
    _check_separated(train, test, [path], 100.0, 0.5)
    again = spatial_split(shapes, georefs, 100.0, 0.2, seed=0)
    assert again[:2] == (train, test)  # deterministic per seed
    assert spatial_split(shapes, georefs, 100.0, 0.2, seed=1)[1] != test
    # Pixels: train + test + dropped cover the chip exactly once.
    cover = np.zeros((900, 900), np.int64)
    for r in train + test:
        cover[r.window.row : r.window.row + r.window.height, r.window.col : r.window.col + r.window.width] += 1
    assert cover.max() == 1


def test_raster_tiled_into_geotiffs_splits_across_tiles(shared_data: Path, tmp_path: Path):
    """NAIP (5 m) cut into 240 px GeoTIFF tiles by the evaluation tiling: one block grid spans the tiles."""
    paths = []
    with rasterio.open(shared_data / NAIP) as src:
        for i, w in enumerate(grid_windows(src.height, src.width, 240)):
            win = Window(w.col, w.row, w.width, w.height)
            profile = {**src.profile, "height": w.height, "width": w.width, "transform": src.window_transform(win)}
            paths.append(tmp_path / f"tile_{i}.tif")
            with rasterio.open(paths[-1], "w", **profile) as dst:
                dst.write(src.read(window=win))
    shapes = [(rasterio.open(p).height, rasterio.open(p).width) for p in paths]
    train, test, _, spec = spatial_split(shapes, read_georefs(paths), 500.0, 0.25, seed=3)
    assert len({r.scene for r in train}) > 1 and len({r.scene for r in test}) > 1
    _check_separated(train, test, paths, 500.0, 5.0)


def test_spatial_split_runs_and_is_recorded_in_rows(shared_data: Path, tmp_path: Path):
    cfg = EvaluateConfig(
        task="segmentation",
        data=shared_data / SPACENET,
        out=tmp_path,
        adapter="vector",
        classes=["background", "building"],
        options={"images": "spacenet4_atlanta_pan_0.5m.tif", "labels": "spacenet4_atlanta_buildings.geojson"},
        init="random",
        image_size=64,
        seeds=[0],
        epochs=1,
        batch_size=32,
        decoder="linear",
        split="spatial",
        block_m=150,
        test_fraction=0.3,
        fractions=[0.5],
    )
    rows = evaluate(cfg, console=quiet())
    spec = rows[0]["split_spec"]
    assert spec["kind"] == "spatial" and spec["block_m"] == 150 and spec["buffer_m"] == 150
    assert rows[0]["split"].startswith("spatial: ") and all(r["split_spec"] == spec for r in rows)


def test_spatial_split_errors(shared_data: Path, dubai_task: dict, tmp_path: Path):
    dubai = shared_data / "segmentation" / "dubai_aerial" / "tile_1"
    base = {"task": "segmentation", "data": dubai, "init": "random", "out": tmp_path, "protocol": ["frozen"]}
    options = dubai_task["options"]
    cfg = EvaluateConfig(**base, split="spatial", block_m=500, classes=list("abcdef"), options=options)
    with pytest.raises(
        ConfigError, match=r"split: spatial needs georeferenced images; .*image_part_001.jpg has no CRS"
    ):
        evaluate(cfg, console=quiet())
    with pytest.raises(ValidationError, match="needs block_m"):
        EvaluateConfig(**base, split="spatial")
    with pytest.raises(ValidationError, match="split: spatial is for tasks segmentation, detection"):
        EvaluateConfig(**{**base, "task": "classification", "protocol": ["knn"]}, split="spatial", block_m=500)


def test_rows_before_version_3_read_their_split_spec():
    v2 = {"schema_version": 2, "task": "t", "dataset": "d", "protocol": "p", "init": "i", "label_fraction": 1.0}
    assert upgrade_row({**v2, "split": "fixed (--test-data)"})["split_spec"] == {"kind": "fixed"}
    assert upgrade_row({**v2, "split": "stratified test_fraction=0.2"})["split_spec"] == {"kind": "random"}
    assert upgrade_row({**v2, "split": None})["split_spec"] is None
    row = upgrade_row({**v2, "schema_version": 3, "split_spec": {"kind": "spatial", "block_m": 500.0}})
    assert row["split_spec"]["block_m"] == 500.0
