"""Parallel, resumable, sampled builds: identical output for any worker count or task size,
SIGKILL + re-run equals an uninterrupted build, --max-tiles balancing, diversity, random windows."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from dask.distributed import Client, LocalCluster

from rsbench.corpus import CorpusBuildConfig, build_corpus, plan_windows, probe_raster
from rsbench.corpus.parallel import WORKER_ENVIRON

T = 32
RSBENCH = str(Path(sys.executable).parent / "rsbench")


@pytest.fixture(scope="module")
def client():
    # Threads, not processes: starts in a fraction of a second; still real Dask scheduling,
    # out-of-order completion and (de)serialisation of tasks.
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None, silence_logs=logging.ERROR
    ) as cluster:
        with Client(cluster) as c:
            yield c


@pytest.fixture(scope="module")
def reference(tmp_path_factory, rasters_dir):
    """The uninterrupted, in-process build every other build is compared with."""
    out = tmp_path_factory.mktemp("ref") / "c"
    info = build_corpus(_cfg(rasters_dir, out, workers=1))
    return out, info


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted((out / "shards").iterdir())}


def _same_corpus(a: Path, b: Path) -> None:
    assert pq.read_table(a / "manifest.parquet").equals(pq.read_table(b / "manifest.parquet"))
    fa, fb = _files(a), _files(b)
    assert list(fa) == list(fb) and all(fa[k] == fb[k] for k in fa)
    ja, jb = (json.loads((d / "corpus.json").read_text()) for d in (a, b))
    assert ja["band_groups"] == jb["band_groups"] and ja["counts"] == jb["counts"]


def _cfg(rasters_dir, out, **kw):
    return CorpusBuildConfig(inputs=[str(rasters_dir)], out=str(out), tile_size=T, shard_size=150, **kw)


def test_one_and_two_workers_give_identical_corpora(tmp_path, rasters_dir, client, reference):
    ref, one = reference
    build_corpus(_cfg(rasters_dir, tmp_path / "two", task_tiles=97), client=client)
    assert (
        one["counts"]["tiles_total"] == 24 * 22 + 19 * 18 + 30 * 30 + 29 * 22 + 9 * 9
        and one["counts"]["tiles_kept"] > 1500
    )
    assert len(one["shards"]) > 8
    _same_corpus(ref, tmp_path / "two")


def test_scheduler_address_and_slurm_options(tmp_path, rasters_dir, client, reference):
    from dask_jobqueue import SLURMCluster

    from rsbench.corpus.parallel import Runner, slurm_options

    # --scheduler ADDRESS joins a running cluster (here the test's in-process one).
    build_corpus(_cfg(rasters_dir, tmp_path / "s", scheduler=client.scheduler.address))
    _same_corpus(reference[0], tmp_path / "s")
    # --slurm: the job script dask-jobqueue would submit carries the queue/account/walltime options.
    cfg = _cfg(
        rasters_dir,
        tmp_path / "x",
        slurm=True,
        slurm_queue="cpu",
        slurm_account="rs42",
        slurm_walltime="02:30:00",
        slurm_memory="8GB",
        slurm_cores=3,
        slurm_jobs=4,
    )
    with SLURMCluster(**slurm_options(cfg)) as cluster:
        script = cluster.job_script()
    for line in (
        "#SBATCH -p cpu",
        "#SBATCH -A rs42",
        "#SBATCH -t 02:30:00",
        "#SBATCH --cpus-per-task=3",
        "--nworkers 3",
    ):
        assert line in script
    # The job's nanny reads the worker environment from Dask's configuration: the script's export, run by a
    # shell as the job would, gives a Dask that starts its workers with WORKER_ENVIRON.
    export = next(line for line in script.splitlines() if "PRE_SPAWN_ENVIRON" in line)
    shown = subprocess.run(
        [
            "bash",
            "-c",
            f"{export}; {sys.executable} -c 'import dask, json; "
            'print(json.dumps(dask.config.get("distributed.nanny.pre-spawn-environ")))\'',
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(shown.stdout) == WORKER_ENVIRON
    # Without --workers, a small job stays in-process (no cluster start).
    with Runner(_cfg(rasters_dir, tmp_path / "y")) as runner:
        assert [i for i, _ in runner.map_unordered(abs, [-1, -2, -3], work=3000)] == [0, 1, 2]
        assert runner.client is None


def test_local_workers_keep_numpy_temporaries_off_mmap(tmp_path, rasters_dir):
    """The local cluster's workers run with WORKER_ENVIRON, not Dask's MALLOC_TRIM_THRESHOLD_=65536 (which froze
    glibc's mmap threshold and doubled the CPU time of tiling in a worker), and one numpy thread."""
    from rsbench.corpus.parallel import Runner

    with Runner(_cfg(rasters_dir, tmp_path / "w", workers=2)) as runner:
        environ = runner._ensure_client().run(lambda: {k: os.environ.get(k) for k in WORKER_ENVIRON})
    assert len(environ) == 2
    assert all(env == {k: str(v) for k, v in WORKER_ENVIRON.items()} for env in environ.values())


def _kill_mid_build(cmd: list[str], staging: Path, out: Path) -> int:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            done = list((staging / "parts").glob("*.done.json")) if (staging / "parts").is_dir() else []
            if len(done) >= 4:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.005)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL, "the build finished before it could be killed"
    assert not (out / "corpus.json").exists()
    return len(list((staging / "parts").glob("*.done.json")))


class _Progress:
    """Records what a (resumed) build reports, through the same interface as rich's Progress."""

    def __init__(self):
        self.totals, self.done, self.started = {}, {}, {}

    def update(self, task, description=None):
        pass

    def add_task(self, name, total):
        self.totals[name], self.done[name] = total, 0
        return name

    def advance(self, task, n=1):
        self.started.setdefault(task, n)  # the first advance: windows of parts finished before
        self.done[task] += n


def test_resume_after_sigkill_equals_uninterrupted_build(tmp_path, rasters_dir, reference):
    out = tmp_path / "killed"
    args = [
        str(rasters_dir),
        "--out",
        str(out),
        "--tile-size",
        str(T),
        "--shard-size",
        "150",
        "--task-tiles",
        "60",
        "--workers",
        "1",
    ]
    finished_before_kill = _kill_mid_build([RSBENCH, "corpus", "build", *args], out / ".staging", out)
    plan_parts = json.loads((out / ".staging" / "plan.json").read_text())["parts"]
    assert 4 <= finished_before_kill < plan_parts
    # A changed config on the unfinished build is refused without --overwrite.
    res = subprocess.run([RSBENCH, "corpus", "build", *args, "--min-std", "0.01"], capture_output=True, text=True)
    assert res.returncode == 1 and "unfinished build" in res.stderr and "min_std" in res.stderr

    logs, progress = [], _Progress()
    # Another task size on purpose: the saved part layout wins, the finished parts stay valid.
    build_corpus(_cfg(rasters_dir, out, task_tiles=500, workers=1), log=logs.append, progress=progress)
    assert any("resuming" in m for m in logs)
    # Finished parts were not redone (the tiling bar started from their windows), no re-probe.
    assert progress.done["tiling"] == progress.totals["tiling"] and "probing" not in progress.totals
    assert progress.started["tiling"] >= finished_before_kill * 60 - 60
    _same_corpus(out, reference[0])
    assert not (out / ".staging").exists() and not list(out.rglob("*.tmp"))


def test_max_tiles_balances_rasters(tmp_path, rasters_dir, client, reference):
    ref, full = reference
    capped = build_corpus(_cfg(rasters_dir, tmp_path / "cap", max_tiles=600), client=client)
    rows_full = pq.read_table(ref / "manifest.parquet").to_pylist()
    rows = pq.read_table(tmp_path / "cap" / "manifest.parquet").to_pylist()
    available = np.array([r["tiles_kept"] for r in full["rasters"]])
    got = np.array([r["tiles_kept"] for r in capped["rasters"]])
    assert got.sum() == capped["counts"]["tiles_kept"] == 600
    # Water-filling: rasters with few candidates give all of them, the others share the rest evenly.
    short = got == available
    assert short.any() and not short.all()
    assert got[~short].max() - got[~short].min() <= 1 and got[~short].min() >= got[short].max()
    kept_full = {r["key"] for r in rows_full if r["kept"]}
    kept = {r["key"] for r in rows if r["kept"]}
    assert kept < kept_full
    assert {r["key"] for r in rows if r["reject_reason"] == "max_tiles"} == kept_full - kept


def test_diversity_sampling_spreads_over_clusters(tmp_path, rasters_dir, client):
    info = build_corpus(_cfg(rasters_dir, tmp_path / "d", diversity=True, max_tiles=300, clusters=8), client=client)
    rows = pq.read_table(tmp_path / "d" / "manifest.parquet").to_pylist()
    candidates = [r for r in rows if r["reject_reason"] in (None, "max_tiles")]
    assert all(r["cluster"] is not None for r in candidates)
    assert all(r["cluster"] is None for r in rows if r["reject_reason"] not in (None, "max_tiles"))
    sizes = np.bincount([r["cluster"] for r in candidates], minlength=8)
    kept = np.bincount([r["cluster"] for r in candidates if r["kept"]], minlength=8)
    assert info["selection"]["clusters"] == sizes.tolist() and kept.sum() == 300
    full = kept == sizes
    assert kept[~full].max() - kept[~full].min() <= 1
    assert not full.any() or kept[~full].min() >= kept[full].max()
    # Clusters are not just rasters: at least one cluster mixes sensors.
    assert any(len({r["raster_index"] for r in candidates if r["cluster"] == c}) > 1 for c in range(8))


def test_random_windows_are_seeded_per_raster(tmp_path, rasters_dir):
    s2 = str(rasters_dir / "sentinel2_l1c_T18SVG_20160112_20m_6band.tif")
    info = probe_raster(s2)
    rows, cols = plan_windows(info, T, None, 50, seed=0)
    assert len(rows) == 50 and len(set(zip(rows, cols))) == 50
    assert rows.min() >= 0 and rows.max() <= info["height"] - T and cols.max() <= info["width"] - T
    assert list(zip(rows, cols)) == sorted(zip(rows, cols))  # row-major
    assert not np.array_equal(plan_windows(info, T, None, 50, seed=1)[1], cols)
    built = build_corpus(_cfg(rasters_dir, tmp_path / "r", workers=1, tiles_per_raster=50))
    got = pq.read_table(tmp_path / "r" / "manifest.parquet").to_pylist()
    assert built["counts"]["tiles_total"] == 5 * 50
    mine = [(r["row_off"], r["col_off"]) for r in got if r["source"] == s2]
    assert mine == list(zip(rows.tolist(), cols.tolist()))  # same windows whatever the other inputs


def test_large_rasters_are_not_spooled_and_a_changed_one_is_refused(tmp_path, rasters_dir, reference, monkeypatch):
    """Tiling spools only the small raster's passing tiles (SpaceNet-6, 300 x 300 px); the large rasters' kept
    tiles are read again when packing, into the same shard bytes (`reference`); a raster modified between
    tiling and packing is refused with one error naming it, and nothing half-written is left."""
    from rsbench.corpus import build as build_module
    from rsbench.corpus.raster import is_small
    from rsbench.errors import DataError

    spooled: dict[str, int] = {}
    original = build_module._tile_parts

    def watching(cfg, plan, *args):
        done = original(cfg, plan, *args)
        small = {r for r, info in plan.infos() if is_small(info)}
        for part in done:
            t = pq.read_table(Path(plan.staging) / "parts" / f"p{part:06d}.parquet", columns=["raster", "spool_size"])
            for r, size in zip(t["raster"].to_pylist(), t["spool_size"].to_pylist()):
                kind = "small" if r in small else "large"
                spooled[kind] = spooled.get(kind, 0) + (size or 0)
        return done

    monkeypatch.setattr(build_module, "_tile_parts", watching)
    out = tmp_path / "c"
    build_corpus(_cfg(rasters_dir, out, workers=1))
    assert spooled["small"] > 0 and spooled["large"] == 0
    _same_corpus(reference[0], out)

    copies = tmp_path / "inputs"
    copies.mkdir()
    for p in sorted(rasters_dir.glob("*.tif")):
        (copies / p.name).write_bytes(p.read_bytes())
    changed = copies / "naip_m_4709963_se_14_1_20190904_rgbn_5m.tif"

    def touching(cfg, plan, *args):
        done = original(cfg, plan, *args)
        os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))
        return done

    monkeypatch.setattr(build_module, "_tile_parts", touching)
    cfg = CorpusBuildConfig(inputs=[str(copies)], out=str(tmp_path / "d"), tile_size=T, shard_size=150, workers=1)
    with pytest.raises(DataError, match=f"{changed.name}: changed since it was tiled"):
        build_corpus(cfg)
    assert not (tmp_path / "d" / "corpus.json").exists() and not list((tmp_path / "d").glob("**/*.tmp"))
