"""Augmentations for remote-sensing tensors of any band count.

Views are made from already-normalized C x H x W float tensors, so jitter strengths are in units
of each band's standard deviation and work the same for RGB, 4-band aerial or 13-band Sentinel-2.
Seen from above there is no canonical orientation, so all 8 dihedral transforms are used.
"""

from __future__ import annotations

import random

import torch
from torch import nn
from torchvision.transforms import v2


class RandomDihedral(nn.Module):
    """Random 90-degree rotation followed by a random horizontal flip (the 8 symmetries of a square)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.rot90(x, k=random.randint(0, 3), dims=(-2, -1))
        return torch.flip(x, dims=(-1,)) if random.random() < 0.5 else x


class BandJitter(nn.Module):
    """Per-band brightness shift and contrast scaling (the multispectral analogue of colour jitter)."""

    def __init__(self, brightness: float = 0.4, contrast: float = 0.4, p: float = 0.8):
        super().__init__()
        self.brightness, self.contrast, self.p = brightness, contrast, p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if random.random() >= self.p:
            return x
        c = x.shape[-3]
        shift = (torch.rand(c, 1, 1) * 2 - 1) * self.brightness
        scale = 1 + (torch.rand(c, 1, 1) * 2 - 1) * self.contrast
        mean = x.mean(dim=(-2, -1), keepdim=True)
        return (x - mean) * scale + mean + shift


class RandomGrayscale(nn.Module):
    """Replace every band by the band mean (only meaningful, and only used, for RGB data)."""

    def __init__(self, p: float = 0.2):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if random.random() >= self.p:
            return x
        return x.mean(dim=-3, keepdim=True).expand_as(x).clone()


def ssl_view_transform(
    image_size: int,
    rgb: bool,
    min_scale: float = 0.08,
    blur_p: float = 0.5,
    jitter: float = 0.4,
) -> nn.Module:
    """The SimCLR-style view pipeline for one crop: crop, dihedral, band jitter, (grayscale), blur."""
    kernel = max(3, (image_size // 10) | 1)  # SimCLR: kernel 10% of the image side, odd
    steps: list[nn.Module] = [
        v2.RandomResizedCrop(image_size, scale=(min_scale, 1.0), antialias=True),
        RandomDihedral(),
        BandJitter(brightness=jitter, contrast=jitter),
    ]
    if rgb:
        steps.append(RandomGrayscale(p=0.2))
    steps.append(v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=blur_p))
    return v2.Compose(steps)


class MultiView:
    """Calls a view transform `n` times on the same image (picklable for DataLoader workers)."""

    def __init__(self, transform: nn.Module, n: int = 2):
        self.transform, self.n = transform, n

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.transform(x) for _ in range(self.n)]
