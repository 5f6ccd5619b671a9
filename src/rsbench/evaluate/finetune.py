"""Full fine-tuning protocol for classification: backbone + linear head trained end to end.

The evaluation stage's Lightning loop (rsbench.evaluate.training): AdamW, linear warmup + cosine decay per step,
layer-wise LR decay for ViTs (timm's `param_groups_layer_decay`), light augmentation (the 8 dihedral
flips/rotations, label-preserving for overhead imagery). Inputs get exactly the preprocessing the
frozen-feature probes use (resize + the same per-band normalization).
"""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader, Dataset

from rsbench.contracts.evaluate_config import EvaluateConfig
from rsbench.data.augment import RandomDihedral
from rsbench.data.normalization import Normalization
from rsbench.evaluate.features import preprocess, read_checked, resolve_device
from rsbench.evaluate.images import ImageSource
from rsbench.evaluate.inits import Init
from rsbench.evaluate.training import fit, stop_patience
from rsbench.models import backbone_info

DEFAULT_LR = 5e-4
WEIGHT_DECAY = 0.05
WARMUP_FRACTION = 0.1


class LabelledImages(Dataset):
    def __init__(
        self,
        images: ImageSource,
        indices: np.ndarray,
        labels: np.ndarray,
        init: Init,
        norm: Normalization,
        augment: bool,
    ):
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


def param_groups(
    backbone: nn.Module, head: nn.Module, lr: float, weight_decay: float, layer_decay: float | None
) -> list[dict]:
    """timm's parameter groups (no weight decay on norms/biases/tokens; layer-wise LR decay when given) + the head,
    each with its explicit LR."""
    from timm.optim import param_groups_layer_decay, param_groups_weight_decay

    no_wd = backbone.no_weight_decay() if hasattr(backbone, "no_weight_decay") else ()
    if layer_decay is not None:
        groups = param_groups_layer_decay(backbone, weight_decay, no_weight_decay_list=no_wd, layer_decay=layer_decay)
        for g in groups:  # timm's own schedulers apply lr_scale; torch's optimizers need an explicit lr
            g["lr"] = lr * g.pop("lr_scale", 1.0)
    else:
        groups = param_groups_weight_decay(backbone, weight_decay, no_weight_decay_list=no_wd)
        for g in groups:
            g["lr"] = lr
    groups.append({"params": list(head.parameters()), "weight_decay": weight_decay, "lr": lr})
    return groups


@dataclass
class FinetuneResult:
    scores: torch.Tensor  # N_test x C class probabilities (softmax, or sigmoid for multi-label)
    hparams: dict
    state: dict  # fitted weights: backbone + head
    fit_time_s: float
    eval_time_s: float


def finetune(
    cfg: EvaluateConfig,
    init: Init,
    images: ImageSource,
    labels: np.ndarray,
    num_classes: int,
    multilabel: bool,
    norm: Normalization,
    train_idx: np.ndarray,
    test_idx: np.ndarray,
    seed: int,
    console: Console,
) -> FinetuneResult:
    L.seed_everything(seed, workers=True, verbose=False)  # head init, shuffling and augmentation
    lr = cfg.lr or DEFAULT_LR
    backbone = init.build()
    info = backbone_info(backbone)
    # Plain ViTs (timm ViT/DeiT/BEiT/EVA: a stack of `blocks`) get layer-wise LR decay; CNNs do not (not even
    # EfficientNet/MobileNet, whose timm stages are also called `blocks`).
    layer_decay = cfg.layer_decay if info.is_vit else None
    head = nn.Linear(info.feature_dim, num_classes)
    train = DataLoader(
        LabelledImages(images, train_idx, labels, init, norm, augment=True),
        batch_size=cfg.batch_size,
        shuffle=True,
        num_workers=0,
    )
    test = DataLoader(
        LabelledImages(images, test_idx, labels, init, norm, augment=False),
        batch_size=cfg.batch_size,
        shuffle=False,
        num_workers=0,
    )

    def loss_fn(net: nn.Module, batch) -> torch.Tensor:
        x, y = batch
        logits = net(x)
        return F.binary_cross_entropy_with_logits(logits, y.float()) if multilabel else F.cross_entropy(logits, y)

    def predict_fn(net: nn.Module, batch) -> torch.Tensor:
        logits = net(batch[0]).float()
        return torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1)

    weight_decay = WEIGHT_DECAY if cfg.weight_decay is None else cfg.weight_decay
    patience = stop_patience(cfg)  # tuning trials stop early on the validation split (`test` here)
    groups = param_groups(backbone, head, lr, weight_decay, layer_decay)
    res = fit(
        nn.Sequential(backbone, head),
        loss_fn,
        train,
        groups,
        cfg.epochs,
        resolve_device(cfg.device),
        warmup_fraction=WARMUP_FRACTION,
        weight_decay=weight_decay,
        bf16=True,
        progress_bar=console.is_terminal,
        predict=test,
        predict_fn=predict_fn,
        val=test if patience else None,
        patience=patience,
    )
    scores = torch.cat(res.predictions)
    hparams = {
        "optimizer": "adamw",
        "lr": lr,
        "weight_decay": weight_decay,
        "layer_decay": layer_decay,
        "schedule": f"linear warmup {WARMUP_FRACTION:g} + cosine, per step",
        "epochs": cfg.epochs,
        "epochs_trained": res.epochs,
        "early_stop_patience": patience,
        "steps": res.steps,
        "batch_size": cfg.batch_size,
        "augmentation": "dihedral (8)",
    }
    state = {
        "backbone": {k: v.detach().cpu() for k, v in backbone.state_dict().items()},
        "head": {k: v.detach().cpu() for k, v in head.state_dict().items()},
    }
    return FinetuneResult(scores, hparams, state, res.fit_time_s, res.predict_time_s)
