"""Multi-process training on CPU: Lightning DDP over gloo, launched by the `rsbench` command itself.

Equivalence: 2 processes with a global batch of 8 (4 each) end with the same weights as 1 process
with a batch of 8, because
- the sampler gives rank r the r-th half of each single-process batch (EpochSampler),
- each sample's views are drawn under RNGs seeded from (seed, epoch, sample), not from a worker's
  RNG state, so both runs see identical augmented views,
- SimCLR gathers the negatives over all ranks and DDP averages the gradients.
BatchNorm would break it on CPU: torch's SyncBatchNorm only runs on GPUs, so per-process BN
statistics differ from whole-batch ones. The test therefore registers a BN-free SimCLR (projection
head without BN) with a ViT backbone (LayerNorm); on GPUs rsbench turns on SyncBatchNorm.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning as L
import pytest
import timm
import torch
from typer.testing import CliRunner

from rsbench.cli import app
from rsbench.corpus import CorpusBuildConfig, build_corpus
from rsbench.ssl import get_method
from rsbench.ssl.teacher import teacher_spec

RSBENCH = str(Path(sys.executable).with_name("rsbench"))
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # 2 cores: one thread per process, no oversubscription

NO_BN_SCRIPT = textwrap.dedent("""
    import sys
    from lightly.models.modules import SimCLRProjectionHead
    from rsbench.ssl import METHODS
    from rsbench.ssl.simclr import SimCLR

    class SimCLRNoBN(SimCLR):
        name = "simclr_nobn"

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.projection_head = SimCLRProjectionHead(self.feature_dim, self.feature_dim, 16, batch_norm=False)

    METHODS[SimCLRNoBN.name] = SimCLRNoBN
    from rsbench.cli import app
    app(sys.argv[1:])
""")


def _run(cmd: list[str], timeout: int = 240) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _losses(run: Path) -> list[float]:
    return [float(r["train/loss"]) for r in csv.DictReader((run / "metrics.csv").open()) if r.get("train/loss")]


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path, eurosat_small):
    script = tmp_path / "nobn.py"
    script.write_text(NO_BN_SCRIPT)
    args = [
        sys.executable,
        str(script),
        "pretrain",
        "--images",
        str(eurosat_small),
        "--method",
        "simclr_nobn",
        "--backbone",
        "test_vit",
        "--max-steps",
        "4",
        "--batch-size",
        "8",
        "--image-size",
        "32",
        "--num-workers",
        "0",
        "--log-every",
        "1",
        "--accelerator",
        "cpu",
        "--deterministic",
    ]
    # Concurrently: each run is mostly interpreter start-up on a busy 2-core machine.
    procs = [
        subprocess.Popen(
            [*args, "--out", str(tmp_path / "one")],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        ),
        subprocess.Popen(
            [*args, "--out", str(tmp_path / "two"), "--devices", "2"],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        ),
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    one = torch.load(tmp_path / "one" / "backbone.pt", weights_only=True)
    two = torch.load(tmp_path / "two" / "backbone.pt", weights_only=True)
    assert one.keys() == two.keys()
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-5, msg=k)
    # The tolerance is far below what 4 steps of training changed (the comparison is not vacuous):
    # the initial backbone is what seed 0 builds before training.
    L.seed_everything(0, verbose=False)
    init = get_method("simclr")(
        arch="test_vit", in_chans=3, image_size=32, batch_size=8, max_steps=4
    ).backbone.state_dict()
    change = max((one[k] - init[k]).abs().max().item() for k in one)
    assert change > 1e-3, change
    run_one = json.loads((tmp_path / "one" / "run.json").read_text())
    run_two = json.loads((tmp_path / "two" / "run.json").read_text())
    assert run_one["world_size"] == 1 and run_two["world_size"] == 2 and run_two["per_device_batch"] == 4
    assert run_two["images_seen"] == run_one["images_seen"] == 4 * 8
    assert len(_losses(tmp_path / "two")) == 4


def test_distillation_under_two_gloo_processes_matches_one_process(tmp_path, eurosat_small):
    """A frozen teacher under DDP: every rank loads the same file, runs it in inference mode, and the
    student (a LayerNorm ViT, see the module docstring) ends where one process with the whole batch
    ends; the teacher's BatchNorm ResNet stays in eval mode, so its statistics cannot drift per rank."""
    torch.manual_seed(0)
    teacher = tmp_path / "teacher.pt"
    torch.save(timm.create_model("resnet18", num_classes=0).state_dict(), teacher)
    config = tmp_path / "recipe.yaml"  # warmup-free steps (LR scaled by 8/256): 3 steps move the student
    config.write_text("recipe: {lr: 0.01, warmup_fraction: 0.0}\n")
    args = [
        RSBENCH, "pretrain", "--images", str(eurosat_small), "--method", "distill", "--backbone", "test_vit",
        "--teacher", str(teacher), "--teacher-arch", "resnet18", "--max-steps", "3", "--batch-size", "8",
        "--image-size", "32", "--num-workers", "0", "--log-every", "1", "--accelerator", "cpu", "--deterministic",
        "--config", str(config),
    ]  # fmt: skip
    procs = [
        subprocess.Popen([*args, "--out", str(tmp_path / out), *extra], env=ENV, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
        for out, extra in (("one", []), ("two", ["--devices", "2"]))
    ]  # fmt: skip
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    one = torch.load(tmp_path / "one" / "backbone.pt", weights_only=True)
    two = torch.load(tmp_path / "two" / "backbone.pt", weights_only=True)
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-5, msg=k)
    assert len(_losses(tmp_path / "two")) == 3
    run_two = json.loads((tmp_path / "two" / "run.json").read_text())
    assert run_two["world_size"] == 2 and run_two["teacher_cost"]["time_s"] > 0
    # The teacher inside each final checkpoint is still the file it came from.
    original = torch.load(teacher, weights_only=True)
    for run in ("one", "two"):
        state = torch.load(tmp_path / run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        kept = {k.removeprefix("teacher.model."): v for k, v in state.items() if k.startswith("teacher.model.")}
        assert kept.keys() == original.keys() and all(torch.equal(kept[k], original[k]) for k in original)
    # ...while the student did train: the weight comparison is not between two untouched inits.
    L.seed_everything(0, verbose=False)
    norm = {"mean": [0.0] * 3, "std": [1.0] * 3}
    spec = teacher_spec(str(teacher), "resnet18", None, ["red", "green", "blue"], norm)
    init = get_method("distill")(
        arch="test_vit", in_chans=3, image_size=32, batch_size=8, max_steps=3, teacher=spec, recipe={"lr": 0.01}
    ).backbone.state_dict()
    assert max((one[k] - init[k]).abs().max().item() for k in one) > 1e-4  # 10x assert_close's atol


def test_corpus_stream_under_ddp_gives_every_rank_the_same_number_of_batches(tmp_path, rasters_dir):
    """81 tiles in 7 shards of 12 or 9: rank 0 reads 45 tiles, rank 1 only 36, but an epoch needs
    10 batches of 4 (40 tiles) from each; the short rank cycles its shards instead of running dry
    (which would leave rank 0 waiting in an all-reduce forever). Two epochs: the second starts
    cleanly on both ranks."""
    corpus = tmp_path / "corpus"
    build_corpus(
        CorpusBuildConfig(
            inputs=[str(rasters_dir / "spacenet6_rotterdam_ms1_4band.tif")],
            out=str(corpus),
            tile_size=32,
            shard_size=12,
            workers=1,
        )
    )
    info = json.loads((corpus / "corpus.json").read_text())
    (group,) = info["band_groups"].values()
    assert group["bands"] == 4 and group["tiles"] == 81 and len(group["shards"]) == 7
    out = tmp_path / "run"
    _run(
        [
            RSBENCH,
            "pretrain",
            "--corpus",
            str(corpus),
            "--out",
            str(out),
            "--backbone",
            "test_resnet",
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--image-size",
            "32",
            "--num-workers",
            "0",
            "--log-every",
            "1",
            "--accelerator",
            "cpu",
            "--devices",
            "2",
        ],
        timeout=300,
    )
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "finished" and run["steps"] == 2 * (81 // 8) and run["world_size"] == 2
    assert len(_losses(out)) == 20
    meta = json.loads((out / "backbone.json").read_text())
    assert meta["in_chans"] == 4 and meta["steps"] == 20


@pytest.mark.parametrize("bad", [["--strategy", "fsdp", "--accelerator", "cpu"], ["--devices", "3"]])
def test_impossible_layouts_are_clear_errors(tmp_path, eurosat_small, bad):
    result = CliRunner().invoke(
        app,
        [
            "pretrain",
            "--images",
            str(eurosat_small),
            "--out",
            str(tmp_path / "r"),
            "--batch-size",
            "8",
            "--max-steps",
            "1",
            *bad,
        ],
    )
    assert result.exit_code == 1
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert ("fsdp needs GPUs" in lines[0]) if "fsdp" in bad else ("not a multiple of devices x nodes" in lines[0])
    assert not (tmp_path / "r" / "checkpoints").exists()
