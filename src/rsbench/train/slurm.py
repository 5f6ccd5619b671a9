"""Submitting `rsbench pretrain` to SLURM with submitit: one task per device (GPU, or CPU process), launched by srun.

The submitted callable is `PretrainJob` (submitit's checkpointing protocol): SLURM sends SIGUSR2
`signal_delay_s` before the time limit (or on preemption); the training loop saves last.ckpt at the
next optimizer step on every rank and stops; rank 0 then hands over to submitit's handler, which
calls `PretrainJob.checkpoint()` (the same job again: it resumes from last.ckpt by itself) and
requeues the job, up to `max_requeues` times.

The sbatch script is made by submitit's own generator, so `--dry-run` prints exactly what
`sbatch` would receive. The resources are `SlurmOptions` (rsbench.contracts.pretrain_config), a `SlurmResources`
translated by its `sbatch_parameters()`.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from rsbench import engines
from rsbench.contracts.pretrain_config import PretrainConfig, SlurmOptions
from rsbench.contracts.run_dir import SLURM_DIR
from rsbench.errors import ConfigError
from rsbench.settings import resolve_config
from rsbench.train.checkpoint import RunPreempted


def sbatch_parameters(cfg: PretrainConfig, opts: SlurmOptions) -> dict[str, Any]:
    """Keyword arguments of submitit's SlurmExecutor.update_parameters / _make_sbatch_string.

    `cfg` is the job's config (`job_config`): one task (one DDP rank) per device, a GPU per task unless
    the accelerator is the CPU (then no GPU directive at all)."""
    params = opts.sbatch_parameters()
    params.pop("gpus_per_node", None)
    params.update(
        job_name=opts.job_name or f"rsbench-{cfg.out.name}",
        nodes=cfg.nodes,
        ntasks_per_node=cfg.devices,
        stderr_to_stdout=False,
    )
    if cfg.accelerator != "cpu":
        params["gpus_per_node"] = cfg.devices
    return params


def job_config(cfg: PretrainConfig, cluster: str = "slurm") -> PretrainConfig:
    """The config the job runs: the allocation's layout (one task per device), auto-resume.

    The accelerator and the device count follow what the job requests: --accelerator cpu or
    --gpus-per-node 0 make a CPU-only job of --devices tasks per node; otherwise each node runs one task
    per GPU, --gpus-per-node of them (unset: --devices)."""
    # Absolute paths: the job may start in another working directory.
    paths = {k: Path(v).resolve() for k in ("out", "corpus", "images") if (v := getattr(cfg, k)) is not None}
    if cluster == "local":
        return cfg.model_copy(update={"resume": None, **paths})
    opts = cfg.slurm or SlurmOptions()
    gpus = opts.gpus_per_node
    if cfg.accelerator == "cpu" or (cfg.accelerator == "auto" and gpus == 0):
        if gpus:
            raise ConfigError(f"--accelerator cpu requests no GPU: drop --gpus-per-node {gpus} (or give 0)")
        accelerator, devices = "cpu", cfg.devices
    else:
        if gpus == 0:
            raise ConfigError(f"--accelerator {cfg.accelerator} needs GPUs but --gpus-per-node is 0")
        devices = gpus or cfg.devices
        if cfg.devices not in (1, devices):
            raise ConfigError(
                f"--devices {cfg.devices} differs from --gpus-per-node {devices}; under --slurm "
                f"each node runs one task per GPU"
            )
        accelerator = "gpu" if cfg.accelerator == "auto" else cfg.accelerator
    values = cfg.model_dump()
    values.update(paths, devices=devices, resume=None, accelerator=accelerator)
    return resolve_config(PretrainConfig, None, **values)  # re-checks batch_size against the new device count


def submitit_folder(cfg: PretrainConfig) -> Path:
    return cfg.out / SLURM_DIR


def submit_command(folder: Path) -> str:
    """The command submitit puts after srun (SlurmExecutor._submitit_command_str)."""
    return " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])


def sbatch_script(cfg: PretrainConfig) -> str:
    """The sbatch file `--slurm` would submit (submitit's generator; %j is the job id)."""
    from submitit.slurm.slurm import _make_sbatch_string

    job = job_config(cfg)
    folder = submitit_folder(cfg).resolve() / "%j"
    return _make_sbatch_string(
        command=submit_command(folder), folder=folder, **sbatch_parameters(job, cfg.slurm or SlurmOptions())
    )


def submit(cfg: PretrainConfig, cluster: str = "slurm"):
    """Submit the run; returns the submitit Job. `cluster="local"` runs it through submitit's
    LocalExecutor (same callable, no SLURM), e.g. to test a configuration on a workstation."""
    import submitit

    job_cfg = job_config(cfg, cluster)
    folder = submitit_folder(cfg) / "%j"
    opts = cfg.slurm or SlurmOptions()
    if cluster == "local":
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=opts.time, tasks_per_node=1, nodes=1, gpus_per_node=0)
    elif cluster == "slurm":
        try:
            executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=opts.max_requeues)
        except RuntimeError as e:
            raise ConfigError(f"cannot submit to SLURM from this machine: {e}") from None
        params = sbatch_parameters(job_cfg, opts)
        executor.update_parameters(**params)
        # What the job asks for, checked before submitting: a job the partition can never run would wait forever.
        resources = opts.model_copy(update={"gpus_per_node": params.get("gpus_per_node")})
        layout = [f"--nodes={job_cfg.nodes}", f"--ntasks-per-node={job_cfg.devices}"]
        engines.check_request(resources, "the pretraining job", layout)
        with engines.sbatch_refusals("the pretraining job", resources):
            return executor.submit(PretrainJob(job_cfg.model_dump(mode="json")))
    else:
        raise ConfigError(f"unknown cluster '{cluster}' (slurm, local)")
    return executor.submit(PretrainJob(job_cfg.model_dump(mode="json")))


class PretrainJob:
    """The callable submitit runs on every task (picklable: it holds the config as plain data)."""

    def __init__(self, config: dict[str, Any]):
        self.config = config

    def __call__(self) -> str:
        from rsbench.train.pretrain import pretrain

        cfg = PretrainConfig.model_validate(self.config)
        try:
            return str(pretrain(cfg, submitit_job=True))
        except RunPreempted:
            env = _job_environment()
            if env is not None and env.global_rank != 0:
                return "preempted"  # rank 0 requeues the whole job
            usr = _submitit_signal()
            handler = signal.getsignal(usr)
            if callable(handler) and env is not None:
                handler(usr, None)  # submitit: self.checkpoint(), requeue, exit
            raise

    def checkpoint(self, *args: Any, **kwargs: Any):
        """submitit's checkpointing protocol: resubmit this job; it resumes from RUN_DIR's last.ckpt."""
        import submitit

        return submitit.helpers.DelayedSubmission(PretrainJob(self.config))


def _job_environment():
    import submitit

    try:
        return submitit.JobEnvironment()
    except RuntimeError:
        return None


def _submitit_signal() -> int:
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), signal.SIGUSR2)


def requeue_current_job() -> bool:
    """`scontrol requeue` this SLURM job (what Lightning's SLURM auto-requeue does); True on success."""
    job = os.environ.get("SLURM_JOB_ID")
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}"
    if not job or not job.replace("_", "").isdigit():
        return False
    try:
        return subprocess.run(["scontrol", "requeue", job], check=False).returncode == 0
    except OSError:
        return False
