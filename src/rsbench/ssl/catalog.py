"""The SSL methods as data: name, paper, default backbone and paper recipe, and where the code lives.

Readable without the training stack (no torch, Lightning or lightly): `rsbench methods` and the
benchmark planner (rsbench.benchmark.shapes) read these cards, and each method class in
rsbench.ssl.<method> takes its name, paper and defaults from its card (`card = CATALOG["simclr"]`), so
every value below is stated once. Each card also holds its method's part of the small-batch preset
(`small_batch`, on top of rsbench.ssl.recipe.SMALL_BATCH_BASE) and names the recipe keys that count stored
samples (`sample_store_keys`, fitted to the data at pretrain start). The paper sections behind each
recipe are in the method's module docstring; `MethodCard.load()` imports the implementation.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from rsbench.errors import ConfigError
from rsbench.ssl.recipe import PRESETS, Recipe, preset_recipe

if TYPE_CHECKING:
    from rsbench.ssl.base import SSLMethod


@dataclass(frozen=True)
class MethodCard:
    """What is known about a method before its code is imported."""

    name: str
    summary: str  # one line
    paper: str  # short reference shown by `rsbench methods`
    paper_epochs: int  # length of the paper's reference schedule (ImageNet epochs)
    paper_batch_size: int
    default_backbone: str
    default_recipe: Recipe
    implementation: str  # "module:Class"
    # The method's keys of the small-batch preset (smaller heads, faster EMA for short schedules).
    small_batch: dict[str, Any] = field(default_factory=dict)
    # Recipe keys that count stored samples (queue, memory bank): bounded by the training-set size.
    sample_store_keys: tuple[str, ...] = ()
    needs_teacher: bool = False  # trains against a frozen teacher (`--teacher`; distillation methods)

    def recipe(self, preset: str = "paper", overrides: dict[str, Any] | None = None) -> Recipe:
        """The recipe of `preset` with the user's `overrides` applied and validated."""
        return preset_recipe(self.default_recipe, self.small_batch, preset, self.name, overrides)

    def presets(self) -> dict[str, Recipe]:
        """Every named preset's recipe, for `rsbench methods --method NAME`."""
        return {preset: self.recipe(preset) for preset in PRESETS}

    def load(self) -> type[SSLMethod]:
        """The method's LightningModule class (imports torch, Lightning and lightly)."""
        module, _, attr = self.implementation.partition(":")
        return getattr(importlib.import_module(module), attr)

    def describe(self) -> dict[str, Any]:
        """The method's defaults, for `rsbench methods`."""
        r = self.default_recipe
        return {
            "name": self.name,
            "backbone": self.default_backbone,
            "optimizer": r.optimizer,
            "lr": r.lr,
            "lr_scaling": r.lr_scaling,
            "weight_decay": r.weight_decay,
            "warmup_fraction": r.warmup_fraction,
            "paper_epochs": self.paper_epochs,
            "paper_batch_size": self.paper_batch_size,
            "extra": dict(r.extra),
            "paper": self.paper,
            **({"teacher": "required (--teacher)"} if self.needs_teacher else {}),
        }


_CARDS = (
    MethodCard(
        name="simclr",
        summary="Contrast two augmented views of each image against all other images of the batch.",
        paper="Chen et al. 2020, ICML (SimCLR), App. B.1, Table 5",
        paper_epochs=100,
        paper_batch_size=4096,
        default_backbone="resnet18",
        default_recipe=Recipe(
            optimizer="lars",
            lr=0.3,
            weight_decay=1e-6,
            warmup_fraction=0.1,
            extra={"temperature": 0.1, "proj_dim": 128},
        ),
        implementation="rsbench.ssl.simclr:SimCLR",
        small_batch={"temperature": 0.2},
    ),
    MethodCard(
        name="mocov2",
        summary="A query encoder contrasted against a momentum key encoder and a queue of past keys.",
        paper="Chen et al. 2020, arXiv:2003.04297 (MoCo v2), Sec. 2; He et al. 2020, CVPR, Sec. 3-4",
        paper_epochs=200,
        paper_batch_size=256,
        default_backbone="resnet18",
        default_recipe=Recipe(
            optimizer="sgd",
            lr=0.03,
            weight_decay=1e-4,
            momentum=0.9,
            warmup_fraction=0.0,
            exclude_bias_norm=False,
            extra={
                "temperature": 0.2,
                "queue_size": 65536,
                "momentum_start": 0.999,
                "momentum_end": 0.999,
                "proj_dim": 128,
                "hidden_dim": 2048,
            },
        ),
        implementation="rsbench.ssl.mocov2:MoCoV2",
        small_batch={"momentum_start": 0.99, "momentum_end": 0.99},
        sample_store_keys=("queue_size",),
    ),
    MethodCard(
        name="mocov3",
        summary="Symmetric contrastive loss of a query encoder with a predictor against a momentum key encoder.",
        paper="Chen, Xie & He 2021, ICCV (MoCo v3), Alg. 1, Sec. 4.2, App. A",
        paper_epochs=300,
        paper_batch_size=4096,
        default_backbone="vit_small_patch16_224",
        default_recipe=Recipe(
            # The official code decays every parameter under AdamW (its LARS path excludes biases and BN).
            optimizer="adamw",
            lr=1.5e-4,
            weight_decay=0.1,
            warmup_fraction=40 / 300,
            exclude_bias_norm=False,
            extra={
                "temperature": 0.2,
                "momentum_start": 0.99,
                "momentum_end": 1.0,
                "proj_dim": 256,
                "hidden_dim": 4096,
                "freeze_patch_embed": True,
            },
        ),
        implementation="rsbench.ssl.mocov3:MoCoV3",
        small_batch={"momentum_start": 0.99, "hidden_dim": 1024},
    ),
    MethodCard(
        name="byol",
        summary="An online network with a predictor regresses the projection of a slow EMA target network.",
        paper="Grill et al. 2020, NeurIPS (BYOL), Sec. 3.3, App. B-C",
        paper_epochs=1000,
        paper_batch_size=4096,
        default_backbone="resnet18",
        default_recipe=Recipe(
            optimizer="lars",
            lr=0.2,
            weight_decay=1.5e-6,
            warmup_fraction=10 / 1000,
            extra={"momentum_start": 0.996, "momentum_end": 1.0, "proj_dim": 256, "hidden_dim": 4096},
        ),
        implementation="rsbench.ssl.byol:BYOL",
        small_batch={"momentum_start": 0.99, "hidden_dim": 1024},
    ),
    MethodCard(
        name="dino",
        summary="Self-distillation: a student matches the centred, sharpened output of an EMA teacher (multi-crop).",
        paper="Caron et al. 2021, ICCV (DINO), Sec. 3.1 and 4, App. (official code defaults)",
        paper_epochs=100,
        paper_batch_size=1024,
        default_backbone="vit_small_patch16_224",
        default_recipe=Recipe(
            optimizer="adamw",
            lr=5e-4,
            weight_decay=0.04,
            weight_decay_end=0.4,
            warmup_fraction=0.1,
            min_lr_fraction=5e-4,
            grad_clip=3.0,  # min LR 1e-6 at the paper's peak 5e-4 x 1024/256
            extra={
                "out_dim": 65536,
                "hidden_dim": 2048,
                "bottleneck_dim": 256,
                "student_temp": 0.1,
                "teacher_temp": 0.07,
                "warmup_teacher_temp": 0.04,
                "teacher_temp_warmup_fraction": 0.3,
                "center_momentum": 0.9,
                "momentum_start": 0.996,
                "momentum_end": 1.0,
                "freeze_last_layer_fraction": 0.01,
                "norm_last_layer": True,
                "batch_norm_head": False,
                "n_local": 8,
            },
        ),
        implementation="rsbench.ssl.dino:DINO",
        small_batch={"momentum_start": 0.99, "out_dim": 4096, "hidden_dim": 1024, "weight_decay": 0.04},
    ),
    MethodCard(
        name="mae",
        summary="Mask 75 % of the patches, encode the rest with a ViT, reconstruct the missing pixels.",
        paper="He et al. 2022, CVPR (MAE), Sec. 3-4, Table 1, App. A.1 Table 8",
        paper_epochs=800,
        paper_batch_size=4096,
        default_backbone="vit_base_patch16_224",
        default_recipe=Recipe(
            optimizer="adamw",
            lr=1.5e-4,
            weight_decay=0.05,
            betas=(0.9, 0.95),
            warmup_fraction=40 / 800,
            extra={
                "mask_ratio": 0.75,
                "decoder_dim": 512,
                "decoder_depth": 8,
                "decoder_heads": 16,
                "norm_pix_loss": True,
            },
        ),
        implementation="rsbench.ssl.mae:MAE",
        small_batch={"decoder_depth": 1, "decoder_dim": 256, "decoder_heads": 8},
    ),
    MethodCard(
        name="barlowtwins",
        summary="Make the cross-correlation matrix of the two views' embeddings the identity.",
        paper="Zbontar et al. 2021, ICML (Barlow Twins), Sec. 3, Eq. 1",
        paper_epochs=1000,
        paper_batch_size=2048,
        default_backbone="resnet18",
        default_recipe=Recipe(
            optimizer="lars",
            lr=0.2,
            weight_decay=1.5e-6,
            warmup_fraction=10 / 1000,
            extra={"lambda_param": 5e-3, "proj_dim": 8192},
        ),
        implementation="rsbench.ssl.barlowtwins:BarlowTwins",
        small_batch={"proj_dim": 2048},
    ),
    MethodCard(
        name="vicreg",
        summary="Invariance between views plus variance and covariance regularisation of each view.",
        paper="Bardes, Ponce & LeCun 2022, ICLR (VICReg), Sec. 4.1, Eq. 6, App. C.1",
        paper_epochs=1000,
        paper_batch_size=2048,
        default_backbone="resnet18",
        default_recipe=Recipe(
            optimizer="lars",
            lr=0.2,
            weight_decay=1e-6,
            warmup_fraction=10 / 1000,
            extra={"lambda_param": 25.0, "mu_param": 25.0, "nu_param": 1.0, "proj_dim": 8192},
        ),
        implementation="rsbench.ssl.vicreg:VICReg",
        small_batch={"proj_dim": 2048},
    ),
    MethodCard(
        name="distill",
        summary="A student of any band count reproduces a frozen teacher's global and patch features.",
        paper="Beyer et al. 2022, CVPR (function matching); Ranzinger et al. 2024, CVPR (AM-RADIO), Sec. 3",
        paper_epochs=100,
        paper_batch_size=1024,
        default_backbone="resnet18",
        default_recipe=Recipe(
            optimizer="adamw",
            lr=5e-4,
            weight_decay=0.05,
            warmup_fraction=0.05,
            extra={"token_weight": 1.0},
        ),
        implementation="rsbench.ssl.distill:Distill",
        needs_teacher=True,
    ),
    MethodCard(
        name="dinov2",
        summary="DINO on the class token + iBOT on masked patch tokens + KoLeo (EMA teacher, multi-crop).",
        paper="Oquab et al. 2024, TMLR (DINOv2), Sec. 4-5, App. (official ssl_default_config.yaml)",
        paper_epochs=100,
        paper_batch_size=1024,
        default_backbone="vit_small_patch16_224",
        default_recipe=Recipe(
            optimizer="adamw",
            lr=2e-3,  # DINOv2's 4e-3 x sqrt(B/1024), written for a batch of 256
            lr_scaling="sqrt",
            weight_decay=0.04,
            weight_decay_end=0.2,
            warmup_fraction=0.1,
            min_lr_fraction=2.5e-4,  # min LR 1e-6 at the peak 4e-3
            grad_clip=3.0,
            extra={
                "out_dim": 65536,
                "hidden_dim": 2048,
                "bottleneck_dim": 256,
                "batch_norm_head": False,
                "student_temp": 0.1,
                "teacher_temp": 0.07,
                "warmup_teacher_temp": 0.04,
                "teacher_temp_warmup_fraction": 0.3,
                "center_momentum": 0.9,
                "momentum_start": 0.992,
                "momentum_end": 1.0,
                "freeze_last_layer_fraction": 0.01,
                "ibot_weight": 1.0,
                "koleo_weight": 0.1,
                "mask_probability": 0.5,
                "mask_ratio_min": 0.1,
                "mask_ratio_max": 0.5,
                "n_local": 8,
            },
        ),
        implementation="rsbench.ssl.dinov2:DINOv2",
        # DINO's small heads and faster EMA; the LR scaled linearly like the other small-batch recipes.
        small_batch={"momentum_start": 0.99, "out_dim": 4096, "hidden_dim": 1024, "lr_scaling": "linear"},
    ),
)
_MAE = next(card for card in _CARDS if card.name == "mae")
_CARDS += (
    MethodCard(
        name="mae_distill",
        summary="MAE reconstruction plus a weighted cosine term to a frozen teacher's features (Clay's hybrid).",
        paper="He et al. 2022, CVPR (MAE); Clay Foundation Model v1 (2024), cosine loss to a DINOv2 teacher",
        paper_epochs=_MAE.paper_epochs,
        paper_batch_size=_MAE.paper_batch_size,
        default_backbone=_MAE.default_backbone,
        # MAE's recipe, plus the weight of the teacher term (Clay: 0.1).
        default_recipe=replace(_MAE.default_recipe, extra={**_MAE.default_recipe.extra, "teacher_weight": 0.1}),
        implementation="rsbench.ssl.mae_distill:MAEDistill",
        needs_teacher=True,
        small_batch=_MAE.small_batch,  # MAE's one-block decoder: the paper's 8 blocks dominate a small run
    ),
)

CATALOG: dict[str, MethodCard] = {card.name: card for card in _CARDS}


def get_card(name: str) -> MethodCard:
    """The catalog entry of `name`; ConfigError naming the known methods otherwise."""
    try:
        return CATALOG[name]
    except KeyError:
        raise ConfigError(f"unknown SSL method '{name}' (available: {', '.join(sorted(CATALOG))})") from None


__all__ = ["CATALOG", "MethodCard", "get_card"]
