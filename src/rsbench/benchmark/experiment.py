"""The experiment file: a YAML description of a whole benchmark matrix, validated before any work.

Pretraining and evaluation options are passed through untouched and validated by the stage's own
config model (`PretrainConfig`, `EvaluateConfig`), so options those stages add work here unchanged.
Only the keys that shape the matrix (names, grids, protocols, seeds, checkpoints, executor) are
defined in this file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rsbench.contracts.hpo import HpoSpec
from rsbench.contracts.slurm import SlurmResources
from rsbench.errors import ConfigError
from rsbench.settings import StrictModel, load_yaml_mapping
from rsbench.suites import load_suite, require_data

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class CheckpointSpec(StrictModel):
    """Evaluate intermediate checkpoints of a pretraining run (downstream score vs pretraining progress)."""

    every_steps: int = Field(gt=0, description="keep and evaluate a checkpoint every N optimizer steps")
    protocols: list[str] | None = Field(None, description="default: the matrix's protocols")
    seeds: list[int] | None = Field(None, description="default: the matrix's seeds")
    tasks: list[str] | None = Field(None, description="task names; default: all tasks")


class PretrainSection(StrictModel):
    """Runs = `runs` (explicit) + the cartesian product of `grid`, each merged over `defaults`."""

    defaults: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    runs: list[dict[str, Any]] = Field(default_factory=list)


class Baseline(StrictModel):
    init: str = Field(description="random, imagenet, or a weights file for `backbone`")
    name: str | None = None
    # Unset shape keys (backbone, image_size, and patch_size in `options`) are inherited from the runs the
    # baseline is compared with; see rsbench.benchmark.matrix.baseline_inits.
    backbone: str | None = Field(None, description="default: one baseline per pretraining backbone")
    image_size: int | None = Field(None, gt=0, description="default: that of its runs, per task")
    weights: str | None = None
    options: dict[str, Any] = Field(default_factory=dict, description="more EvaluateConfig options")
    # Only so that a baseline given its own tuning budget is refused by name (every init gets the same trials).
    hpo: HpoSpec | None = Field(None, description="must equal the task's: the same tuning for every init")


class SlurmSpec(StrictModel):
    """SLURM jobs of the benchmark: `parameters` for every job, `pretrain` / `evaluate` override them per stage.

    Each is a `SlurmResources` (partition, account, qos, time, mem, cpus_per_task, gpus_per_node, ...); the
    submitit names of older experiment files (slurm_partition, timeout_min, mem_gb, ...) still load, and an
    unknown key is an error naming it."""

    # 'local' and 'debug' are submitit's own stand-ins for a cluster: for trying a file out and for tests.
    cluster: Literal["slurm", "local", "debug"] = "slurm"
    folder: str | None = Field(None, description="submitit job folder (default: OUT/slurm)")
    parameters: SlurmResources = Field(default_factory=SlurmResources, description="resources of every job")
    pretrain: SlurmResources = Field(default_factory=SlurmResources, description="overrides for pretraining jobs")
    evaluate: SlurmResources = Field(default_factory=SlurmResources, description="overrides for evaluation jobs")

    @field_validator("parameters", "pretrain", "evaluate", mode="before")
    @classmethod
    def _submitit_names(cls, value: Any) -> Any:
        return SlurmResources.from_submitit(value) if isinstance(value, dict) else value

    def resources(self, kind: str) -> SlurmResources:
        """The resources of a job of `kind` (pretrain, or any evaluation kind): stage keys over `parameters`."""
        return self.parameters.merged(self.pretrain if kind == "pretrain" else self.evaluate)


class ExecutorSpec(StrictModel):
    kind: Literal["local", "slurm"] = "local"
    max_parallel: int = Field(1, ge=1)
    threads_per_cell: int | None = Field(
        None, ge=1, description="torch threads per cell (default: cores / max_parallel)"
    )
    stale_after_s: float = Field(600.0, gt=0, description="a running cell without heartbeat for this long is abandoned")
    max_attempts: int = Field(3, ge=1, description="claims of a cell whose worker died before it is marked failed")
    slurm: SlurmSpec = Field(default_factory=SlurmSpec)


class Experiment(StrictModel):
    name: str = Field(min_length=1)
    out: str | None = Field(
        None, description="benchmark folder (runs, logs, results.db); default benchmark-output/<name>"
    )
    db: str | None = Field(None, description="SQLAlchemy URL; default sqlite:///OUT/results.db")
    code_version: str | None = Field(None, description="pin the code version that goes into cell ids")
    pretrain: PretrainSection = Field(default_factory=PretrainSection)
    baselines: list[Baseline | str] = Field(default_factory=list)
    evaluate: dict[str, Any] = Field(default_factory=dict, description="EvaluateConfig options for every cell")
    tasks: list[dict[str, Any] | str] = Field(min_length=1)
    protocols: list[str] | None = Field(
        None,
        min_length=1,
        description="default: each task kind's own (classification: knn, linear; segmentation, detection: frozen)",
    )
    fractions: list[float] | None = Field(None, min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    checkpoints: CheckpointSpec | None = None
    hpo: HpoSpec | None = Field(
        None, description="tune finetune/frozen protocols per init (Optuna), then repeat the best over the seeds"
    )
    contamination: Literal["fail", "warn"] | None = Field(
        None,
        description="before running, check each pretraining corpus against the task data (`rsbench corpus "
        "check`); fail: stop when near-duplicates are found",
    )
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec)

    @field_validator("baselines", mode="before")
    @classmethod
    def _baseline_strings(cls, value):
        if isinstance(value, list):
            return [Baseline(init=v) if isinstance(v, str) else v for v in value]
        return value

    @field_validator("protocols", "seeds")
    @classmethod
    def _unique(cls, value: list | None) -> list | None:
        return None if value is None else list(dict.fromkeys(value))


class TaskEntry(BaseModel):
    """One downstream task: EvaluateConfig options (extra keys) plus its name and protocol overrides."""

    model_config = ConfigDict(extra="allow")
    name: str | None = None
    protocols: list[str] | None = None
    fractions: list[float] | None = None
    hpo: HpoSpec | None = None  # this task's tuning (over the experiment's `hpo`)

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class SuiteInclude(StrictModel):
    """`tasks: [{suite: NAME, root: DIR}]`: every task of a suite (rsbench.suites), or those named in `only`."""

    suite: str = Field(description="suite name (`rsbench suite list`) or a suite file")
    root: str | None = Field(None, description="data root (default: the suite's own)")
    only: list[str] | None = Field(None, min_length=1, description="task names of the suite to include")


def task_entries(tasks: list[dict[str, Any] | str], source: str, base_dir: Path | None = None) -> list:
    """The experiment's task entries with each `{suite: ...}` entry replaced by the suite's tasks. A dataset of
    the suite missing under its root is an error naming the folder and what belongs there."""
    out: list[dict[str, Any] | str] = []
    for i, entry in enumerate(tasks):
        if not (isinstance(entry, dict) and "suite" in entry):
            out.append(entry)
            continue
        include = validate(SuiteInclude, entry, source, f"tasks.{i}")
        name: str | Path = include.suite
        if Path(include.suite).suffix and base_dir is not None and not Path(include.suite).is_absolute():
            name = base_dir / include.suite
        suite = load_suite(name, include.root)
        if include.only:
            suite = suite.select(include.only)
        require_data(suite)
        out += suite.task_entries()
    return out


def expand_env(value: Any, where: str = "") -> Any:
    """Replace ${VAR} and ${VAR:-default} in every string; an unset variable is an error naming the key."""
    if isinstance(value, dict):
        return {k: expand_env(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, f"{where}.{i}") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        got = os.environ.get(name)
        if got is None:
            if default is None:
                raise ConfigError(f"environment variable {name} used in key '{where}' is not set")
            return default
        return got

    return _ENV.sub(sub, value)


def format_error(err: ValidationError, source: str, prefix: str = "") -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in (*([prefix] if prefix else []), *first["loc"]))
    msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"invalid key '{loc or '<root>'}' in {source}: {msg}{more}"


def validate(model: type[BaseModel], values: Any, source: str, prefix: str = "") -> Any:
    try:
        return model.model_validate(values)
    except ValidationError as e:
        raise ConfigError(format_error(e, source, prefix)) from None


def load_task(entry: dict[str, Any] | str, source: str, where: str, base_dir: Path | None = None) -> TaskEntry:
    """A task given inline (EvaluateConfig options), or the path of a task spec file (evaluate's format),
    relative to the experiment file. The spec file is read by evaluate itself; here only its name."""
    if isinstance(entry, str):
        entry = {"task_spec": entry}
    task = validate(TaskEntry, entry, source, where)
    spec = task.options.get("task_spec")
    if spec is not None:
        path = Path(str(spec)).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        task.model_extra["task_spec"] = str(path.resolve())
        raw = load_yaml_mapping(path)
        if task.name is None:
            task.name = str(raw["name"]) if raw.get("name") else path.stem
        if task.hpo is None and raw.get("hpo") is not None:
            task.hpo = validate(HpoSpec, raw["hpo"], f"task spec {path}", "hpo")
    return task


def load_experiment(path: str | os.PathLike) -> Experiment:
    """Read, expand ${VARS} and validate the matrix-shaping keys of an experiment file."""
    path = Path(path)
    raw = expand_env(load_yaml_mapping(path))
    return validate(Experiment, raw, f"experiment file {path}")
