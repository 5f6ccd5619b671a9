"""`EvaluateConfig`: every option of `rsbench evaluate`, from the CLI and/or a YAML file."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from rsbench.config import StrictModel

DEFAULT_IMAGE_SIZE = 64
DEFAULT_BACKBONE = "resnet18"


class EvaluateConfig(StrictModel):
    task: str = "classification"
    data: Path
    test_data: Path | None = None
    # A run directory, 'random', 'imagenet', or a state_dict file for `backbone`.
    init: str
    # None = take it from the run's backbone.json, else DEFAULT_BACKBONE / DEFAULT_IMAGE_SIZE.
    backbone: str | None = None
    image_size: int | None = Field(None, gt=0)
    weights: Path | None = None
    protocol: list[str] = Field(default_factory=lambda: ["knn", "linear"], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    batch_size: int = Field(64, gt=0)
    out: Path = Path("results")
    device: str = "auto"
    knn_k: int = Field(20, gt=0)
    knn_temperature: float = Field(0.07, gt=0)
    linear_weight_decays: list[float] = Field(default_factory=lambda: [0.0, 1e-4, 1e-3, 1e-2, 1e-1], min_length=1)

    @field_validator("protocol", "seeds", "linear_weight_decays", mode="before")
    @classmethod
    def _csv_list(cls, value):
        # YAML users naturally write `protocol: knn,linear` or `seeds: 0`; accept those like the CLI does.
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, (int, float)):
            return [value]
        return value

    @field_validator("protocol", "seeds")
    @classmethod
    def _unique(cls, value: list) -> list:
        return list(dict.fromkeys(value))
