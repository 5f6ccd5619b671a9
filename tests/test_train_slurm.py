"""SLURM through submitit: the sbatch script of `--slurm --dry-run`, and a pretrain job run end to end
by submitit's LocalExecutor (the same callable a SLURM task runs)."""

from __future__ import annotations

import json
import os
import pickle

import pytest
from typer.testing import CliRunner

from rsbench.cli import app
from rsbench.contracts.pretrain_config import SlurmOptions
from rsbench.errors import ConfigError
from rsbench.train import PretrainConfig
from rsbench.train.slurm import PretrainJob, job_config, submit

runner = CliRunner()


def test_dry_run_prints_the_sbatch_script(tmp_path, eurosat_small):
    out = tmp_path / "runs" / "moco"
    result = runner.invoke(
        app,
        [
            "pretrain",
            "--images",
            str(eurosat_small),
            "--out",
            str(out),
            "--method",
            "mocov2",
            "--batch-size",
            "256",
            "--nodes",
            "2",
            "--slurm",
            "--partition",
            "gpu_p5",
            "--account",
            "abc@a100",
            "--gpus-per-node",
            "8",
            "--cpus-per-task",
            "8",
            "--time",
            "20:00:00",
            "--qos",
            "qos_gpu-t3",
            "--dry-run",
        ],
    )
    assert result.exit_code == 0, result.output
    script = result.stdout
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    for flag in (
        "--partition=gpu_p5",
        "--account=abc@a100",
        "--qos=qos_gpu-t3",
        "--nodes=2",
        "--gpus-per-node=8",
        "--ntasks-per-node=8",
        "--cpus-per-task=8",
        "--time=1200",
        "--signal=USR2@120",
        "--job-name=rsbench-moco",
    ):
        assert f"#SBATCH {flag}" in lines, flag
    srun = [ln for ln in lines if ln.startswith("srun ")]
    assert len(srun) == 1 and "-m submitit.core._submit" in srun[0] and str(out.resolve() / "slurm") in srun[0]
    assert not out.exists(), "a dry run submits and writes nothing"


def test_slurm_options_are_checked(tmp_path, eurosat_small):
    result = runner.invoke(
        app, ["pretrain", "--images", str(eurosat_small), "--out", str(tmp_path / "r"), "--partition", "p"]
    )
    assert result.exit_code == 1 and "error: --partition only applies with --slurm" in result.stderr
    result = runner.invoke(
        app,
        [
            "pretrain",
            "--images",
            str(eurosat_small),
            "--out",
            str(tmp_path / "r"),
            "--batch-size",
            "100",
            "--slurm",
            "--gpus-per-node",
            "8",
            "--dry-run",
        ],
    )
    assert result.exit_code == 1 and "not a multiple of devices x nodes x accumulate = 8 x 1 x 1" in result.stderr
    assert SlurmOptions(time="1-02:30:00").time == 26 * 60 + 30
    cfg = PretrainConfig(images=eurosat_small, out=tmp_path / "r", devices=4, slurm=SlurmOptions(gpus_per_node=8))
    with pytest.raises(ConfigError, match="differs from --gpus-per-node 8"):
        job_config(cfg)


def test_job_checkpoint_resubmits_the_same_run(tmp_path, eurosat_small):
    cfg = PretrainConfig(
        images=eurosat_small, out=tmp_path / "r", slurm=SlurmOptions(gpus_per_node=4), batch_size=64, resume=False
    )
    job_cfg = job_config(cfg)
    assert job_cfg.devices == 4 and job_cfg.accelerator == "gpu" and job_cfg.resume is None  # auto-resume
    assert job_cfg.out.is_absolute() and job_cfg.identity() == cfg.identity()
    job = PretrainJob(job_cfg.model_dump(mode="json"))
    delayed = pickle.loads(pickle.dumps(job.checkpoint()))  # what submitit stores for the requeued job
    assert isinstance(delayed.function, PretrainJob) and delayed.function.config == job.config


def test_local_executor_runs_a_pretrain_job_end_to_end(tmp_path, eurosat_small, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cfg = PretrainConfig(
        images=eurosat_small,
        out=tmp_path / "run",
        backbone="test_resnet",
        max_steps=3,
        batch_size=8,
        image_size=32,
        num_workers=0,
        log_every=1,
    )
    job = submit(cfg, cluster="local")
    assert job.result() == str(cfg.out.resolve())
    run = json.loads((cfg.out / "run.json").read_text())
    assert run["status"] == "finished" and run["steps"] == 3
    assert (cfg.out / "backbone.pt").is_file()
    logs = list((cfg.out / "slurm" / str(job.job_id)).iterdir())
    assert any(p.name.endswith("_result.pkl") for p in logs), os.listdir(cfg.out / "slurm")


def _stand_in(bin_dir, name: str, script: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / name).write_text("#!/bin/sh\n" + script)
    (bin_dir / name).chmod(0o755)


def test_a_request_slurm_refuses_is_one_line_naming_it(tmp_path, eurosat_small, monkeypatch):
    # Stand-ins that answer like SLURM 22.05 on a 2-CPU node: --test-only refuses 64 CPUs, a real submission
    # refuses an unknown partition (the check passed: another user's limits, a race).
    bin_dir = tmp_path / "bin"
    _stand_in(
        bin_dir,
        "sbatch",
        'case "$*" in *--test-only*--cpus-per-task=64*) echo "allocation failure: Requested node configuration '
        'is not available" >&2; exit 1;; *--test-only*) exit 0;; esac\n'
        'echo "sbatch: error: invalid partition specified: gone" >&2\n'
        'echo "sbatch: error: Batch job submission failed: Invalid partition name specified" >&2; exit 1\n',
    )
    _stand_in(bin_dir, "sinfo", 'echo "2 21694"\n')
    _stand_in(bin_dir, "srun", "exit 0\n")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    args = ["pretrain", "--images", str(eurosat_small), "--out", str(tmp_path / "r"), "--slurm", "--accelerator"]
    result = runner.invoke(app, [*args, "cpu", "--cpus-per-task", "64"])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, result.stderr
    assert lines[0] == (
        "error: SLURM cannot run the pretraining job (the default partition, 64 CPUs, 60 min): Requested node "
        "configuration is not available; the default partition has nodes of at most 2 CPUs and 21694 MB"
    )
    result = runner.invoke(app, [*args, "cpu", "--partition", "gone"])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, result.stderr
    assert lines[0] == (
        "error: sbatch refused the pretraining job (partition gone, 60 min): invalid partition specified: gone; "
        "Invalid partition name specified"
    )
