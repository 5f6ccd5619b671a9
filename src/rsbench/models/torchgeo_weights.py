"""`torchgeo:<WeightsEnum>`: published remote-sensing weights through torchgeo's weight enums (evaluation's
`--init torchgeo:...` and pretraining's `--teacher torchgeo:...`).

The model is built the way torchgeo's builders build it (`timm.create_model(meta['model'],
in_chans=meta['in_chans'])` + the state_dict), but the weights file is read from the local torch hub
cache (where torchgeo's own download puts it) or `--weights`, never downloaded. The weights' own
preprocessing is used: their Normalize transforms become one per-band normalization, their crop size the
default input size, and their band list maps the data's bands (`--bands`) onto the first layer.
Shared by the stages (no stage imports here); rsbench.models.sources puts it behind one loader.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse

import timm
import torch
from torch import nn

from rsbench.contracts.architectures import is_vit_name
from rsbench.errors import ConfigError, DataError

PREFIX = "torchgeo:"
# Classifier keys a torchgeo checkpoint may carry next to the backbone (torchgeo's builders allow them).
HEAD_KEYS = ("fc.weight", "fc.bias", "head.weight", "head.bias")


def import_torchgeo(module: str = "torchgeo.models"):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(
            f"torchgeo cannot be imported ({e}); the torchgeo inits and datasets need it with "
            f"its dependencies (`pip install torchgeo requests`)"
        ) from None


def hub_checkpoint(url: str) -> Path:
    """Where torch.hub (and so torchgeo's `get_state_dict`) keeps the file downloaded from `url`."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def band_key(name: str) -> str:
    """'B04', 'b4' -> 'b4'; 'B8A', 'B8a' -> 'b8a' (torchgeo datasets and weight enums spell bands differently)."""
    m = re.fullmatch(r"[bB]0*(\d+)([aA]?)", name.strip())
    return f"b{m.group(1)}{m.group(2).lower()}" if m else name.strip().lower()


def transforms_preprocessing(transforms, in_chans: int) -> tuple[list[float], list[float], int | None]:
    """Fold the weights' Normalize steps into one per-band (mean, std); the last Resize/CenterCrop size."""
    from torchvision.transforms import v2

    steps = list(transforms) if isinstance(transforms, nn.Sequential) else [transforms]
    mean, std, size = [0.0] * in_chans, [1.0] * in_chans, None
    for step in steps:
        if isinstance(step, v2.Normalize):
            m = list(step.mean) * in_chans if len(step.mean) == 1 else list(step.mean)
            s = list(step.std) * in_chans if len(step.std) == 1 else list(step.std)
            if len(m) != in_chans or len(s) != in_chans:
                raise ConfigError(f"weights transforms normalize {len(m)} bands but the weights take {in_chans}")
            # (((x - m1) / s1) - m2) / s2 == (x - (m1 + m2 s1)) / (s1 s2)
            mean = [a + b * c for a, b, c in zip(mean, m, std)]
            std = [a * b for a, b in zip(std, s)]
        elif isinstance(step, (v2.Resize, v2.CenterCrop)):
            sz = step.size
            size = int(sz[0] if isinstance(sz, (list, tuple)) else sz)
        elif not isinstance(step, nn.Identity):
            raise ConfigError(
                f"the weights' transform {type(step).__name__} cannot be applied as a per-band "
                f"normalization; these weights are not supported"
            )
    return mean, std, size


def resolve_torchgeo_weights(
    source: str, weights_file: Path | None, data_bands: list[str] | None, in_chans: int | None
) -> dict:
    """Everything needed to build `torchgeo:<name>` weights: arch, file, normalization, bands, size.

    `weights_file` overrides the hub-cache location; `data_bands` (the data's bands in input order)
    select the weights' first-layer channels; `in_chans=None` takes the weights' own bands."""
    name = source[len(PREFIX) :] if source.startswith(PREFIX) else source
    models = import_torchgeo()
    try:
        weights = models.get_weight(name)
    except (ValueError, KeyError, AttributeError, TypeError):
        raise ConfigError(
            f"unknown torchgeo weights '{name}' (a torchgeo WeightsEnum member such as "
            f"ResNet18_Weights.SENTINEL2_ALL_MOCO)"
        ) from None
    meta = dict(weights.meta)
    arch, w_chans = meta.get("model"), int(meta.get("in_chans", 3))
    if not isinstance(arch, str) or not timm.is_model(arch):
        raise ConfigError(
            f"torchgeo weights '{name}' are for '{arch}', which is not a timm model; "
            f"only timm-based weights (ResNet, ViT) are supported"
        )
    file = weights_file if weights_file is not None else hub_checkpoint(weights.url)
    if not Path(file).is_file():
        where = f"--weights {file}" if weights_file is not None else f"{file}"
        raise ConfigError(
            f"weights file for torchgeo:{name} not found at {where}; offline, download "
            f"{weights.url} elsewhere and put it there (or pass --weights PATH)"
        )
    w_bands = [str(b) for b in meta.get("bands") or []]
    mean, std, size = transforms_preprocessing(weights.transforms, w_chans)
    select = _band_selection(name, data_bands, w_bands, w_chans, w_chans if in_chans is None else in_chans)
    bands = [w_bands[i] for i in select] if w_bands and select is not None else (w_bands or None)
    if select is not None:
        mean, std = [mean[i] for i in select], [std[i] for i in select]
    return {
        "name": name,
        "arch": arch,
        "weights_chans": w_chans,
        "file": Path(file),
        "select": select,
        "bands": bands,
        "image_size": size or meta.get("img_size"),
        "url": weights.url,
        "normalization": {"mean": mean, "std": std, "source": f"torchgeo {name} transforms"},
        "create_kwargs": {"img_size": meta["img_size"]} if "img_size" in meta else {},
    }


def _band_selection(name, data_bands, w_bands, w_chans, in_chans) -> list[int] | None:
    """Indices into the weights' bands of the data's bands (None: the data has exactly the weights' bands)."""
    if data_bands:
        if len(data_bands) != in_chans:
            raise ConfigError(f"--bands names {len(data_bands)} band(s) but the data has {in_chans}")
        keys = [band_key(b) for b in w_bands]
        missing = [b for b in data_bands if band_key(b) not in keys]
        if missing:
            raise ConfigError(
                f"band '{missing[0]}' of --bands is not among the bands of torchgeo:{name} "
                f"({', '.join(w_bands) or 'none listed'})"
            )
        select = [keys.index(band_key(b)) for b in data_bands]
        return None if select == list(range(w_chans)) else select
    if in_chans != w_chans:
        raise ConfigError(
            f"torchgeo:{name} takes {w_chans} band(s) ({', '.join(w_bands) or 'unnamed'}) but the "
            f"data has {in_chans}; name the data's bands in file order with --bands, e.g. B04,B03,B02"
        )
    return None


def build_torchgeo_backbone(info: dict) -> nn.Module:
    kwargs = {"num_classes": 0, "in_chans": info["weights_chans"], **info["create_kwargs"]}
    if is_vit_name(info["arch"]):
        kwargs["dynamic_img_size"] = True  # position embeddings interpolated for any input size
    model = timm.create_model(info["arch"], **kwargs)
    path = info["file"]
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DataError(f"cannot load weights from {path}: {str(e).splitlines()[0]}") from e
    if not isinstance(state, dict):
        raise DataError(f"{path} does not hold a state_dict")
    state = {k: v for k, v in state.items() if k not in HEAD_KEYS}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        raise DataError(
            f"weights in {path} do not match {info['arch']}: {lines[1] if len(lines) > 1 else lines[0]}"
        ) from None
    if info["select"] is not None:
        _select_input_bands(model, info["select"])
    return model


def _select_input_bands(model: nn.Module, select: list[int]) -> None:
    """Keep only the first-layer input channels of the data's bands (as if the others were 0 after
    normalization, i.e. at the weights' normalization mean)."""
    name = model.pretrained_cfg.get("first_conv")
    conv = model.get_submodule(name)
    if not isinstance(conv, nn.Conv2d):
        raise ConfigError(f"cannot select input bands of {type(model).__name__}: first layer is not a Conv2d")
    new = nn.Conv2d(
        len(select),
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        conv.bias is not None,
        conv.padding_mode,
    )
    with torch.no_grad():
        new.weight.copy_(conv.weight[:, select])
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)
