"""Synthetic quickstart data: real GeoTIFFs, deterministic, and classes that need texture to separate."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Compression
from rasterio.transform import from_origin

from rsbench.data import index_image_folder, read_image
from rsbench.data.synthetic import (
    CLASS_NAMES,
    LAND_COVER_CLASSES,
    generate_classification_set,
    generate_scene,
    generate_scenes,
    render_chip,
    render_scene,
)
from rsbench.errors import ConfigError


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def _frame(size: int, border: int) -> np.ndarray:
    frame = np.ones((size, size), bool)
    frame[border : size - border, border : size - border] = False
    return frame


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_scene(
        tmp_path_factory.mktemp("scene") / "s.tif",
        size=128,
        seed=3,
        nodata_border=8,
        crs="EPSG:32633",
        origin=(400000.0, 5000000.0),
        gsd=20.0,
    )


def test_scene_is_a_georeferenced_tiled_geotiff(scene: Path) -> None:
    with rasterio.open(scene) as src:
        assert (src.count, src.width, src.height) == (4, 128, 128)
        assert src.dtypes == ("uint16",) * 4
        assert src.crs == CRS.from_epsg(32633)
        assert src.transform == from_origin(400000.0, 5000000.0, 20.0, 20.0)
        assert src.bounds == (400000.0, 5000000.0 - 128 * 20, 400000.0 + 128 * 20, 5000000.0)
        assert src.nodata == 0
        assert src.descriptions == ("blue", "green", "red", "nir")
        assert src.profile["tiled"] and src.block_shapes == [(64, 64)] * 4
        assert src.compression == Compression.deflate
    # The atomic write leaves no temp file behind.
    assert sorted(p.name for p in scene.parent.iterdir()) == ["s.tif"]


def test_scene_footprint_border_and_collar(scene: Path) -> None:
    img = _read(scene)
    zero = img == 0
    # Nodata is all bands at once, never a single dark band.
    assert (zero.all(axis=0) == zero.any(axis=0)).all()
    nodata = zero[0]
    assert nodata[_frame(128, 8)].all()
    assert not nodata[32:96, 32:96].any()
    # The collar cuts into the interior on one side, but only partly.
    extra = nodata & ~_frame(128, 8)
    assert 0.01 < extra.mean() < 0.2

    plain, class_map = render_scene(128, seed=3, nodata_border=8, collar=False)
    assert ((plain == 0).all(axis=0) == _frame(128, 8)).all()
    assert ((class_map == -1) == _frame(128, 8)).all()


def test_scene_mixes_all_classes() -> None:
    for seed in range(3):
        img, class_map = render_scene(256, seed=seed)
        assert img.shape == (4, 256, 256) and img.dtype == np.uint16
        assert set(np.unique(class_map)) == {-1, 0, 1, 2, 3, 4}
        assert ((img[0] == 0) == (class_map == -1)).all()


def test_generate_scenes_are_adjacent_distinct_tiles(tmp_path: Path) -> None:
    paths = generate_scenes(tmp_path, n=3, size=64, seed=1)
    assert [p.name for p in paths] == ["scene_000.tif", "scene_001.tif", "scene_002.tif"]
    lefts = []
    for p in paths:
        with rasterio.open(p) as src:
            assert src.shape == (64, 64) and src.count == 4
            lefts.append(src.bounds.left)
    assert lefts == [500000.0, 500640.0, 501280.0]
    assert not np.array_equal(_read(paths[0]), _read(paths[1]))


def test_same_seed_same_data_different_seed_different(tmp_path: Path) -> None:
    a = _read(generate_scene(tmp_path / "a.tif", size=96, seed=7))
    b = _read(generate_scene(tmp_path / "b.tif", size=96, seed=7))
    c = _read(generate_scene(tmp_path / "c.tif", size=96, seed=8))
    assert np.array_equal(a, b)
    both_valid = (a[0] > 0) & (c[0] > 0)
    assert both_valid.mean() > 0.3 and (a[:, both_valid] != c[:, both_valid]).mean() > 0.9
    assert np.array_equal(render_chip("urban", 32, seed=(0, 3, 1)), render_chip("urban", 32, seed=(0, 3, 1)))
    assert not np.array_equal(render_chip("urban", 32, seed=(0, 3, 1)), render_chip("urban", 32, seed=(0, 3, 2)))


def _chips(name: str, n: int = 40, seed: int = 11) -> np.ndarray:
    return np.stack([render_chip(name, 32, seed=(seed, i)) for i in range(n)]).astype(np.float64)


def test_class_spectra_are_plausible_but_not_constant() -> None:
    chips = {name: _chips(name) for name in CLASS_NAMES}
    ratio = {name: (c[:, 3] / c[:, 2]).mean() for name, c in chips.items()}  # NIR / red
    assert ratio["forest"] > 4 * ratio["water"] and ratio["cropland"] > 2 * ratio["water"]
    assert ratio["water"] < 1 < min(ratio[n] for n in CLASS_NAMES if n != "water")
    assert ratio["forest"] > max(ratio["urban"], ratio["bare_soil"])
    # Vegetation wins per chip too, not just on average.
    per_chip = {name: (c[:, 3] / c[:, 2]).mean(axis=(1, 2)) for name, c in chips.items()}
    assert per_chip["forest"].min() > per_chip["water"].max()

    # Per-sample illumination makes the brightness of a class vary widely ...
    brightness = {name: c.mean(axis=(1, 2, 3)) for name, c in chips.items()}
    for name, b in brightness.items():
        assert b.std() / b.mean() > 0.1, name
    # ... so that the brightness ranges of the bright classes overlap.
    for x, y in [("urban", "bare_soil"), ("urban", "cropland"), ("cropland", "bare_soil")]:
        assert brightness[x].min() < brightness[y].max() and brightness[y].min() < brightness[x].max(), (x, y)


def test_class_textures_differ() -> None:
    def rel_grad(c: np.ndarray) -> np.ndarray:  # mean |horizontal gradient| relative to brightness, per chip
        return np.abs(np.diff(c, axis=3)).mean(axis=(1, 2, 3)) / c.mean(axis=(1, 2, 3))

    water, urban, forest = rel_grad(_chips("water")), rel_grad(_chips("urban")), rel_grad(_chips("forest"))
    assert urban.mean() > 2 * water.mean()
    assert forest.mean() > 1.3 * water.mean()
    # Urban blocks: streets are much darker than roofs, so a chip spans a wide range of values.
    u = _chips("urban")
    assert (np.percentile(u[:, 0], 95, axis=(1, 2)) / np.percentile(u[:, 0], 5, axis=(1, 2))).mean() > 1.5

    # Cropland rows are oriented: the NIR gradient structure tensor is anisotropic, unlike the other
    # textures (centred differences, so that white sensor noise alone scores ~0).
    def anisotropy(name: str) -> float:
        c = _chips(name)[:, 3]
        gx, gy = c[:, 1:-1, 2:] - c[:, 1:-1, :-2], c[:, 2:, 1:-1] - c[:, :-2, 1:-1]
        jxx, jyy, jxy = (gx * gx).mean((1, 2)), (gy * gy).mean((1, 2)), (gx * gy).mean((1, 2))
        return float((np.sqrt((jxx - jyy) ** 2 + 4 * jxy**2) / (jxx + jyy)).mean())

    assert anisotropy("cropland") > 2 * max(anisotropy(n) for n in CLASS_NAMES if n != "cropland")


def test_mean_colour_alone_is_not_enough() -> None:
    """A nearest-centroid classifier on per-chip mean colour errs clearly more than one that also sees texture."""

    def features(seed: int) -> tuple[np.ndarray, np.ndarray]:
        rows, labels = [], []
        for label, name in enumerate(CLASS_NAMES):
            for c in _chips(name, n=60, seed=seed):
                mean = c.mean(axis=(1, 2))
                rows.append(np.r_[np.log(mean), np.log(np.abs(np.diff(c, axis=2)).mean(axis=(1, 2)) / mean)])
                labels.append(label)
        return np.array(rows), np.array(labels)

    (f_train, y_train), (f_test, y_test) = features(1), features(2)

    def accuracy(cols: slice) -> float:
        mu, sd = f_train[:, cols].mean(0), f_train[:, cols].std(0)
        a, b = (f_train[:, cols] - mu) / sd, (f_test[:, cols] - mu) / sd
        centroids = np.stack([a[y_train == k].mean(0) for k in range(len(CLASS_NAMES))])
        return float((((b[:, None] - centroids[None]) ** 2).sum(-1).argmin(1) == y_test).mean())

    colour, colour_and_texture = accuracy(slice(0, 4)), accuracy(slice(0, 8))
    assert 0.5 < colour < 0.92
    assert colour_and_texture > colour + 0.04


def test_invalid_arguments_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown land-cover class 'glacier'"):
        render_chip("glacier")
    with pytest.raises(ConfigError, match="nodata_border"):
        render_scene(64, nodata_border=17)


def test_classification_set_layout(tmp_path: Path) -> None:
    root = generate_classification_set(tmp_path / "cls", per_class=6, size=32, seed=2)
    assert root == tmp_path / "cls"
    assert sorted(d.name for d in root.iterdir()) == sorted(CLASS_NAMES) == sorted(c.name for c in LAND_COVER_CLASSES)
    for name in CLASS_NAMES:
        assert sorted(p.name for p in (root / name).iterdir()) == [f"{name}_{i:04d}.tif" for i in range(6)]

    index = index_image_folder(root)
    assert index.classes == sorted(CLASS_NAMES)
    assert len(index.paths) == 30 and np.bincount(index.labels).tolist() == [6] * 5
    for path in index.paths[::7]:
        arr = read_image(path)
        assert arr.shape == (4, 32, 32) and arr.dtype == np.uint16 and arr.min() > 0
        with rasterio.open(path) as src:
            assert src.crs == CRS.from_epsg(32631) and src.transform.a == 10.0 and src.nodata == 0
            assert src.descriptions == ("blue", "green", "red", "nir") and src.tags()["class"] == path.parent.name
    # The files hold exactly what the renderer produces for (seed, class, index).
    c = CLASS_NAMES.index("forest")
    assert np.array_equal(read_image(root / "forest" / "forest_0004.tif"), render_chip("forest", 32, seed=(2, c, 4)))


def test_default_quickstart_data_is_fast(tmp_path: Path) -> None:
    start = time.perf_counter()
    scenes = generate_scenes(tmp_path / "scenes", n=4, size=512, seed=0)
    generate_classification_set(tmp_path / "cls", per_class=60, size=32, seed=0)
    elapsed = time.perf_counter() - start
    assert elapsed < 20, f"default synthetic data took {elapsed:.1f}s"
    assert len(scenes) == 4 and len(index_image_folder(tmp_path / "cls").paths) == 300
