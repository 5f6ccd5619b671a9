"""Configuration of `rsbench pretrain`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from rsbench.config import StrictModel


class PretrainConfig(StrictModel):
    method: str = "simclr"
    corpus: Path | None = None
    images: Path | None = None
    backbone: str | None = None  # None: the method's default backbone
    out: Path
    epochs: int | None = Field(None, ge=1)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(64, ge=2)
    image_size: int = Field(64, ge=8)
    min_scale: float = Field(0.08, gt=0, le=1, description="smallest random-resized-crop area fraction")
    bands: int | None = Field(None, ge=1, description="corpus band group to train on (default: the largest)")
    num_workers: int = Field(2, ge=0)
    seed: int = 0
    precision: Literal["32-true", "bf16-mixed", "16-mixed", "auto"] = "auto"
    accelerator: str = "auto"
    checkpoint_every: int = Field(500, ge=1, description="save last.ckpt every N steps")
    log_every: int = Field(10, ge=1)
    recipe: dict[str, Any] = Field(default_factory=dict, description="overrides of the method's recipe")

    @model_validator(mode="after")
    def _one_source(self) -> "PretrainConfig":
        if (self.corpus is None) == (self.images is None):
            raise ValueError("give exactly one of 'corpus' or 'images'")
        if self.epochs is None and self.max_steps is None:
            self.epochs = 1
        return self
