"""Run-directory artefacts besides checkpoints: the exported backbone and the merged loss curve.

File names and the exported-backbone format: rsbench.contracts.run_dir and rsbench.contracts.backbone_export.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict
from pathlib import Path

from rsbench import __version__
from rsbench.contracts.backbone_export import DEFAULT_EXPORTED_MODULE, BackboneExport
from rsbench.contracts.run_dir import RunDir
from rsbench.io import atomic_write_text


def set_aside_metrics(run_dir: Path) -> Path | None:
    """Lightning's CSVLogger deletes an existing metrics.csv; keep it so a resumed run has its whole curve."""
    path, kept = RunDir(run_dir).metrics, RunDir(run_dir).metrics_before_resume
    if kept.exists():  # an earlier resume died before merging: that file already holds the older rows
        if path.exists():
            merge_metrics(kept, run_dir, keep=True)
        return kept
    if not path.exists():
        return None
    path.replace(kept)
    return kept


def merge_metrics(earlier: Path, run_dir: Path, keep: bool = False) -> None:
    """metrics.csv := rows of `earlier` logged before the first step of the current metrics.csv,
    then the current rows (columns unioned). `earlier` is removed unless `keep`."""
    current = RunDir(run_dir).metrics
    old = list(csv.DictReader(earlier.open(newline="")))
    new = list(csv.DictReader(current.open(newline=""))) if current.exists() else []
    first_new = min((int(r["step"]) for r in new if r.get("step")), default=None)
    rows = [r for r in old if first_new is None or int(r["step"]) < first_new] + new
    fields = sorted({k for r in rows for k in r})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(earlier if keep else current, buf.getvalue())
    if keep:
        current.unlink()
    else:
        earlier.unlink()


def export_backbone(
    model,
    cfg,
    arch: str,
    normalization: dict,
    source: dict,
    steps: int,
    n_samples: int,
    recipe_adaptations: list[dict] | None = None,
) -> None:
    """backbone.pt (timm state_dict, num_classes=0) + backbone.json, both written atomically. `epochs` counts
    passes over the `n_samples` training samples in the unit the progress bar shows (cfg.steps_per_epoch)."""
    exported = getattr(model, "exported_module", DEFAULT_EXPORTED_MODULE)
    timm_kwargs = model.backbone_kwargs() if hasattr(model, "backbone_kwargs") else {}
    BackboneExport(cfg.out).write(
        getattr(model, exported).state_dict(),
        {
            "arch": arch,
            "in_chans": len(normalization["mean"]),
            "image_size": cfg.image_size,
            "timm_kwargs": timm_kwargs,
            "feature_dim": model.feature_dim,
            "normalization": normalization,
            "method": cfg.method,
            "steps": steps,
            "epochs": round(steps / cfg.steps_per_epoch(n_samples), 3),
            "training_samples": n_samples,
            "recipe_preset": cfg.recipe_preset,
            "recipe": asdict(model.recipe),
            "recipe_adaptations": list(recipe_adaptations or []),
            "peak_lr": model.recipe.scaled_lr(cfg.batch_size),
            "data": source,
            "rsbench_version": __version__,
            "exported_module": exported,
            # Distillation: the frozen teacher (source, arch, bands and how they were picked, sha256).
            **({"teacher": model.teacher.spec} if getattr(model, "teacher", None) is not None else {}),
        },
    )
