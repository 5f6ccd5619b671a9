"""Full fine-tuning protocol for classification: backbone + linear head trained end to end.

A small LightningModule under a Lightning Trainer: AdamW, linear warmup + cosine decay per step,
layer-wise LR decay for ViTs (timm's `param_groups_layer_decay`), light augmentation (the 8 dihedral
flips/rotations, label-preserving for overhead imagery). Inputs get exactly the preprocessing the
frozen-feature probes use (resize + the same per-band normalization).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightly.utils.scheduler import CosineWarmupScheduler
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader, Dataset

from rsbench.data.normalization import Normalization
from rsbench.evaluate.config import EvaluateConfig
from rsbench.evaluate.features import preprocess, read_checked, resolve_device
from rsbench.evaluate.images import ImageSource
from rsbench.evaluate.inits import Init
from rsbench.ssl.augment import RandomDihedral
from rsbench.ssl.backbones import feature_dim

DEFAULT_LR = 5e-4
WEIGHT_DECAY = 0.05
WARMUP_FRACTION = 0.1


class LabelledImages(Dataset):
    def __init__(self, images: ImageSource, indices: np.ndarray, labels: np.ndarray, init: Init,
                 norm: Normalization, augment: bool):
        self.images, self.indices, self.labels, self.init, self.norm = images, indices, labels, init, norm
        self.augment = RandomDihedral() if augment else None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        j = int(self.indices[i])
        x = preprocess(read_checked(self.images, j, self.init.in_chans), self.init.image_size, self.norm)
        if self.augment is not None:
            x = self.augment(x).contiguous()
        return x, torch.as_tensor(self.labels[j])


class FinetuneClassifier(L.LightningModule):
    def __init__(self, backbone: nn.Module, num_classes: int, multilabel: bool, lr: float, weight_decay: float,
                 layer_decay: float | None, total_steps: int):
        super().__init__()
        self.backbone, self.head = backbone, nn.Linear(feature_dim(backbone), num_classes)
        self.multilabel, self.lr, self.weight_decay = multilabel, lr, weight_decay
        self.layer_decay, self.total_steps = layer_decay, total_steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.binary_cross_entropy_with_logits(logits, y.float()) if self.multilabel else F.cross_entropy(logits, y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"fine-tuning loss is {loss.item()} at step {self.global_step}")
        self.log("train/loss", loss, prog_bar=True, batch_size=len(x))
        return loss

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        logits = self(batch[0]).float()
        return torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=1)

    def configure_optimizers(self):
        from timm.optim import param_groups_layer_decay, param_groups_weight_decay

        no_wd = self.backbone.no_weight_decay() if hasattr(self.backbone, "no_weight_decay") else ()
        if self.layer_decay is not None:
            groups = param_groups_layer_decay(self.backbone, self.weight_decay, no_weight_decay_list=no_wd,
                                              layer_decay=self.layer_decay)
            for g in groups:  # timm's own schedulers apply lr_scale; torch's optimizers need an explicit lr
                g["lr"] = self.lr * g.pop("lr_scale", 1.0)
        else:
            groups = param_groups_weight_decay(self.backbone, self.weight_decay, no_weight_decay_list=no_wd)
        groups.append({"params": list(self.head.parameters()), "weight_decay": self.weight_decay, "lr": self.lr})
        opt = torch.optim.AdamW(groups, lr=self.lr)
        warmup = min(self.total_steps, math.ceil(WARMUP_FRACTION * self.total_steps))
        sched = CosineWarmupScheduler(opt, warmup_epochs=warmup, max_epochs=self.total_steps, end_value=0.0)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


@dataclass
class FinetuneResult:
    scores: torch.Tensor  # N_test x C class probabilities (softmax, or sigmoid for multi-label)
    hparams: dict
    state: dict  # fitted weights: backbone + head
    fit_time_s: float
    eval_time_s: float


def _trainer(cfg: EvaluateConfig, console: Console, **kw) -> L.Trainer:
    device = resolve_device(cfg.device)
    accelerator = "gpu" if device.type == "cuda" else device.type
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    callbacks = []
    if console.is_terminal:
        from lightning.pytorch.callbacks import RichProgressBar

        callbacks.append(RichProgressBar())
    return L.Trainer(accelerator=accelerator, devices=1, precision="bf16-mixed" if bf16 else "32-true",
                     logger=False, enable_checkpointing=False, enable_model_summary=False,
                     enable_progress_bar=bool(callbacks), callbacks=callbacks, **kw)


def finetune(cfg: EvaluateConfig, init: Init, images: ImageSource, labels: np.ndarray, num_classes: int,
             multilabel: bool, norm: Normalization, train_idx: np.ndarray, test_idx: np.ndarray, seed: int,
             console: Console) -> FinetuneResult:
    L.seed_everything(seed, workers=True, verbose=False)  # head init, shuffling and augmentation
    lr = cfg.lr or DEFAULT_LR
    backbone = init.build()
    # Transformers (timm ViT/DeiT/BEiT/EVA: a stack of `blocks`) get layer-wise LR decay; CNNs do not.
    layer_decay = cfg.layer_decay if hasattr(backbone, "blocks") else None
    steps_per_epoch = math.ceil(len(train_idx) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    model = FinetuneClassifier(backbone, num_classes, multilabel, lr, WEIGHT_DECAY, layer_decay, total)
    train = DataLoader(LabelledImages(images, train_idx, labels, init, norm, augment=True),
                       batch_size=cfg.batch_size, shuffle=True, num_workers=0)
    test = DataLoader(LabelledImages(images, test_idx, labels, init, norm, augment=False),
                      batch_size=cfg.batch_size, shuffle=False, num_workers=0)
    for name in ("lightning.pytorch", "pytorch_lightning"):  # no "GPU available: ..." banner per fit
        logging.getLogger(name).setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
        trainer = _trainer(cfg, console, max_epochs=cfg.epochs, log_every_n_steps=max(1, min(50, steps_per_epoch)))
        start = time.perf_counter()
        trainer.fit(model, train)
        fit_time = time.perf_counter() - start
        start = time.perf_counter()
        scores = torch.cat(trainer.predict(model, test))
        eval_time = time.perf_counter() - start
    hparams = {"optimizer": "adamw", "lr": lr, "weight_decay": WEIGHT_DECAY, "layer_decay": layer_decay,
               "schedule": f"linear warmup {WARMUP_FRACTION:g} + cosine, per step", "epochs": cfg.epochs,
               "steps": int(trainer.global_step), "batch_size": cfg.batch_size, "augmentation": "dihedral (8)"}
    state = {"backbone": {k: v.detach().cpu() for k, v in model.backbone.state_dict().items()},
             "head": {k: v.detach().cpu() for k, v in model.head.state_dict().items()}}
    return FinetuneResult(scores, hparams, state, fit_time, eval_time)
