"""What a pretraining run says and records: one start line and no third-party chatter, one epoch unit in the
progress bar, the start line and backbone.json, a curve even for a run shorter than --log-every, clean run.json
fields, a no-op re-run that says only so, and the MoCo queue fitted to the data (issue 19, items 5 and 6)."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import stat
import sys
import warnings
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rsbench.cli import app
from rsbench.train import PretrainConfig, pretrain

STEPS, BATCH = 4, 64  # 200 images (eurosat_small) -> 3 steps per epoch: the run ends 1/3 into its 2nd epoch


@pytest.fixture(scope="module")
def short_run(tmp_path_factory, eurosat_small):
    """A 4-step MoCo v2 run (paper recipe) with log_every 10, on a machine where `srun` exists (a stub on PATH,
    so Lightning's SLURM hint fires as it does on a cluster login node). Returns (run_dir, stdout, warnings,
    Lightning log records)."""
    tmp = tmp_path_factory.mktemp("short")
    srun = tmp / "bin" / "srun"
    srun.parent.mkdir()
    srun.write_text("#!/bin/sh\nexit 0\n")
    srun.chmod(srun.stat().st_mode | stat.S_IXUSR)
    cfg = PretrainConfig(
        method="mocov2",
        images=eurosat_small,
        out=tmp / "run",
        max_steps=STEPS,
        batch_size=BATCH,
        image_size=32,
        num_workers=0,
    )
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    lightning_log = logging.getLogger("lightning.pytorch")
    lightning_log.addHandler(handler)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = io.StringIO()
    mp = pytest.MonkeyPatch()
    mp.setenv("PATH", f"{srun.parent}{os.pathsep}{os.environ['PATH']}")
    mp.setattr(sys, "stdout", out)  # our lines and the tqdm bar (built on sys.stdout)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pretrain(cfg)
    finally:
        mp.undo()
        torch.set_num_threads(threads)
        lightning_log.removeHandler(handler)
    return cfg.out, out.getvalue(), [str(w.message) for w in caught], records


def _is_bar(line: str) -> bool:
    """A drawing of the tqdm progress bar ("<description>: 50%|█████ | 1/2 [...]")."""
    return re.match(r"^[^:|]*: +(\d+%)?\|", line) is not None


def test_one_start_line_and_no_third_party_chatter(short_run, eurosat_small):
    run_dir, stdout, caught, records = short_run
    assert not [m for m in caught if "srun" in m or "LeafSpec" in m or "deprecated" in m.lower()], caught
    info = [r.getMessage() for r in records if r.levelno < logging.WARNING]
    assert not info, info  # "GPU available ...", "💡 Tip ... litlogger", "`Trainer.fit` stopped ..."
    lines = [line for line in stdout.replace("\r", "\n").splitlines() if line.strip() and not _is_bar(line)]
    assert lines == [
        f"pretraining mocov2/resnet18 (paper recipe) on 200 samples of {eurosat_small}: "
        "batch 64, 4 steps = 1.33 epochs of 3 steps, 1 x cpu, 32-true",
        "recipe fitted to the data: queue_size 65536 -> 64 (65536 would hold each of the 200 training samples "
        "327.7 times)",
        f"backbone exported to {run_dir / 'backbone.pt'}",
    ]


def test_epochs_are_passes_over_the_data_everywhere(short_run):
    run_dir, stdout, _, _ = short_run
    meta = json.loads((run_dir / "backbone.json").read_text())
    # 4 steps of 64 over 200 images in full batches: 3 steps per pass, so 4/3 passes (not 4 x 64 / 200 = 1.28).
    assert meta["epochs"] == round(4 / 3, 3) and meta["steps"] == STEPS
    assert meta["training_samples"] == 200
    bars = {line.split(":")[0] for line in stdout.replace("\r", "\n").splitlines() if _is_bar(line)}
    assert bars == {"epoch 1/2", "epoch 2/2"}  # counted from 1, out of the run's total; never "Epoch 0"


def test_a_run_shorter_than_log_every_still_has_a_curve(short_run):
    run_dir, *_ = short_run
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    steps = [int(r["step"]) for r in rows if r.get("train/loss")]
    assert steps == [1, 3]  # log_every 10 > 4 steps: every max_steps/2 = 2 steps instead


def test_run_json_flops_note_is_one_clean_sentence(short_run):
    run_dir, *_ = short_run
    flops = json.loads((run_dir / "run.json").read_text())["flops"]
    assert flops["per_step"] > 0
    # MoCo's queue loss has data-dependent shapes: counted on the CPU; the meta error text is not recorded.
    assert flops["note"] == "counted on CPU with 2 images per view and scaled to 64 (loss not traceable on meta)"


def test_the_queue_is_fitted_to_the_data_and_recorded(short_run):
    run_dir, *_ = short_run
    meta = json.loads((run_dir / "backbone.json").read_text())
    assert meta["recipe_preset"] == "paper" and meta["recipe"]["extra"]["queue_size"] == 64
    assert [(a["key"], a["preset"], a["used"]) for a in meta["recipe_adaptations"]] == [("queue_size", 65536, 64)]
    assert meta["peak_lr"] == pytest.approx(0.03 * 64 / 256)
    # The model trained with it: the checkpoint's queue holds 64 keys of 128 dimensions.
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert sorted(state["criterion.memory_bank.bank"].shape) == [64, 128]


def test_a_no_op_rerun_says_only_that(short_run):
    run_dir, *_ = short_run
    before = (run_dir / "backbone.pt").stat().st_mtime_ns
    result = CliRunner().invoke(app, ["pretrain", "--config", str(run_dir / "config.yaml")])
    assert result.exit_code == 0, result.output
    assert result.output == f"run {run_dir} already finished; nothing to do\n"
    assert (run_dir / "backbone.pt").stat().st_mtime_ns == before


def test_small_batch_preset_trains_with_adamw(tmp_path: Path, eurosat_small):
    """--recipe small-batch reaches the optimizer (the preset is more than a label in config.yaml)."""
    from rsbench.ssl import get_method

    cls = get_method("simclr")
    model = cls(arch="resnet18", in_chans=3, image_size=32, batch_size=64, max_steps=10, recipe_preset="small-batch")
    opt = model.configure_optimizers()["optimizer"]
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["lr"] == pytest.approx(0.004 * 64 / 256)
    assert model.criterion.temperature == 0.2
