"""`EvaluateConfig`: every option of `rsbench evaluate`, from the CLI and/or a YAML file.

It lives in `rsbench.contracts` (imports no torch) because the benchmark planner builds evaluation cells
from it and reads its defaults. Keys marked `json_schema_extra=EXECUTION` only decide how and where the
evaluation runs (device, output folder): they never change a result row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from rsbench.contracts.identity import EXECUTION, execution_keys
from rsbench.settings import StrictModel

DEFAULT_IMAGE_SIZE = 64
DEFAULT_BACKBONE = "resnet18"
# Without --protocol: probes for classification, a trained decoder / detector on the frozen backbone otherwise.
DEFAULT_PROTOCOLS = {"classification": ["knn", "linear"], "segmentation": ["frozen"], "detection": ["frozen"]}
# Without --seeds: 5 seeds when every protocol is a frozen one (probes, frozen-backbone decoders: cheap per
# seed, and seed-to-seed spread is what the report's intervals need), else 3 (fine-tuning is costly).
FROZEN_PROTOCOLS = frozenset({"knn", "knn5", "linear", "frozen"})
FROZEN_SEEDS = [0, 1, 2, 3, 4]
DEFAULT_SEEDS = [0, 1, 2]


def default_seeds(protocols: list[str]) -> list[int]:
    return list(FROZEN_SEEDS if protocols and set(protocols) <= FROZEN_PROTOCOLS else DEFAULT_SEEDS)


class EvaluateConfig(StrictModel):
    # A task spec (YAML: name, task, adapter, data, classes, ...) fills every key it sets that the
    # config file / command line leave unset; see rsbench.contracts.task_spec.
    task_spec: Path | None = None
    task: str = "classification"
    data: Path
    test_data: Path | None = None
    # How to read `data`: imagefolder | csv | torchgeo (classification); None = folder -> imagefolder,
    # *.csv -> csv. Other tasks register their own adapter names.
    adapter: str | None = None
    dataset_name: str | None = None  # the `dataset` of result rows (default: the data folder/file name)
    classes: list[str] | None = None  # class names; for CSV labels, any other name is an error
    metric: str | None = None  # a task spec's headline metric (must be one the task reports)
    bands: list[str] | None = None  # the data's band names in file order (maps bands onto published weights)
    # --init imagenet: the data's red, green, blue bands (1-based indices or names of `bands`), where the
    # ImageNet RGB filters go; None = found from the band names (3 unnamed bands: assumed RGB).
    rgb_bands: list[str] | None = None
    options: dict[str, Any] = Field(default_factory=dict)  # adapter/task-specific keys of a task spec
    # A run directory, 'random', 'imagenet', a state_dict file for `backbone`, 'torchgeo:<WeightsEnum>',
    # or a network-free baseline: 'bandstats', 'pixels'.
    init: str
    # None = take it from the run's backbone.json, else DEFAULT_BACKBONE / DEFAULT_IMAGE_SIZE.
    backbone: str | None = None
    image_size: int | None = Field(None, gt=0)
    # ViT patch size for random / imagenet / weights-file inits (a run dir records its own).
    patch_size: int | None = Field(None, gt=0)
    weights: Path | None = None
    protocol: list[str] = Field(min_length=1)  # default: DEFAULT_PROTOCOLS[task]
    # Without seeds: default_seeds(protocol), set by the model validator.
    seeds: list[int] = Field(default_factory=lambda: list(DEFAULT_SEEDS), min_length=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    batch_size: int = Field(64, gt=0)
    out: Path = Field(Path("results"), json_schema_extra=EXECUTION)
    device: str = Field("auto", json_schema_extra=EXECUTION)
    # Label fractions of the training split (stratified, >= 1 sample per class), and trained-part options
    # shared by the fine-tuning, segmentation and detection protocols.
    fractions: list[float] = Field(default_factory=lambda: [1.0], min_length=1)
    epochs: int = Field(10, gt=0)
    lr: float | None = Field(None, gt=0)
    decoder: str = "fpn"
    layer_decay: float = Field(0.75, gt=0, le=1)  # fine-tuning ViTs: LR x layer_decay per block from the top
    knn_k: int = Field(20, gt=0)
    knn_temperature: float = Field(0.07, gt=0)
    # Inverse regularization strengths C the linear probe picks from; None = the probe's default grid.
    linear_c_grid: list[float] | None = Field(None, min_length=1)
    # Keep the extracted features next to the results (see the evaluate README section).
    save_features: bool = False

    @model_validator(mode="before")
    @classmethod
    def _from_task_spec(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get("task_spec") is not None:
            from rsbench.contracts.task_spec import load_task_spec

            spec = load_task_spec(values["task_spec"])
            values = {**spec.config_values(), **values}
        if isinstance(values, dict) and values.get("protocol") is None:
            values = {
                **values,
                "protocol": DEFAULT_PROTOCOLS.get(values.get("task") or "classification", ["knn", "linear"]),
            }
        if isinstance(values, dict) and values.get("seeds") is None:
            # Seeds given explicitly (CLI, config file, benchmark cell) always win.
            protocols = cls._csv_list(values.get("protocol"))
            if isinstance(protocols, list) and all(isinstance(p, str) for p in protocols):
                values = {**values, "seeds": default_seeds(protocols)}
        return values

    @field_validator("protocol", "seeds", "linear_c_grid", "fractions", "bands", "classes", mode="before")
    @classmethod
    def _csv_list(cls, value):
        # YAML users naturally write `protocol: knn,linear` or `seeds: 0`; accept those like the CLI does.
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, (int, float)):
            return [value]
        return value

    @field_validator("rgb_bands", mode="before")
    @classmethod
    def _rgb_bands(cls, value):
        # `rgb_bands: [4, 3, 2]` in YAML: 1-based indices, kept as strings like the CLI's.
        value = cls._csv_list(value)
        if isinstance(value, list):
            value = [str(v).strip() if isinstance(v, (str, int)) and not isinstance(v, bool) else v for v in value]
            if len(value) != 3:
                raise ValueError(f"needs exactly 3 bands (red, green, blue), got {len(value)}")
        return value

    @field_validator("linear_c_grid")
    @classmethod
    def _c_grid(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and any(c <= 0 for c in value):
            raise ValueError(f"inverse regularization strengths C must be > 0, got {min(value)}")
        return value

    @field_validator("protocol", "seeds")
    @classmethod
    def _unique(cls, value: list) -> list:
        return list(dict.fromkeys(value))

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        bad = [f for f in value if not 0 < f <= 1]
        if bad:
            raise ValueError(f"label fractions must be in (0, 1], got {bad[0]}")
        return sorted(set(value))


EXECUTION_KEYS = execution_keys(EvaluateConfig)
