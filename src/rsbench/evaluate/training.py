"""The evaluation stage's one Lightning training loop: fine-tuning (classification) and the dense tasks.

`TrainingModule` minimises `loss_fn(model, batch)` with AdamW over the caller's parameter groups and a per-step
schedule: plain cosine decay (torch's CosineAnnealingLR over all steps) or, with a warmup fraction, linear warmup
+ cosine decay to 0 (lightly's CosineWarmupScheduler). It keeps every step's loss and stops on a non-finite loss.
`fit` builds the quiet Trainer around it, trains, and optionally predicts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader

from rsbench.contracts.evaluate_config import EvaluateConfig
from rsbench.errors import RsbenchError
from rsbench.quiet import quiet

LossFn = Callable[[nn.Module, Any], torch.Tensor]
PredictFn = Callable[[nn.Module, Any], torch.Tensor]


def stop_patience(cfg: EvaluateConfig) -> int | None:
    """Early-stopping patience of a trained part: tuning trials (--holdout validation) stop on the validation
    loss after `early_stop_patience` epochs without a lower one; a run scored on the test split never stops
    early (its held-out split is the test split)."""
    return cfg.early_stop_patience if cfg.holdout == "validation" else None


def warmup_steps(total_steps: int, warmup_fraction: float) -> int:
    return min(total_steps, math.ceil(warmup_fraction * total_steps))


def schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float = 0.0):
    """Per-step LR scheduler: cosine over total_steps, or linear warmup (that fraction of the steps) + cosine to 0."""
    if warmup_fraction <= 0:
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))
    from lightly.utils.scheduler import CosineWarmupScheduler

    return CosineWarmupScheduler(
        optimizer, warmup_epochs=warmup_steps(total_steps, warmup_fraction), max_epochs=total_steps, end_value=0.0
    )


class TrainingModule(L.LightningModule):
    """AdamW + a per-step schedule on `loss_fn(model, batch)`; keeps every step's loss (and LR of group 0)."""

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        groups: list[dict],
        total_steps: int,
        warmup_fraction: float = 0.0,
        weight_decay: float = 0.0,
        predict_fn: PredictFn | None = None,
    ):
        super().__init__()
        self.model, self.loss_fn, self.groups, self.total_steps = model, loss_fn, groups, total_steps
        self.warmup_fraction, self.weight_decay, self.predict_fn = warmup_fraction, weight_decay, predict_fn
        self.losses: list[float] = []
        self.lrs: list[float] = []  # LR of the first parameter group at each step

    def training_step(self, batch, batch_idx):
        loss = self.loss_fn(self.model, batch)
        if not torch.isfinite(loss):
            raise RsbenchError(f"training diverged (loss {loss.item()} at step {self.global_step}); lower --lr")
        self.losses.append(float(loss.detach()))
        self.lrs.append(float(self.optimizers().param_groups[0]["lr"]))
        self.log("loss", loss.detach(), prog_bar=True, batch_size=1)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.loss_fn(self.model, batch).detach(), on_epoch=True, batch_size=len(batch[0]))

    def predict_step(self, batch, batch_idx):
        return self.predict_fn(self.model, batch) if self.predict_fn is not None else self.model(batch[0])

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.groups, weight_decay=self.weight_decay)
        sched = schedule(opt, self.total_steps, self.warmup_fraction)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


@dataclass
class FitResult:
    losses: list[float]  # per step
    steps: int  # optimizer steps taken
    fit_time_s: float
    predictions: list = field(default_factory=list)  # predict_step outputs per batch (with predict=...)
    predict_time_s: float | None = None
    lrs: list[float] = field(default_factory=list)  # LR of the first parameter group per step
    epochs: int | None = None  # epochs trained (fewer than asked when early stopping stopped it)
    best_val_loss: float | None = None  # with early stopping: the lowest validation loss seen


def trainer(
    device: torch.device,
    epochs: int,
    bf16: bool = False,
    progress_bar: bool = True,
    log_every_n_steps: int = 50,
    callbacks: list | None = None,
) -> L.Trainer:
    """Single-device Trainer for `device`; bf16-mixed only when asked and the GPU supports it. No logger,
    checkpoints or summary. Build and use it under `quiet()`."""
    cuda = device.type == "cuda"
    precision = "bf16-mixed" if bf16 and cuda and torch.cuda.is_bf16_supported() else "32-true"
    callbacks = list(callbacks or [])
    if progress_bar:
        from lightning.pytorch.callbacks import RichProgressBar

        callbacks.append(RichProgressBar(leave=False, console_kwargs={"stderr": True}))
    return L.Trainer(
        max_epochs=epochs,
        accelerator="gpu" if cuda else device.type,
        devices=[device.index or 0] if cuda else 1,
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        enable_progress_bar=progress_bar,
        callbacks=callbacks,
        log_every_n_steps=log_every_n_steps,
    )


def fit(
    model: nn.Module,
    loss_fn: LossFn,
    loader: DataLoader,
    groups: list[dict],
    epochs: int,
    device: torch.device,
    *,
    warmup_fraction: float = 0.0,
    weight_decay: float = 0.0,
    bf16: bool = False,
    progress_bar: bool = True,
    predict: DataLoader | None = None,
    predict_fn: PredictFn | None = None,
    val: DataLoader | None = None,
    patience: int | None = None,
) -> FitResult:
    """Train `model` for `epochs` over `loader` (then predict over `predict` when given). Every group needs an
    "lr"; `weight_decay` applies to groups without their own. With `val` and `patience`, Lightning's
    EarlyStopping ends training after `patience` epochs without a lower validation loss. Seed the RNGs before
    calling."""
    total = epochs * len(loader)
    module = TrainingModule(model, loss_fn, groups, total, warmup_fraction, weight_decay, predict_fn)
    stopper = None
    if val is not None and patience is not None:
        from lightning.pytorch.callbacks import EarlyStopping

        stopper = EarlyStopping(monitor="val_loss", mode="min", patience=patience, check_finite=True)
    with quiet():
        tr = trainer(
            device,
            epochs,
            bf16=bf16,
            progress_bar=progress_bar,
            log_every_n_steps=max(1, min(50, len(loader))),
            callbacks=[stopper] if stopper else None,
        )
        start = time.perf_counter()
        tr.fit(module, loader, val_dataloaders=val if stopper else None)
        result = FitResult(module.losses, int(tr.global_step), time.perf_counter() - start, lrs=module.lrs)
        result.epochs = int(tr.current_epoch)
        if stopper is not None and torch.isfinite(stopper.best_score):
            result.best_val_loss = float(stopper.best_score)
        if predict is not None:
            start = time.perf_counter()
            result.predictions = tr.predict(module, predict)
            result.predict_time_s = time.perf_counter() - start
    return result
