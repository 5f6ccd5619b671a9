"""Seeded stratified splits (test split of a single folder; validation split of a train split)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from rsbench.errors import DataError


def stratified_split(
    labels: np.ndarray,
    fraction: float,
    seed: int | Sequence[int],
    strict: bool = True,
    class_names: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return sorted (keep, held_out) indices; per class, round(fraction * n) go to held_out.

    Each class keeps at least one image on each side. With `strict=False` a class with a single image
    stays on the keep side instead of being an error (used for validation carved from a train split).
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        if len(idx) < 2:
            if strict:
                name = class_names[c] if class_names is not None else str(c)
                raise DataError(f"class '{name}' has {len(idx)} image(s); a train/test split needs at least 2")
            keep.append(idx)
            continue
        n_held = min(max(int(round(fraction * len(idx))), 1), len(idx) - 1)
        held.append(idx[:n_held])
        keep.append(idx[n_held:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held) if held else np.array([], dtype=np.int64))
