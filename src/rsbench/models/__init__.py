"""Backbones shared by the stages: creation from any timm architecture with any band count, loading an
exported backbone (the format: rsbench.contracts.backbone_export, whose file names are re-exported
here), and `backbone_info` (what a built model is). No SSL, lightly or Lightning imports here, so
evaluation and planning load without the pretraining stack."""

from __future__ import annotations

from rsbench.contracts.backbone_export import BACKBONE_META, BACKBONE_WEIGHTS
from rsbench.models.backbones import (
    adapt_first_layer,
    backbone_kwargs,
    create_backbone,
    feature_dim,
    load_exported_backbone,
    load_state_dict_file,
)
from rsbench.models.info import BackboneInfo, backbone_info

__all__ = [
    "BACKBONE_META",
    "BACKBONE_WEIGHTS",
    "BackboneInfo",
    "adapt_first_layer",
    "backbone_info",
    "backbone_kwargs",
    "create_backbone",
    "feature_dim",
    "load_exported_backbone",
    "load_state_dict_file",
]
