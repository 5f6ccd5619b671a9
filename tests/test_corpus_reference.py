"""The radiometric reference: a small raster's comes from all its pixels (one read), a large one's from a
lattice sample that grows with its area."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import rasterio
from rasterio.windows import Window

from rsbench.corpus.raster import (
    REFERENCE_LATTICE,
    WHOLE_READ_PIXELS,
    open_grid,
    probe_raster,
    reference_lattice,
)

NAIP = "naip_m_4709963_se_14_1_20190904_rgbn_5m.tif"


def test_small_raster_reference_is_the_percentiles_of_all_its_pixels(rasters_dir: Path, tmp_path: Path):
    with rasterio.open(rasters_dir / NAIP) as src:
        window = Window(100, 200, 128, 96)
        pixels = src.read(window=window)
        profile = {**src.profile, "width": 128, "height": 96, "transform": src.window_transform(window)}
    for key in ("blockxsize", "blockysize"):
        profile.pop(key, None)
    profile.update(tiled=False)
    chip = tmp_path / "chip.tif"
    with rasterio.open(chip, "w", **profile) as dst:
        dst.write(pixels)
    info = probe_raster(str(chip))
    flat = pixels.reshape(pixels.shape[0], -1).astype(np.float64)
    flat = flat[:, ~(pixels == 0).all(axis=0).ravel()]  # implicit nodata: 0 in every band
    assert np.allclose(info["reference"]["low"], np.percentile(flat, 2, axis=1))
    assert np.allclose(info["reference"]["high"], np.percentile(flat, 98, axis=1))


def test_whole_read_counts_reads(rasters_dir: Path, monkeypatch):
    """The NAIP raster (934 x 723 px) is above the whole-read size: it is sampled, 8 x 8 windows."""
    from rsbench.corpus import raster

    calls = []
    original = raster.read_block
    monkeypatch.setattr(raster, "read_block", lambda *a: calls.append(a[2]) or original(*a))
    info = probe_raster(str(rasters_dir / NAIP))
    assert info["width"] * info["height"] > WHOLE_READ_PIXELS
    assert len(calls) == REFERENCE_LATTICE[0] ** 2
    with open_grid(info) as reader:
        calls.clear()
        raster.radiometric_reference(reader, {**info, "width": 500, "height": 500})
    assert len(calls) == 1 and (calls[0].width, calls[0].height) == (500, 500)


def test_lattice_grows_with_the_area():
    assert reference_lattice(600, 600) == REFERENCE_LATTICE[0]
    assert reference_lattice(4096, 4096) == 16  # 1/16 of the area in 64 px windows
    assert reference_lattice(10980, 10980) == REFERENCE_LATTICE[1]
    sizes = [reference_lattice(s, s) for s in range(512, 20000, 500)]
    assert sizes == sorted(sizes)


def test_counted_percentiles_equal_numpy_to_the_last_bit():
    from rsbench.corpus.filters import counted_percentiles

    rng = np.random.default_rng(0)
    cases = [rng.integers(0, 256, (4, n), dtype=np.uint8) for n in (1, 2, 3, 50, 101, 16384)]
    cases += [rng.integers(-3000, 9000, (3, 777), dtype=np.int16), np.full((2, 40), 7, dtype=np.uint16)]
    cases += [rng.integers(0, 65535, (6, 4099), dtype=np.uint16), rng.integers(0, 3, (1, 1000), dtype=np.uint8)]
    for pixels in cases:
        for percents in ([2, 98], [0, 50, 100], [37.5, 99.9]):
            expected = np.percentile(pixels.astype(np.float64), percents, axis=1)
            assert np.array_equal(counted_percentiles(pixels, percents), expected), (pixels.dtype, pixels.shape)


def test_a_small_raster_is_read_once_by_the_build(rasters_dir: Path, tmp_path: Path, monkeypatch):
    """Planning reads its header only; tiling takes the reference and all 4 tiles from one read."""

    from rsbench.contracts.corpus_build import FILTER_KEYS
    from rsbench.corpus import raster, tiling
    from rsbench.corpus.build_config import CorpusBuildConfig

    with rasterio.open(rasters_dir / NAIP) as src:
        window = Window(300, 100, 128, 128)
        profile = {**src.profile, "width": 128, "height": 128, "transform": src.window_transform(window)}
        pixels = src.read(window=window)
    for key in ("blockxsize", "blockysize"):
        profile.pop(key, None)
    chip = tmp_path / "chip.tif"
    with rasterio.open(chip, "w", **profile | {"tiled": False}) as dst:
        dst.write(pixels)
    calls = []
    original = raster.read_block
    counting = lambda *a: calls.append(a[2]) or original(*a)  # noqa: E731
    monkeypatch.setattr(raster, "read_block", counting)
    monkeypatch.setattr(tiling, "read_block", counting)
    info = probe_raster(str(chip), reference=False)
    assert calls == [] and "reference" not in info
    cfg = CorpusBuildConfig(inputs=[str(chip)], out=str(tmp_path / "out"), tile_size=64)
    task = {"tile_size": 64, "stride": 64, "tiles_per_raster": None, "seed": 0, "dedup": True, "features": False}
    task |= {"filters": {k: getattr(cfg, k) for k in FILTER_KEYS}, "exclusions": [], "part": 0}
    task |= {"staging": str(tmp_path / "staging"), "segments": [{"info": info, "raster": 0, "start": 0, "stop": 4}]}
    (tmp_path / "staging" / "parts").mkdir(parents=True)
    done = tiling.run_part(task)
    assert len(calls) == 1 and (calls[0].width, calls[0].height) == (128, 128)
    files = tiling.part_paths(task["staging"], 0)
    assert pq.read_table(files["records"]).num_rows == 4
    passed, spool = done["passed"], files["spool"].stat().st_size
    assert passed > 0 and spool > passed * 4 * 64 * 64 and not done["sources"]  # its tiles are spooled
    reference = done["references"]["0"]
    monkeypatch.setattr(raster, "read_block", original)
    assert reference == probe_raster(str(chip))["reference"]  # the planning-time reference, had it been taken


def test_the_grid_reader_reads_pixels_without_parsing_the_georeferencing_again(rasters_dir: Path):
    """Tiling and packing open each raster for its pixels only (the CRS parse is most of a small chip's open);
    the pixels are the file's, and a resampled grid keeps its georeferenced WarpedVRT."""
    info = probe_raster(str(rasters_dir / NAIP))
    with rasterio.open(rasters_dir / NAIP) as src:
        expected = src.read(window=Window(64, 32, 64, 64))
        assert src.crs is not None
    with open_grid(info) as reader:
        assert reader.crs is None
        assert np.array_equal(reader.read(window=Window(64, 32, 64, 64)), expected)
    coarse = probe_raster(str(rasters_dir / NAIP), gsd=10.0)
    with open_grid(coarse) as reader:
        assert coarse["resampled"] and reader.crs is not None and reader.width == coarse["width"]
