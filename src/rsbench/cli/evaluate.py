"""`rsbench evaluate`: kNN / linear probes of a backbone on labelled data."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from rsbench.cli.common import ConfigOption, console, handle_errors, split_csv
from rsbench.config import resolve_config


@handle_errors
def evaluate_command(
    task: Optional[str] = typer.Option(None, "--task", help="Downstream task (default: classification)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Labelled ImageFolder (root/<class>/<image>)."),
    test_data: Optional[Path] = typer.Option(
        None, "--test-data", help="Fixed test ImageFolder; without it --data is split per seed."
    ),
    init: Optional[str] = typer.Option(
        None, "--init", help="Run directory (backbone.json + backbone.pt), 'random', 'imagenet', or a state_dict file."
    ),
    backbone: Optional[str] = typer.Option(
        None, "--backbone", help="timm architecture (default: resnet18; a run uses its own)."
    ),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Input size (default: the run's, else 64)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="ImageNet checkpoint file for --init imagenet."),
    protocol: Optional[str] = typer.Option(None, "--protocol", help="knn, linear or knn,linear (default: knn,linear)."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Comma-separated seeds (default: 0,1,2)."),
    test_fraction: Optional[float] = typer.Option(
        None, "--test-fraction", help="Per-class test share when there is no --test-data (default: 0.2)."
    ),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Feature-extraction batch size (default: 64)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder for results.jsonl (default: results)."),
    config: Optional[Path] = ConfigOption,
) -> None:
    """Score a backbone with frozen-feature probes; rows go to OUT/results.jsonl."""
    # Imported here so `rsbench --help` stays fast (torch, timm).
    from rsbench.evaluate import EvaluateConfig, evaluate, results_table
    from rsbench.evaluate.results import RESULTS_FILE

    cfg = resolve_config(
        EvaluateConfig, config, task=task, data=data, test_data=test_data, init=init, backbone=backbone,
        image_size=image_size, weights=weights, protocol=split_csv(protocol), seeds=split_csv(seeds),
        test_fraction=test_fraction, batch_size=batch_size, out=out,
    )
    rows = evaluate(cfg, console=console)
    Console().print(results_table(rows))
    console.print(f"{len(rows)} rows written to {cfg.out / RESULTS_FILE}", markup=False, highlight=False)
