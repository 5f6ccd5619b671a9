"""SimCLR: contrast two augmented views of each image against all others in the batch.

Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", ICML 2020.
Recipe from the paper: LARS, LR = 0.3 x batch/256, weight decay 1e-6, linear warmup (10 of 100
epochs) then cosine decay; 2-layer MLP projection head to 128-d; NT-Xent loss. The paper's
best temperature depends on batch size and length of training (0.1 to 0.5); rsbench uses 0.5,
the value that is robust for the small batches and short schedules of CPU runs.
"""

from __future__ import annotations

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead

from rsbench.ssl.base import Recipe, SSLMethod


class SimCLR(SSLMethod):
    name = "simclr"
    default_recipe = Recipe(optimizer="lars", lr=0.3, weight_decay=1e-6, extra={"temperature": 0.5})

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.projection_head = SimCLRProjectionHead(self.feature_dim, self.feature_dim, 128)
        # gather_distributed: under DDP the negatives come from the global batch, as in the paper.
        self.criterion = NTXentLoss(temperature=self.recipe.extra["temperature"], gather_distributed=True)

    def training_loss(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        z0, z1 = (self.projection_head(self.backbone(v)) for v in views)
        return self.criterion(z0, z1), z0
