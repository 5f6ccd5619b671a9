"""Configuration of `rsbench pretrain`, read by the train stage and written by the benchmark planner.

It lives in `rsbench.contracts` (re-exported by `rsbench.contracts.pretrain_config`) so that the planner can read which
keys are execution settings without importing the train stage, and so torch.

Two kinds of keys: the *run identity* (what is trained: method, data, backbone, batch, schedule,
seed, recipe) and *execution* settings (how and where: devices, precision, workers, logging,
checkpoint cadence, SLURM), marked `json_schema_extra=EXECUTION`. A run directory may be resumed with
other execution settings, e.g. on 64 GPUs after starting on 8, but never with another identity.

`batch_size` is the GLOBAL effective batch: each device gets batch_size / (devices x nodes x
accumulate) images per micro-batch, so one config gives the same optimisation on 1 or 64 GPUs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from rsbench.contracts.corpus_info import parse_group_selector
from rsbench.contracts.identity import EXECUTION, execution_keys
from rsbench.contracts.slurm import SlurmResources
from rsbench.settings import StrictModel

# Named recipes a method's overrides apply to (rsbench.ssl.recipe defines them; `rsbench methods --method M`).
RecipePreset = Literal["paper", "small-batch"]


class SlurmOptions(SlurmResources):
    """sbatch settings for `rsbench pretrain --slurm` (submitted through submitit, one task per device).

    The shared `SlurmResources` fields with pretraining's defaults, plus the requeue keys."""

    time: int = Field(60, ge=1, description="Wall-clock limit of each job: minutes, 'HH:MM:SS' or 'D-HH:MM:SS'.")
    gpus_per_node: int | None = Field(
        None,
        ge=0,
        le=64,
        description="GPUs (= tasks) per node; unset: --devices, or none with --accelerator cpu. "
        "0: a CPU-only job (--devices tasks per node, accelerator cpu).",
    )
    job_name: str | None = Field(None, description="Job name (unset: rsbench-<RUN_DIR name>).")
    signal_delay_s: int = Field(
        120, ge=10, description="Send the checkpoint signal this many seconds before the time limit."
    )
    max_requeues: int = Field(3, ge=0, description="How many times a timed-out or preempted job is requeued.")


class PretrainConfig(StrictModel):
    method: str = Field("simclr", description="SSL method (`rsbench methods` lists them).")
    corpus: Path | None = Field(None, description="Corpus directory made by `rsbench corpus build`.")
    images: Path | None = Field(None, description="Folder of images (labels, if any, are ignored).")
    backbone: str | None = Field(None, description="timm architecture (unset: the method's, e.g. resnet18).")
    out: Path = Field(description="Run directory (created; re-running resumes or skips).", json_schema_extra=EXECUTION)
    epochs: int | None = Field(None, ge=1, description="Epochs over the data (unset: 1, unless max_steps is given).")
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps (overrides epochs).")
    batch_size: int = Field(64, ge=2, description="GLOBAL batch over all devices and accumulation micro-batches.")
    accumulate: int = Field(1, ge=1, description="Micro-batches per optimizer step (gradient accumulation).")
    image_size: int = Field(64, ge=8, description="Crop size fed to the network.")
    patch_size: int | None = Field(
        None, ge=1, description="ViT patch size (unset: the architecture's; 8 suits 64 px tiles)."
    )
    min_scale: float | None = Field(
        None, gt=0, le=1, description="Smallest random-resized-crop area fraction (unset: the method's)."
    )
    color_jitter: bool = Field(
        False, description="RGB data only: hue/saturation colour jitter on top of the per-band jitter."
    )
    bands: int | list[str] | str | None = Field(
        None,
        description="Corpus band group to train on: band names in order (red,green,blue), a band count (4) or "
        "a group key (red,green,blue|uint8); unset: the group with the most kept tiles (not the most bands). "
        "Among several matching groups (same bands, other units) the one with the most tiles.",
    )
    seed: int = Field(0, description="Random seed.")
    recipe_preset: RecipePreset = Field(
        "paper",
        description="Named recipe: paper (the paper's ImageNet recipe, batches of 256-4096) or small-batch "
        "(AdamW for small batches and short runs); `recipe` overrides apply on top.",
    )
    recipe: dict[str, Any] = Field(default_factory=dict, description="Overrides of the method's recipe.")
    teacher: str | None = Field(
        None,
        description="Frozen teacher of distill / mae_distill: an rsbench run directory, a timm state_dict file "
        "(with --teacher-arch) or torchgeo:<WeightsEnum> (its local file; nothing is downloaded).",
    )
    teacher_arch: str | None = Field(None, description="timm architecture of a --teacher weights file.")
    teacher_bands: list[str] | None = Field(
        None,
        description="The data's bands the teacher sees, in the teacher's input order (unset: the teacher's own "
        "band names found among the data's, e.g. red,green,blue -> B04,B03,B02).",
    )
    # ---- execution (json_schema_extra=EXECUTION: never changes what is trained) ----
    num_workers: int = Field(2, ge=0, description="DataLoader workers per device.", json_schema_extra=EXECUTION)
    precision: Literal["32-true", "32", "bf16-mixed", "16-mixed", "auto"] = Field(
        "auto", description="Numeric precision (auto: bf16-mixed on capable GPUs).", json_schema_extra=EXECUTION
    )
    accelerator: str = Field(
        "auto",
        description="auto | cpu | gpu. auto: a GPU when there is one; under --slurm, what the job requests "
        "(cpu when gpus_per_node is 0, else gpu).",
        json_schema_extra=EXECUTION,
    )
    devices: int = Field(1, ge=1, description="Devices (GPUs, or CPU processes) per node.", json_schema_extra=EXECUTION)
    nodes: int = Field(1, ge=1, description="Nodes.", json_schema_extra=EXECUTION)
    strategy: Literal["auto", "ddp", "fsdp"] = Field(
        "auto", description="Distributed strategy (auto: ddp when more than one device).", json_schema_extra=EXECUTION
    )
    compile: bool = Field(False, description="torch.compile the backbone.", json_schema_extra=EXECUTION)
    checkpoint_every: int = Field(
        500, ge=1, description="Save last.ckpt every N optimizer steps.", json_schema_extra=EXECUTION
    )
    log_every: int = Field(
        10,
        ge=1,
        description="Log metrics every N steps (a run of fewer than 2N steps logs every max_steps/2 steps, so it "
        "still has a curve).",
        json_schema_extra=EXECUTION,
    )
    resume: bool | None = Field(
        None,
        description="Unset: resume when RUN_DIR has a checkpoint; --resume requires one; --no-resume refuses to.",
        json_schema_extra=EXECUTION,
    )
    logger: Literal["csv", "tensorboard", "mlflow"] = Field(
        "csv", description="Metrics logger (metrics.csv is always written).", json_schema_extra=EXECUTION
    )
    deterministic: bool = Field(
        False,
        description="Deterministic kernels (bit-exact resume on CPU; slower on GPU).",
        json_schema_extra=EXECUTION,
    )
    slurm: SlurmOptions | None = Field(
        None, description="sbatch settings for --slurm (see SlurmOptions).", json_schema_extra=EXECUTION
    )

    @field_validator("bands", mode="before")
    @classmethod
    def _bands(cls, value):
        # "4" from the command line is a band count like 4 in YAML; "red,green,blue" a list of names.
        selector = parse_group_selector(value)
        if isinstance(selector, int) and selector < 1:
            raise ValueError("a band count is at least 1")
        return selector

    @field_validator("teacher_bands", mode="before")
    @classmethod
    def _csv_bands(cls, value):
        # `teacher_bands: nir,swir1,swir2` in YAML reads like the CLI's comma-separated list.
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check(self) -> PretrainConfig:
        if (self.corpus is None) == (self.images is None):
            raise ValueError("give exactly one of 'corpus' or 'images'")
        if self.teacher is None and (self.teacher_arch or self.teacher_bands):
            raise ValueError("teacher_arch and teacher_bands describe a teacher: give 'teacher' too")
        if self.epochs is None and self.max_steps is None:
            self.epochs = 1
        if self.batch_size % self.micro_batch_divisor:
            raise ValueError(
                f"batch_size {self.batch_size} is not a multiple of devices x nodes x accumulate = "
                f"{self.devices} x {self.nodes} x {self.accumulate}"
            )
        return self

    @property
    def world_size(self) -> int:
        return self.devices * self.nodes

    @property
    def micro_batch_divisor(self) -> int:
        return self.devices * self.nodes * self.accumulate

    @property
    def per_device_batch(self) -> int:
        """Images per device per micro-batch."""
        return self.batch_size // self.micro_batch_divisor

    def steps_per_epoch(self, n_samples: int) -> int:
        """Optimizer steps in one epoch: one shuffled pass over the `n_samples` training samples in full global
        batches (the last partial batch is dropped). The progress bar, `epochs` and backbone.json count these."""
        return n_samples // self.batch_size

    def log_interval(self, max_steps: int) -> int:
        """Steps between logged rows: `log_every`, or max_steps/2 for a run shorter than two intervals."""
        return max(1, min(self.log_every, max_steps // 2))

    def identity(self) -> dict[str, Any]:
        """The keys that define what is trained (compared when a run directory is reused)."""
        return identity_of(self.model_dump(mode="json"))


EXECUTION_KEYS = execution_keys(PretrainConfig)


def identity_of(values: dict[str, Any]) -> dict[str, Any]:
    """Identity keys; data and teacher paths made absolute so 'data/' and '/home/me/data' are the same run."""
    out = {k: v for k, v in values.items() if k not in EXECUTION_KEYS}
    for key in ("corpus", "images", "teacher"):
        if out.get(key) is not None and not str(out[key]).startswith("torchgeo:"):
            out[key] = os.path.abspath(out[key])
    return out
