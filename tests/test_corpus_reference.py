"""Reading rasters: a small raster's radiometric reference comes from all its pixels (one read), a large one's
from a lattice sample that grows with its area; the grid reader and GDAL's block cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
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


@pytest.fixture(scope="module")
def wide(tmp_path_factory, rasters_dir: Path) -> Path:
    """16,384 x 1,024 px, 8 bands uint16 in 512 px DEFLATE blocks (128 MiB a block row): one real patch, the other
    blocks sparse (0: nodata)."""
    with rasterio.open(rasters_dir / NAIP) as src:
        patch = np.concatenate([src.read(window=Window(0, 0, 1024, 512))] * 2).astype(np.uint16) * 10 + 1
        crs, transform = src.crs, src.transform
    path = tmp_path_factory.mktemp("wide") / "wide.tif"
    profile = {
        "driver": "GTiff", "width": 16384, "height": 1024, "count": 8, "dtype": "uint16", "crs": crs,
        "transform": transform, "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate",
        "sparse_ok": True,
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(patch, window=Window(0, 0, 1024, 512))
    return path


def test_block_cache_holds_a_row_of_windows_while_a_raster_is_read_row_after_row(
    wide: Path, rasters_dir: Path, tmp_path: Path, monkeypatch
):
    """A raster whose block rows exceed GDAL's 128 MiB would have each block decompressed once per row of windows
    crossing it; tiling's strips and packing's re-reads run with a cache that holds what one row of windows
    touches (by hand: 2 block rows x 512 px x 16,384 px x 8 bands x 2 bytes, + 1/8)."""
    from rsbench.corpus import CorpusBuildConfig, build_corpus, shards, tiling
    from rsbench.corpus.raster import GDAL_OPTIONS, ROW_CACHE_MAX, row_cache_bytes

    expected = 2 * 512 * 16384 * 8 * 2 * 9 // 8
    with rasterio.open(wide) as reader:
        assert row_cache_bytes(reader, 64) == expected
        assert row_cache_bytes(reader, 1024) == 3 * 512 * 16384 * 8 * 2 * 9 // 8  # a window spans up to 3 block rows
        assert row_cache_bytes(reader, 8192) == ROW_CACHE_MAX
    with rasterio.open(rasters_dir / NAIP) as reader:  # 934 px wide, 4 bands uint8: the default cache suffices
        assert row_cache_bytes(reader, 64) == GDAL_OPTIONS["GDAL_CACHEMAX"]

    seen: dict[str, list[int]] = {"tiling": [], "packing": []}

    def recording(stage, read):
        def wrapped(*args, **kwargs):
            seen[stage].append(int(rasterio.env.getenv()["GDAL_CACHEMAX"]))
            return read(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(tiling, "read_block", recording("tiling", tiling.read_block))
    monkeypatch.setattr(shards, "read_pixels", recording("packing", shards.read_pixels))
    out = tmp_path / "corpus"
    corpus = build_corpus(CorpusBuildConfig(inputs=[str(wide)], out=str(out), tile_size=64, workers=1))
    assert corpus["counts"]["tiles_kept"] == len(seen["packing"]) > 0
    assert set(seen["tiling"]) == set(seen["packing"]) == {expected}


def test_a_large_raster_is_cut_into_parts_where_block_rows_end(wide: Path, rasters_dir: Path, tmp_path: Path):
    """Each part opens its raster afresh: a block row split across parts would be decompressed once by each. Parts
    of 32 MiB hold 2 of the 8 window rows of a 512 px block row here; they now end with the block row."""
    from rsbench.corpus import CorpusBuildConfig, plan
    from rsbench.corpus.tiling import plan_windows

    cfg = CorpusBuildConfig(inputs=[str(wide)], out=str(tmp_path / "c"), tile_size=64)
    info = probe_raster(str(wide), reference=False)
    assert info["block"] == [512, 512]
    rows = plan_windows(info, 64, None, None, 0)[0]
    layout = plan._Layout(cfg, group=True)
    layout.add(0, rows, info)
    starts, stops = np.asarray(layout.rows["start"]), np.asarray(layout.rows["stop"])
    assert len(rows) == 4096 and list(zip(starts, stops)) == [(0, 2048), (2048, 4096)]  # 2 block rows, 2 parts
    assert {int(r) // 512 for r in rows[:2048]} == {0} and {int(r) // 512 for r in rows[2048:]} == {1}

    # A part never grows past BLOCK_ROW_PART_MAX x --task-tiles windows; small rasters are laid out as before.
    narrow = CorpusBuildConfig(inputs=[str(wide)], out=str(tmp_path / "c"), tile_size=64, task_tiles=100)
    layout = plan._Layout(narrow, group=True)
    layout.add(0, rows, info)
    sizes = np.asarray(layout.rows["stop"]) - np.asarray(layout.rows["start"])
    assert sizes.max() <= plan.BLOCK_ROW_PART_MAX * 100 and sizes.sum() == 4096
    chip = {**info, "width": 128, "height": 128}
    layout = plan._Layout(cfg, group=True)
    layout.add(0, plan_windows(chip, 64, None, None, 0)[0], chip)
    assert layout.rows["stop"] == [4]
