"""`rsbench pretrain`: train one SSL method with Lightning and export the backbone for evaluation.

RUN_DIR layout:
  config.yaml        resolved configuration
  checkpoints/       Lightning checkpoints (last.ckpt is used to resume)
  metrics.csv        per-step loss, LR and collapse signal (Lightning CSVLogger)
  backbone.pt/.json  exported feature extractor (see rsbench.ssl.backbones)
  run.json           what the run cost: wall time, steps, images seen, throughput, device
"""

from __future__ import annotations

import csv
import io
import warnings
import time
from dataclasses import asdict
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

from rsbench import __version__
from rsbench.config import load_yaml_mapping, save_config
from rsbench.errors import ConfigError, DataError
from rsbench.io import atomic_write_bytes, atomic_write_text, write_json
from rsbench.ssl import get_method
from rsbench.ssl.backbones import BACKBONE_META, BACKBONE_WEIGHTS
from rsbench.train.config import PretrainConfig
from rsbench.train.data import ImageFilesDataset, TransformedIterable, collate_views, image_folder_source

LAST_CKPT = "last.ckpt"
METRICS_CSV = "metrics.csv"


def _training_data(cfg: PretrainConfig, transform):
    """(dataset, normalization, number of samples, source description)."""
    if cfg.images is not None:
        paths, norm = image_folder_source(cfg.images)
        return ImageFilesDataset(paths, norm, transform), norm, len(paths), {"kind": "images", "path": str(cfg.images)}
    from rsbench.corpus import CorpusDataset  # the corpus stage is only needed for corpus runs

    stream = CorpusDataset(cfg.corpus, bands=cfg.bands, shuffle=True, seed=cfg.seed)
    source = {"kind": "corpus", "path": str(cfg.corpus), "bands": stream.bands}
    return TransformedIterable(stream, transform), stream.normalization, stream.num_samples, source


def _check_run_dir(cfg: PretrainConfig) -> str:
    """'new', 'resume' or 'finished'; a different config in an existing run dir is an error."""
    saved = cfg.out / "config.yaml"
    if not saved.exists():
        return "new"
    if load_yaml_mapping(saved) != cfg.model_dump(mode="json"):
        raise ConfigError(f"run directory {cfg.out} holds a run with a different config; choose another --out")
    if (cfg.out / BACKBONE_META).exists():
        return "finished"
    return "resume" if (cfg.out / "checkpoints" / LAST_CKPT).exists() else "new"


def _precision(cfg: PretrainConfig) -> str:
    if cfg.precision != "auto":
        return cfg.precision
    return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"


def pretrain(cfg: PretrainConfig) -> Path:
    """Train, export and account; returns the run directory. Re-running a finished run is a no-op."""
    state = _check_run_dir(cfg)
    if state == "finished":
        print(f"run {cfg.out} already finished; nothing to do")
        return cfg.out
    method_cls = get_method(cfg.method)
    arch = cfg.backbone or method_cls.default_backbone

    # Probe the data first (band count decides the view pipeline), then build the real transform.
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dataset, norm, n_samples, source = _training_data(cfg, transform=None)
    dataset.transform = method_cls.view_transform(cfg.image_size, norm.bands, cfg.min_scale)
    steps_per_epoch = n_samples // cfg.batch_size
    if steps_per_epoch == 0:
        raise DataError(f"only {n_samples} training images, fewer than --batch-size {cfg.batch_size}")
    max_steps = cfg.max_steps or cfg.epochs * steps_per_epoch

    cfg.out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, cfg.out / "config.yaml")
    model = method_cls(arch=arch, in_chans=norm.bands, image_size=cfg.image_size,
                       batch_size=cfg.batch_size, max_steps=max_steps, recipe=cfg.recipe)
    streaming = cfg.images is None
    loader = DataLoader(
        dataset, batch_size=cfg.batch_size, shuffle=not streaming, drop_last=True,
        num_workers=cfg.num_workers, collate_fn=collate_views, persistent_workers=cfg.num_workers > 0,
    )
    ckpt_dir = cfg.out / "checkpoints"
    resume = ckpt_dir / LAST_CKPT if state == "resume" else None
    earlier_metrics = _set_aside_metrics(cfg.out) if resume else None
    trainer = L.Trainer(
        max_steps=max_steps, max_epochs=-1, accelerator=cfg.accelerator, devices=1,
        precision=_precision(cfg), deterministic=False, log_every_n_steps=cfg.log_every,
        logger=CSVLogger(save_dir=cfg.out, name="", version=""),
        callbacks=[ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0,
                                   every_n_train_steps=cfg.checkpoint_every)],
        enable_model_summary=False,
    )
    if resume:
        print(f"resuming {cfg.out} from {resume}")
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(model, loader, ckpt_path=resume, weights_only=True if resume else None)
    wall = time.perf_counter() - start
    trainer.save_checkpoint(ckpt_dir / LAST_CKPT, weights_only=False)
    if earlier_metrics:
        _merge_metrics(earlier_metrics, cfg.out / METRICS_CSV)

    export_backbone(model, cfg, arch, norm.to_dict(), source, trainer.global_step, n_samples)
    write_json(cfg.out / "run.json", {
        "status": "finished", "method": cfg.method, "backbone": arch, "steps": trainer.global_step,
        "batch_size": cfg.batch_size, "images_seen": trainer.global_step * cfg.batch_size,
        "wall_time_s": round(wall, 3),
        "images_per_s": round(trainer.global_step * cfg.batch_size / wall, 2) if wall > 0 else None,
        "device": str(trainer.strategy.root_device), "precision": str(trainer.precision),
        "device_hours": round(wall / 3600, 6), "resumed": resume is not None,
        "rsbench_version": __version__,
    })
    return cfg.out


def _set_aside_metrics(run_dir: Path) -> Path | None:
    """Lightning's CSVLogger deletes an existing metrics.csv; keep it so a resumed run has its whole curve."""
    path = run_dir / METRICS_CSV
    if not path.exists():
        return None
    kept = run_dir / f".{METRICS_CSV}.before-resume"
    path.replace(kept)
    return kept


def _merge_metrics(earlier: Path, current: Path) -> None:
    """Rows logged before the resumed step, then everything logged since (columns unioned)."""
    old = list(csv.DictReader(earlier.open(newline="")))
    new = list(csv.DictReader(current.open(newline=""))) if current.exists() else []
    first_new = min((int(r["step"]) for r in new), default=None)
    rows = [r for r in old if first_new is None or int(r["step"]) < first_new] + new
    fields = sorted({k for r in rows for k in r})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(current, buf.getvalue())
    earlier.unlink()


def export_backbone(model, cfg: PretrainConfig, arch: str, normalization: dict, source: dict,
                    steps: int, n_samples: int) -> None:
    """backbone.pt (timm state_dict, num_classes=0) + backbone.json, both written atomically."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.backbone.state_dict().items()}, buf)
    atomic_write_bytes(cfg.out / BACKBONE_WEIGHTS, buf.getvalue())
    write_json(cfg.out / BACKBONE_META, {
        "arch": arch, "in_chans": len(normalization["mean"]), "image_size": cfg.image_size,
        "feature_dim": model.feature_dim, "normalization": normalization, "method": cfg.method,
        "steps": steps, "epochs": round(steps * cfg.batch_size / n_samples, 3),
        "recipe": asdict(model.recipe), "data": source, "rsbench_version": __version__,
    })
