"""`rsbench pretrain`."""

from __future__ import annotations

from pathlib import Path

import typer

from rsbench.cli.common import ConfigOption, handle_errors
from rsbench.config import resolve_config


@handle_errors
def pretrain_command(
    method: str = typer.Option(None, help="SSL method (default: simclr)."),
    corpus: Path = typer.Option(None, help="Corpus directory made by `rsbench corpus build`."),
    images: Path = typer.Option(None, help="Folder of images (labels, if any, are ignored)."),
    backbone: str = typer.Option(None, help="timm architecture (default: the method's, e.g. resnet18)."),
    out: Path = typer.Option(None, "--out", help="Run directory (created; re-running resumes or skips)."),
    epochs: int = typer.Option(None, help="Epochs over the data (default 1 unless --max-steps)."),
    max_steps: int = typer.Option(None, help="Optimizer steps (overrides --epochs)."),
    batch_size: int = typer.Option(None, help="Batch size (default 64)."),
    image_size: int = typer.Option(None, help="Crop size fed to the network (default 64)."),
    bands: int = typer.Option(None, help="Corpus band group to train on (default: the largest)."),
    num_workers: int = typer.Option(None, help="DataLoader workers (default 2)."),
    seed: int = typer.Option(None, help="Random seed (default 0)."),
    precision: str = typer.Option(None, help="32-true | bf16-mixed | 16-mixed | auto (bf16 on capable GPUs)."),
    config: Path = ConfigOption,
) -> None:
    """Pretrain a backbone with a self-supervised method and export it to RUN_DIR/backbone.pt."""
    from rsbench.train import PretrainConfig, pretrain

    cfg = resolve_config(
        PretrainConfig, config, method=method, corpus=corpus, images=images, backbone=backbone, out=out,
        epochs=epochs, max_steps=max_steps, batch_size=batch_size, image_size=image_size, bands=bands,
        num_workers=num_workers, seed=seed, precision=precision,
    )
    run_dir = pretrain(cfg)
    typer.echo(f"backbone exported to {run_dir / 'backbone.pt'}")
