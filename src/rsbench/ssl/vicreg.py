"""VICReg: invariance between views plus variance and covariance regularisation of each view.

Bardes, Ponce & LeCun, "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised
Learning", ICLR 2022. Recipe (Sec. 4.1, Appendix C.1): LARS, LR = 0.2 x B/256 (base_lr 0.2),
weight decay 1e-6, 10 warmup epochs of 1000 then cosine, batch 2048; expander 3 layers of 8192
units (BN + ReLU after the first two); loss coefficients lambda = mu = 25 (invariance, variance),
nu = 1 (covariance) (Eq. 6); BYOL's augmentations. Loss: lightly's VICRegLoss.

Override from `recipe:` in the pretrain config; method keys: lambda_param, mu_param, nu_param,
proj_dim (8192; e.g. 2048 on CPU).
"""

from __future__ import annotations

import torch
from lightly.loss import VICRegLoss
from lightly.models.modules.heads import VICRegProjectionHead

from rsbench.ssl.base import SSLMethod
from rsbench.ssl.catalog import CATALOG


class VICReg(SSLMethod):
    card = CATALOG["vicreg"]  # name, paper, default backbone and recipe
    byol_augmentations = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        r = self.recipe
        self.projection_head = VICRegProjectionHead(self.feature_dim, r["proj_dim"], r["proj_dim"])
        self.criterion = VICRegLoss(
            lambda_param=r["lambda_param"], mu_param=r["mu_param"], nu_param=r["nu_param"], gather_distributed=True
        )

    def training_loss(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        z0, z1 = (self.projection_head(self.backbone(v)) for v in views)
        return self.criterion(z0, z1), z0
