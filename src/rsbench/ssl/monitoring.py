"""Representation-collapse signals for SSL training.

Two numbers per checked batch of embeddings z (B x d):
  std_l2 - std over the batch of the L2-normalised embeddings, averaged over dimensions (lightly's
           `std_of_l2_normalized`, the SimSiam paper's collapse monitor, Chen & He 2021 Sec. 4.1).
           Healthy: close to 1/sqrt(d); complete collapse (every image maps to one point): 0.
  rank   - effective rank, exp of the entropy of the normalised singular values of z (RankMe,
           Garrido et al. 2023, Eq. 1; Roy & Vetterli 2007). Between 1 and min(B, d); a value near 1
           means dimensional collapse (all embeddings on one line) even when std_l2 is not yet 0.
"""

from __future__ import annotations

import math

import torch
from lightly.utils.debug import std_of_l2_normalized


def effective_rank(z: torch.Tensor, eps: float = 1e-7) -> float:
    """exp(H(p)), p = singular values of z normalised to sum 1 (RankMe's epsilon avoids log 0)."""
    s = torch.linalg.svdvals(z.detach().float())
    p = s / s.sum() + eps
    return float(torch.exp(-(p * torch.log(p)).sum()))


class CollapseMonitor:
    """Flags collapse when std_l2 stays below `fraction` / sqrt(d) for `patience` consecutive checks.

    One noisy batch is not a collapse; a representation that stays near a point is.
    """

    def __init__(self, fraction: float = 0.1, patience: int = 5):
        self.fraction, self.patience = fraction, patience
        self.low_streak = 0

    def check(self, z: torch.Tensor) -> dict[str, float]:
        z = z.detach().float().flatten(1)
        std = float(std_of_l2_normalized(z))
        self.low_streak = self.low_streak + 1 if std < self.fraction / math.sqrt(z.shape[1]) else 0
        return {
            "std_l2": std,
            "std_l2_healthy": 1 / math.sqrt(z.shape[1]),
            "rank": effective_rank(z),
            "collapse": float(self.low_streak >= self.patience),
        }
