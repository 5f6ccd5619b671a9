"""`rsbench pretrain`."""

from __future__ import annotations

from pathlib import Path

import typer

from rsbench.cli.common import ConfigOption, handle_errors
from rsbench.errors import ConfigError
from rsbench.settings import load_yaml_mapping, resolve_config

_SLURM_KEYS = ("partition", "account", "qos", "gpus_per_node", "cpus_per_task", "time", "mem", "constraint")


@handle_errors
def pretrain_command(
    method: str = typer.Option(None, help="SSL method (default: simclr)."),
    corpus: Path = typer.Option(None, help="Corpus directory made by `rsbench corpus build`."),
    images: Path = typer.Option(None, help="Folder of images (labels, if any, are ignored)."),
    backbone: str = typer.Option(None, help="timm architecture (default: the method's, e.g. resnet18)."),
    out: Path = typer.Option(None, "--out", help="Run directory (created; re-running resumes or skips)."),
    epochs: int = typer.Option(None, help="Epochs over the data (default 1 unless --max-steps)."),
    max_steps: int = typer.Option(None, help="Optimizer steps (overrides --epochs)."),
    batch_size: int = typer.Option(None, help="GLOBAL batch over all devices and accumulation steps (default 64)."),
    accumulate: int = typer.Option(None, help="Micro-batches per optimizer step (default 1)."),
    image_size: int = typer.Option(None, help="Crop size fed to the network (default 64)."),
    patch_size: int = typer.Option(None, help="ViT patch size (default: the architecture's; 8 suits 64 px tiles)."),
    min_scale: float = typer.Option(None, help="Smallest random-resized-crop area fraction (default: the method's)."),
    color_jitter: bool = typer.Option(
        None, "--color-jitter/--no-color-jitter", help="RGB data: add hue/saturation colour jitter (default off)."
    ),
    bands: int = typer.Option(None, help="Corpus band group to train on (default: the largest)."),
    num_workers: int = typer.Option(None, help="DataLoader workers per device (default 2)."),
    seed: int = typer.Option(None, help="Random seed (default 0)."),
    precision: str = typer.Option(None, help="32 | bf16-mixed | 16-mixed | auto (bf16 on capable GPUs)."),
    accelerator: str = typer.Option(None, help="auto | cpu | gpu (default auto)."),
    devices: int = typer.Option(None, help="Devices (GPUs, or CPU processes) per node (default 1)."),
    nodes: int = typer.Option(None, help="Nodes (default 1)."),
    strategy: str = typer.Option(None, help="auto | ddp | fsdp (auto: ddp when more than one device)."),
    compile: bool = typer.Option(None, "--compile/--no-compile", help="torch.compile the backbone."),
    checkpoint_every: int = typer.Option(None, help="Save last.ckpt every N optimizer steps (default 500)."),
    log_every: int = typer.Option(None, help="Log metrics every N steps (default 10)."),
    resume: bool = typer.Option(
        None, "--resume/--no-resume", help="Default: resume when RUN_DIR has a checkpoint. --no-resume refuses to."
    ),
    logger: str = typer.Option(None, help="csv | tensorboard | mlflow (metrics.csv is always written)."),
    deterministic: bool = typer.Option(
        None,
        "--deterministic/--no-deterministic",
        help="Deterministic kernels (bit-exact resume on CPU; slower on GPU).",
    ),
    slurm: bool = typer.Option(False, "--slurm", help="Submit to SLURM through submitit instead of running here."),
    dry_run: bool = typer.Option(False, "--dry-run", help="With --slurm: print the sbatch script, submit nothing."),
    partition: str = typer.Option(None, help="[--slurm] partition."),
    account: str = typer.Option(None, help="[--slurm] account to charge."),
    qos: str = typer.Option(None, help="[--slurm] quality of service."),
    gpus_per_node: int = typer.Option(None, help="[--slurm] GPUs (= tasks) per node (default 1)."),
    cpus_per_task: int = typer.Option(None, help="[--slurm] CPUs per task."),
    time: str = typer.Option(None, "--time", help="[--slurm] time limit: minutes or HH:MM:SS (default 60)."),
    mem: str = typer.Option(None, help="[--slurm] memory per node, e.g. 64G."),
    constraint: str = typer.Option(None, help="[--slurm] node constraint, e.g. a100."),
    config: Path = ConfigOption,
) -> None:
    """Pretrain a backbone with a self-supervised method and export it to RUN_DIR/backbone.pt.

    Scales from one CPU to many GPUs without code changes (--devices, --nodes, --slurm); resumes
    from RUN_DIR/checkpoints/last.ckpt; records its cost in RUN_DIR/run.json.
    """
    from rsbench.train import PretrainConfig, pretrain

    slurm_cli = {
        k: v
        for k, v in dict(
            partition=partition,
            account=account,
            qos=qos,
            gpus_per_node=gpus_per_node,
            cpus_per_task=cpus_per_task,
            time=time,
            mem=mem,
            constraint=constraint,
        ).items()
        if v is not None
    }
    if (slurm_cli or dry_run) and not slurm:
        raise ConfigError(
            f"--{(next(iter(slurm_cli)) if slurm_cli else 'dry_run').replace('_', '-')} only applies with --slurm"
        )
    slurm_opts = None
    if slurm:
        from_file = load_yaml_mapping(config).get("slurm") if config else None
        slurm_opts = {**(from_file or {}), **slurm_cli}
    cfg = resolve_config(
        PretrainConfig,
        config,
        method=method,
        corpus=corpus,
        images=images,
        backbone=backbone,
        out=out,
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        accumulate=accumulate,
        image_size=image_size,
        patch_size=patch_size,
        min_scale=min_scale,
        color_jitter=color_jitter,
        bands=bands,
        num_workers=num_workers,
        seed=seed,
        precision=precision,
        accelerator=accelerator,
        devices=devices,
        nodes=nodes,
        strategy=strategy,
        compile=compile,
        checkpoint_every=checkpoint_every,
        log_every=log_every,
        resume=resume,
        logger=logger,
        deterministic=deterministic,
        slurm=slurm_opts,
    )
    if slurm:
        from rsbench.train.slurm import sbatch_script, submit

        if dry_run:
            typer.echo(sbatch_script(cfg))
            return
        job = submit(cfg)
        typer.echo(
            f"submitted SLURM job {job.job_id}; logs in {cfg.out / 'slurm' / str(job.job_id)}; "
            f"`rsbench runs {cfg.out.parent}` shows its progress"
        )
        return
    run_dir = pretrain(cfg)
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank == 0:  # every DDP rank returns here; one line is enough
        typer.echo(f"backbone exported to {run_dir / 'backbone.pt'}")
