"""Seeded stratified splits (test split of a single folder; validation split of a train split)."""

from __future__ import annotations

from collections.abc import Sequence

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


def random_split(n: int, fraction: float, seed: int | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (keep, held_out) indices with round(fraction * n) held out (multi-label data has no strata)."""
    if n < 2:
        raise DataError(f"{n} image(s); a train/test split needs at least 2")
    idx = np.random.default_rng(seed).permutation(n)
    n_held = min(max(int(round(fraction * n)), 1), n - 1)
    return np.sort(idx[n_held:]), np.sort(idx[:n_held])


def fraction_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted positions (into `labels`) of a label-fraction subset of a training split.

    Single-label (N,): per class the first max(1, round(fraction * n_c)) of a seeded permutation.
    Multi-label (N, C) multi-hot: the first round(fraction * N) of a seeded permutation, plus, for every
    label that has positives but none in that prefix, its first positive in the permutation.
    The permutation depends on the seed only, so for one seed a smaller fraction is a subset of a larger.
    """
    labels = np.asarray(labels)
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    rng = np.random.default_rng([seed, 2])  # [seed] draws the test split, [seed, 1] the probe's validation split
    if labels.ndim == 1:
        picked = []
        for c in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == c))
            picked.append(idx[: max(1, int(round(fraction * len(idx))))])
        return np.sort(np.concatenate(picked))
    order = rng.permutation(len(labels))
    chosen = set(order[: max(1, int(round(fraction * len(labels))))].tolist())
    ordered = labels[order] > 0
    for c in range(labels.shape[1]):
        if ordered[:, c].any() and not (labels[sorted(chosen), c] > 0).any():
            chosen.add(int(order[np.argmax(ordered[:, c])]))
    return np.sort(np.fromiter(chosen, dtype=np.int64))


VALIDATION_STREAM = 3  # rng [seed, 3]: [seed] draws the test split, [seed, 1] the probe's, [seed, 2] label fractions


def validation_split(
    train: np.ndarray, fraction: float, seed: int, labels: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, str]:
    """(train', validation, description): `fraction` of a seed's train positions held out for validation
    (`--holdout validation`, tuning trials), stratified by `labels` (single-label) when given. Deterministic in
    the seed; the test split is not an input, so it can never leak in."""
    train = np.asarray(train)
    if labels is not None and np.asarray(labels).ndim == 1:
        keep, held = stratified_split(np.asarray(labels)[train], fraction, [seed, VALIDATION_STREAM], strict=False)
        how = "stratified"
    else:
        keep, held = random_split(len(train), fraction, [seed, VALIDATION_STREAM])
        how = "random"
    return train[keep], train[held], f"validation: {how} {fraction:g} of the train split (seed {seed}; test unused)"
