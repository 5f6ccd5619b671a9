"""The shared base of every SSL method: backbone, optimizer recipe, schedule and monitoring.

A method subclass only defines its heads/losses in `__init__` and `training_loss(views)`; it never
touches the optimizer, the schedule, logging or export (the solo-learn `BaseMethod` pattern).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import lightning as L
import torch
from lightly.utils.debug import std_of_l2_normalized
from lightly.utils.lars import LARS
from lightly.utils.scheduler import CosineWarmupScheduler

from rsbench.ssl.augment import MultiView, ssl_view_transform
from rsbench.ssl.backbones import create_backbone, feature_dim


@dataclass
class Recipe:
    """Optimisation recipe. `lr` is the base LR for a batch of 256; the applied LR scales linearly."""

    optimizer: str = "lars"
    lr: float = 0.3
    weight_decay: float = 1e-6
    momentum: float = 0.9
    warmup_fraction: float = 0.1
    extra: dict[str, Any] = field(default_factory=dict)

    def scaled_lr(self, batch_size: int) -> float:
        return self.lr * batch_size / 256


class SSLMethod(L.LightningModule):
    """Base LightningModule. Batches are lists of views, each a (B, C, H, W) tensor."""

    name: ClassVar[str] = "base"
    default_backbone: ClassVar[str] = "resnet18"
    default_recipe: ClassVar[Recipe] = Recipe()
    num_views: ClassVar[int] = 2

    def __init__(
        self,
        arch: str,
        in_chans: int,
        image_size: int,
        batch_size: int,
        max_steps: int,
        recipe: dict | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.recipe = Recipe(**{**asdict(self.default_recipe), **(recipe or {})})
        self.backbone = create_backbone(arch, in_chans, image_size)
        self.feature_dim = feature_dim(self.backbone)

    @classmethod
    def view_transform(cls, image_size: int, in_chans: int, min_scale: float = 0.08):
        """Image (C, H, W) -> list of views. Methods with other view schemes (multi-crop, a single
        masked view) override this."""
        return MultiView(ssl_view_transform(image_size, rgb=in_chans == 3, min_scale=min_scale), n=cls.num_views)

    def training_loss(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (loss, embeddings used for the collapse monitor)."""
        raise NotImplementedError

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, embeddings = self.training_loss(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{self.name}: loss is {loss.item()} at step {self.global_step}")
        bs = batch[0].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=bs)
        # Collapsed representations have std ~0; healthy ones approach 1/sqrt(dim).
        self.log("train/std_l2", std_of_l2_normalized(embeddings.detach().float()), batch_size=bs)
        return loss

    def configure_optimizers(self):
        r = self.recipe
        lr = r.scaled_lr(self.hparams.batch_size)
        params = [p for p in self.parameters() if p.requires_grad]
        if r.optimizer == "lars":
            opt = LARS(params, lr=lr, momentum=r.momentum, weight_decay=r.weight_decay)
        elif r.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=lr, momentum=r.momentum, weight_decay=r.weight_decay)
        elif r.optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=lr, weight_decay=r.weight_decay)
        else:
            raise ValueError(f"unknown optimizer '{r.optimizer}' (lars, sgd, adamw)")
        total = max(1, self.hparams.max_steps)
        warmup = min(total, math.ceil(r.warmup_fraction * total))
        sched = CosineWarmupScheduler(opt, warmup_epochs=warmup, max_epochs=total, end_value=0.0)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
