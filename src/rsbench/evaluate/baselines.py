"""Trivial, network-free feature extractors that sit beside the backbones in every leaderboard.

They take the same preprocessed input (resized, per-band normalized) and go through the same kNN /
linear probes, so a backbone that does not beat them has learned nothing the raw spectra do not show.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BANDSTATS_QUANTILES = (0.01, 0.5, 0.99)
PIXELS_GRID = 8


class BandStatsFeatures(nn.Module):
    """Per band: mean, std, 1st / 50th / 99th percentile -> 5 * C features, grouped by statistic."""

    def __init__(self, in_chans: int):
        super().__init__()
        self.num_features = (2 + len(BANDSTATS_QUANTILES)) * in_chans
        self.register_buffer("q", torch.tensor(BANDSTATS_QUANTILES), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.float().flatten(2)  # B x C x HW
        # One image at a time: torch.quantile refuses inputs above 2**24 values (a batch of large images).
        quantiles = torch.stack([torch.quantile(img, self.q, dim=-1) for img in flat])  # B x Q x C
        stats = [flat.mean(-1), flat.std(-1, unbiased=False), *quantiles.unbind(1)]
        return torch.cat(stats, dim=1)


class PixelFeatures(nn.Module):
    """The image block-averaged to grid x grid per band (area downsampling), flattened."""

    def __init__(self, in_chans: int, grid: int = PIXELS_GRID):
        super().__init__()
        self.grid = grid
        self.num_features = in_chans * grid * grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x.float(), self.grid).flatten(1)
