"""MoCo v3: symmetric contrastive loss between a query encoder with a predictor and a momentum
key encoder, negatives from the (global) batch only - no queue. Built for ViTs.

Chen, Xie & He, "An Empirical Study of Training Self-Supervised Vision Transformers", ICCV 2021.
Recipe for ViT (Sec. 2 Algorithm 1, Sec. 4.2 "random patch projection", Appendix A/Table 7):
AdamW, LR = 1.5e-4 x B/256, weight decay 0.1, 40 warmup epochs of 300 then cosine, batch 4096;
momentum m from 0.99 to 1 on a cosine schedule; temperature 0.2 (ViT; 1.0 for ResNet-50);
projection head 3-layer MLP (4096 hidden, 256 out, BN), prediction head 2-layer MLP (4096, BN);
the patch projection is left frozen at its random init for stability (Sec. 4.2); loss
ctr(q1, k2) + ctr(q2, k1) with ctr(q, k) = 2 tau x CrossEntropy(q k^T / tau, diagonal).

lightly has no MoCo v3 loss (its NTXentLoss also contrasts a view with its own batch), so the
5-line `mocov3_loss` below implements the paper's pseudo-code (Algorithm 1) directly.

Override from `recipe:` in the pretrain config; method keys: temperature, momentum_start,
momentum_end, proj_dim, hidden_dim, freeze_patch_embed. For a ResNet backbone the paper uses LARS,
lr 0.6 (100 ep.), wd 1e-6, temperature 1.0: `{optimizer: lars, lr: 0.6, weight_decay: 1e-6,
temperature: 1.0, exclude_bias_norm: true}`.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from lightly.models.modules import MoCoProjectionHead
from lightly.models.utils import concat_all_gather

from rsbench.models import backbone_info
from rsbench.ssl.base import SSLMethod
from rsbench.ssl.catalog import CATALOG
from rsbench.ssl.momentum import make_teacher


def mocov3_loss(q: torch.Tensor, k: torch.Tensor, temperature: float) -> torch.Tensor:
    """2 tau x CE(q k^T / tau, labels = own index), q and k L2-normalised; k gathered under DDP."""
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    offset = 0
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        offset = dist.get_rank() * q.shape[0]
        k = concat_all_gather(k)
    labels = torch.arange(q.shape[0], device=q.device) + offset
    return F.cross_entropy(q @ k.T / temperature, labels) * 2 * temperature


class MoCoV3(SSLMethod):
    card = CATALOG["mocov3"]  # name, paper, default backbone and recipe
    byol_augmentations = True  # "we follow BYOL's augmentation" (Sec. 2)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        r = self.recipe
        if r["freeze_patch_embed"] and backbone_info(self.backbone).patch_size is not None:  # a patch projection
            self.backbone.patch_embed.requires_grad_(False)
        self.projection_head = MoCoProjectionHead(
            self.feature_dim, r["hidden_dim"], r["proj_dim"], num_layers=3, batch_norm=True
        )
        self.prediction_head = MoCoProjectionHead(
            r["proj_dim"], r["hidden_dim"], r["proj_dim"], num_layers=2, batch_norm=True
        )
        self.key_backbone = make_teacher(self.backbone)
        self.key_head = make_teacher(self.projection_head)

    def ema_pairs(self):
        return [(self.backbone, self.key_backbone), (self.projection_head, self.key_head)]

    def training_loss(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x1, x2 = views
        z1, z2 = self.projection_head(self.backbone(x1)), self.projection_head(self.backbone(x2))
        q1, q2 = self.prediction_head(z1), self.prediction_head(z2)
        with torch.no_grad():
            k1, k2 = self.key_head(self.key_backbone(x1)), self.key_head(self.key_backbone(x2))
        t = self.recipe["temperature"]
        return mocov3_loss(q1, k2, t) + mocov3_loss(q2, k1, t), z1
