"""Barlow Twins: make the cross-correlation matrix of the two views' embeddings the identity.

Zbontar et al., "Barlow Twins: Self-Supervised Learning via Redundancy Reduction", ICML 2021.
Recipe (Sec. 3 "Implementation details", Appendix): LARS, LR 0.2 (weights) x B/256, weight decay
1.5e-6, biases and BN excluded from decay and LARS adaptation, 10 warmup epochs of 1000 then cosine,
batch 2048; projector 3 linear layers of 8192 units (BN + ReLU after the first two); lambda = 5e-3
(Eq. 1, Fig. 4); BYOL's augmentations. (The paper's separate 0.0048 LR for biases/BN is not
reproduced: here they share the weights' LR.) Loss: lightly's BarlowTwinsLoss.

Override from `recipe:` in the pretrain config; method keys: lambda_param, proj_dim (8192; use
e.g. 2048 on CPU - the 8192-d projector has 138 M parameters on a ResNet-18).
"""

from __future__ import annotations

import torch
from lightly.loss import BarlowTwinsLoss
from lightly.models.modules import BarlowTwinsProjectionHead

from rsbench.ssl.base import SSLMethod
from rsbench.ssl.catalog import CATALOG


class BarlowTwins(SSLMethod):
    card = CATALOG["barlowtwins"]  # name, paper, default backbone and recipe
    byol_augmentations = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        d = self.recipe["proj_dim"]
        self.projection_head = BarlowTwinsProjectionHead(self.feature_dim, d, d)
        self.criterion = BarlowTwinsLoss(lambda_param=self.recipe["lambda_param"], gather_distributed=True)

    def training_loss(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        z0, z1 = (self.projection_head(self.backbone(v)) for v in views)
        return self.criterion(z0, z1), z0
