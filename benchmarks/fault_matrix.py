"""Replay the fault cases of issue 16 on the command line and tabulate how each one ends.

For every case: the exit code, the first line of the message, whether a Python traceback reached the
terminal, and whether the data that existed before (corpus, checkpoint, store, files beside the output)
is intact afterwards. Goal: 0 tracebacks, 0 data loss.

Cases: kill/interrupt points (Ctrl-C during pretraining then resume; SIGKILL at 3 points of a corpus
build then resume to identical bytes), a full disk (a small tmpfs), a read-only folder, `--out` that is a
file, corrupt and truncated stores, an unreachable PostgreSQL and Dask scheduler, corrupt and missing
shards, a garbage last.ckpt, a malformed results.jsonl, a leftover `.staging/`, and on SLURM: sbatch
refusals of the three submitting commands, a corpus build whose jobs wait too long, and a SIGTERM while
its jobs are queued (the jobs must be cancelled). SLURM and tmpfs cases need root and a running cluster
(`.ci/engines.sh start`); without them they are reported as skipped, with why.

    python benchmarks/fault_matrix.py [--out benchmarks/results/fault_matrix.json] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("RSBENCH_SHARED_DATA", ROOT.parent / "shared" / "data"))
RSBENCH = [str(Path(sys.executable).parent / "rsbench")]  # the console script (it honours PYTHONPATH)
RASTER = DATA / "rasters" / "landsat7_etm_RGB.byte.tif"
EUROSAT = DATA / "classification" / "eurosat_rgb"
PASSWORD = "fault-matrix-secret"


@dataclass
class Outcome:
    case: str
    exit_code: int | None
    message: str
    traceback: bool
    data_intact: bool | None
    note: str = ""
    seconds: float = 0.0


class Skip(Exception):
    pass


CASES: dict[str, Callable[[Path], Outcome]] = {}


def case(fn: Callable[[Path], Outcome]) -> Callable[[Path], Outcome]:
    CASES[fn.__name__] = fn
    return fn


# ---------------------------------------------------------------- helpers


def env() -> dict[str, str]:
    src = str(ROOT / "src")
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}


def run(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*RSBENCH, *args], capture_output=True, text=True, timeout=timeout, env=env(), stdin=subprocess.DEVNULL
    )


def first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or [""])[0][:300]


def outcome(name: str, res, intact: bool | None, note: str = "") -> Outcome:
    stderr = res.stderr if isinstance(res.stderr, str) else res.stderr.decode(errors="replace")
    return Outcome(
        name, res.returncode, first_line(stderr), "Traceback (most recent call last)" in stderr, intact, note
    )


def digest(*paths: Path) -> str:
    """One hash over every file under `paths` (names and bytes): equal before and after = nothing lost."""
    h = hashlib.sha256()
    for root in paths:
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for p in files:
            h.update(str(p.relative_to(root.parent)).encode())
            h.update(p.read_bytes() if p.exists() else b"<missing>")
    return h.hexdigest()


def is_root() -> bool:
    return os.geteuid() == 0


def slurm_up() -> bool:
    if not shutil.which("sinfo"):
        return False
    done = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, check=False)
    return done.returncode == 0 and any(s in done.stdout for s in ("idle", "mix", "alloc", "comp"))


def squeue_ids() -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=False).stdout
    return out.split()


class Tmpfs:
    """A small tmpfs (root): a disk that fills up, or a read-only folder."""

    def __init__(self, path: Path, size: str, read_only: bool = False):
        self.path, self.size, self.read_only = path, size, read_only

    def __enter__(self) -> Path:
        if not is_root():
            raise Skip("needs root to mount a tmpfs")
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size}", "tmpfs", str(self.path)], check=True)
        return self.path

    def remount_read_only(self) -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(self.path)], check=True)

    def __exit__(self, *exc) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)


# ---------------------------------------------------------------- shared inputs (made once)


class Inputs:
    def __init__(self, work: Path):
        self.work = work

    def images(self) -> Path:
        root = self.work / "images"
        if not root.exists():
            for cls in sorted(p for p in EUROSAT.iterdir() if p.is_dir())[:3]:
                (root / cls.name).mkdir(parents=True)
                for f in sorted(cls.iterdir())[:8]:
                    (root / cls.name / f.name).symlink_to(f)
        return root

    def corpus_args(self) -> list[str]:
        return [str(RASTER), "--tile-size", "32", "--shard-size", "100", "--workers", "1"]

    def corpus(self) -> Path:
        out = self.work / "corpus"
        if not (out / "corpus.json").exists():
            res = run(["corpus", "build", *self.corpus_args(), "--out", str(out)])
            assert res.returncode == 0, res.stderr
        return out

    def pretrain_args(self, out: Path, steps: int = 30) -> list[str]:
        return [
            "pretrain", "--images", str(self.images()), "--out", str(out), "--backbone", "test_resnet",
            "--max-steps", str(steps), "--batch-size", "8", "--image-size", "32", "--num-workers", "0",
            "--checkpoint-every", "2", "--log-every", "1", "--accelerator", "cpu",
        ]  # fmt: skip

    def experiment(self, executor: dict | None = None, db: str | None = None) -> Path:
        doc = {
            "name": "faults",
            "out": str(self.work / "bench"),
            "code_version": "test",
            "baselines": [{"init": "random", "backbone": "resnet10t", "image_size": 32}],
            "tasks": [{"name": "small", "data": str(self.images())}],
            "protocols": ["knn"],
            "seeds": [0],
            "executor": executor or {},
        }
        if db:
            doc["db"] = db
        path = self.work / f"bench-{hashlib.sha1(json.dumps(doc).encode()).hexdigest()[:8]}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path


INPUTS: Inputs


# ---------------------------------------------------------------- interrupts and kills


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if path.exists():
            return True
        time.sleep(0.2)
    return path.exists()


@case
def pretrain_ctrl_c_then_resume(work: Path) -> Outcome:
    out = work / "run"
    args = INPUTS.pretrain_args(out, steps=40)
    proc = subprocess.Popen([*RSBENCH, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    ckpt = out / "checkpoints" / "last.ckpt"
    if not _wait_for(ckpt, proc, 240):
        proc.kill()
        return Outcome("pretrain_ctrl_c_then_resume", proc.wait(), "no checkpoint appeared", False, None)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    res = subprocess.CompletedProcess(args, proc.returncode, "", stderr)
    status = json.loads((out / "run.json").read_text())["status"]
    resumed = run(args)
    done = json.loads((out / "run.json").read_text())
    intact = status == "interrupted" and resumed.returncode == 0 and done["status"] == "finished"
    return outcome(
        "pretrain_ctrl_c_then_resume", res, intact, f"run.json after Ctrl-C: {status}; resumed to {done['steps']} steps"
    )


@case
def corpus_sigkill_at_3_points_then_resume(work: Path) -> Outcome:
    reference = INPUTS.corpus()
    args = ["corpus", "build", *INPUTS.corpus_args()]
    start = time.monotonic()
    res = run([*args, "--out", str(work / "timed")])
    took = time.monotonic() - start
    notes, same = [], True
    for i, fraction in enumerate((0.4, 0.6, 0.8)):
        out = work / f"killed{i}"
        proc = subprocess.Popen(
            [*RSBENCH, *args, "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env()
        )
        time.sleep(took * fraction)
        proc.kill()
        proc.wait()
        again = run([*args, "--out", str(out)])
        equal = again.returncode == 0 and digest(out / "shards", out / "manifest.parquet") == digest(
            reference / "shards", reference / "manifest.parquet"
        )
        same &= equal
        notes.append(f"kill at {fraction:.0%}: {'identical' if equal else 'DIFFERENT'}")
    return outcome("corpus_sigkill_at_3_points_then_resume", res, same, "; ".join(notes))


# ---------------------------------------------------------------- operating-system faults


@case
def corpus_out_on_full_disk(work: Path) -> Outcome:
    with Tmpfs(work / "full", "256k") as disk:
        keep = disk / "other.bin"
        keep.write_bytes(os.urandom(200_000))
        before = digest(keep)
        res = run(["corpus", "build", *INPUTS.corpus_args(), "--out", str(disk / "c")])
        return outcome("corpus_out_on_full_disk", res, digest(keep) == before)


@case
def pretrain_out_on_full_disk(work: Path) -> Outcome:
    with Tmpfs(work / "full", "256k") as disk:
        keep = disk / "other.bin"
        keep.write_bytes(os.urandom(200_000))
        before = digest(keep)
        res = run(INPUTS.pretrain_args(disk / "run", steps=4))
        return outcome("pretrain_out_on_full_disk", res, digest(keep) == before)


@case
def corpus_out_read_only(work: Path) -> Outcome:
    mount = Tmpfs(work / "ro", "1m")
    with mount as disk:
        (disk / "existing.txt").write_text("keep me")
        mount.remount_read_only()
        res = run(["corpus", "build", *INPUTS.corpus_args(), "--out", str(disk / "c")])
        return outcome("corpus_out_read_only", res, (disk / "existing.txt").read_text() == "keep me")


def _out_is_a_file(name: str, args: Callable[[Path], list[str]], work: Path) -> Outcome:
    target = work / "taken.txt"
    target.write_text("a file, not a folder")
    res = run(args(target))
    return outcome(name, res, target.read_text() == "a file, not a folder")


@case
def corpus_out_is_a_file(work: Path) -> Outcome:
    return _out_is_a_file(
        "corpus_out_is_a_file", lambda t: ["corpus", "build", *INPUTS.corpus_args(), "--out", str(t)], work
    )


@case
def pretrain_out_is_a_file(work: Path) -> Outcome:
    return _out_is_a_file("pretrain_out_is_a_file", lambda t: INPUTS.pretrain_args(t, steps=2), work)


@case
def evaluate_out_is_a_file(work: Path) -> Outcome:
    def args(t: Path) -> list[str]:
        return ["evaluate", "--data", str(INPUTS.images()), "--init", "random", "--backbone", "resnet10t",
                "--image-size", "32", "--protocol", "knn", "--out", str(t)]  # fmt: skip

    return _out_is_a_file("evaluate_out_is_a_file", args, work)


# ---------------------------------------------------------------- corrupt artefacts


@case
def store_garbage_results_db(work: Path) -> Outcome:
    db = work / "results.db"
    db.write_bytes(b"this is not a database\n" * 200)
    before = digest(db)
    res = run(["benchmark", "status", str(INPUTS.experiment()), "--db", str(db)])
    rep = run(["report", "--db", str(db), "--out", str(work / "r.html")])
    same = res.returncode == rep.returncode == 1 and first_line(rep.stderr).startswith("error:")
    note = f"report --db: {first_line(rep.stderr)}" + ("" if "Traceback" not in rep.stderr else " (TRACEBACK)")
    return outcome("store_garbage_results_db", res, digest(db) == before and same, note)


@case
def store_truncated_results_db(work: Path) -> Outcome:
    from rsbench.results_store.store import Store

    db = work / "full.db"
    store = Store(f"sqlite:///{db}")
    store.engine.dispose()
    data = db.read_bytes()
    cut = work / "results.db"
    cut.write_bytes(data[: len(data) // 2 + 100])
    before = digest(cut)
    res = run(["benchmark", "status", str(INPUTS.experiment()), "--db", str(cut)])
    return outcome(
        "store_truncated_results_db", res, digest(cut) == before, f"{len(data)} -> {cut.stat().st_size} bytes"
    )


@case
def corpus_truncated_shard(work: Path) -> Outcome:
    corpus = work / "corpus"
    shutil.copytree(INPUTS.corpus(), corpus)
    shard = sorted((corpus / "shards").iterdir())[0]
    shard.write_bytes(shard.read_bytes()[:1000])
    before = digest(corpus)
    res = run(["pretrain", "--corpus", str(corpus), *INPUTS.pretrain_args(work / "run", 2)[3:]])
    return outcome("corpus_truncated_shard", res, digest(corpus) == before)


@case
def corpus_missing_shard(work: Path) -> Outcome:
    corpus = work / "corpus"
    shutil.copytree(INPUTS.corpus(), corpus)
    sorted((corpus / "shards").iterdir())[-1].unlink()
    before = digest(corpus)
    res = run(["pretrain", "--corpus", str(corpus), *INPUTS.pretrain_args(work / "run", 2)[3:]])
    return outcome("corpus_missing_shard", res, digest(corpus) == before)


@case
def pretrain_garbage_last_ckpt(work: Path) -> Outcome:
    out = work / "run"
    args = INPUTS.pretrain_args(out, steps=40)
    proc = subprocess.Popen([*RSBENCH, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env())
    ckpt = out / "checkpoints" / "last.ckpt"
    _wait_for(ckpt, proc, 240)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    ckpt.write_bytes(os.urandom(5000))
    before = digest(out)
    res = run(args)
    named = str(ckpt) in first_line(res.stderr) and "move it away" in res.stderr
    return outcome(
        "pretrain_garbage_last_ckpt", res, digest(out) == before, "names the file and the fix" if named else ""
    )


@case
def evaluate_malformed_results_jsonl(work: Path) -> Outcome:
    out = work / "eval"
    out.mkdir()
    (out / "results.jsonl").write_text('{"task": "x"}\n{not json\n')
    before = digest(out)
    res = run(["evaluate", "--data", str(INPUTS.images()), "--init", "random", "--backbone", "resnet10t",
               "--image-size", "32", "--protocol", "knn", "--out", str(out)])  # fmt: skip
    return outcome("evaluate_malformed_results_jsonl", res, digest(out) == before)


@case
def corpus_leftover_staging(work: Path) -> Outcome:
    out = work / "corpus"
    shutil.copytree(INPUTS.corpus(), out)
    staging = out / ".staging"
    staging.mkdir()
    (staging / "plan.json").write_text("{truncated")
    before = digest(out / "shards", out / "manifest.parquet")
    res = run(["corpus", "build", *INPUTS.corpus_args(), "--out", str(out)])
    after = digest(out / "shards", out / "manifest.parquet")
    # Intact data and no leftover: the finished corpus is kept byte for byte and the stale state removed.
    return outcome(
        "corpus_leftover_staging", res, after == before and not staging.exists(), f".staging left: {staging.exists()}"
    )


# ---------------------------------------------------------------- engines


@case
def postgres_unreachable(work: Path) -> Outcome:
    url = f"postgresql+psycopg://bob:{PASSWORD}@127.0.0.1:1/rs"
    res = run(["benchmark", "status", str(INPUTS.experiment()), "--db", url])
    leaked = PASSWORD in res.stdout + res.stderr
    return outcome("postgres_unreachable", res, True, "PASSWORD PRINTED" if leaked else "password not printed")


@case
def dask_scheduler_unreachable(work: Path) -> Outcome:
    start = time.monotonic()
    res = run(["corpus", "build", *INPUTS.corpus_args()[:-2], "--out", str(work / "c"), "--scheduler",
               "tcp://127.0.0.1:9", "--scheduler-timeout-s", "3"])  # fmt: skip
    return outcome(
        "dask_scheduler_unreachable", res, True, f"answered in {time.monotonic() - start:.1f}s (timeout 3 s)"
    )


def _needs_slurm() -> None:
    if not slurm_up():
        raise Skip("no SLURM cluster answers (start one with .ci/engines.sh start)")


@case
def slurm_refuses_pretrain(work: Path) -> Outcome:
    _needs_slurm()
    res = run([*INPUTS.pretrain_args(work / "run", 2), "--slurm", "--cpus-per-task", "512"])
    return outcome(
        "slurm_refuses_pretrain", res, not squeue_ids(), "nothing queued" if not squeue_ids() else "JOBS LEFT"
    )


@case
def slurm_refuses_corpus_build(work: Path) -> Outcome:
    _needs_slurm()
    res = run(
        [
            "corpus",
            "build",
            *INPUTS.corpus_args()[:-2],
            "--out",
            str(work / "c"),
            "--slurm",
            "--slurm-cpus-per-task",
            "512",
        ]
    )
    return outcome("slurm_refuses_corpus_build", res, not squeue_ids())


@case
def slurm_refuses_benchmark(work: Path) -> Outcome:
    _needs_slurm()
    executor = {"kind": "slurm", "slurm": {"parameters": {"cpus_per_task": 512}}}
    res = run(["benchmark", "run", str(INPUTS.experiment(executor))])
    return outcome("slurm_refuses_benchmark", res, not squeue_ids())


def _blocker() -> str:
    cpus = subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True, check=True).stdout.split()[0]
    return subprocess.run(
        ["sbatch", "--parsable", "-c", cpus, "--wrap", "sleep 300", "-o", "/dev/null"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def _release(blocker: str) -> None:
    subprocess.run(["scancel", blocker], check=False)
    end = time.monotonic() + 60
    while time.monotonic() < end and blocker in squeue_ids():
        time.sleep(0.5)


@case
def slurm_corpus_jobs_pending_too_long(work: Path) -> Outcome:
    _needs_slurm()
    blocker = _blocker()  # holds every CPU of the node: the build's job stays pending (Resources)
    try:
        res = run(["corpus", "build", *INPUTS.corpus_args()[:-2], "--out", str(work / "c"), "--slurm",
                   "--slurm-cpus-per-task", "1", "--slurm-mem", "1GB", "--slurm-start-timeout-s", "10"])  # fmt: skip
        left = [j for j in squeue_ids() if j != blocker]
    finally:
        _release(blocker)
    return outcome("slurm_corpus_jobs_pending_too_long", res, not left, f"jobs left: {left}")


@case
def slurm_corpus_sigterm_while_queued(work: Path) -> Outcome:
    _needs_slurm()
    blocker = _blocker()
    try:
        cmd = [*RSBENCH, "corpus", "build", *INPUTS.corpus_args()[:-2], "--out", str(work / "c"), "--slurm",
               "--slurm-cpus-per-task", "1", "--slurm-mem", "1GB"]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
        end = time.monotonic() + 120
        while time.monotonic() < end and len(squeue_ids()) < 2:
            time.sleep(0.5)
        queued = len(squeue_ids()) >= 2
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
        left = [j for j in squeue_ids() if j != blocker]
    finally:
        _release(blocker)
    res = subprocess.CompletedProcess(cmd, proc.returncode, "", stderr)
    return outcome(
        "slurm_corpus_sigterm_while_queued", res, queued and not left, f"job was queued: {queued}; left: {left}"
    )


# ---------------------------------------------------------------- main


def main() -> None:
    global INPUTS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fault_matrix.json")
    parser.add_argument("--only", nargs="*", help="run only these cases")
    args = parser.parse_args()
    args.out = args.out.resolve()
    work = Path(tempfile.mkdtemp(prefix="rsbench-faults-"))
    os.chdir(work)  # SLURM writes its jobs' slurm-JOBID.out files into the working directory
    INPUTS = Inputs(work / "inputs")
    INPUTS.work.mkdir()
    rows, skipped = [], {}
    for name, fn in CASES.items():
        if args.only and name not in args.only:
            continue
        folder = work / name
        folder.mkdir()
        start = time.monotonic()
        try:
            row = fn(folder)
        except Skip as e:
            skipped[name] = str(e)
            print(f"{name}: skipped ({e})", flush=True)
            continue
        row.seconds = round(time.monotonic() - start, 1)
        rows.append(row)
        flag = "TRACEBACK " if row.traceback else ""
        lost = "DATA LOST " if row.data_intact is False else ""
        print(f"{name}: exit {row.exit_code} {flag}{lost}| {row.message} | {row.note}", flush=True)
    os.chdir(ROOT)
    shutil.rmtree(work, ignore_errors=True)
    if args.only and args.out.is_file():  # a re-run of some cases replaces their rows in the saved table
        saved = json.loads(args.out.read_text())
        fresh = {r.case for r in rows} | set(skipped)
        rows = [Outcome(**c) for c in saved["cases"] if c["case"] not in fresh] + rows
        skipped = {**{k: v for k, v in saved.get("skipped", {}).items() if k not in fresh}, **skipped}
        rows.sort(key=lambda r: list(CASES).index(r.case) if r.case in CASES else len(CASES))
    result = {
        "cases": [asdict(r) for r in rows],
        "skipped": skipped,
        "counts": {
            "cases": len(rows),
            "tracebacks": sum(r.traceback for r in rows),
            "data_lost": sum(r.data_intact is False for r in rows),
            "failed_without_error_line": sum(r.exit_code != 0 and not r.message.startswith("error:") for r in rows),
            "skipped": len(skipped),
        },
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "loadavg": os.getloadavg()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["counts"]))


if __name__ == "__main__":
    main()
