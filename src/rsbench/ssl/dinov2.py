"""DINOv2: DINO's class-token self-distillation plus iBOT's masked-patch self-distillation plus the
KoLeo spreading regulariser, with an EMA teacher and multi-crop. ViT backbones only.

Oquab et al., "DINOv2: Learning Robust Visual Features without Supervision", TMLR 2024. Sec. 4: image
level DINO loss on the class token (student on all crops, teacher on the 2 global crops); patch-level
iBOT loss (Zhou et al., ICLR 2022) on the student's masked patch tokens against the teacher's tokens of
the unmasked view; KoLeo (Sablayrolles et al., ICLR 2019) on the student's class tokens of each global
crop, weight 0.1. Recipe (official ssl_default_config.yaml): AdamW, LR 4e-3 x sqrt(B/1024), warmup 10
of 100 epochs then cosine to 1e-6; weight decay cosine 0.04 -> 0.2; gradient clipping 3.0; teacher EMA
momentum cosine 0.992 -> 1; student temperature 0.1, teacher 0.04 -> 0.07 over the first 30 epochs;
one shared 3-layer head (2048 hidden) -> 256 bottleneck -> 65536 prototypes for both losses; block
masks on half of the images, 10-50 % of their patches; 2 global crops (scale 0.32-1) and 8 local ones
(0.05-0.32), last layer frozen during the first epoch.

From lightly: DINOv2ProjectionHead, DINOLoss, IBOTPatchLoss, KoLeoLoss, random_block_mask and the
masked ViT wrapper (the recipe follows lightly's DINOv2 example). Differences from the paper: the
teacher outputs are centred by a running mean (DINO's centring, lightly's losses) instead of
Sinkhorn-Knopp, and no stochastic depth or layer-wise LR decay. The exported backbone is the EMA teacher
(DINOv2 evaluates the teacher). A CNN backbone is a one-line error: iBOT masks patch tokens.

Override from `recipe:` in the pretrain config; method keys: DINO's (out_dim, hidden_dim, bottleneck_dim,
temperatures, momenta, n_local, ...) plus ibot_weight, koleo_weight, mask_probability, mask_ratio_min,
mask_ratio_max.
"""

from __future__ import annotations

import torch
from lightly.loss import IBOTPatchLoss, KoLeoLoss
from lightly.models.modules import DINOv2ProjectionHead, MaskedVisionTransformerTIMM
from lightly.models.utils import deactivate_requires_grad, random_block_mask

from rsbench.contracts.architectures import is_vit_name
from rsbench.errors import ConfigError
from rsbench.ssl.catalog import CATALOG
from rsbench.ssl.dino import DINO


class DINOv2(DINO):
    card = CATALOG["dinov2"]  # name, paper, default backbone and recipe
    default_min_scale = 0.32  # global crops; local crops span 0.05 up to this

    def __init__(self, arch: str, *args, **kwargs):
        if not is_vit_name(arch):
            raise ConfigError(f"{self.name} needs a ViT backbone (iBOT masks patch tokens), got '{arch}'")
        super().__init__(arch, *args, **kwargs)
        if self.backbone.num_prefix_tokens != 1:
            raise ConfigError(f"{self.name} needs a ViT with one class token, '{arch}' has other prefix tokens")
        r = self.recipe
        # The wrappers share the timm ViTs (and so the exported weights); they add mask tokens.
        self.student_encoder = MaskedVisionTransformerTIMM(vit=self.backbone)
        self.teacher_encoder = MaskedVisionTransformerTIMM(vit=self.teacher_backbone)
        deactivate_requires_grad(self.teacher_encoder)  # its mask token is never used
        self.ibot_criterion = IBOTPatchLoss(
            output_dim=r["out_dim"],
            teacher_temp=r["teacher_temp"],
            student_temp=r["student_temp"],
            center_momentum=r["center_momentum"],
        )
        self.koleo_criterion = KoLeoLoss()

    def make_head(self, head: dict, student: bool = False) -> DINOv2ProjectionHead:
        return DINOv2ProjectionHead(**head)

    def on_after_backward(self) -> None:
        # The prototypes stay fixed during the first epoch (DINOv2's freeze_last_layer_epochs).
        if self.global_step < self.recipe["freeze_last_layer_fraction"] * self.total_steps:
            for p in self.student_head.last_layer.parameters():
                p.grad = None

    def block_mask(self, views: torch.Tensor) -> torch.Tensor:
        """(B, h, w) patch mask: blocks over 10-50 % of the patches of `mask_probability` of the images."""
        r = self.recipe
        ph, pw = self.backbone.patch_embed.patch_size
        h, w = views.shape[-2] // ph, views.shape[-1] // pw
        return random_block_mask(
            size=(views.shape[0], h, w),
            batch_mask_ratio=r["mask_probability"],
            min_image_mask_ratio=r["mask_ratio_min"],
            max_image_mask_ratio=r["mask_ratio_max"],
            # Blocks of at least 4 patches (DINOv2), fewer on grids too small to mask 4 at the lowest ratio.
            min_num_masks_per_block=max(1, min(4, int(h * w * r["mask_ratio_min"]))),
            device=views.device,
        )

    def training_loss(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        r, temp = self.recipe, self.teacher_temp_at(self.global_step)
        global_views = torch.cat(views[:2])
        patch_mask = self.block_mask(global_views)
        mask = torch.zeros(patch_mask.shape[0], 1 + patch_mask[0].numel(), dtype=torch.bool, device=patch_mask.device)
        mask[:, 1:] = patch_mask.flatten(start_dim=1)  # position 0 is the class token, never masked
        with torch.no_grad():
            teacher_tokens = self.teacher_encoder.encode(global_views)
            teacher_cls = self.teacher_head(teacher_tokens[:, 0])
            teacher_masked = self.teacher_head(teacher_tokens[mask])
        student_tokens = self.student_encoder.encode(global_views, mask=mask)
        student_cls = [self.student_head(student_tokens[:, 0])]
        student_masked = self.student_head(student_tokens[mask])
        if len(views) > 2:  # the local crops: class token only, no masking
            student_cls.append(self.student_head(self.student_encoder.encode(torch.cat(views[2:]))[:, 0]))
        dino = self.criterion(
            list(teacher_cls.chunk(2)), list(torch.cat(student_cls).chunk(len(views))), teacher_temp=temp
        )
        ibot = self.ibot_criterion(teacher_masked, student_masked, mask=patch_mask, teacher_temp=temp)
        koleo = sum(self.koleo_criterion(t) for t in student_tokens[:, 0].chunk(2))
        loss = dino + r["ibot_weight"] * ibot + r["koleo_weight"] * koleo
        return loss, student_tokens[: views[0].shape[0], 0]
