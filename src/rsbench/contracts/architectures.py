"""What an architecture *name* says before any model exists: whether a timm name is a ViT and its patch size.

Pretraining, evaluation and the benchmark planner all decide things from a name alone (timm kwargs, which
methods apply, the token count of a cell); they ask here. With a built model, ask
`rsbench.models.backbone_info(model)`, which reads the model itself. Imports no torch.
"""

from __future__ import annotations

import re

VIT_TAGS = ("vit", "deit", "eva", "beit")
_PATCH = re.compile(r"patch(\d+)")


def is_vit_name(arch: str | None) -> bool:
    """Whether the timm architecture name `arch` is a ViT (vit/deit/eva/beit in the name)."""
    return arch is not None and any(tag in arch for tag in VIT_TAGS)


def patch_size_from_name(arch: str | None) -> int | None:
    """A timm ViT's patch size from its name (vit_small_patch16_224 -> 16); None for a CNN or a name without one."""
    m = _PATCH.search(arch or "")
    return int(m.group(1)) if m and is_vit_name(arch) else None
