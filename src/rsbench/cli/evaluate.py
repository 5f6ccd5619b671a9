"""`rsbench evaluate`: score a backbone (or a trivial baseline) on a labelled downstream task."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from rsbench.cli.common import ConfigOption, console, handle_errors, split_csv
from rsbench.settings import resolve_config


@handle_errors
def evaluate_command(
    task_spec: Path | None = typer.Option(
        None,
        "--task-spec",
        help="YAML task spec (name, task, adapter, data, classes, metric, options); "
        "the command line and --config override its keys.",
    ),
    task: str | None = typer.Option(
        None, "--task", help="Downstream task: classification, segmentation, detection (default: classification)."
    ),
    data: Path | None = typer.Option(
        None,
        "--data",
        help="Labelled data: ImageFolder (root/<class>/<image>), a CSV (path,label or path,labels "
        "with ';'-separated labels), or a torchgeo dataset root (--adapter torchgeo).",
    ),
    test_data: Path | None = typer.Option(
        None, "--test-data", help="Fixed test set in the same format; without it --data is split per seed."
    ),
    adapter: str | None = typer.Option(
        None,
        "--adapter",
        help="How to read --data. classification: imagefolder, csv, torchgeo; segmentation: masks, "
        "vector; detection: voc, coco, csv (default: from --data / the task spec).",
    ),
    init: str | None = typer.Option(
        None,
        "--init",
        help="Run directory, 'random', 'imagenet', a state_dict file, 'torchgeo:<WeightsEnum>' "
        "(e.g. torchgeo:ResNet18_Weights.SENTINEL2_RGB_MOCO), or a baseline: 'bandstats', 'pixels'.",
    ),
    backbone: str | None = typer.Option(
        None, "--backbone", help="timm architecture (default: resnet18; a run uses its own)."
    ),
    image_size: int | None = typer.Option(
        None, "--image-size", help="Input size (default: the run's / the weights', else 64)."
    ),
    patch_size: int | None = typer.Option(
        None, "--patch-size", help="ViT patch size for random/imagenet/weights-file inits (a run uses its own)."
    ),
    weights: Path | None = typer.Option(
        None, "--weights", help="Checkpoint file for --init imagenet or --init torchgeo:... (offline use)."
    ),
    bands: str | None = typer.Option(
        None,
        "--bands",
        help="The data's band names in file order, e.g. B04,B03,B02 or blue,green,red,nir (maps them "
        "onto torchgeo weights, and ImageNet's RGB filters onto the red, green, blue bands; default: the torchgeo "
        "dataset's bands or the GeoTIFFs' band descriptions).",
    ),
    rgb_bands: str | None = typer.Option(
        None,
        "--rgb-bands",
        help="--init imagenet: the data's red, green, blue bands, as 1-based indices (e.g. 4,3,2) "
        "or --bands names; ImageNet's RGB filters go there, every other band gets their mean (default: from the "
        "band names; 3 unnamed bands are taken as RGB, more are an error).",
    ),
    protocol: str | None = typer.Option(
        None,
        "--protocol",
        help="Comma-separated. classification: knn, linear, finetune (default: knn,linear); segmentation and "
        "detection: frozen, finetune (default: frozen).",
    ),
    seeds: str | None = typer.Option(
        None,
        "--seeds",
        help="Comma-separated seeds (default: 0,1,2,3,4 when every protocol is a frozen one - knn, "
        "knn5, linear, frozen - else 0,1,2).",
    ),
    fractions: str | None = typer.Option(
        None,
        "--fractions",
        help="Label fractions of the train split, e.g. 0.01,0.1,1.0 (stratified, >= 1 per class; default: 1.0).",
    ),
    test_fraction: float | None = typer.Option(
        None, "--test-fraction", help="Per-class test share when there is no --test-data (default: 0.2)."
    ),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Batch size (default: 64)."),
    epochs: int | None = typer.Option(
        None, "--epochs", help="Epochs for trained parts (fine-tune, decoders; default 10)."
    ),
    lr: float | None = typer.Option(None, "--lr", help="Learning rate for trained parts (default: per protocol)."),
    decoder: str | None = typer.Option(None, "--decoder", help="Segmentation decoder (default: fpn)."),
    out: Path | None = typer.Option(None, "--out", help="Output folder for results.jsonl (default: results)."),
    save_features: bool | None = typer.Option(
        None, "--save-features", help="Keep the extracted frozen features with the results.", show_default=False
    ),
    config: Path | None = ConfigOption,
) -> None:
    """Score a backbone with kNN / linear probes or fine-tuning; rows go to OUT/results.jsonl."""
    # Imported here so `rsbench --help` stays fast (torch, timm).
    from rsbench.evaluate import EvaluateConfig, evaluate, results_table
    from rsbench.evaluate.results import RESULTS_FILE

    cfg = resolve_config(
        EvaluateConfig,
        config,
        task_spec=task_spec,
        task=task,
        data=data,
        test_data=test_data,
        adapter=adapter,
        init=init,
        backbone=backbone,
        image_size=image_size,
        patch_size=patch_size,
        weights=weights,
        bands=split_csv(bands),
        rgb_bands=split_csv(rgb_bands),
        protocol=split_csv(protocol),
        seeds=split_csv(seeds),
        test_fraction=test_fraction,
        batch_size=batch_size,
        out=out,
        fractions=split_csv(fractions),
        epochs=epochs,
        lr=lr,
        decoder=decoder,
        save_features=save_features,
    )
    rows = evaluate(cfg, console=console)
    Console().print(results_table(rows))
    console.print(f"{len(rows)} rows written to {cfg.out / RESULTS_FILE}", markup=False, highlight=False)
