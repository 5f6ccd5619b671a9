"""EMA teachers (MoCo key encoder, BYOL target, DINO teacher) over lightly's momentum utilities."""

from __future__ import annotations

import copy

import torch
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule
from torch import nn


def make_teacher(module: nn.Module) -> nn.Module:
    """A frozen copy that only ever changes through `ema_update` (a submodule, so checkpoints hold it)."""
    teacher = copy.deepcopy(module)
    deactivate_requires_grad(teacher)
    return teacher


def momentum_at(step: int, total_steps: int, start: float, end: float) -> float:
    """EMA momentum at `step`: cosine from `start` to `end` over training (BYOL Sec. 3.2, Eq. in
    'Implementation details'; DINO and MoCo v3 use the same schedule); constant when start == end."""
    if start == end:
        return start
    return cosine_schedule(min(step, total_steps), total_steps, start, end)


@torch.no_grad()
def ema_update(pairs: list[tuple[nn.Module, nn.Module]], m: float) -> None:
    """teacher <- m * teacher + (1 - m) * student, for each (student, teacher) pair."""
    for student, teacher in pairs:
        update_momentum(student, teacher, m=m)
