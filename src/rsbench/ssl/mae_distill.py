"""MAE + distillation (Clay's hybrid): MAE's masked-pixel reconstruction plus a weighted cosine term
that pulls the student's class token towards a frozen teacher's global feature of the whole image.

He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022 (the reconstruction part:
rsbench.ssl.mae); Clay Foundation Model v1 (Clay, 2024, github.com/Clay-foundation/model): a
multispectral MAE whose encoder is also trained to match a frozen DINOv2 teacher, loss = reconstruction
+ a cosine representation term. The teacher here is any frozen backbone (rsbench.ssl.teacher: its own
bands, picked from the data by name, and its own normalization); the student sees every band, so the
hybrid works for any band count. Loss = MSE(masked patches) + teacher_weight x (1 - cos(head(cls),
teacher)), teacher_weight 0.1 by default; a linear head maps the student's width to the teacher's.

Override from `recipe:` in the pretrain config; method keys: MAE's plus teacher_weight.
"""

from __future__ import annotations

import torch
from torch import nn

from rsbench.ssl.catalog import CATALOG
from rsbench.ssl.mae import MAE
from rsbench.ssl.teacher import build_teacher, cosine_loss


class MAEDistill(MAE):
    card = CATALOG["mae_distill"]  # name, paper, default backbone and recipe

    def __init__(self, *args, teacher: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher = build_teacher(self.name, teacher)
        self.teacher_head = nn.Linear(self.feature_dim, self.teacher.feature_dim)

    def training_loss(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        reconstruction, cls_token = super().training_loss(views)
        teacher_global, _ = self.teacher(views[0])
        distillation = cosine_loss(self.teacher_head(cls_token), teacher_global)
        return reconstruction + self.recipe["teacher_weight"] * distillation, cls_token
