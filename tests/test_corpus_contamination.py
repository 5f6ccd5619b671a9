"""Content-level contamination check on the shared data: EuroSAT images planted into a corpus raster
(resized 2x and re-encoded as JPEG) are found; nothing else in EuroSAT matches the shared rasters."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio
from PIL import Image
from rasterio.transform import from_origin

from rsbench.corpus import CorpusBuildConfig, build_corpus
from rsbench.corpus.contamination import (
    DEFAULT_MAX_DISTANCE,
    check_contamination,
    corpus_hashes,
    find_images,
    nearest_tiles,
)
from rsbench.corpus.filters import hamming
from rsbench.errors import DataError

TILE = 128
CLASSES = (
    "AnnualCrop",
    "Forest",
    "HerbaceousVegetation",
    "Highway",
    "Industrial",
    "Pasture",
    "PermanentCrop",
    "Residential",
    "River",
)


def _plant(images: list[Path], path: Path) -> None:
    """A 3 x 3 mosaic GeoTIFF of `images`, each resized to TILE px and re-encoded as JPEG (quality 75)."""
    mosaic = np.zeros((3, 3 * TILE, 3 * TILE), np.uint8)
    for i, image in enumerate(images):
        im = Image.open(image).convert("RGB").resize((TILE, TILE), Image.BICUBIC)
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=75)
        r, c = divmod(i, 3)
        mosaic[:, r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE] = np.asarray(Image.open(buf)).transpose(2, 0, 1)
    profile = dict(driver="GTiff", width=3 * TILE, height=3 * TILE, count=3, dtype="uint8")
    with rasterio.open(path, "w", crs="EPSG:32633", transform=from_origin(500000, 5000000, 5, 5), **profile) as dst:
        dst.write(mosaic)


@pytest.fixture(scope="module")
def planted(tmp_path_factory, eurosat_dir: Path, rasters_dir: Path):
    """(corpus dir, {planted image: tile key of its tile, None when a filter rejected that tile})."""
    tmp = tmp_path_factory.mktemp("contamination")
    inputs = tmp / "inputs"
    inputs.mkdir()
    picks = [sorted((eurosat_dir / c).glob("*.jpg"))[0] for c in CLASSES]
    _plant(picks, inputs / "planted.tif")
    for raster in rasters_dir.glob("*.tif"):
        shutil.copy(raster, inputs)
    corpus = tmp / "corpus"
    build_corpus(
        CorpusBuildConfig(inputs=[str(inputs)], out=str(corpus), tile_size=TILE, workers=1), log=lambda m: None
    )
    rows = pq.read_table(corpus / "manifest.parquet").to_pylist()
    tiles = {(r["row_off"], r["col_off"]): r for r in rows if r["source"].endswith("planted.tif")}
    expected = {}
    for i, image in enumerate(picks):
        r, c = divmod(i, 3)
        tile = tiles[(r * TILE, c * TILE)]
        expected[str(image)] = tile["key"] if tile["kept"] else None
    assert sum(key is not None for key in expected.values()) >= 5, "most planted tiles must pass the filters"
    return corpus, expected


def test_planted_duplicates_found_and_no_false_positive_on_shared_data(planted, eurosat_dir: Path, tmp_path):
    corpus, expected = planted
    reported = check_contamination(corpus, [eurosat_dir])
    (found,) = reported["datasets"]
    assert found["images"] == len(find_images(eurosat_dir)) == 2300
    got = {d["image"]: d for d in found["duplicates"]}
    kept = {image: key for image, key in expected.items() if key is not None}
    # Every planted image whose tile went into the corpus is found, with that tile; nothing else matches
    # (neither an unrelated EuroSAT image nor a planted image whose tile a quality filter rejected).
    assert set(got) == set(kept)
    for image, key in kept.items():
        assert got[image]["tile"] == key and got[image]["distance"] <= DEFAULT_MAX_DISTANCE
    assert reported["tile_size"] == TILE and reported["max_distance"] == DEFAULT_MAX_DISTANCE
    json.dumps(reported)  # the --out file format


def test_larger_image_is_checked_window_by_window(planted, tmp_path):
    """A downstream image holding several corpus tiles (the planted mosaic itself) matches one of them."""
    corpus, expected = planted
    mosaic = corpus.parent / "inputs" / "planted.tif"
    (found,) = check_contamination(corpus, [mosaic])["datasets"]
    assert found["images"] == 1
    (dup,) = found["duplicates"]
    assert dup["tile"] in {k for k in expected.values() if k} and dup["distance"] <= DEFAULT_MAX_DISTANCE


def test_nearest_tiles_matches_brute_force():
    rng = np.random.default_rng(0)
    corpus = rng.integers(0, 2**63, size=300, dtype=np.int64).astype(np.uint64)
    queries = rng.integers(0, 2**63, size=700, dtype=np.int64).astype(np.uint64)
    queries[:5] = corpus[[3, 30, 100, 200, 299]] ^ np.uint64(0b101)  # two bits flipped
    index, distance = nearest_tiles(queries, corpus, chunk=64)
    for q, i, d in zip(queries, index, distance):
        brute = [hamming(int(q), int(h)) for h in corpus]
        assert d == min(brute) and brute[i] == d
    assert list(index[:5]) == [3, 30, 100, 200, 299] and set(distance[:5]) == {2}


def test_label_folders_are_not_images(tmp_path):
    for sub in ("images", "masks"):
        (tmp_path / "data" / sub).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "data" / sub / "a.png")
    assert find_images(tmp_path / "data") == [tmp_path / "data" / "images" / "a.png"]
    with pytest.raises(DataError, match="not found"):
        find_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        find_images(tmp_path / "empty")


def test_bad_corpus_is_one_error(tmp_path, planted):
    with pytest.raises(DataError, match="not a corpus"):
        corpus_hashes(tmp_path)
    corpus, _ = planted
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="cannot read"):
        corpus_hashes(broken)
    table = pq.read_table(corpus / "manifest.parquet")
    no_hash = tmp_path / "nohash"
    no_hash.mkdir()
    column = pa.array([None] * len(table), type=pa.string())
    pq.write_table(
        table.set_column(table.schema.get_field_index("phash"), "phash", column), no_hash / "manifest.parquet"
    )
    with pytest.raises(DataError, match="no tile hashes"):
        corpus_hashes(no_hash)


def test_corpus_check_command_writes_json_and_fails_on_request(planted, tmp_path: Path):
    from typer.testing import CliRunner

    from rsbench.cli import app

    corpus, expected = planted
    kept = {image for image, key in expected.items() if key is not None}
    folder = tmp_path / "downstream"
    folder.mkdir()
    for image in kept:
        shutil.copy(image, folder)
    out = tmp_path / "found.json"
    res = CliRunner().invoke(app, ["corpus", "check", str(corpus), "--against", str(folder), "--out", str(out)])
    assert res.exit_code == 0, res.output
    found = json.loads(out.read_text())
    assert found["datasets"][0]["images"] == len(kept) == len(found["datasets"][0]["duplicates"])
    res = CliRunner().invoke(app, ["corpus", "check", str(corpus), "--against", str(folder), "--fail"])
    assert res.exit_code == 1 and f"{len(kept)} downstream image(s) are near-duplicates" in res.output
    res = CliRunner().invoke(app, ["corpus", "check", str(tmp_path), "--against", str(folder)])
    assert res.exit_code == 1 and "is not a corpus" in res.output


def test_benchmark_contamination_fail_stops_before_any_cell_and_warn_reports(planted, tmp_path: Path):
    import yaml
    from typer.testing import CliRunner

    from rsbench.benchmark.contamination import check
    from rsbench.benchmark.plan import load_plan
    from rsbench.cli import app
    from rsbench.report.tuning import contamination_table

    corpus, expected = planted
    kept = sorted(image for image, key in expected.items() if key is not None)
    task = tmp_path / "task"
    for image in kept:  # an ImageFolder whose images are all planted in the corpus
        (task / Path(image).parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(image, task / Path(image).parent.name)
    doc = {
        "name": "c",
        "out": str(tmp_path / "bench"),
        # The 3-band group: the task's RGB images (the plan-time band check refuses another group).
        "pretrain": {
            "runs": [{"name": "simclr", "method": "simclr", "corpus": str(corpus), "bands": 3, "max_steps": 2}]
        },
        "baselines": ["random"],
        "tasks": [{"name": "planted", "data": str(task)}],
        "protocols": ["knn"],
        "contamination": "fail",
    }
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump(doc), encoding="utf-8")
    res = CliRunner().invoke(app, ["benchmark", "run", str(exp)])
    assert res.exit_code == 1
    [line] = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert f"task {len(kept)}/{len(kept)}" in line and "contamination: fail" in line
    assert not (tmp_path / "bench" / "results.db").exists(), "nothing ran"

    doc["contamination"] = "warn"
    exp.write_text(yaml.safe_dump(doc), encoding="utf-8")
    logged: list[str] = []
    [found] = check(load_plan(exp), log=logged.append)
    assert logged and logged[0].startswith("warning: contamination") and found["corpus"] == str(corpus.resolve())
    table = contamination_table([found])
    assert table is not None and table.rows[0][2:4] == [str(len(kept)), str(len(kept))]
