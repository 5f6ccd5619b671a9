"""Augmentations for remote-sensing tensors of any band count.

Views are made from already-normalized C x H x W float tensors, so jitter strengths are in units
of each band's standard deviation and work the same for RGB, 4-band aerial or 13-band Sentinel-2.
Seen from above there is no canonical orientation, so all 8 dihedral transforms are used where the
papers use horizontal flips. RGB-only operations (grayscale, torchvision's ColorJitter) are applied
only to 3-band data.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch
from torch import nn
from torchvision.transforms import v2

from rsbench.data.augment import RandomDihedral


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


class BandMeanGrayscale(nn.Module):
    """Replace every band by the band mean (only meaningful, and only used, for RGB data)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=-3, keepdim=True).expand_as(x).clone()


class CentredSolarize(nn.Module):
    """Solarization for normalized bands: values above the band mean (0) are mirrored below it.

    On a [0, 1] photo, solarize(x) = 1 - x for x >= 0.5 is a reflection about mid-grey; with bands
    centred on their mean, the same reflection is x -> -x for x > 0 (BYOL / DINO apply it with p = 0.2).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x > 0, -x, x)


class RGBColorJitter(nn.Module):
    """torchvision ColorJitter (SimCLR strength 0.8: brightness/contrast/saturation 0.8, hue 0.2) on
    3-band tensors.

    ColorJitter expects [0, 1] pixels and clips to that range; normalized bands are mapped there by
    a per-image min/max affine and mapped back with its inverse, so its clipping acts as on a photo.
    """

    def __init__(self, strength: float = 0.8, p: float = 0.8):
        super().__init__()
        s = strength
        self.jitter = v2.RandomApply([v2.ColorJitter(s, s, s, min(0.5, s / 4))], p=p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-3] != 3:
            raise ValueError(f"RGB colour jitter needs 3 bands, got {x.shape[-3]}")
        lo, hi = x.amin(), x.amax()
        span = (hi - lo).clamp_min(1e-6)
        return self.jitter((x - lo) / span) * span + lo


def ssl_view_transform(
    image_size: int,
    in_chans: int,
    min_scale: float = 0.08,
    max_scale: float = 1.0,
    blur_p: float = 0.5,
    solarize_p: float = 0.0,
    jitter: float = 0.4,
    color_jitter: bool = False,
    grayscale_p: float = 0.2,
) -> nn.Module:
    """The SimCLR/BYOL-style pipeline for one crop: random resized crop, dihedral flip/rotation,
    per-band brightness/contrast jitter, (RGB only: colour jitter, grayscale), blur, solarize."""
    kernel = max(3, (image_size // 10) | 1)  # SimCLR: kernel 10% of the image side, odd
    steps: list[nn.Module] = [
        v2.RandomResizedCrop(image_size, scale=(min_scale, max_scale), antialias=True),
        RandomDihedral(),
        BandJitter(brightness=jitter, contrast=jitter),
    ]
    if in_chans == 3:
        if color_jitter:
            steps.append(RGBColorJitter())
        if grayscale_p > 0:
            steps.append(v2.RandomApply([BandMeanGrayscale()], p=grayscale_p))
    if blur_p > 0:
        steps.append(v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=blur_p))
    if solarize_p > 0:
        steps.append(v2.RandomApply([CentredSolarize()], p=solarize_p))
    return v2.Compose(steps)


def asymmetric_views(image_size: int, in_chans: int, min_scale: float = 0.08, **options) -> MultiView:
    """BYOL's two view distributions (Grill et al. 2020, Table 6): blur p 1.0 / 0.1, solarize p 0 / 0.2.
    Also used by MoCo v3, Barlow Twins and VICReg, which adopt BYOL's augmentations."""
    return MultiView(
        [
            ssl_view_transform(image_size, in_chans, min_scale=min_scale, blur_p=1.0, solarize_p=0.0, **options),
            ssl_view_transform(image_size, in_chans, min_scale=min_scale, blur_p=0.1, solarize_p=0.2, **options),
        ]
    )


def crop_flip_transform(image_size: int, min_scale: float = 0.2) -> nn.Module:
    """MAE's single view: random resized crop (scale 0.2-1) and flips (here: the 8 dihedral maps)."""
    return v2.Compose([v2.RandomResizedCrop(image_size, scale=(min_scale, 1.0), antialias=True), RandomDihedral()])


def local_crop_size(image_size: int, multiple: int = 16) -> int:
    """DINO's local crop side, 96/224 of the global one, rounded up to a multiple of the ViT patch."""
    return max(multiple, math.ceil(image_size * 96 / 224 / multiple) * multiple)


class MultiView:
    """Applies each transform (or one transform `n` times) to the same image; picklable for workers.

    Views with the same index always have the same size, so a batch stacks per view index.
    """

    def __init__(self, transforms: nn.Module | Sequence[nn.Module], n: int = 2):
        self.transforms = list(transforms) if isinstance(transforms, (list, tuple)) else [transforms] * n

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [t(x) for t in self.transforms]
