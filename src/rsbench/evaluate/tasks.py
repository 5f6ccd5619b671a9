"""Task registry: each downstream task (classification, segmentation, detection) registers a runner and
the protocols it supports, so `evaluate` only dispatches and validates names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.console import Console

from rsbench.errors import ConfigError

if TYPE_CHECKING:
    from rsbench.contracts.evaluate_config import EvaluateConfig

# runner(cfg, console) -> result rows (one per seed x protocol x metric)
Runner = Callable[["EvaluateConfig", Console], list[dict]]


@dataclass(frozen=True)
class Task:
    name: str
    protocols: tuple[str, ...]
    run: Runner


_TASKS: dict[str, Task] = {}


def register_task(name: str, protocols: tuple[str, ...]) -> Callable[[Runner], Runner]:
    def deco(fn: Runner) -> Runner:
        _TASKS[name] = Task(name, tuple(protocols), fn)
        return fn

    return deco


def available_tasks() -> list[str]:
    return sorted(_TASKS)


def get_task(name: str, protocols: list[str]) -> Task:
    """The registered task, after checking that it supports every requested protocol."""
    task = _TASKS.get(name)
    if task is None:
        raise ConfigError(f"unknown task '{name}' (available: {', '.join(available_tasks())})")
    for p in protocols:
        if p not in task.protocols:
            raise ConfigError(f"unknown protocol '{p}' for task '{name}' (available: {', '.join(task.protocols)})")
    return task
