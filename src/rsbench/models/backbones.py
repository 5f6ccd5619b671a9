"""Backbones: any timm architecture with any band count, and loading an exported backbone.

The exported-backbone format (backbone.pt + backbone.json) is a contract between pretraining and
evaluation: rsbench.contracts.backbone_export describes it; `load_exported_backbone` reads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from rsbench.contracts.architectures import is_vit_name
from rsbench.contracts.backbone_export import BackboneExport
from rsbench.errors import ConfigError, DataError, RsbenchError


def backbone_kwargs(arch: str, image_size: int | None, patch_size: int | None = None) -> dict[str, Any]:
    """The timm kwargs besides in_chans/num_classes that fix the shape of `arch`'s weights: a ViT's
    input size (its position-embedding grid) and patch size; nothing for CNNs."""
    if not is_vit_name(arch):
        return {}
    kwargs: dict[str, Any] = {}
    if image_size is not None:
        kwargs["img_size"] = int(image_size)
    if patch_size is not None:
        if image_size is not None and image_size % patch_size:
            raise ConfigError(f"image size {image_size} is not a multiple of the ViT patch size {patch_size}")
        kwargs["patch_size"] = int(patch_size)
    return kwargs


def adapt_first_layer(weight: torch.Tensor, in_chans: int, rgb: Sequence[int] | None = None) -> torch.Tensor:
    """RGB first-layer weights (O, 3, kh, kw) -> (O, in_chans, kh, kw) for data with other bands.

    `rgb` = the input channels (0-based) of the data's red, green and blue bands: ImageNet's R, G and B
    filters go there (so BGR data gets them reordered), every other channel gets the mean of the RGB
    filters. None keeps the old convention, channels 0, 1, 2 are R, G, B (fewer than 3 bands: every
    channel gets the RGB mean); callers that know the bands should pass them (see
    rsbench.evaluate.band_mapping), as R, G, B filters copied onto, say, Sentinel-2's B01, B02, B03 are
    wrong.

    Scale rule (response preserving): everything is multiplied by 3 / in_chans. An achromatic input (the
    same image x in every band) meets sum_c W'_c = (W_R + W_G + W_B + (in_chans - 3) * mean) * s =
    in_chans * mean * s, while the RGB model sees W_R + W_G + W_B = 3 * mean; s = 3 / in_chans makes them
    equal, for any band count and any placement of R, G, B (fewer than 3 bands: in_chans copies of the
    mean, the same s). So activation scales - and everything downstream - match the pretrained network
    on such inputs, and an RGB image placed in the R, G, B channels (zeros elsewhere) gives the RGB
    model's response to 3 / in_chans times that image. (timm's `adapt_input_conv` cycles R, G, B over the
    extra bands instead, which keeps the achromatic property only when in_chans is a multiple of 3.)
    """
    if weight.shape[1] != 3:
        raise ValueError(f"expected RGB first-layer weights (O, 3, kh, kw), got {tuple(weight.shape)}")
    if rgb is None:
        rgb = (0, 1, 2) if in_chans >= 3 else None
    else:
        rgb = tuple(int(i) for i in rgb)
        if len(rgb) != 3 or len(set(rgb)) != 3 or not all(0 <= i < in_chans for i in rgb):
            raise ValueError(f"rgb must be 3 different channels in [0, {in_chans}), got {rgb}")
    if in_chans == 3 and rgb == (0, 1, 2):
        return weight
    mean = weight.mean(dim=1, keepdim=True)
    out = mean.expand(-1, in_chans, -1, -1).clone()
    if rgb is not None:
        out[:, list(rgb)] = weight
    return out * (3 / in_chans)


def _first_conv_key(model: nn.Module) -> str:
    first = model.pretrained_cfg.get("first_conv")
    if isinstance(first, (list, tuple)):
        first = first[0]
    if not first:
        raise ConfigError(f"cannot adapt {type(model).__name__} to another band count: timm names no first_conv")
    return f"{first}.weight"


def create_backbone(
    arch: str,
    in_chans: int,
    image_size: int | None = None,
    pretrained: bool = False,
    weights_file: str | Path | None = None,
    patch_size: int | None = None,
    rgb_channels: Sequence[int] | None = None,
    **timm_kwargs: Any,
) -> nn.Module:
    """A timm model that returns pooled features (num_classes=0).

    ViTs are built for `image_size` (and `patch_size`, default the architecture's). `pretrained=True`
    loads timm's ImageNet weights from `weights_file` or the local hub cache; timm resamples the
    position embeddings (and patch kernel) to the requested grid. With `in_chans != 3`, or R, G, B in
    other channels than 0, 1, 2 (`rgb_channels`: the 0-based input channels of red, green, blue; None =
    0, 1, 2), the RGB first layer is adapted by `adapt_first_layer`. `timm_kwargs` go to timm (e.g.
    dynamic_img_size=True).
    """
    kwargs: dict[str, Any] = {"num_classes": 0, **backbone_kwargs(arch, image_size, patch_size), **timm_kwargs}
    if weights_file is not None:
        weights_file = Path(weights_file)
        if not weights_file.is_file():
            raise ConfigError(f"weights file not found: {weights_file}")
        kwargs["pretrained_cfg_overlay"] = {"file": str(weights_file)}
    channels = tuple(int(i) for i in rgb_channels) if rgb_channels is not None else None
    if not pretrained or (in_chans == 3 and channels in (None, (0, 1, 2))):
        return _timm(arch, pretrained, in_chans=in_chans, **kwargs)
    rgb = _timm(arch, True, in_chans=3, **kwargs)
    kwargs.pop("pretrained_cfg_overlay", None)
    model = _timm(arch, False, in_chans=in_chans, **kwargs)
    state = rgb.state_dict()
    key = _first_conv_key(rgb)
    try:
        state[key] = adapt_first_layer(state[key], in_chans, channels)
    except ValueError as e:
        raise ConfigError(f"cannot place the RGB filters of {arch}: {e}") from None
    model.load_state_dict(state, strict=True)
    return model


def _timm(arch: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    try:
        return timm.create_model(arch, pretrained=pretrained, **kwargs)
    except RuntimeError as e:
        if "Unknown model" in str(e):
            raise ConfigError(f"unknown backbone '{arch}' (any timm model name, e.g. resnet18)") from None
        if pretrained:
            raise _weights_unavailable(arch, e, kwargs) from None
        raise
    except Exception as e:  # hub/network/file errors all mean "no weights"
        if pretrained:
            raise _weights_unavailable(arch, e, kwargs) from None
        raise


def _weights_unavailable(arch: str, cause: Exception, kwargs: dict[str, Any]) -> RsbenchError:
    why = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
    weights_file = (kwargs.get("pretrained_cfg_overlay") or {}).get("file")
    if weights_file:  # the user's file is the problem, not the hub cache
        return DataError(f"cannot load ImageNet weights for '{arch}' from --weights {weights_file}: {why[:200]}")
    return ConfigError(
        f"ImageNet weights for '{arch}' are not available ({why[:160]}); download them once with "
        f"`python -c \"import timm; timm.create_model('{arch}', pretrained=True)\"` on a machine with "
        f"internet (they go to the Hugging Face cache), or pass --weights PATH to a timm checkpoint file"
    )


def feature_dim(model: nn.Module) -> int:
    return int(model.num_features)


def load_exported_backbone(run_dir: str | Path) -> tuple[nn.Module, dict]:
    """Load `backbone.pt` + `backbone.json` (rsbench.contracts.backbone_export) from an rsbench run directory."""
    export = BackboneExport(Path(run_dir))
    export.require()
    meta = export.read_meta()
    # timm_kwargs (img_size/patch_size of a ViT) make the export loadable by plain timm as well.
    extra = dict(meta.get("timm_kwargs") or {})
    model = create_backbone(
        meta["arch"],
        meta["in_chans"],
        extra.pop("img_size", meta.get("image_size")),
        patch_size=extra.pop("patch_size", None),
        **extra,
    )
    load_state_dict_file(model, export.weights)
    return model, meta


def load_state_dict_file(model: nn.Module, path: str | Path) -> None:
    """Load a plain state_dict (optionally nested under 'state_dict'/'model') with weights_only=True."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
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
        raise DataError(
            f"weights in {path} do not match the backbone: {len(missing)} missing keys, e.g. '{missing[0]}'"
        )
    try:
        model.load_state_dict({k: v for k, v in state.items() if k not in head_keys}, strict=True)
    except RuntimeError as e:
        lines = str(e).splitlines()
        raise DataError(
            f"weights in {path} do not match the backbone: {lines[1].strip() if len(lines) > 1 else e}"
        ) from None
