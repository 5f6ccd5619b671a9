"""SimCLR: contrast two augmented views of each image against all other images of the batch.

Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", ICML 2020.
Recipe (Sec. 4 / Appendix B.1 and the official ImageNet command): LARS, LR = 0.3 x B/256, weight
decay 1e-6 (not on biases and BN), 10 warmup epochs of 100 then cosine decay, batch 4096;
projection head: 2-layer MLP (hidden = backbone width, BN) to 128-d; NT-Xent loss with temperature
0.1 (Table 5: the best temperature for the ImageNet recipe; 0.5 is the CIFAR-10 setting, B.9).
Appendix B.1 notes that square-root scaling, LR = 0.075 x sqrt(B) (`lr_scaling: sqrt, lr: 1.2`),
works better for small batches.

Override from `recipe:` in the pretrain config; `--recipe small-batch` trains with AdamW and temperature
0.2 (the small-batch preset, rsbench.ssl.recipe). Method keys: temperature,
proj_dim.
"""

from __future__ import annotations

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead

from rsbench.ssl.base import SSLMethod
from rsbench.ssl.catalog import CATALOG


class SimCLR(SSLMethod):
    card = CATALOG["simclr"]  # name, paper, default backbone and recipe

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.projection_head = SimCLRProjectionHead(self.feature_dim, self.feature_dim, self.recipe["proj_dim"])
        # gather_distributed: under DDP the negatives come from the global batch, as in the paper.
        self.criterion = NTXentLoss(temperature=self.recipe["temperature"], gather_distributed=True)

    def training_loss(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        z0, z1 = (self.projection_head(self.backbone(v)) for v in views)
        return self.criterion(z0, z1), z0
