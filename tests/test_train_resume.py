"""Fault tolerance: a run killed with SIGKILL and resumed gives the same loss curve and weights as an
uninterrupted one; SIGTERM leaves a valid checkpoint; bad checkpoints are one-line errors that
change nothing; `rsbench runs` reports what happened."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rsbench.cli import app
from rsbench.errors import ConfigError, DataError
from rsbench.ssl import METHODS
from rsbench.train import PretrainConfig, pretrain

RSBENCH = str(Path(sys.executable).with_name("rsbench"))
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# A method with an EMA key encoder and a queue of negatives: both must survive the resume.
METHOD = "mocov2" if "mocov2" in METHODS else "simclr"


def _args(images: Path, out: Path, *extra: str) -> list[str]:
    return [
        RSBENCH,
        "pretrain",
        "--images",
        str(images),
        "--out",
        str(out),
        "--method",
        METHOD,
        "--backbone",
        "test_resnet",
        "--batch-size",
        "8",
        "--image-size",
        "32",
        "--num-workers",
        "0",
        "--log-every",
        "1",
        "--deterministic",
        *extra,
    ]


def _start(cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for(run: Path, proc: subprocess.Popen, ready, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"run ended early: {proc.stderr.read()[-2000:]}"
        try:
            info = json.loads((run / "run.json").read_text())
        except (OSError, ValueError):
            info = {}
        if info and ready(info):
            return info
        time.sleep(0.05)
    raise AssertionError("timed out")


def _losses(run: Path) -> dict[int, str]:
    return {
        int(r["step"]): r["train/loss"] for r in csv.DictReader((run / "metrics.csv").open()) if r.get("train/loss")
    }


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path, eurosat_small):
    # 200 images / batch 8 = 25 steps per epoch: the resumed run also crosses into epoch 1.
    steps = ["--max-steps", "32", "--checkpoint-every", "4"]
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    ref_proc = _start(_args(eurosat_small, ref, *steps))  # concurrently: start-up dominates
    proc = _start(_args(eurosat_small, killed, *steps))
    _wait_for(killed, proc, lambda r: (r.get("last_checkpoint_step") or 0) >= 12)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "backbone.json").exists(), "the run finished before it could be killed"
    _, err = ref_proc.communicate(timeout=300)
    assert ref_proc.returncode == 0, err[-2000:]
    resumed = subprocess.run(_args(eurosat_small, killed, *steps), env=ENV, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stdout

    run = json.loads((killed / "run.json").read_text())
    first, second = run["segments"]
    assert first["status"] == "killed" and second["status"] == "finished" and run["resumed"]
    assert 12 <= second["start_step"] < 25, "the second segment must start from the mid-epoch checkpoint"
    assert first["end_step"] >= 12 and run["images_seen"] == 32 * 8
    # Work lost between the checkpoint and the kill is counted in what the run cost.
    assert run["images_processed"] == 8 * (first["end_step"] + 32 - second["start_step"]) >= run["images_seen"]

    # Bit-exact (deterministic CPU mode): every step's loss, and every weight incl. EMA encoder and queue.
    want, got = _losses(ref), _losses(killed)
    assert sorted(want) == sorted(got) == list(range(32))
    assert got == want
    a = torch.load(ref / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 32
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    if METHOD == "mocov2":
        assert any("queue" in k or "bank" in k for k in a["state_dict"]), "the queue lives in the checkpoint"
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_sigusr1_checkpoints_and_goes_on_sigterm_checkpoints_and_stops(tmp_path, eurosat_small):
    out = tmp_path / "term"
    proc = _start(_args(eurosat_small, out, "--max-steps", "500", "--checkpoint-every", "1000"))
    _wait_for(out, proc, lambda r: r["step"] >= 1)  # training (and its signal handlers) started
    proc.send_signal(signal.SIGUSR1)  # outside SLURM: checkpoint now, keep training
    first = _wait_for(out, proc, lambda r: r.get("last_checkpoint_step"))["last_checkpoint_step"]
    _wait_for(out, proc, lambda r: r["step"] > first)
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    error = [ln for ln in err.replace("\r", "\n").splitlines() if "error: " in ln]
    assert len(error) == 1 and "stopped by SIGTERM" in error[0] and "run the same command again" in error[0]
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "preempted" and "SIGTERM" in run["error"]
    # The checkpoint is the one saved on SIGTERM (later than SIGUSR1's), complete and loadable.
    assert ckpt["global_step"] == run["step"] == run["last_checkpoint_step"] > first
    position = ckpt["callbacks"]["DataPosition"]  # 200 images / 8 = 25 batches per epoch
    assert position["epoch"] * 25 + position["consumed"] == ckpt["global_step"]
    # Rebuilt from the checkpoint's hyperparameters: they hold the recipe as trained (MoCo's queue fitted to
    # the 200 images at pretrain start, rsbench.ssl.recipe.fit_to_data).
    hparams = ckpt["hyper_parameters"]
    assert hparams["arch"] == "test_resnet" and hparams["max_steps"] == 500
    assert hparams["recipe"].get("queue_size") == (64 if METHOD == "mocov2" else None)
    model = METHODS[METHOD](**hparams)
    model.load_state_dict(ckpt["state_dict"], strict=True)
    assert ckpt["optimizer_states"] and ckpt["lr_schedulers"][0]["last_epoch"] == ckpt["global_step"]
    listing = CliRunner().invoke(app, ["runs", str(tmp_path), "--json"])
    assert listing.exit_code == 0, listing.output
    row = json.loads(listing.stdout.strip().splitlines()[0])
    assert row["status"] == "preempted" and row["step"] == ckpt["global_step"] and row["max_steps"] == 500


def test_sigterm_after_the_steps_checkpoint_hook_still_checkpoints_that_step(tmp_path, eurosat_small, monkeypatch):
    """SIGTERM that lands after SignalCheckpoint's hook of a step and before Lightning's end-of-step check (which
    raises SIGTERMException there) used to stop the run without the step's checkpoint (a CI failure: last.ckpt at the
    SIGUSR1 step, run.json at a later one). The signal is sent from a callback that runs after that hook."""
    from rsbench.train.accounting import RunAccounting
    from rsbench.train.checkpoint import RunPreempted

    original = RunAccounting.on_train_batch_end

    def then_sigterm(self, trainer, *args, **kwargs):
        original(self, trainer, *args, **kwargs)
        if trainer.global_step == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # handled by Lightning's and SignalCheckpoint's handlers

    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    def config(out: Path) -> PretrainConfig:
        return PretrainConfig(
            images=eurosat_small, out=out, method="simclr", backbone="test_resnet", max_steps=8, batch_size=8,
            image_size=32, num_workers=0, checkpoint_every=1000, log_every=1, deterministic=True,
        )  # fmt: skip

    cfg = config(tmp_path / "run")
    try:
        pretrain(config(tmp_path / "reference"))
        with monkeypatch.context() as m:
            m.setattr(RunAccounting, "on_train_batch_end", then_sigterm)
            with pytest.raises(RunPreempted, match="stopped by SIGTERM at step 3/8"):
                pretrain(cfg)
        ckpt = torch.load(cfg.out / "checkpoints" / "last.ckpt", weights_only=True)
        run = json.loads((cfg.out / "run.json").read_text())
        assert ckpt["global_step"] == run["step"] == run["last_checkpoint_step"] == 3
        assert run["status"] == "preempted"
        position = ckpt["callbacks"]["DataPosition"]
        assert position["epoch"] * 25 + position["consumed"] == 3
        pretrain(cfg)  # resumes from that checkpoint: the same steps as a run never stopped
    finally:
        torch.set_num_threads(threads)
    assert _losses(cfg.out) == _losses(tmp_path / "reference") and len(_losses(cfg.out)) == 8


def test_ctrl_c_saves_a_checkpoint_marks_the_run_interrupted_and_exits_130(tmp_path, eurosat_small):
    out = tmp_path / "int"
    proc = _start(_args(eurosat_small, out, "--max-steps", "500", "--checkpoint-every", "1000"))
    _wait_for(out, proc, lambda r: r["step"] >= 1)  # training (and its signal handlers) started
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    error = [ln for ln in err.replace("\r", "\n").splitlines() if "error: " in ln]
    assert len(error) == 1 and "interrupted at step" in error[0] and "run the same command again" in error[0]
    assert "Traceback" not in err
    run = json.loads((out / "run.json").read_text())
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert run["status"] == "interrupted" and ckpt["global_step"] == run["step"] == run["last_checkpoint_step"] >= 1
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last.ckpt"]


@pytest.fixture()
def unfinished_run(tmp_path, eurosat_small) -> PretrainConfig:
    """A short real run, made unfinished again (no export) so that it would resume."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core machine: two threads oversubscribe
    cfg = PretrainConfig(
        images=eurosat_small,
        out=tmp_path / "run",
        method="simclr",
        backbone="test_resnet",
        max_steps=2,
        batch_size=8,
        image_size=32,
        num_workers=0,
        log_every=1,
    )
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)}
    pretrain(cfg)
    assert {s: signal.getsignal(s) for s in handlers} == handlers, "signal handlers must be given back"
    (cfg.out / "backbone.json").unlink()
    (cfg.out / "backbone.pt").unlink()
    yield cfg
    torch.set_num_threads(threads)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class _NotAllowed:  # a pickled custom object: weights_only=True refuses it
    pass


def test_bad_checkpoints_are_one_line_errors_and_change_nothing(unfinished_run, tmp_path):
    cfg = unfinished_run
    ckpt = cfg.out / "checkpoints" / "last.ckpt"
    good = ckpt.read_bytes()
    other = dict(torch.load(ckpt, weights_only=True))
    first_weight = next(k for k, v in other["state_dict"].items() if v.ndim == 4)
    cases = {
        "not a PyTorch checkpoint": good[: len(good) // 2],  # truncated, as if a copy was cut short
        "not a PyTorch checkpoint ": os.urandom(5000),  # garbage
        "not a Lightning training checkpoint": {"conv1.weight": torch.zeros(1)},
        "belongs to another model": {**other, "state_dict": {"other.weight": torch.zeros(3)}},
        "has shape": {
            **other,
            "state_dict": {k: (torch.zeros(7) if k == first_weight else v) for k, v in other["state_dict"].items()},
        },
        "objects other than tensors": {"x": _NotAllowed()},
    }
    for expected, content in cases.items():
        if isinstance(content, bytes):
            ckpt.write_bytes(content)
        else:
            torch.save(content, ckpt)
        before = _snapshot(cfg.out)
        with pytest.raises(DataError, match=expected.strip()) as err:
            pretrain(cfg)
        assert str(ckpt) in str(err.value) and "\n" not in str(err.value)
        assert "move it away" in str(err.value) and "mmap" not in str(err.value) and "zip" not in str(err.value)
        assert _snapshot(cfg.out) == before, f"{expected}: the run directory changed"
    # Through the CLI: one line on stderr, exit code 1.
    result = CliRunner().invoke(app, ["pretrain", "--config", str(cfg.out / "config.yaml")])
    assert result.exit_code == 1
    assert [ln for ln in result.stderr.splitlines() if ln.strip()] == [f"error: {err.value}"]


def test_resume_flags(unfinished_run):
    cfg = unfinished_run
    with pytest.raises(ConfigError, match="--no-resume refuses"):
        pretrain(cfg.model_copy(update={"resume": False}))
    (cfg.out / "checkpoints" / "last.ckpt").unlink()
    with pytest.raises(ConfigError, match="no checkpoint to resume"):
        pretrain(cfg.model_copy(update={"resume": True}))
    with pytest.raises(ConfigError, match=r"different config \(max_steps\)"):
        pretrain(cfg.model_copy(update={"max_steps": 3}))


def test_a_full_disk_while_saving_a_checkpoint_names_the_file_and_leaves_no_temp(tmp_path, monkeypatch):
    import errno

    from rsbench.train.checkpoint import AtomicCheckpointIO

    def full_disk(obj, f):  # what torch's zip writer does on ENOSPC: a RuntimeError raised while handling it
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 36096 vs 35992") from None

    monkeypatch.setattr(torch, "save", full_disk)
    target = tmp_path / "checkpoints" / "last.ckpt"
    with pytest.raises(OSError) as err:
        AtomicCheckpointIO().save_checkpoint({"global_step": 1}, target)
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(target)
    assert list(target.parent.iterdir()) == [], "the partial temp file is removed"
