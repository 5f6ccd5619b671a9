"""MoCo v2: a query encoder contrasted against a momentum key encoder and a queue of past keys.

He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020 (MoCo
v1, Sec. 3.2 and 4: queue K = 65536, momentum m = 0.999, SGD momentum 0.9, weight decay 1e-4, LR
0.03 for batch 256); Chen et al., "Improved Baselines with Momentum Contrastive Learning", 2020
(MoCo v2, Sec. 2 / Table 1: 2-layer MLP head 2048-d hidden -> 128, temperature 0.2, SimCLR-style
blur augmentation, cosine LR schedule, 200 epochs, no warmup). The loss is InfoNCE of each query
against its key and the queue: lightly's NTXentLoss with a memory bank. Weight decay applies to
every parameter, as in the official code.

Shuffle BN (MoCo Sec. 3.3) matters only when BN statistics are per GPU: under DDP the key batch is
shuffled across devices with lightly's batch_shuffle; on one device BN sees the whole batch anyway.

Override from `recipe:` in the pretrain config; method keys: temperature, queue_size,
momentum_start/momentum_end (constant 0.999 in the paper), proj_dim, hidden_dim. A queue_size from the
preset above half the training samples is cut at pretrain start (rsbench.ssl.recipe.fit_to_data: 65,536
-> 1,024 on EuroSAT's 2,300 images) and recorded in backbone.json; one set by hand is kept, with a warning.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from lightly.loss import NTXentLoss
from lightly.models.modules import MoCoProjectionHead
from lightly.models.utils import batch_shuffle, batch_unshuffle

from rsbench.ssl.base import SSLMethod
from rsbench.ssl.catalog import CATALOG
from rsbench.ssl.momentum import make_teacher


class MoCoV2(SSLMethod):
    card = CATALOG["mocov2"]  # name, paper, default backbone and recipe

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        r = self.recipe
        self.projection_head = MoCoProjectionHead(self.feature_dim, r["hidden_dim"], r["proj_dim"])
        self.key_backbone = make_teacher(self.backbone)
        self.key_head = make_teacher(self.projection_head)
        # gather_distributed: under DDP the keys of every GPU are enqueued, as in MoCo's concat_all_gather.
        self.criterion = NTXentLoss(
            temperature=r["temperature"], memory_bank_size=(r["queue_size"], r["proj_dim"]), gather_distributed=True
        )
        # lightly keeps the queue in non-persistent buffers; persistent ones go into checkpoints, so a
        # resumed run continues with the same negatives.
        bank = self.criterion.memory_bank
        bank.register_buffer("bank", bank.bank, persistent=True)
        bank.register_buffer("bank_ptr", bank.bank_ptr, persistent=True)

    def ema_pairs(self):
        return [(self.backbone, self.key_backbone), (self.projection_head, self.key_head)]

    @torch.no_grad()
    def keys(self, x: torch.Tensor) -> torch.Tensor:
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if distributed:
            x, shuffle = batch_shuffle(x, distributed=True)
        k = self.key_head(self.key_backbone(x))
        return batch_unshuffle(k, shuffle, distributed=True) if distributed else k

    def training_loss(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.projection_head(self.backbone(views[0]))
        k = self.keys(views[1])
        # NTXentLoss normalizes q and k, scores q against k and the queue, then enqueues k.
        return self.criterion(q, k), q
