"""The real engines on localhost (`pytest -m engines`; `make test` starts them with .ci/engines.sh): a one-node
CPU-only SLURM cluster (munge, slurmctld, slurmd), a PostgreSQL server and a Dask scheduler in its own process.

Small on purpose (tiny images, a few steps): SLURM jobs each start a Python that imports torch, so a job costs
seconds even when its work does not.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.engines, pytest.mark.slow]
RSBENCH = [str(Path(sys.executable).parent / "rsbench")]
RASTER = "landsat7_etm_RGB.byte.tif"  # 1 small raster: a corpus of a few hundred 32 px tiles


# One thread per process: the SLURM jobs inherit this environment, and 2 cores shared by the test, slurmd and
# the jobs stall when every process spins a thread per core.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def rsbench(*args: str, timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`cwd`: where SLURM writes the slurm-JOBID.out of dask-jobqueue's jobs (sbatch's default: here)."""
    return subprocess.run(
        [*RSBENCH, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=ENV,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def one_line_error(res: subprocess.CompletedProcess) -> str:
    """The run failed with exactly one `error:` line on stderr and no traceback."""
    assert res.returncode == 1, (res.returncode, res.stderr[-2000:])
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert "Traceback" not in res.stderr and len(lines) == 1 and lines[0].startswith("error: "), res.stderr[-2000:]
    return lines[0]


def squeue(*fields: str) -> list[list[str]]:
    out = subprocess.run(["squeue", "-h", "-o", "|".join(fields)], capture_output=True, text=True, check=True).stdout
    return [line.split("|") for line in out.splitlines() if line.strip()]


def wait_until(predicate, timeout: float, what: str, poll: float = 1.0):
    start = time.monotonic()
    end = start + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            print(f"{what}: {time.monotonic() - start:.0f}s", file=sys.stderr)
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; squeue: {squeue('%i', '%j', '%T', '%r')}")


@pytest.fixture
def no_jobs_left(slurm_cluster):
    """Each SLURM test starts and ends with an empty queue (what it leaves queued is a failure)."""
    subprocess.run(["scancel", "--user", "root"], check=False)
    wait_until(lambda: not squeue("%i"), 30, "an empty queue")
    yield
    end = time.monotonic() + 30  # a job whose work is done may still be exiting
    while (left := squeue("%i", "%j", "%T")) and time.monotonic() < end:
        time.sleep(1)
    subprocess.run(["scancel", "--user", "root"], check=False)
    assert not left, f"jobs left queued: {left}"


@pytest.fixture
def pg_database(postgres_url):
    """A fresh PostgreSQL database for one test (dropped afterwards); returns its URL."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"rsbench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def bench_file(tmp_path: Path, data: Path, *, pretrain: bool, executor: dict, db: str | None = None) -> Path:
    doc = {
        "name": "eng",
        "out": str(tmp_path / "bench"),
        "code_version": "test",
        "baselines": [{"init": "random", "backbone": "test_resnet", "image_size": 32}],
        "evaluate": {"batch_size": 100},
        "tasks": [{"name": "eurosat_small", "data": str(data)}],
        "protocols": ["knn"],
        "seeds": [0],
        "executor": executor,
    }
    if db:
        doc["db"] = db
    if pretrain:
        doc["baselines"] = []  # one pretraining and its one evaluation: 2 jobs
        doc["pretrain"] = {
            "defaults": {
                "images": str(data),
                "backbone": "test_resnet",
                "image_size": 32,
                "batch_size": 16,
                "max_steps": 8,
                "checkpoint_every": 2,
                "num_workers": 0,
                "accelerator": "cpu",
            },
            "runs": [{"name": "simclr", "method": "simclr"}],
        }
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def cells_of(path: Path) -> list[dict]:
    from rsbench.benchmark.plan import load_plan

    plan = load_plan(path)
    return plan.store().cells(plan.ids)


# ---------------------------------------------------------------- SLURM: benchmark and pretrain


def test_benchmark_on_slurm_afterok_resubmit_scancel_and_reclaim(tmp_path, eurosat_small, no_jobs_left):
    slurm = {"kind": "slurm", "stale_after_s": 30, "slurm": {"parameters": {"cpus_per_task": 1, "mem": "3G"}}}
    path = bench_file(tmp_path, eurosat_small, pretrain=True, executor=slurm)
    # A job holding every CPU of the node keeps the benchmark's jobs pending until the test lets them run.
    cpus = subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True, check=True).stdout.split()[0]
    blocker = subprocess.run(
        ["sbatch", "--parsable", "-c", cpus, "-o", "/dev/null", "--wrap", "sleep 600"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    res = rsbench("benchmark", "run", str(path))
    assert res.returncode == 0 and "2 job(s) submitted" in res.stdout, res.stderr[-2000:]
    jobs = {name: (jid, dep) for jid, name, dep in squeue("%i", "%j", "%E")}
    [(pre_id, _)] = [v for k, v in jobs.items() if k.startswith("rsbench-pretrain")]
    [(_, eval_dep)] = [v for k, v in jobs.items() if k.startswith("rsbench-eval")]
    assert eval_dep.startswith(f"afterok:{pre_id}"), jobs

    # Re-submitted while both jobs are queued: nothing new, and the message says so.
    res = rsbench("benchmark", "run", str(path))
    assert res.returncode == 0 and "0 job(s) submitted" in res.stdout, res.stderr[-2000:]
    assert "already queued" in res.stderr and "submit again later" not in res.stderr, res.stderr

    # scancel the pretraining job as soon as it has claimed its cell: the cell goes back to pending (released,
    # or reclaimed from its dead worker) and a re-submission finishes everything, each cell once.
    subprocess.run(["scancel", blocker], check=True)
    pretrain_state = lambda: next(c["status"] for c in cells_of(path) if c["kind"] == "pretrain")  # noqa: E731
    wait_until(lambda: pretrain_state() == "running", 180, "the pretraining cell to run", poll=0.1)
    subprocess.run(["scancel", pre_id], check=True)
    wait_until(lambda: not squeue("%i"), 60, "both jobs to leave the queue")
    res = rsbench("benchmark", "run", str(path))
    assert res.returncode == 0 and "2 job(s) submitted" in res.stdout, (res.stdout, res.stderr[-2000:])
    wait_until(lambda: all(c["status"] == "done" for c in cells_of(path)), 240, "every cell done", poll=2)
    cells = cells_of(path)
    assert len(cells) == 2 and [c["kind"] for c in cells].count("pretrain") == 1
    [run] = (tmp_path / "bench").rglob("run.json")
    assert json.loads(run.read_text())["steps"] == 8
    assert [c["attempts"] for c in cells if c["kind"] == "pretrain"] in ([1], [2]), "released (1) or reclaimed (2)"
    from rsbench.benchmark.plan import load_plan

    rows = load_plan(path).store().result_rows()
    keys = [(r["_cell"], r["metric"]) for r in rows]
    assert len(keys) == len(set(keys)) == 2, "knn: accuracy and f1, once each"


def test_pretrain_slurm_runs_on_the_cpu_only_node_and_a_refusal_is_one_line(tmp_path, eurosat_small, no_jobs_left):
    common = ["--images", str(eurosat_small), "--backbone", "test_resnet", "--max-steps", "2", "--batch-size", "8"]
    common += ["--image-size", "32", "--num-workers", "0", "--slurm", "--mem", "2G", "--time", "10"]
    common += ["--accelerator", "cpu"]
    # More CPUs than the node has: refused before anything is queued, naming the request and SLURM's reason.
    line = one_line_error(rsbench("pretrain", *common, "--out", str(tmp_path / "big"), "--cpus-per-task", "64"))
    assert "64 CPUs" in line and "Requested node configuration is not available" in line, line
    assert not squeue("%i")
    out = tmp_path / "run"
    res = rsbench("pretrain", *common, "--out", str(out), "--cpus-per-task", "1")
    assert res.returncode == 0 and "submitted SLURM job" in res.stdout, res.stderr[-2000:]
    [job] = re.findall(r"submitted SLURM job (\d+)", res.stdout)
    script = next((out / "slurm").rglob(f"{job}_submission.sh")).read_text()
    assert "--gpus-per-node" not in script and "#SBATCH --ntasks-per-node=1" in script

    def finished():
        run = out / "run.json"
        return run.is_file() and json.loads(run.read_text())["status"] == "finished"

    wait_until(finished, 180, "the pretraining job to finish", poll=2)
    assert (out / "backbone.pt").is_file() and json.loads((out / "run.json").read_text())["steps"] == 2


# ---------------------------------------------------------------- PostgreSQL


def test_two_runners_on_one_postgres_store_run_every_cell_once(tmp_path, eurosat_small, pg_database):
    path = bench_file(tmp_path, eurosat_small, pretrain=False, executor={"max_parallel": 1}, db=pg_database)
    doc = yaml.safe_load(path.read_text())
    doc["seeds"] = [0, 1]
    doc["protocols"] = ["knn", "knn5"]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    procs = [
        subprocess.Popen(
            [*RSBENCH, "benchmark", "run", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    cells = cells_of(path)
    assert len(cells) == 4 and all(c["status"] == "done" and c["attempts"] == 1 for c in cells)
    # Each summary counts what its own workers ran: together every cell exactly once.
    ran = [int(re.search(r"(\d+) ran now", out).group(1)) for out, _ in outs]
    assert sum(ran) == 4, [out for out, _ in outs]
    assert all("rsbench-test-pw" not in out + err for out, err in outs), "the password is never printed"


# ---------------------------------------------------------------- corpus build: SLURM and a Dask scheduler


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _corpus_bytes(out: Path) -> dict[str, bytes]:
    files = sorted(p for p in (out / "shards").iterdir()) + [out / "manifest.parquet"]
    return {p.name: p.read_bytes() for p in files}


def test_corpus_build_on_slurm_and_on_a_dask_scheduler_is_byte_identical(tmp_path, rasters_dir, no_jobs_left):
    raster = str(rasters_dir / RASTER)
    common = [raster, "--tile-size", "32", "--shard-size", "100"]
    res = rsbench("corpus", "build", *common, "--out", str(tmp_path / "local"), "--workers", "1")
    assert res.returncode == 0, res.stderr[-2000:]
    reference = _corpus_bytes(tmp_path / "local")

    # A request the partition can never run: one line, nothing queued, before any job is submitted.
    line = one_line_error(rsbench("corpus", "build", *common, "--out", str(tmp_path / "big"), "--slurm", cwd=tmp_path))
    assert "4 CPUs" in line and "at most" in line, line
    assert not squeue("%i")

    slurm = ["--slurm", "--slurm-cpus-per-task", "1", "--slurm-mem", "1GB", "--slurm-interface", "lo"]
    res = rsbench("corpus", "build", *common, "--out", str(tmp_path / "slurm"), *slurm, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert _corpus_bytes(tmp_path / "slurm") == reference

    # A scheduler and a worker in processes of their own, as on a cluster.
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = str(Path(sys.executable).parent / "dask")
    scheduler = subprocess.Popen(
        [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    worker = subprocess.Popen(
        [dask, "worker", address, "--nthreads", "1", "--no-dashboard"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        res = rsbench(
            "corpus",
            "build",
            *common,
            "--out",
            str(tmp_path / "dask"),
            "--scheduler",
            address,
            "--scheduler-timeout-s",
            "60",
        )
        assert res.returncode == 0, res.stderr[-2000:]
        assert _corpus_bytes(tmp_path / "dask") == reference
    finally:
        for p in (worker, scheduler):
            p.terminate()
            p.wait(timeout=30)
    # Now nobody listens there: one line naming the address, after the short timeout rather than dask's 30 s.
    start = time.monotonic()
    line = one_line_error(
        rsbench(
            "corpus",
            "build",
            *common,
            "--out",
            str(tmp_path / "gone"),
            "--scheduler",
            address,
            "--scheduler-timeout-s",
            "2",
        )
    )
    assert address in line and time.monotonic() - start < 25, line
