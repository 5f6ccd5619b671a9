"""The offline demo behind `make quickstart`: every stage, end to end, on procedural GeoTIFF scenes.

synthetic scenes (GeoTIFF) -> corpus build -> SimCLR pretrain -> evaluate (SSL run and random init;
kNN + linear; 3 seeds) -> report.html. Each stage reads only the previous stage's artefacts, exactly
as a user would chain the CLI commands, and every stage skips work that is already done.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rsbench.corpus import CorpusBuildConfig, build_corpus
from rsbench.data.synthetic import generate_classification_set, generate_scenes
from rsbench.evaluate import EvaluateConfig, evaluate
from rsbench.report import load_results, render_report
from rsbench.train import PretrainConfig, pretrain


@dataclass(frozen=True)
class QuickstartSettings:
    """Sized to finish in a few minutes on 2 CPU cores while the SSL backbone still learns something."""

    scenes: int = 4
    scene_size: int = 512
    tile_size: int = 32
    chips_per_class: int = 100
    chip_size: int = 32
    backbone: str = "resnet18"
    batch_size: int = 64
    epochs: int = 20
    min_scale: float = 0.25  # 32 px tiles: smaller crops carry too little texture
    # Short CPU schedules with small batches learn faster with AdamW than with the paper's LARS
    # (measured on EuroSAT, see benchmarks/foundation_real_data.py): the small-batch preset.
    recipe_preset: str = "small-batch"
    seeds: tuple[int, ...] = (0, 1, 2)


def run_quickstart(
    out: Path, settings: QuickstartSettings = QuickstartSettings(), log: Callable[[str], None] = print
) -> Path:
    """Run the whole pipeline into `out`; returns the path of report.html."""
    out = Path(out)
    scenes_dir, labelled_dir = out / "data" / "scenes", out / "data" / "landcover"
    if not (scenes_dir / "done").exists():
        log(f"[1/5] generating {settings.scenes} procedural multispectral scenes -> {scenes_dir}")
        generate_scenes(scenes_dir, n=settings.scenes, size=settings.scene_size, seed=0)
        generate_classification_set(labelled_dir, per_class=settings.chips_per_class, size=settings.chip_size, seed=1)
        (scenes_dir / "done").touch()

    log("[2/5] corpus build")
    corpus_dir = out / "corpus"
    build_corpus(
        CorpusBuildConfig(inputs=[str(scenes_dir)], out=str(corpus_dir), tile_size=settings.tile_size), log=log
    )

    log(f"[3/5] pretraining SimCLR/{settings.backbone} for {settings.epochs} epochs on the corpus")
    run_dir = pretrain(
        PretrainConfig(
            method="simclr",
            corpus=corpus_dir,
            backbone=settings.backbone,
            out=out / "runs" / "simclr",
            epochs=settings.epochs,
            batch_size=settings.batch_size,
            image_size=settings.tile_size,
            num_workers=1,
            min_scale=settings.min_scale,
            recipe_preset=settings.recipe_preset,
        )
    )

    log("[4/5] evaluating the SSL backbone and a random-init baseline (kNN + linear probe)")
    results_dir = out / "results"
    for init in (str(run_dir), "random"):
        evaluate(
            EvaluateConfig(
                data=labelled_dir,
                init=init,
                backbone=settings.backbone,
                image_size=settings.chip_size,
                protocol=["knn", "linear"],
                seeds=list(settings.seeds),
                out=results_dir,
            )
        )

    log("[5/5] rendering the report")
    report = render_report(load_results([results_dir]), out / "report.html", title="rsbench quickstart")
    return report
