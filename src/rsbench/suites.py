"""Suites: named sets of downstream tasks that a benchmark includes by name, read from one data root.

A suite file (`src/rsbench/suite_files/<name>.yaml`, also under `examples/suites/`, or any path; more folders
in $RSBENCH_SUITES, separated by ':') holds `name`, `description`, a default `root`, and `tasks`: task specs
(rsbench.contracts.task_spec) whose `data`/`test_data` are relative to the root, each with the protocols and
label fractions it is evaluated with and `expects`, a sentence saying what must be in its data folder. An
experiment includes one with `tasks: [{suite: NAME, root: DIR}]`. Nothing is ever downloaded: a dataset
missing under the root is an error naming the folder and what belongs there. Imports no torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from rsbench.contracts.task_spec import TaskSpec, expand_vars
from rsbench.errors import ConfigError, DataError
from rsbench.settings import StrictModel, _format_validation_error, load_yaml_mapping

SUITE_DIR = Path(__file__).parent / "suite_files"
SUITES_ENV = "RSBENCH_SUITES"


class SuiteTask(TaskSpec):
    """A task spec in a suite: its data relative to the suite root, plus how it is evaluated."""

    expects: str = Field(description="what its data folder holds (shown when the folder is missing)")
    protocols: list[str] | None = None
    fractions: list[float] | None = None


class SuiteFile(StrictModel):
    name: str = Field(min_length=1)
    description: str = ""
    root: str | None = Field(None, description="default data root (${VAR} allowed)")
    tasks: list[dict[str, Any]] = Field(min_length=1)


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    root: Path
    tasks: list[SuiteTask]
    path: Path

    def missing(self) -> list[str]:
        """One message per task whose data is not under the root (empty: all present)."""
        out = []
        for task in self.tasks:
            for path in dict.fromkeys(p for p in (task.data, task.test_data) if p is not None):
                if not path.exists():
                    out.append(f"suite {self.name}: dataset {task.name} not found at {path} (expected: {task.expects})")
        return out

    def select(self, names: list[str]) -> Suite:
        """The suite with only the tasks `names` (an unknown name is a ConfigError)."""
        unknown = sorted(set(names) - {t.name for t in self.tasks})
        if unknown:
            raise ConfigError(f"suite {self.name} has no task {', '.join(unknown)}")
        return replace(self, tasks=[t for t in self.tasks if t.name in names])

    def task_entries(self) -> list[dict[str, Any]]:
        """The benchmark's inline task entries (EvaluateConfig options + name, protocols, fractions)."""
        entries = []
        for task in self.tasks:
            entry: dict[str, Any] = {"name": task.name, **task.config_values()}
            entry.pop("dataset_name", None)
            entry["data"] = str(task.data)
            if task.test_data is not None:
                entry["test_data"] = str(task.test_data)
            if task.protocols:
                entry["protocols"] = list(task.protocols)
            if task.fractions:
                entry["fractions"] = list(task.fractions)
            entries.append(entry)
        return entries


def suite_folders() -> list[Path]:
    extra = [Path(p).expanduser() for p in os.environ.get(SUITES_ENV, "").split(":") if p]
    return [*extra, SUITE_DIR]


def available_suites() -> dict[str, Path]:
    """Suite name -> file, the first folder of suite_folders() winning."""
    found: dict[str, Path] = {}
    for folder in suite_folders():
        for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
            found.setdefault(path.stem, path)
    return found


def load_suite(name_or_path: str | Path, root: str | Path | None = None) -> Suite:
    """A suite by name (see available_suites) or file path, its task paths resolved against `root` (else the
    suite's default root)."""
    path = Path(name_or_path)
    if not path.suffix:
        suites = available_suites()
        if str(name_or_path) not in suites:
            raise ConfigError(f"unknown suite '{name_or_path}' (available: {', '.join(sorted(suites)) or 'none'})")
        path = suites[str(name_or_path)]
    source = f"suite file {path}"
    try:
        suite = SuiteFile.model_validate(load_yaml_mapping(path))
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, source)) from None
    if root is None and suite.root is None:
        raise ConfigError(f"suite {suite.name} has no default root: give one (root: DIR / --root DIR)")
    base = Path(expand_vars(str(root if root is not None else suite.root), "root", source))
    tasks = []
    for i, raw in enumerate(suite.tasks):
        raw = dict(raw)
        for key in ("data", "test_data"):
            if raw.get(key) is not None:
                raw[key] = base / expand_vars(str(raw[key]), f"tasks.{i}.{key}", source)
        try:
            tasks.append(SuiteTask.model_validate(raw))
        except ValidationError as e:
            raise ConfigError(_format_validation_error(e, f"{source} (tasks.{i})")) from None
    names = [t.name for t in tasks]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise ConfigError(f"{source}: two tasks are named '{dup}'")
    return Suite(suite.name, suite.description, base, tasks, path)


def require_data(suite: Suite) -> None:
    """DataError listing every dataset of the suite missing under its root."""
    missing = suite.missing()
    if missing:
        raise DataError("; ".join(missing))
