"""Per-band statistics and the normalization that every stage records in its artefacts."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
import torch


@dataclass
class BandStats:
    """Streaming, mergeable per-band moments (Chan et al. parallel variance)."""

    count: int
    mean: list[float]
    m2: list[float]
    min: list[float]
    max: list[float]

    @classmethod
    def empty(cls, bands: int) -> BandStats:
        return cls(0, [0.0] * bands, [0.0] * bands, [float("inf")] * bands, [float("-inf")] * bands)

    @classmethod
    def of(cls, pixels: np.ndarray) -> BandStats:
        """Stats of a C x N array of valid pixels."""
        x = pixels.astype(np.float64, copy=False)
        n = x.shape[1]
        if n == 0:
            return cls.empty(x.shape[0])
        mean = x.mean(axis=1)
        return cls(
            n,
            mean.tolist(),
            ((x - mean[:, None]) ** 2).sum(axis=1).tolist(),
            x.min(axis=1).tolist(),
            x.max(axis=1).tolist(),
        )

    def merge(self, other: BandStats) -> BandStats:
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        n = self.count + other.count
        a_mean, b_mean = np.array(self.mean), np.array(other.mean)
        delta = b_mean - a_mean
        mean = a_mean + delta * other.count / n
        m2 = np.array(self.m2) + np.array(other.m2) + delta**2 * self.count * other.count / n
        return BandStats(
            n,
            mean.tolist(),
            m2.tolist(),
            np.minimum(self.min, other.min).tolist(),
            np.maximum(self.max, other.max).tolist(),
        )

    @property
    def std(self) -> list[float]:
        if self.count < 2:
            return [1.0] * len(self.mean)
        return np.sqrt(np.array(self.m2) / (self.count - 1)).tolist()

    def summary(self) -> dict:
        return {"count": self.count, "mean": self.mean, "std": self.std, "min": self.min, "max": self.max}


def band_stats(images: Iterable[np.ndarray]) -> BandStats:
    stats = None
    for img in images:
        s = BandStats.of(img.reshape(img.shape[0], -1))
        stats = s if stats is None else stats.merge(s)
    if stats is None:
        raise ValueError("no images to compute band statistics from")
    return stats


@dataclass
class Normalization:
    """x_normalized = (x - mean) / std per band, in the data's raw units (e.g. 0-255, or DN)."""

    mean: list[float]
    std: list[float]
    source: str = "dataset"

    def __post_init__(self) -> None:
        self.std = [s if s > 1e-12 else 1.0 for s in self.std]

    @classmethod
    def from_stats(cls, stats: BandStats, source: str = "dataset") -> Normalization:
        return cls(list(stats.mean), list(stats.std), source)

    @classmethod
    def from_dict(cls, d: dict) -> Normalization:
        return cls(list(d["mean"]), list(d["std"]), d.get("source", "dataset"))

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def bands(self) -> int:
        return len(self.mean)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize a float tensor shaped (..., C, H, W)."""
        mean = torch.as_tensor(self.mean, dtype=x.dtype, device=x.device)[:, None, None]
        std = torch.as_tensor(self.std, dtype=x.dtype, device=x.device)[:, None, None]
        return (x - mean) / std
