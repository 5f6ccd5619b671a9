"""`EvaluateConfig`: every option of `rsbench evaluate`, from the CLI and/or a YAML file.

It lives in `rsbench.contracts` (imports no torch) because the benchmark planner builds evaluation cells
from it and reads its defaults. Keys marked `json_schema_extra=EXECUTION` only decide how and where the
evaluation runs (device, output folder): they never change a result row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

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
# Tasks whose data carry coordinates a spatial split can use (georeferenced rasters, vector labels).
SPATIAL_TASKS = ("segmentation", "detection")


def default_seeds(protocols: list[str]) -> list[int]:
    return list(FROZEN_SEEDS if protocols and set(protocols) <= FROZEN_PROTOCOLS else DEFAULT_SEEDS)


class EvaluateConfig(StrictModel):
    # A task spec (YAML: name, task, adapter, data, classes, ...) fills every key it sets that the
    # config file / command line leave unset; see rsbench.contracts.task_spec.
    task_spec: Path | None = Field(
        None,
        description="YAML task spec (name, task, adapter, data, classes, metric, options); "
        "the command line and --config override its keys.",
    )
    task: str = Field("classification", description="Downstream task: classification, segmentation, detection.")
    data: Path = Field(
        description="Labelled data: ImageFolder (root/<class>/<image>), a CSV (path,label or path,labels "
        "with ';'-separated labels), or a torchgeo dataset root (--adapter torchgeo)."
    )
    test_data: Path | None = Field(
        None, description="Fixed test set in the same format; without it --data is split per seed."
    )
    # Other tasks register their own adapter names.
    adapter: str | None = Field(
        None,
        description="How to read --data. classification: imagefolder, csv, torchgeo; segmentation: masks, "
        "vector; detection: voc, coco, csv (unset: from the task spec, else a folder -> imagefolder, "
        "*.csv -> csv).",
    )
    dataset_name: str | None = Field(
        None, description="The `dataset` of result rows (unset: the task spec's name, else the data folder/file name)."
    )
    classes: list[str] | None = Field(
        None, description="Class names, in label order; for CSV labels, any other name is an error."
    )
    metric: str | None = Field(None, description="Headline metric (must be one the task reports).")
    bands: list[str] | None = Field(
        None,
        description="The data's band names in file order, e.g. B04,B03,B02 or blue,green,red,nir (maps them "
        "onto torchgeo weights, and ImageNet's RGB filters onto the red, green, blue bands; unset: the torchgeo "
        "dataset's bands or the GeoTIFFs' band descriptions).",
    )
    rgb_bands: list[str] | None = Field(
        None,
        description="--init imagenet: the data's red, green, blue bands, as 1-based indices (e.g. 4,3,2) "
        "or --bands names; ImageNet's RGB filters go there, every other band gets their mean (unset: from the "
        "band names; 3 unnamed bands are taken as RGB, more are an error).",
    )
    options: dict[str, Any] = Field(default_factory=dict, description="Adapter/task-specific keys of a task spec.")
    init: str = Field(
        description="Run directory, 'random', 'imagenet', a state_dict file, 'torchgeo:<WeightsEnum>' "
        "(e.g. torchgeo:ResNet18_Weights.SENTINEL2_RGB_MOCO), or a baseline: 'bandstats', 'pixels'."
    )
    # None = take it from the run's backbone.json, else DEFAULT_BACKBONE / DEFAULT_IMAGE_SIZE.
    backbone: str | None = Field(None, description="timm architecture (unset: resnet18; a run uses its own).")
    image_size: int | None = Field(None, gt=0, description="Input size (unset: the run's / the weights', else 64).")
    patch_size: int | None = Field(
        None, gt=0, description="ViT patch size for random/imagenet/weights-file inits (a run uses its own)."
    )
    weights: Path | None = Field(
        None, description="Checkpoint file for --init imagenet or --init torchgeo:... (offline use)."
    )
    protocol: list[str] = Field(
        min_length=1,
        description="classification: knn, knn5, linear, finetune (unset: knn,linear); segmentation and "
        "detection: frozen, finetune (unset: frozen).",
    )  # default: DEFAULT_PROTOCOLS[task]
    # Without seeds: default_seeds(protocol), set by the model validator.
    seeds: list[int] = Field(
        default_factory=lambda: list(DEFAULT_SEEDS),
        min_length=1,
        description="Seeds (unset: 0,1,2,3,4 when every protocol is a frozen one - knn, knn5, linear, frozen - "
        "else 0,1,2).",
    )
    test_fraction: float = Field(0.2, gt=0, lt=1, description="Per-class test share when there is no --test-data.")
    split: Literal["random", "spatial"] = Field(
        "random",
        description="How --data is split when there is no --test-data: random (seeded, by image or class), or "
        "spatial (segmentation/detection on georeferenced images: seeded blocks of --block-m metres, train "
        "regions within block_m of a test region dropped).",
    )
    block_m: float | None = Field(
        None, gt=0, validate_default=True, description="Block side in metres of --split spatial (e.g. 500)."
    )
    batch_size: int = Field(64, gt=0, description="Batch size.")
    out: Path = Field(Path("results"), description="Output folder for results.jsonl.", json_schema_extra=EXECUTION)
    allow_mixed: bool = Field(
        False,
        description="Score this init into an output folder whose rows for the task were scored at another image "
        "size, token count or band set (a warning, recorded in the rows' mixed_inputs) instead of refusing.",
        json_schema_extra=EXECUTION,
    )
    device: str = Field("auto", description="Torch device: auto, cpu, cuda, cuda:1, ...", json_schema_extra=EXECUTION)
    # Label fractions of the training split (stratified, >= 1 sample per class), and trained-part options
    # shared by the fine-tuning, segmentation and detection protocols.
    fractions: list[float] = Field(
        default_factory=lambda: [1.0],
        min_length=1,
        description="Label fractions of the train split, e.g. 0.01,0.1,1.0 (stratified, >= 1 per class).",
    )
    epochs: int = Field(10, gt=0, description="Epochs for trained parts (fine-tuning, decoders, detectors).")
    lr: float | None = Field(None, gt=0, description="Learning rate for trained parts (unset: per protocol).")
    weight_decay: float | None = Field(
        None, ge=0, description="AdamW weight decay for trained parts (unset: per protocol)."
    )
    holdout: Literal["test", "validation"] = Field(
        "test",
        description="Score on the test split, or on a validation split carved from the train split (tuning "
        "trials: the test split is then never read).",
    )
    val_fraction: float = Field(0.2, gt=0, lt=1, description="--holdout validation: validation share of train.")
    early_stop_patience: int | None = Field(
        None,
        gt=0,
        description="Trained parts (fine-tuning, decoders, detectors) with --holdout validation: stop after "
        "this many epochs without a lower validation loss (unset: train every epoch).",
    )
    tuned: dict[str, Any] | None = Field(
        None,
        description="Set by the benchmark: the tuning study whose best setting this run repeats (copied into "
        "each row's hparams).",
        json_schema_extra=EXECUTION,
    )
    decoder: str = Field("fpn", description="Segmentation decoder.")
    frozen_cache: bool = Field(
        True,
        description="Frozen protocol of segmentation/detection: train the head on backbone maps extracted "
        "once (float16, in OUT/features) from a fixed grid of overlapping crops, no flips/rot90; false: "
        "random crops with flips/rot90 through the backbone at every step.",
    )
    layer_decay: float = Field(
        0.75, gt=0, le=1, description="Fine-tuning ViTs: learning rate x layer_decay per block from the top."
    )
    knn_k: int = Field(20, gt=0, description="Neighbours of the kNN probe.")
    knn_temperature: float = Field(0.07, gt=0, description="Temperature of the kNN probe's weighted vote.")
    linear_c_grid: list[float] | None = Field(
        None,
        min_length=1,
        description="Inverse regularization strengths C the linear probe picks from (unset: the probe's grid).",
    )
    save_features: bool = Field(
        False, description="Keep the extracted frozen features with the results (see the evaluate README section)."
    )

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

    @field_validator("split")
    @classmethod
    def _spatial_split(cls, value: str, info: ValidationInfo) -> str:
        if value == "spatial" and info.data.get("task") not in SPATIAL_TASKS:
            raise ValueError(f"split: spatial is for tasks {', '.join(SPATIAL_TASKS)}, not '{info.data.get('task')}'")
        if value == "spatial" and info.data.get("test_data") is not None:
            raise ValueError("split: spatial splits --data; with test_data the test set is already fixed")
        return value

    @field_validator("block_m")
    @classmethod
    def _block_m(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is None and info.data.get("split") == "spatial":
            raise ValueError("split: spatial needs block_m, the block side in metres (e.g. block_m: 500)")
        return value

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
