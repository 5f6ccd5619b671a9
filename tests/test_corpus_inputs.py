"""Inputs: folders, globs, list files, GDAL paths, and bad files among them (reported, never fatal alone)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
from rasterio.windows import Window
from typer.testing import CliRunner

from rsbench.cli import app
from rsbench.corpus import discover_inputs, read_corpus_info
from rsbench.errors import DataError

T = 64
L8 = "landsat8_oli_LC80200392015216LGN00_B1-B7_30m.tif"
SN6 = "spacenet6_rotterdam_ms1_4band.tif"
NAIP = "naip_m_4709963_se_14_1_20190904_rgbn_5m.tif"
runner = CliRunner()


def _cli(*args):
    return runner.invoke(app, ["corpus", "build", *map(str, args), "--workers", "1"])


@pytest.fixture()
def tree(tmp_path, rasters_dir):
    """a/x.tif, a/deep/y.TIFF, a/notes.txt (ignored in folders), b/z.tif: symlinks to real rasters."""
    (tmp_path / "a" / "deep").mkdir(parents=True)
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.tif").symlink_to(rasters_dir / SN6)
    (tmp_path / "a" / "deep" / "y.TIFF").symlink_to(rasters_dir / NAIP)
    (tmp_path / "a" / "notes.txt").write_text("sidecar\n")
    (tmp_path / "b" / "z.tif").symlink_to(rasters_dir / L8)
    return tmp_path


def test_folders_globs_and_list_files(tree):
    names = lambda paths: [Path(p).name for p in paths]  # noqa: E731
    # Symlinks resolve to the real files; folders are searched recursively, sorted.
    assert names(discover_inputs([str(tree / "a")])) == [NAIP, SN6]
    assert names(discover_inputs([str(tree / "**" / "*.tif")])) == [SN6, L8]
    listing = tree / "inputs.txt"
    listing.write_text("# my archive\nb/z.tif\n\n" + str(tree / "a") + "\nb/z.tif\n")
    assert names(discover_inputs([], input_lists=[str(listing)])) == [L8, NAIP, SN6]  # de-duplicated
    assert discover_inputs(["/vsis3/bucket/scene.tif"]) == ["/vsis3/bucket/scene.tif"]  # left to GDAL
    warnings = []
    (tree / "empty").mkdir()
    assert names(discover_inputs([str(tree / "empty"), str(tree / "b")], warnings.append)) == [L8]
    assert warnings and "empty" in warnings[0]
    with pytest.raises(DataError, match="input not found: .*nope.tif"):
        discover_inputs([str(tree / "nope.tif")])
    with pytest.raises(DataError, match="no GeoTIFF"):
        discover_inputs([str(tree / "*.jp2")])
    (tree / "blank.txt").write_text("# nothing\n")
    with pytest.raises(DataError, match="names no inputs"):
        discover_inputs([], input_lists=[str(tree / "blank.txt")])


def test_cli_with_list_file_and_gdal_vsizip_path(tmp_path, rasters_dir):
    archive = tmp_path / "archive.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(rasters_dir / SN6, arcname=f"scenes/{SN6}")
    listing = tmp_path / "list.txt"
    listing.write_text(f"/vsizip/{archive}/scenes/{SN6}\n")
    res = _cli("--input-list", listing, "--out", tmp_path / "c", "--tile-size", T)
    assert res.exit_code == 0, res.output
    info = read_corpus_info(tmp_path / "c")
    assert info["rasters"][0]["path"] == f"/vsizip/{archive}/scenes/{SN6}" and info["counts"]["tiles_total"] == 16
    rows = pq.read_table(tmp_path / "c" / "manifest.parquet").to_pylist()
    with rasterio.open(rasters_dir / SN6) as src:
        first = src.read(window=Window(0, 0, T, T))
    import io
    import tarfile

    with tarfile.open(tmp_path / "c" / rows[0]["shard"]) as tar:
        np.testing.assert_array_equal(np.load(io.BytesIO(tar.extractfile(f"{rows[0]['key']}.npy").read())), first)


def _bad_inputs(folder: Path, rasters_dir: Path) -> dict[str, Path]:
    folder.mkdir()
    bad = {
        "corrupt.tif": np.random.default_rng(0).bytes(4096),
        "notes.txt": b"not a raster\n",
        "empty.tif": b"",
    }
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    data = (rasters_dir / L8).read_bytes()  # header opens, block reads fail part-way
    (folder / "truncated.tif").write_bytes(data[: len(data) // 2])
    with rasterio.open(rasters_dir / SN6) as src:  # a real raster stripped of its georeferencing
        profile = {k: v for k, v in src.profile.items() if k not in ("crs", "transform")}
        with rasterio.open(folder / "no_crs.tif", "w", **profile) as dst:
            dst.write(src.read())
    # A GeoPackage holding two raster tables opens as a dataset with zero bands (two subdatasets).
    for i, table in enumerate(("a", "b")):
        with rasterio.open(
            folder / "zero_bands.gpkg",
            "w",
            driver="GPKG",
            width=256,
            height=256,
            count=3,
            dtype="uint8",
            crs="EPSG:3857",
            transform=rasterio.transform.from_origin(0, 256, 1, 1),
            RASTER_TABLE=table,
            **({"APPEND_SUBDATASET": "YES"} if i else {}),
        ) as dst:
            dst.write(np.full((3, 256, 256), i + 1, np.uint8))
    return {p.name: p for p in folder.iterdir()}


def test_bad_inputs_are_reported_and_skipped(tmp_path, rasters_dir):
    bad = _bad_inputs(tmp_path / "bad", rasters_dir)
    out = tmp_path / "c"
    res = _cli(*bad.values(), rasters_dir / SN6, "--out", out, "--tile-size", T)
    assert res.exit_code == 0, res.output
    info = read_corpus_info(out)
    reasons = {Path(f["path"]).name: f["reason"] for f in info["failures"]}
    assert sorted(reasons) == sorted(bad)
    assert all(r and "\n" not in r for r in reasons.values())
    assert (
        "no CRS" in reasons["no_crs.tif"]
        and "zero bands" in reasons["zero_bands.gpkg"]
        and "GPKG:" in reasons["zero_bands.gpkg"]
    )
    assert "TIFFRead" in reasons["truncated.tif"] or "failed" in reasons["truncated.tif"].lower()
    assert info["counts"]["rasters"] == 1 and info["counts"]["rasters_failed"] == len(bad)
    # The truncated raster produced tiles before failing; none of them survives.
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    assert {Path(r["source"]).name for r in rows} == {SN6} and len(rows) == 16
    assert "warning: 6 of 7 input(s) could not be read" in res.stderr
    assert all(name in res.stderr for name in bad)

    res = _cli(bad["corrupt.tif"], bad["notes.txt"], "--out", tmp_path / "c2", "--tile-size", T)
    assert res.exit_code == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no input raster could be read (2 failed") and "corrupt.tif" in last
    assert "Traceback" not in res.output and "notes.txt" in res.stderr
    assert not (tmp_path / "c2" / "corpus.json").exists() and not (tmp_path / "c2" / "shards").exists()
    assert not (tmp_path / "c2" / ".staging").exists()


def test_all_rasters_skipped_by_band_selection_is_an_error(tmp_path, rasters_dir):
    res = _cli(rasters_dir / SN6, "--bands", "nir", "--out", tmp_path / "c", "--tile-size", T)
    last = res.stderr.strip().splitlines()[-1]
    # Skipped is not unreadable: the error says the raster lacks the bands, and how to name them.
    assert res.exit_code == 1 and last.startswith("error: none of the 1 input raster(s) has the selected bands")
    assert "no band named 'nir'" in last and "could not be read" not in res.stderr and "bands=red" in last


def test_missing_inputs_and_exclusions(tmp_path, rasters_dir):
    (tmp_path / "empty").mkdir()
    res = _cli(tmp_path / "empty", "--out", tmp_path / "c", "--tile-size", T)
    assert res.exit_code == 1 and "empty" in res.stderr and "no GeoTIFF" in res.stderr
    res = _cli(tmp_path / "nope.tif", "--out", tmp_path / "c", "--tile-size", T)
    assert res.exit_code == 1 and "nope.tif" in res.stderr
    res = _cli(rasters_dir / SN6, "--exclude", tmp_path / "areas.gpkg", "--out", tmp_path / "c", "--tile-size", T)
    assert res.exit_code == 1 and "exclusion file not found" in res.stderr and "areas.gpkg" in res.stderr
    (tmp_path / "junk.geojson").write_text("{not json")
    res = _cli(rasters_dir / SN6, "--exclude", tmp_path / "junk.geojson", "--out", tmp_path / "c", "--tile-size", T)
    assert res.exit_code == 1 and "junk.geojson" in res.stderr
    res = _cli("--out", tmp_path / "c", "--tile-size", T)
    assert res.exit_code == 1 and "at least one input" in res.stderr
