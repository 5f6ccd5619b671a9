"""A pretraining run directory: the name of every file in it and how to read it, in one place.

RUN_DIR layout (written by `rsbench pretrain`, global rank 0 only; read by `rsbench runs`, evaluate,
the benchmark and the report):
  config.yaml        resolved configuration (rsbench.contracts.pretrain_config.PretrainConfig)
  checkpoints/       last.ckpt (atomic; every --checkpoint-every steps, on SIGTERM/SIGUSR1/SIGUSR2, at the
                     end); other *.ckpt files a run keeps are used by the benchmark's snapshots too
  metrics.csv        per-step loss, LR, collapse signal, throughput (Lightning's CSVLogger); a resume sets the
                     earlier curve aside as .metrics.csv.before-resume and merges it back, so the file holds
                     the whole curve
  backbone.pt/.json  exported feature extractor (rsbench.contracts.backbone_export); backbone.json, written
                     last, marks a finished run
  run.json           status and cost: wall time, device-hours, images/s, data wait, memory, FLOPs/MFU, GPU
                     telemetry, one segment per start
  snapshots/         the benchmark's intermediate checkpoints: .raw/ (captured versions of last.ckpt while
                     the run trains) and <run>@step-<N>/ (exported backbones of step N, same format)
  tensorboard/       with --logger tensorboard
  mlruns/            with --logger mlflow (a file-based MLflow tracking store)
  slurm/             submitit's job folders, for runs submitted with --slurm

run.json written before device-hours were counted on any device carries `gpu_hours` only;
`RunDir.read_run` reads it as `device_hours` as well.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rsbench.contracts.backbone_export import BACKBONE_META, BACKBONE_WEIGHTS, BackboneExport
from rsbench.io import read_json

RUN_JSON = "run.json"
CONFIG_FILE = "config.yaml"
METRICS_CSV = "metrics.csv"
METRICS_BEFORE_RESUME = f".{METRICS_CSV}.before-resume"
CHECKPOINTS_DIR = "checkpoints"
LAST_CKPT = "last.ckpt"
CKPT_SUFFIX = ".ckpt"
SNAPSHOTS_DIR = "snapshots"
RAW_SNAPSHOTS_DIR = ".raw"
TENSORBOARD_DIR = "tensorboard"
MLFLOW_DIR = "mlruns"
SLURM_DIR = "slurm"
SNAPSHOT_STEP = "@step-"  # snapshots/<run>@step-<N>: N zero-padded to 6 digits
# A name that ends in a snapshot directory's name: group "run" (the run directory's name) and "step".
SNAPSHOT_NAME = re.compile(rf"(?P<run>.+){re.escape(SNAPSHOT_STEP)}(?P<step>\d+)")


def upgrade_run(run: dict[str, Any]) -> dict[str, Any]:
    """run.json of any rsbench version as the current one: `device_hours` from an old `gpu_hours`."""
    if "gpu_hours" in run:
        # Runs before device-hours wrote `gpu_hours` only; GPU runs since write both, equal. Where both
        # are there `gpu_hours` wins, as it did for every reader before this function.
        return {**run, "device_hours": run["gpu_hours"]}
    return run


def snapshot_name(run_name: str, step: int) -> str:
    return f"{run_name}{SNAPSHOT_STEP}{int(step):06d}"


@dataclass(frozen=True)
class RunDir:
    """Paths and readers of one pretraining run directory."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    # --- files ----------------------------------------------------------------------------------------
    @property
    def run_json(self) -> Path:
        return self.path / RUN_JSON

    @property
    def config(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_CSV

    @property
    def metrics_before_resume(self) -> Path:
        return self.path / METRICS_BEFORE_RESUME

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    @property
    def last_ckpt(self) -> Path:
        return self.checkpoints / LAST_CKPT

    @property
    def backbone(self) -> BackboneExport:
        return BackboneExport(self.path)

    @property
    def backbone_weights(self) -> Path:
        return self.path / BACKBONE_WEIGHTS

    @property
    def backbone_meta(self) -> Path:
        return self.path / BACKBONE_META

    @property
    def snapshots(self) -> Path:
        return self.path / SNAPSHOTS_DIR

    @property
    def raw_snapshots(self) -> Path:
        return self.snapshots / RAW_SNAPSHOTS_DIR

    def snapshot(self, step: int) -> Path:
        """The exported backbone of step `step`: snapshots/<run>@step-<N>/."""
        return self.snapshots / snapshot_name(self.path.name, step)

    def kept_checkpoints(self) -> list[Path]:
        """checkpoints/*.ckpt other than last.ckpt (checkpoints a run keeps itself), sorted."""
        return sorted(p for p in self.checkpoints.glob(f"*{CKPT_SUFFIX}") if p.name != LAST_CKPT)

    # --- state ----------------------------------------------------------------------------------------
    def has_run_json(self) -> bool:
        return self.run_json.is_file()

    def is_finished(self) -> bool:
        """run.json and backbone.json are there (backbone.json is written at the very end)."""
        return self.has_run_json() and self.backbone_meta.is_file()

    # --- readers --------------------------------------------------------------------------------------
    def read_run(self) -> dict[str, Any]:
        """run.json, upgraded by `upgrade_run`; OSError/ValueError when missing or unreadable."""
        return upgrade_run(read_json(self.run_json))

    def read_backbone_meta(self) -> dict[str, Any]:
        return read_json(self.backbone_meta)

    def read_config(self) -> dict[str, Any] | None:
        """config.yaml as a mapping, None when the run has none."""
        return yaml.safe_load(self.config.read_text()) if self.config.is_file() else None

    @staticmethod
    def find(roots: Iterable[Path]) -> list[Path]:
        """Run directories (holding run.json) at or below each existing root, sorted."""
        found: set[Path] = set()
        for root in map(Path, roots):
            if (root / RUN_JSON).is_file():
                found.add(root)
            found.update(p.parent for p in root.rglob(RUN_JSON))
        return sorted(found)


__all__ = [
    "CHECKPOINTS_DIR",
    "CKPT_SUFFIX",
    "CONFIG_FILE",
    "LAST_CKPT",
    "METRICS_BEFORE_RESUME",
    "MLFLOW_DIR",
    "METRICS_CSV",
    "RAW_SNAPSHOTS_DIR",
    "RUN_JSON",
    "SNAPSHOTS_DIR",
    "SNAPSHOT_NAME",
    "SLURM_DIR",
    "SNAPSHOT_STEP",
    "TENSORBOARD_DIR",
    "RunDir",
    "snapshot_name",
    "upgrade_run",
]
