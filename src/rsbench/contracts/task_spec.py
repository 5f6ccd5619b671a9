"""Task spec files: one YAML file describes one downstream task, so a benchmark can list many tasks.

    name: eurosat_rgb                 # the `dataset` of result rows
    task: classification              # classification | segmentation | detection | ...
    adapter: imagefolder              # how to read `data` (imagefolder, csv, torchgeo, masks, vector, voc, coco,
                                      # csvboxes)
    data: ${RSBENCH_SHARED_DATA}/classification/eurosat_rgb
    test_data: null                   # optional fixed test set (else a seeded split of `data`)
    classes: [AnnualCrop, Forest]     # optional; fixes order and rejects unknown labels
    metric: accuracy                  # headline metric (one the task reports)
    bands: [B04, B03, B02]            # optional band names of the data, in file order
    image_size: 64                    # optional default input size
    split: spatial                    # optional: random (default) | spatial (georeferenced dense tasks)
    block_m: 500                      # block side in metres of split: spatial
    options: {}                       # adapter/task-specific keys, e.g. {dataset: EuroSAT} for torchgeo
    hpo: {trials: 8, space: {lr: [1.0e-5, 1.0e-2, log]}}  # optional: benchmark tuning (rsbench.contracts.hpo)
    description: free text

Paths expand environment variables and `~`; relative paths are relative to the spec file. Run options
(init, protocol, seeds, fractions, ...) stay on the command line / `--config`, which win over the spec.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from rsbench.contracts.hpo import HpoSpec
from rsbench.errors import ConfigError
from rsbench.settings import StrictModel, _format_validation_error, load_yaml_mapping

_UNSET_VAR = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")
PATH_KEYS = ("data", "test_data")


class TaskSpec(StrictModel):
    name: str = Field(min_length=1)
    task: str = "classification"
    adapter: str | None = None
    data: Path
    test_data: Path | None = None
    classes: list[str] | None = None
    metric: str | None = None
    bands: list[str] | None = None
    image_size: int | None = Field(None, gt=0)
    split: str | None = None  # random | spatial (EvaluateConfig checks it)
    block_m: float | None = Field(None, gt=0)
    options: dict[str, Any] = Field(default_factory=dict)
    description: str | None = None
    hpo: HpoSpec | None = None  # tuning of its trained protocols in a benchmark (rsbench.contracts.hpo)

    def config_values(self) -> dict[str, Any]:
        """The EvaluateConfig keys this spec sets (unset ones are left to the config's defaults)."""
        values = {
            "dataset_name": self.name,
            "task": self.task,
            "adapter": self.adapter,
            "data": self.data,
            "test_data": self.test_data,
            "classes": self.classes,
            "metric": self.metric,
            "bands": self.bands,
            "image_size": self.image_size,
            "split": self.split,
            "block_m": self.block_m,
            "options": self.options or None,
        }
        return {k: v for k, v in values.items() if v is not None}


def expand_vars(value: str, key: str, source: str) -> str:
    """`value` with ~ and ${VAR} expanded; a variable that is not set is an error naming `key` in `source`."""
    expanded = os.path.expanduser(os.path.expandvars(str(value)))
    unset = _UNSET_VAR.search(expanded)
    if unset:
        raise ConfigError(f"invalid key '{key}' in {source}: environment variable {unset.group(1)} is not set")
    return expanded


def expand_path(value: str, key: str, spec_path: Path) -> Path:
    path = Path(expand_vars(value, key, f"task spec {spec_path}"))
    return path if path.is_absolute() else spec_path.parent / path


def _expand_options(value: Any, key: str, spec_path: Path) -> Any:
    # Option values that name files (a torchgeo root, a colour table) get the same env-var expansion.
    if isinstance(value, dict):
        return {k: _expand_options(v, f"{key}.{k}", spec_path) for k, v in value.items()}
    if isinstance(value, str) and "$" in value:
        return str(expand_path(value, key, spec_path))
    return value


def load_task_spec(path: str | Path) -> TaskSpec:
    path = Path(path)
    raw = load_yaml_mapping(path)  # missing file / bad YAML / not a mapping -> one-line ConfigError
    for key in PATH_KEYS:
        if raw.get(key) is not None:
            raw[key] = expand_path(raw[key], key, path)
    if isinstance(raw.get("options"), dict):
        raw["options"] = _expand_options(raw["options"], "options", path)
    for key in ("classes", "bands"):
        if isinstance(raw.get(key), str):
            raw[key] = [v.strip() for v in raw[key].split(",") if v.strip()]
    try:
        return TaskSpec.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, f"task spec {path}")) from None
