"""The shared base of every SSL method: backbone, optimizer recipe, schedules and monitoring.

A method subclass defines its heads/losses in `__init__` and `training_loss(views)` (plus, for EMA
teachers, `ema_pairs()`); it never touches the optimizer, the LR schedule, logging or export (the
solo-learn `BaseMethod` pattern). The base applies the recipe (optimizer, LR scaling, warmup + cosine,
weight-decay schedule, gradient clipping), updates EMA teachers before each step, and logs loss, LR
and the collapse signals (rsbench.ssl.monitoring) every `log_every_n_steps`.

Contract with `rsbench.train.pretrain`:
  method_cls.view_transform(image_size, in_chans, min_scale=None, patch_size=None, **options)
      -> callable image -> list of views (options: color_jitter=True for RGB; DINO: n_local)
  method_cls.view_recipe(overrides, preset) -> the recipe's `view_options` keys, as view_transform options
  method_cls.base_recipe(preset, overrides) -> the Recipe the model will train with (before data fitting)
  method_cls(arch=, in_chans=, image_size=, batch_size=GLOBAL_BATCH, max_steps=, recipe=dict, patch_size=,
             recipe_preset="paper" | "small-batch")
  model.backbone (a timm model, num_classes=0), model.feature_dim, model.recipe, model.backbone_kwargs(),
  model.exported_module (the attribute exported as backbone.pt; same architecture as model.backbone)
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import lightning as L
import torch
from lightly.models.utils import get_weight_decay_parameters
from lightly.utils.lars import LARS
from lightly.utils.scheduler import CosineWarmupScheduler, cosine_schedule
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from rsbench.models import backbone_kwargs, create_backbone, feature_dim
from rsbench.ssl.augment import MultiView, asymmetric_views, ssl_view_transform
from rsbench.ssl.catalog import MethodCard
from rsbench.ssl.momentum import ema_update, momentum_at
from rsbench.ssl.monitoring import CollapseMonitor
from rsbench.ssl.recipe import PAPER, Recipe, preset_recipe


def fused_kwargs(groups: list[dict]) -> dict:
    """{"fused": True} when every parameter is on a GPU: one kernel per step instead of one per tensor.
    Elsewhere PyTorch's default (foreach where supported) stays, so CPU runs keep their exact numerics."""
    params = [p for g in groups for p in g["params"]]
    return {"fused": True} if params and all(p.is_cuda for p in params) else {}


class SSLMethod(L.LightningModule):
    """Base LightningModule. Batches are lists of views, each a (B, C, H, W) tensor."""

    # A method states `card = CATALOG[name]`: its name, paper and defaults below come from that
    # catalog entry (rsbench.ssl.catalog, readable without torch), see __init_subclass__.
    card: ClassVar[MethodCard | None] = None
    name: ClassVar[str] = "base"
    default_backbone: ClassVar[str] = "resnet18"
    default_recipe: ClassVar[Recipe] = Recipe()
    small_batch: ClassVar[dict[str, Any]] = {}  # the method's keys of the small-batch preset
    sample_store_keys: ClassVar[tuple[str, ...]] = ()  # recipe keys bounded by the data size (queue)
    paper: ClassVar[str] = ""  # short reference shown by `rsbench methods`
    paper_epochs: ClassVar[int] = 0  # length of the paper's reference schedule (ImageNet epochs)
    paper_batch_size: ClassVar[int] = 256
    num_views: ClassVar[int] = 2
    byol_augmentations: ClassVar[bool] = False  # BYOL's two asymmetric view distributions
    default_min_scale: ClassVar[float] = 0.08  # random-resized-crop area range (min_scale, 1)
    monitor_collapse: ClassVar[bool] = True  # reconstruction methods (MAE) cannot collapse to a point
    view_options: ClassVar[tuple[str, ...]] = ()  # recipe keys that shape the views (DINO: n_local)
    # The network exported as backbone.pt: the one the paper evaluates (the online/query encoder,
    # except DINO's EMA teacher).
    exported_module: ClassVar[str] = "backbone"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        card = cls.__dict__.get("card")
        if card is not None:  # a subclass of a method (no card of its own) keeps what it inherits
            cls.name, cls.paper = card.name, card.paper
            cls.paper_epochs, cls.paper_batch_size = card.paper_epochs, card.paper_batch_size
            cls.default_backbone, cls.default_recipe = card.default_backbone, card.default_recipe
            cls.small_batch, cls.sample_store_keys = card.small_batch, card.sample_store_keys

    def __init__(
        self,
        arch: str,
        in_chans: int,
        image_size: int,
        batch_size: int,
        max_steps: int,
        recipe: dict | None = None,
        patch_size: int | None = None,
        recipe_preset: str = PAPER,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.recipe = self.base_recipe(recipe_preset, recipe)
        self.backbone = create_backbone(
            arch, in_chans, image_size, patch_size=patch_size, **self.backbone_options(arch)
        )
        self.feature_dim = feature_dim(self.backbone)
        self.collapse_monitor = CollapseMonitor()

    @classmethod
    def backbone_options(cls, arch: str) -> dict[str, Any]:
        """Extra timm kwargs used for training only, not needed to load the weights (e.g. dynamic size)."""
        return {}

    # ---- data ------------------------------------------------------------------------------
    @classmethod
    def view_transform(
        cls, image_size: int, in_chans: int, min_scale: float | None = None, patch_size: int | None = None, **options
    ):
        """Image (C, H, W) -> list of views. `min_scale=None` means the method's default; `patch_size`
        matters only to multi-crop ViTs (DINO); `options` go to `ssl_view_transform` (color_jitter).
        Methods with other view schemes (multi-crop, a single view) override this."""
        scale = cls.default_min_scale if min_scale is None else min_scale
        if cls.byol_augmentations:
            return asymmetric_views(image_size, in_chans, min_scale=scale, **options)
        return MultiView(ssl_view_transform(image_size, in_chans, min_scale=scale, **options), n=cls.num_views)

    @classmethod
    def base_recipe(cls, preset: str = PAPER, overrides: dict | None = None) -> Recipe:
        """The recipe of `preset` (rsbench.ssl.recipe.PRESETS) with `overrides` applied and validated."""
        return preset_recipe(cls.default_recipe, cls.small_batch, preset, cls.name, overrides)

    @classmethod
    def view_recipe(cls, overrides: dict | None = None, preset: str = PAPER) -> dict[str, Any]:
        """The recipe values that are view options (validated like every recipe key)."""
        recipe = cls.base_recipe(preset, overrides)
        return {key: recipe[key] for key in cls.view_options}

    # ---- export ----------------------------------------------------------------------------
    def backbone_kwargs(self) -> dict[str, Any]:
        """Extra timm kwargs that rebuild the exported backbone: timm.create_model(arch, in_chans=C,
        num_classes=0, **backbone_kwargs()) + load_state_dict (img_size/patch_size for ViTs)."""
        h = self.hparams
        return backbone_kwargs(h.arch, h.image_size, h.patch_size)

    # ---- training --------------------------------------------------------------------------
    @property
    def total_steps(self) -> int:
        """Steps of the whole run (schedules of EMA momentum, temperatures, weight decay)."""
        trainer_steps = self._trainer.max_steps if self._trainer is not None else -1
        return max(1, trainer_steps if trainer_steps > 0 else self.hparams.max_steps)

    def training_loss(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (loss, embeddings of one view for the collapse monitor)."""
        raise NotImplementedError

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(student, teacher) pairs that follow the student by EMA (MoCo key encoder, BYOL target,
        DINO teacher); their momentum schedule is momentum_start -> momentum_end of the recipe."""
        return []

    @property
    def ema_momentum(self) -> float:
        r = self.recipe.extra
        return momentum_at(self.global_step, self.total_steps, r["momentum_start"], r["momentum_end"])

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Schedules that are not the LR follow the step here, before the forward pass.
        r = self.recipe
        if r.weight_decay_end is not None:
            wd = cosine_schedule(self.global_step, self.total_steps, r.weight_decay, r.weight_decay_end)
            for group in self.trainer.optimizers[0].param_groups:
                if group.get("decay", True):
                    group["weight_decay"] = wd
        pairs = self.ema_pairs()
        # Once per optimizer step: with gradient accumulation only the first micro-batch updates.
        accumulate = self._trainer.accumulate_grad_batches if self._trainer is not None else 1
        if pairs and batch_idx % accumulate == 0:
            ema_update(pairs, self.ema_momentum)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, embeddings = self.training_loss(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{self.name}: loss is {loss.item()} at step {self.global_step}")
        bs = batch[0].shape[0]
        # sync_dist: under DDP the logged loss is the mean over ranks, not rank 0's shard (one scalar all-reduce).
        self.log("train/loss", loss, prog_bar=True, batch_size=bs, sync_dist=True)
        opt = self.trainer.optimizers[0]
        self.log("train/lr", opt.param_groups[0]["lr"], batch_size=bs)
        every = max(1, self.trainer.log_every_n_steps)
        if (self.global_step + 1) % every == 0:  # the steps Lightning writes to the logger
            self._monitor(embeddings, bs)
        return loss

    def _monitor(self, embeddings: torch.Tensor, bs: int) -> None:
        stats = self.collapse_monitor.check(embeddings)
        self.log("train/std_l2", stats["std_l2"], batch_size=bs)
        self.log("train/rank", stats["rank"], batch_size=bs)
        if self.monitor_collapse:
            self.log("train/collapse", stats["collapse"], batch_size=bs)
            if stats["collapse"] and self.collapse_monitor.low_streak == self.collapse_monitor.patience:
                rank_zero_warn(
                    f"{self.name}: representation collapse at step {self.global_step}: std of L2-normalised "
                    f"embeddings {stats['std_l2']:.4f} << {stats['std_l2_healthy']:.4f} (1/sqrt(d)) for "
                    f"{self.collapse_monitor.patience} checks, effective rank {stats['rank']:.1f}; lower the LR "
                    f"or check the recipe"
                )

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        # The recipe owns clipping (DINO clips at 3.0); a Trainer-level setting still applies otherwise.
        clip = self.recipe.grad_clip if self.recipe.grad_clip is not None else gradient_clip_val
        if clip:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")

    def _param_groups(self) -> list[dict]:
        if not self.recipe.exclude_bias_norm:
            return [{"params": [p for p in self.parameters() if p.requires_grad]}]
        # [self], not the children: modules shared by two children (MAE's ViT) are then listed once.
        decay, no_decay = get_weight_decay_parameters([self])
        # LARS skips layer-wise adaptation where weight_decay == 0 (SimCLR/BYOL practice for biases and BN).
        return [
            {"params": [p for p in decay if p.requires_grad]},
            {"params": [p for p in no_decay if p.requires_grad], "weight_decay": 0.0, "decay": False},
        ]

    def configure_optimizers(self):
        r = self.recipe
        lr = r.scaled_lr(self.hparams.batch_size)
        groups = [g for g in self._param_groups() if g["params"]]
        if r.optimizer == "lars":
            opt = LARS(groups, lr=lr, momentum=r.momentum, weight_decay=r.weight_decay)
        elif r.optimizer == "sgd":
            opt = torch.optim.SGD(
                groups, lr=lr, momentum=r.momentum, weight_decay=r.weight_decay, **fused_kwargs(groups)
            )
        else:
            opt = torch.optim.AdamW(groups, lr=lr, betas=r.betas, weight_decay=r.weight_decay, **fused_kwargs(groups))
        total = max(1, self.hparams.max_steps)
        warmup = min(total, math.ceil(r.warmup_fraction * total))
        sched = CosineWarmupScheduler(opt, warmup_epochs=warmup, max_epochs=total, end_value=r.min_lr_fraction)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
