"""Archive-scale builds on 300 small real chips (cut from the shared NAIP raster): grouped tasks give the
same bytes as one raster per task and as 2 workers; one unreadable file is listed and the rest built;
a raster that breaks inside a group loses only its own rows; SIGKILL + re-run equals an uninterrupted
build; `corpus status` during, after and after a kill; --overwrite keeps the old corpus on failure."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
from dask.distributed import Client, LocalCluster
from rasterio.windows import Window
from typer.testing import CliRunner

from rsbench.cli.corpus import app
from rsbench.corpus import CorpusBuildConfig, build_corpus
from rsbench.corpus.tiling import part_paths, run_part
from test_corpus_parallel import _kill_mid_build  # the same kill, of a build with other inputs

CHIP, STEP, T = 64, 40, 32
RSBENCH = str(Path(sys.executable).parent / "rsbench")
NAIP = "naip_m_4709963_se_14_1_20190904_rgbn_5m.tif"


@pytest.fixture(scope="module")
def chips(tmp_path_factory, rasters_dir) -> Path:
    """299 real 64 x 64 4-band chips (overlapping cuts of the NAIP raster) and one unreadable file."""
    folder = tmp_path_factory.mktemp("chips")
    with rasterio.open(rasters_dir / NAIP) as src:
        profile = {**src.profile, "width": CHIP, "height": CHIP, "tiled": False, "compress": None}
        profile.pop("blockxsize", None), profile.pop("blockysize", None)
        offsets = [(r, c) for r in range(0, src.height - CHIP, STEP) for c in range(0, src.width - CHIP, STEP)]
        for k, (r, c) in enumerate(offsets[:299]):
            window = Window(c, r, CHIP, CHIP)
            with rasterio.open(
                folder / f"chip{k:03d}.tif", "w", **profile | {"transform": src.window_transform(window)}
            ) as dst:
                dst.write(src.read(window=window))
    (folder / "chip150_broken.tif").write_bytes(b"II*\x00" + b"\x00" * 200)  # a TIFF header, nothing behind
    return folder


def _first_chips(chips: Path, folder: Path, n: int) -> Path:
    folder.mkdir()
    for k in range(n):
        (folder / f"c{k}.tif").write_bytes((chips / f"chip{k:03d}.tif").read_bytes())
    return folder


def _corpus_files(out: Path) -> dict[Path, bytes]:
    """Every file of a corpus folder but the progress record, with its bytes."""
    return {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and p.name != "progress.json"}


def _cfg(chips: Path, out: Path, **kw) -> CorpusBuildConfig:
    return CorpusBuildConfig(inputs=[str(chips)], out=str(out), tile_size=T, shard_size=400, **kw)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, chips):
    out = tmp_path_factory.mktemp("ref") / "c"
    spy = _StatusSpy(out)
    info = build_corpus(_cfg(chips, out, workers=1), progress=spy)
    return out, info, spy


def _same(a: Path, b: Path) -> None:
    assert (a / "manifest.parquet").read_bytes() == (b / "manifest.parquet").read_bytes()
    shards = sorted(p.name for p in (a / "shards").iterdir())
    assert shards == sorted(p.name for p in (b / "shards").iterdir()) and shards
    assert all((a / "shards" / s).read_bytes() == (b / "shards" / s).read_bytes() for s in shards)


class _StatusSpy:
    """A progress display that runs `rsbench corpus status` once the build is tiling."""

    def __init__(self, out: Path) -> None:
        self.out, self.seen, self.total = out, None, {}

    def add_task(self, name, total):
        self.total[name] = total
        return name

    def update(self, task, description=None):
        pass

    def advance(self, task, n=1):
        if task == "tiling" and self.seen is None:
            self.seen = CliRunner().invoke(app, ["status", str(self.out)])


def test_unreadable_file_is_listed_and_the_rest_built(reference, chips):
    out, info, _ = reference
    assert info["counts"]["rasters"] == 299 and info["counts"]["rasters_failed"] == 1
    assert [f["path"] for f in info["failures"]] == [str(chips / "chip150_broken.tif")]
    assert info["counts"]["tiles_total"] == 299 * (CHIP // T) ** 2
    rows = pq.read_table(out / "manifest.parquet", columns=["source"]).column("source").to_pylist()
    assert len(set(rows)) == 299 and str(chips / "chip150_broken.tif") not in rows


def test_grouped_ungrouped_and_two_workers_give_identical_bytes(tmp_path, chips, reference):
    ref = reference[0]
    build_corpus(_cfg(chips, tmp_path / "ungrouped", workers=1, group_rasters=False))
    _same(ref, tmp_path / "ungrouped")
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None, silence_logs=logging.ERROR
        ) as cluster,
        Client(cluster) as client,
    ):
        build_corpus(_cfg(chips, tmp_path / "two", task_mib=2), client=client)
    _same(ref, tmp_path / "two")


def test_status_while_building_and_when_finished(reference):
    out, info, spy = reference
    assert spy.seen.exit_code == 0, spy.seen.output
    assert "building" in spy.seen.output and "probing: 300/300 rasters" in spy.seen.output
    assert "tiling: 0/1196 windows" in spy.seen.output
    res = CliRunner().invoke(app, ["status", str(out)])
    assert res.exit_code == 0 and "finished" in res.output
    state = json.loads((out / "progress.json").read_text())
    assert state["status"] == "done"
    assert state["stages"]["tiling"]["done"] == state["stages"]["tiling"]["total"] == info["counts"]["tiles_total"]
    assert state["stages"]["packing"]["done"] == info["counts"]["tiles_kept"]


def test_a_raster_broken_inside_a_group_loses_only_its_rows(tmp_path, chips):
    folder = _first_chips(chips, tmp_path / "in", 6)
    out = tmp_path / "c"
    cfg = _cfg(folder, out, workers=1)
    from rsbench.corpus.build import _resolve
    from rsbench.corpus.parallel import Runner
    from rsbench.corpus.plan import make_plan

    cfg = _resolve(cfg)
    staging = out / ".staging"
    with Runner(cfg) as runner:
        plan = make_plan(cfg, sorted(str(p) for p in folder.iterdir()), {}, runner, staging, lambda n: None)
    assert plan.part_count == 1  # six small rasters, one group
    (folder / "c2.tif").write_bytes((folder / "c2.tif").read_bytes()[:600])  # damaged after the probe
    [(_, task)] = list(plan.part_tasks(cfg, {0}, []))
    done = run_part(task)
    assert list(done["failures"]) == ["2"] and "c2.tif" in done["failures"]["2"]
    records = pq.read_table(part_paths(staging, 0)["records"]).to_pydict()
    assert records["raster"] == [r for r in (0, 1, 3, 4, 5) for _ in range(4)]
    spool = part_paths(staging, 0)["spool"].read_bytes()
    sizes = [s for s in records["spool_size"] if s is not None]
    assert len(spool) == sum(sizes) == max(o + s for o, s in zip(records["spool_offset"], records["spool_size"]) if s)
    # The spool holds exactly the kept tiles of the intact rasters: each blob is the chip's window.
    first = records["spool_offset"].index(0)
    with rasterio.open(folder / f"c{records['raster'][first]}.tif") as src:
        r, c = records["row_off"][first], records["col_off"][first]
        want = src.read(window=Window(c, r, T, T))
    blob = spool[: records["spool_size"][first]]
    assert np.array_equal(np.frombuffer(blob[-want.nbytes :], np.uint8).reshape(want.shape), want)


def test_sigkill_resume_and_status_of_a_killed_build(tmp_path, chips, reference):
    out = tmp_path / "killed"
    cmd = [RSBENCH, "corpus", "build", str(chips), "--out", str(out), "--tile-size", str(T)]
    cmd += ["--shard-size", "400", "--workers", "1", "--task-mib", "1"]
    finished = _kill_mid_build(cmd, out / ".staging", out)
    assert 4 <= finished < json.loads((out / ".staging" / "plan.json").read_text())["parts"]
    res = CliRunner().invoke(app, ["status", str(out)])
    assert res.exit_code == 0 and "process is gone" in res.output and "tiling" in res.output
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    _same(reference[0], out)


def test_overwrite_keeps_the_old_corpus_until_the_new_one_is_complete(tmp_path, chips):
    folder = _first_chips(chips, tmp_path / "in", 3)
    out = tmp_path / "c"
    base = [RSBENCH, "corpus", "build", str(folder), "--out", str(out), "--workers", "1"]
    assert subprocess.run([*base, "--tile-size", str(T)], capture_output=True).returncode == 0
    before = _corpus_files(out)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.tif").write_bytes(b"not a tiff")
    failing = [
        [*base, "--tile-size", str(T), "--bands", "99"],  # no raster has band 99
        [RSBENCH, "corpus", "build", str(tmp_path / "junk"), "--out", str(out), "--tile-size", str(T)],
        [*base, "--tile-size", "4096"],  # no window fits
    ]
    for cmd in failing:
        res = subprocess.run([*cmd, "--overwrite"], capture_output=True, text=True)
        assert res.returncode == 1 and res.stderr.strip().splitlines()[-1].startswith("error:"), res.stderr
        assert _corpus_files(out) == before, cmd
        assert json.loads((out / "progress.json").read_text())["status"] == "failed"
    # A successful --overwrite replaces it and leaves no sibling folder behind.
    res = subprocess.run([*base, "--tile-size", "16", "--overwrite"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert json.loads((out / "corpus.json").read_text())["settings"]["tile_size"] == 16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "in", "junk"]


def test_small_rasters_of_mixed_sensors_measured_together_equal_one_by_one(tmp_path, rasters_dir):
    """Small chips of four sensors (3-band uint8 with a nodata collar, 4-band uint8, 6- and 7-band uint16),
    interleaved in one folder: grouped into one task, their windows are measured in shared batches (a batch
    closes when the band count or dtype changes); ungrouped, each chip alone. Same manifest and shard bytes, and
    every kept tile equals its window read directly from its chip."""
    import io
    import json
    import tarfile

    folder = tmp_path / "mixed"
    folder.mkdir()
    sources = sorted(p for p in rasters_dir.glob("*.tif") if "spacenet" not in p.name)
    for k in range(12):
        with rasterio.open(sources[k % len(sources)]) as src:
            window = Window(10 + 30 * k, 0 if "landsat7" in src.name else 200, 96, 96)  # landsat7: its collar
            profile = {**src.profile, "width": 96, "height": 96, "tiled": False, "compress": None}
            profile.pop("blockxsize", None), profile.pop("blockysize", None)
            with rasterio.open(
                folder / f"m{k:02d}.tif", "w", **profile | {"transform": src.window_transform(window)}
            ) as dst:
                dst.write(src.read(window=window))
    grouped, alone = tmp_path / "grouped", tmp_path / "alone"
    info = build_corpus(_cfg(folder, grouped, workers=1, stride=16))
    build_corpus(_cfg(folder, alone, workers=1, stride=16, group_rasters=False))
    _same(grouped, alone)
    assert len(info["band_groups"]) == 4 and info["counts"]["rejected"]["nodata"] > 0
    checked = 0
    for shard in info["shards"]:
        with tarfile.open(grouped / shard) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        for name, blob in members.items():
            if not name.endswith(".npy"):
                continue
            meta = json.loads(members[name[: -len("npy")] + "json"])
            w = meta["window"]
            with rasterio.open(meta["source"]) as src:
                expected = src.read(window=Window(w["col_off"], w["row_off"], w["width"], w["height"]))
            assert np.array_equal(np.load(io.BytesIO(blob)), expected)
            checked += 1
    assert checked == info["counts"]["tiles_kept"] > 20
