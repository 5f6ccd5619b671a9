"""Frozen teachers for distillation (`distill`, `mae_distill`): a backbone from somewhere
(rsbench.models.sources: a run directory, a timm weights file, `torchgeo:<WeightsEnum>`) that sees the
bands it was trained on, with its own normalization, and never changes.

Band mapping: the teacher's bands (a run's backbone.json band names; red, green, blue for a 3-band timm
file; a torchgeo weights' band list) are found among the training data's bands by name with
`rsbench.bands.pick_bands` (so 'red' finds a Sentinel-2 corpus's B04); `--teacher-bands` names the data
bands in the teacher's input order when the names cannot be matched. The student sees every band.

Normalization: the views are normalized with the data's statistics; the teacher's channels are mapped
back to raw units and normalized with the statistics the teacher was trained with (a run's
backbone.json, a torchgeo weights' transforms), one per-band affine map. A timm file has no recorded
statistics for this data: its bands keep the data's own (as evaluation does for a weights file).

The teacher runs in `torch.inference_mode()` (bf16 autocast on GPUs), stays in eval mode whatever the
Lightning module's mode (BatchNorm statistics never move), and its parameters do not require gradients,
so the optimizer never sees them. Its forward time is accumulated in `forward_seconds` (synchronised on
GPUs) for the run's cost accounting.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightly.models.utils import deactivate_requires_grad
from torch import nn

from rsbench.bands import pick_bands
from rsbench.errors import ConfigError
from rsbench.models.sources import open_source


def teacher_spec(
    source: str,
    arch: str | None,
    teacher_bands: Sequence[str] | None,
    data_bands: Sequence[str] | None,
    data_normalization: dict,
) -> dict[str, Any]:
    """What the teacher is and how it sees the data (JSON-able: saved with the model's hyperparameters
    and in backbone.json). One-line ConfigError when the data lacks the teacher's bands."""
    teacher = open_source(str(source), arch=arch)
    wanted = list(teacher_bands) if teacher_bands else teacher.bands
    if not wanted:
        raise ConfigError(
            f"teacher {source} takes {teacher.in_chans} band(s) but does not name them; name the data's bands "
            f"it sees, in its input order, with --teacher-bands"
        )
    if len(wanted) != teacher.in_chans:
        raise ConfigError(f"--teacher-bands names {len(wanted)} band(s) but teacher {source} takes {teacher.in_chans}")
    if not data_bands:
        raise ConfigError(
            "the training data's bands are not named, so the teacher's bands cannot be picked; pretrain on a corpus"
        )
    what = f"the training data (teacher {source} needs {', '.join(wanted)})"
    channels = pick_bands(wanted, list(data_bands), what=what)
    data_mean = [float(data_normalization["mean"][i]) for i in channels]
    data_std = [float(data_normalization["std"][i]) for i in channels]
    own = teacher.normalization
    if own is not None and len(own["mean"]) == teacher.in_chans:
        t_mean, t_std, norm_source = [float(v) for v in own["mean"]], [float(v) for v in own["std"]], own.get("source")
    else:
        t_mean, t_std, norm_source = data_mean, data_std, "the training data's (the teacher records none)"
    return {
        "source": str(Path(source).resolve()) if teacher.kind != "torchgeo" else str(source),
        "kind": teacher.kind,
        "arch": teacher.arch,
        "in_chans": teacher.in_chans,
        "bands": list(teacher.bands or wanted),
        "data_bands": [str(data_bands[i]) for i in channels],
        "channels": channels,
        # normalized view -> raw -> the teacher's normalization: x_t = x * scale + shift per channel
        "scale": [d / t for d, t in zip(data_std, t_std)],
        "shift": [(m - tm) / t for m, tm, t in zip(data_mean, t_mean, t_std)],
        "normalization": {"mean": t_mean, "std": t_std, "source": norm_source},
        "sha256": teacher.sha256(),
    }


def feature_map(model: nn.Module, features: torch.Tensor, input_hw: Sequence[int]) -> torch.Tensor | None:
    """timm `forward_features` output as a (B, D, h, w) map: a CNN's NCHW map, or a ViT's patch tokens
    (prefix tokens dropped) on their grid; None when the output has no spatial layout rsbench knows."""
    width = int(model.num_features)
    if features.ndim == 4:
        if features.shape[1] == width:
            return features
        return features.permute(0, 3, 1, 2) if features.shape[-1] == width else None
    patch_embed = getattr(model, "patch_embed", None)
    if features.ndim != 3 or patch_embed is None:
        return None
    tokens = features[:, int(getattr(model, "num_prefix_tokens", 0)) :]
    ph, pw = patch_embed.patch_size
    h, w = int(input_hw[0]) // ph, int(input_hw[1]) // pw
    if h * w != tokens.shape[1]:
        return None
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)


def global_and_map(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(pooled feature, feature map or None) of a timm backbone (num_classes=0) from one forward pass."""
    features = model.forward_features(x)
    return model.forward_head(features, pre_logits=True), feature_map(model, features, x.shape[-2:])


def cosine_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity along the last dimension, averaged (scale-free: teachers differ in scale)."""
    return (1 - F.cosine_similarity(student, teacher, dim=-1)).mean()


def common_grid(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two (B, D, h, w) maps average-pooled to the smaller of their grids, as (B, h*w, D) tokens."""
    grid = (min(a.shape[-2], b.shape[-2]), min(a.shape[-1], b.shape[-1]))
    return tuple(F.adaptive_avg_pool2d(m, grid).flatten(2).transpose(1, 2) for m in (a, b))


class FrozenTeacher(nn.Module):
    """The teacher described by `teacher_spec`; `forward(views)` -> (global features, feature map or None)."""

    def __init__(self, spec: dict[str, Any]):
        super().__init__()
        self.spec = spec
        source = open_source(spec["source"], arch=spec["arch"], in_chans=spec["in_chans"])
        self.model = source.build()
        deactivate_requires_grad(self.model)
        self.model.eval()
        self.register_buffer("channels", torch.tensor(spec["channels"], dtype=torch.long), persistent=False)
        self.register_buffer("scale", torch.tensor(spec["scale"])[:, None, None], persistent=False)
        self.register_buffer("shift", torch.tensor(spec["shift"])[:, None, None], persistent=False)
        self.feature_dim = int(self.model.num_features)
        # A ViT built for a fixed input size gets the views resized to it (CNNs and dynamic ViTs take any size).
        patch_embed = getattr(self.model, "patch_embed", None)
        fixed = patch_embed is not None and not getattr(patch_embed, "dynamic_img_size", False)
        self.input_size = tuple(patch_embed.img_size) if fixed and getattr(patch_embed, "img_size", None) else None
        self.forward_seconds = 0.0

    def train(self, mode: bool = True) -> FrozenTeacher:
        super().train(mode)
        self.model.eval()  # always: a teacher in train mode would update its BatchNorm statistics
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        cuda = x.is_cuda
        if cuda:
            torch.cuda.synchronize(x.device)
        start = time.perf_counter()
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            x = x[:, self.channels] * self.scale + self.shift
            if self.input_size is not None and tuple(x.shape[-2:]) != self.input_size:
                x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False, antialias=True)
            pooled, fmap = global_and_map(self.model, x)
        # clone() outside inference mode: tensors autograd may save for the student's backward pass.
        pooled, fmap = pooled.float().clone(), (fmap.float().clone() if fmap is not None else None)
        if cuda:
            torch.cuda.synchronize(x.device)
        self.forward_seconds += time.perf_counter() - start
        return pooled, fmap


def build_teacher(method: str, spec: dict[str, Any] | None) -> FrozenTeacher:
    if spec is None:
        raise ConfigError(
            f"{method} distils a frozen teacher: give --teacher (a run directory, a timm weights file with "
            f"--teacher-arch, or torchgeo:<WeightsEnum>)"
        )
    return FrozenTeacher(spec)
