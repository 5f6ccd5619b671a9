"""What a built backbone is, read once from the timm model: `backbone_info(model) -> BackboneInfo`.

The one answer to "is this a ViT?" (and "what is its patch / feature stride?") for code that holds a
model; code that only has an architecture name uses `rsbench.models.is_vit_name`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from rsbench.models.backbones import feature_dim


@dataclass(frozen=True)
class BackboneInfo:
    """is_vit: a plain ViT (timm ViT/DeiT/BEiT/EVA): a `patch_embed`, a stack of `blocks` and a single
    feature stride (hierarchical transformers such as Swin, and CNNs, are not).
    patch_size: the side of the patch projection when the model has a `patch_embed` (ViTs, Swin, ...),
    else None (a conv stem).
    feature_dim: the pooled feature width (`num_features`).
    feature_strides: the distinct strides of timm's `feature_info`, in its order (resnet18: 2, 4, 8, 16,
    32; a ViT: its patch size); empty when the model has no `feature_info`."""

    is_vit: bool
    patch_size: int | None
    feature_dim: int
    feature_strides: tuple[int, ...]


def _feature_strides(model: nn.Module) -> tuple[int, ...]:
    info = getattr(model, "feature_info", None) or []
    if callable(getattr(info, "reduction", None)):  # a features_only model's FeatureInfo
        reductions = [int(r) for r in info.reduction()]
    else:
        reductions = [int(f["reduction"]) for f in info if isinstance(f, dict) and "reduction" in f]
    return tuple(dict.fromkeys(reductions))


def _patch_size(model: nn.Module) -> int | None:
    size = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    if size is None:
        return None
    return int(size[0]) if isinstance(size, (tuple, list)) else int(size)


def backbone_info(model: nn.Module) -> BackboneInfo:
    """The `BackboneInfo` of a built timm model."""
    strides = _feature_strides(model)
    is_vit = hasattr(model, "patch_embed") and hasattr(model, "blocks") and len(strides) == 1
    return BackboneInfo(
        is_vit=is_vit, patch_size=_patch_size(model), feature_dim=feature_dim(model), feature_strides=strides
    )
