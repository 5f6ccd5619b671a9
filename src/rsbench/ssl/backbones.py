"""Backbones: any timm architecture with any band count, plus the exported-backbone format.

An exported backbone is two files in a run directory:
  backbone.pt   - state_dict of `timm.create_model(arch, in_chans=C, num_classes=0)`
  backbone.json - {"arch", "in_chans", "image_size", "feature_dim", "normalization", "method", "steps", ...}
so it loads with plain timm as well as with `load_exported_backbone`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from rsbench.errors import ConfigError, DataError
from rsbench.io import read_json

BACKBONE_WEIGHTS = "backbone.pt"
BACKBONE_META = "backbone.json"


def _is_vit(arch: str) -> bool:
    return any(tag in arch for tag in ("vit", "deit", "eva", "beit"))


def create_backbone(
    arch: str,
    in_chans: int,
    image_size: int | None = None,
    pretrained: bool = False,
    weights_file: str | Path | None = None,
) -> nn.Module:
    """A timm model that returns pooled features (num_classes=0).

    `pretrained=True` loads timm's ImageNet weights from `weights_file` or the local hub cache; with
    `in_chans != 3` timm adapts the first layer (RGB weights repeated and rescaled).
    """
    kwargs: dict[str, Any] = {"num_classes": 0, "in_chans": in_chans}
    if image_size is not None and _is_vit(arch):
        kwargs["img_size"] = image_size
    if weights_file is not None:
        weights_file = Path(weights_file)
        if not weights_file.is_file():
            raise ConfigError(f"weights file not found: {weights_file}")
        kwargs["pretrained_cfg_overlay"] = {"file": str(weights_file)}
    try:
        return timm.create_model(arch, pretrained=pretrained, **kwargs)
    except RuntimeError as e:
        if "Unknown model" in str(e):
            raise ConfigError(f"unknown backbone '{arch}' (any timm model name, e.g. resnet18)") from None
        if pretrained:
            raise _weights_unavailable(arch, e) from None
        raise
    except Exception as e:  # noqa: BLE001 - hub/network/file errors all mean "no weights"
        if pretrained:
            raise _weights_unavailable(arch, e) from None
        raise


def _weights_unavailable(arch: str, cause: Exception) -> ConfigError:
    why = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
    return ConfigError(
        f"ImageNet weights for '{arch}' are not available ({why[:160]}); download them once with "
        f"`python -c \"import timm; timm.create_model('{arch}', pretrained=True)\"` on a machine with "
        f"internet (they go to the Hugging Face cache), or pass --weights PATH to a timm checkpoint file"
    )


def feature_dim(model: nn.Module) -> int:
    return int(getattr(model, "num_features"))


def load_exported_backbone(run_dir: str | Path) -> tuple[nn.Module, dict]:
    """Load `backbone.pt` + `backbone.json` from an rsbench run directory."""
    run_dir = Path(run_dir)
    meta_path, weights_path = run_dir / BACKBONE_META, run_dir / BACKBONE_WEIGHTS
    if not meta_path.is_file() or not weights_path.is_file():
        raise DataError(f"{run_dir} is not a finished rsbench run (missing {BACKBONE_META} or {BACKBONE_WEIGHTS})")
    meta = read_json(meta_path)
    model = create_backbone(meta["arch"], meta["in_chans"], meta.get("image_size"))
    load_state_dict_file(model, weights_path)
    return model, meta


def load_state_dict_file(model: nn.Module, path: str | Path) -> None:
    """Load a plain state_dict (optionally nested under 'state_dict'/'model') with weights_only=True."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise DataError(f"cannot load weights from {path}: {str(e).splitlines()[0]}") from e
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        raise DataError(f"{path} does not hold a state_dict")
    # Classifier heads of full checkpoints are not part of a feature backbone.
    head_keys = {k for k in state if k not in model.state_dict()}
    missing = [k for k in model.state_dict() if k not in state]
    if missing:
        raise DataError(f"weights in {path} do not match the backbone: {len(missing)} missing keys, e.g. '{missing[0]}'")
    try:
        model.load_state_dict({k: v for k, v in state.items() if k not in head_keys}, strict=True)
    except RuntimeError as e:
        raise DataError(f"weights in {path} do not match the backbone: {str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else e}") from None
