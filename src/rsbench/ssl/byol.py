"""BYOL: an online network with a predictor regresses the projection of a slow EMA target network.

Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020. Recipe (Sec. 3.3 and Appendix B, C):
LARS, LR = 0.2 x B/256, weight decay 1.5e-6 (biases and BN excluded from decay and LARS
adaptation), 10 warmup epochs of 1000 then cosine, batch 4096; target EMA rate tau from 0.996 to 1
with tau = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2; projector and predictor: MLP 4096 -> 256 with
BN; loss 2 - 2 cos(q, z') symmetrised over the two views (lightly's NegativeCosineSimilarity:
same gradients); asymmetric views (Table 6): blur p 1.0 / 0.1, solarize p 0 / 0.2.

Override from `recipe:` in the pretrain config; method keys: momentum_start, momentum_end,
proj_dim, hidden_dim.
"""

from __future__ import annotations

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead

from rsbench.ssl.base import SSLMethod
from rsbench.ssl.catalog import CATALOG
from rsbench.ssl.momentum import make_teacher


class BYOL(SSLMethod):
    card = CATALOG["byol"]  # name, paper, default backbone and recipe
    byol_augmentations = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        r = self.recipe
        self.projection_head = BYOLProjectionHead(self.feature_dim, r["hidden_dim"], r["proj_dim"])
        self.prediction_head = BYOLPredictionHead(r["proj_dim"], r["hidden_dim"], r["proj_dim"])
        self.target_backbone = make_teacher(self.backbone)
        self.target_head = make_teacher(self.projection_head)
        self.criterion = NegativeCosineSimilarity()

    def ema_pairs(self):
        return [(self.backbone, self.target_backbone), (self.projection_head, self.target_head)]

    def training_loss(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x0, x1 = views
        z0, z1 = self.projection_head(self.backbone(x0)), self.projection_head(self.backbone(x1))
        p0, p1 = self.prediction_head(z0), self.prediction_head(z1)
        with torch.no_grad():
            t0, t1 = self.target_head(self.target_backbone(x0)), self.target_head(self.target_backbone(x1))
        return 0.5 * (self.criterion(p0, t1) + self.criterion(p1, t0)), z0
