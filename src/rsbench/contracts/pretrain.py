"""Configuration of `rsbench pretrain`, read by the train stage and written by the benchmark planner.

It lives in `rsbench.contracts` (re-exported by `rsbench.contracts.pretrain`) so that the planner can read which
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
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from rsbench.contracts.identity import EXECUTION, execution_keys
from rsbench.settings import StrictModel


class SlurmOptions(StrictModel):
    """sbatch settings for `rsbench pretrain --slurm` (submitted through submitit, one task per GPU)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    gpus_per_node: int = Field(1, ge=1, le=64)
    cpus_per_task: int | None = Field(None, ge=1)
    time: int = Field(60, ge=1, description="wall-clock limit in minutes (also accepts 'HH:MM:SS' or 'D-HH:MM:SS')")
    mem: str | None = Field(None, description="memory per node, e.g. '64G'")
    constraint: str | None = None
    job_name: str | None = None
    setup: list[str] = Field(default_factory=list, description="shell lines run before srun (module load ...)")
    signal_delay_s: int = Field(120, ge=10, description="checkpoint signal this long before the time limit")
    max_requeues: int = Field(3, ge=0, description="how many times a timed-out job is requeued")

    @field_validator("time", mode="before")
    @classmethod
    def _minutes(cls, v: Any) -> Any:
        if isinstance(v, str) and not v.strip().isdigit():
            m = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d{2})(?::(\d{2}))?", v.strip())
            if not m:
                raise ValueError("expected minutes, 'HH:MM:SS' or 'D-HH:MM:SS'")
            days, hours, minutes, seconds = (int(g) if g else 0 for g in m.groups())
            return days * 1440 + hours * 60 + minutes + (1 if seconds else 0)
        return v


class PretrainConfig(StrictModel):
    method: str = "simclr"
    corpus: Path | None = None
    images: Path | None = None
    backbone: str | None = None  # None: the method's default backbone
    out: Path = Field(json_schema_extra=EXECUTION)
    epochs: int | None = Field(None, ge=1)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(64, ge=2, description="global batch (all devices, all accumulation micro-batches)")
    accumulate: int = Field(1, ge=1, description="micro-batches per optimizer step (gradient accumulation)")
    image_size: int = Field(64, ge=8)
    patch_size: int | None = Field(None, ge=1, description="ViT patch size (default: the architecture's)")
    min_scale: float | None = Field(
        None, gt=0, le=1, description="smallest random-resized-crop area (default: the method's)"
    )
    color_jitter: bool = Field(
        False, description="RGB data only: hue/saturation colour jitter on top of the per-band jitter"
    )
    bands: int | None = Field(None, ge=1, description="corpus band group to train on (default: the largest)")
    seed: int = 0
    recipe: dict[str, Any] = Field(default_factory=dict, description="overrides of the method's recipe")
    # ---- execution (json_schema_extra=EXECUTION: never changes what is trained) ----
    num_workers: int = Field(2, ge=0, json_schema_extra=EXECUTION)
    precision: Literal["32-true", "32", "bf16-mixed", "16-mixed", "auto"] = Field("auto", json_schema_extra=EXECUTION)
    accelerator: str = Field("auto", json_schema_extra=EXECUTION)
    devices: int = Field(1, ge=1, description="devices (GPUs or CPU processes) per node", json_schema_extra=EXECUTION)
    nodes: int = Field(1, ge=1, json_schema_extra=EXECUTION)
    strategy: Literal["auto", "ddp", "fsdp"] = Field("auto", json_schema_extra=EXECUTION)
    compile: bool = Field(False, description="torch.compile the backbone", json_schema_extra=EXECUTION)
    checkpoint_every: int = Field(
        500, ge=1, description="save last.ckpt every N optimizer steps", json_schema_extra=EXECUTION
    )
    log_every: int = Field(10, ge=1, json_schema_extra=EXECUTION)
    resume: bool | None = Field(
        None, description="None: resume when RUN_DIR has a checkpoint; False: refuse to", json_schema_extra=EXECUTION
    )
    logger: Literal["csv", "tensorboard", "mlflow"] = Field(
        "csv", description="metrics.csv is always written", json_schema_extra=EXECUTION
    )
    deterministic: bool = Field(
        False, description="deterministic kernels (bit-exact resume on CPU)", json_schema_extra=EXECUTION
    )
    slurm: SlurmOptions | None = Field(None, json_schema_extra=EXECUTION)

    @model_validator(mode="after")
    def _check(self) -> PretrainConfig:
        if (self.corpus is None) == (self.images is None):
            raise ValueError("give exactly one of 'corpus' or 'images'")
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

    def identity(self) -> dict[str, Any]:
        """The keys that define what is trained (compared when a run directory is reused)."""
        return identity_of(self.model_dump(mode="json"))


EXECUTION_KEYS = execution_keys(PretrainConfig)


def identity_of(values: dict[str, Any]) -> dict[str, Any]:
    """Identity keys; data paths made absolute so 'data/' and '/home/me/data' are the same run."""
    out = {k: v for k, v in values.items() if k not in EXECUTION_KEYS}
    for key in ("corpus", "images"):
        if out.get(key) is not None:
            out[key] = os.path.abspath(out[key])
    return out
