"""Label-preserving augmentation for overhead imagery shared by the stages (SSL views, fine-tuning)."""

from __future__ import annotations

import random

import torch
from torch import nn


class RandomDihedral(nn.Module):
    """Random 90-degree rotation followed by a random horizontal flip (the 8 symmetries of a square)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.rot90(x, k=random.randint(0, 3), dims=(-2, -1))
        return torch.flip(x, dims=(-1,)) if random.random() < 0.5 else x
