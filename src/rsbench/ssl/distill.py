"""Distillation: a student of any timm architecture and any band count reproduces the features of a
frozen teacher (an rsbench run, a timm weights file, published torchgeo weights) on the same view.

Beyer et al., "Knowledge distillation: A good teacher is patient and consistent", CVPR 2022 (Sec. 3:
teacher and student see the very same crop, "function matching"); Ranzinger et al., "AM-RADIO:
Agglomerative Vision Foundation Model", CVPR 2024 (Sec. 3: a cosine loss on the summary feature and on
the spatial features, student features mapped to the teacher's width by a learned adaptor); LightlyTrain's
`distillation` method (a student reproducing a frozen DINOv2 teacher) is the same recipe for RGB.

Here the teacher sees its own bands picked from the data by name, with its own normalization
(rsbench.ssl.teacher); the student sees every band, so an RGB or 3-band teacher distils into a
multispectral student. Loss = cosine(global) + token_weight x cosine(patch tokens), the tokens of both
networks average-pooled to the coarser of their two grids (ViT patch tokens or CNN feature maps); when
either has no spatial output only the global term remains. Linear heads map the student to the
teacher's width. One view per image: random resized crop (scale 0.14-1), dihedral flips, band jitter.

Override from `recipe:` in the pretrain config; method key: token_weight.
"""

from __future__ import annotations

import torch
from torch import nn

from rsbench.ssl.base import SSLMethod
from rsbench.ssl.catalog import CATALOG
from rsbench.ssl.teacher import build_teacher, common_grid, cosine_loss, global_and_map


class Distill(SSLMethod):
    card = CATALOG["distill"]  # name, paper, default backbone and recipe
    num_views = 1
    default_min_scale = 0.14

    def __init__(self, *args, teacher: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher = build_teacher(self.name, teacher)
        width = self.teacher.feature_dim
        self.global_head = nn.Linear(self.feature_dim, width)
        self.token_head = nn.Linear(self.feature_dim, width)

    def training_loss(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x = views[0]
        teacher_global, teacher_map = self.teacher(x)
        student_global, student_map = global_and_map(self.backbone, x)
        loss = cosine_loss(self.global_head(student_global), teacher_global)
        if student_map is not None and teacher_map is not None:
            student_tokens, teacher_tokens = common_grid(student_map, teacher_map)
            loss = loss + self.recipe["token_weight"] * cosine_loss(self.token_head(student_tokens), teacher_tokens)
        else:  # keeps every parameter in the graph (DDP without find_unused_parameters)
            loss = loss + 0.0 * sum(p.sum() for p in self.token_head.parameters())
        return loss, student_global
