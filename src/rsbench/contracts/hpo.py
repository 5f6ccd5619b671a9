"""Tuned fine-tuning: the `hpo` key of an experiment or task, the Optuna study of a tuning cell, its trial records.

    hpo:
      trials: 16                       # trials per (init, task, protocol, label fraction): the same for every init
      space:                           # EvaluateConfig keys the search may set
        lr: [1.0e-5, 1.0e-2, log]      # [low, high] float range, `log` for a log-uniform one
        weight_decay: [0.0, 0.1]
        batch_size: [16, 32, 64]       # a list of values (not a [low, high, log] range): a categorical choice
      metric: null                     # validation metric to maximise (unset: the task's headline)
      sampler: tpe                     # tpe | random
      startup_trials: 10               # TPE: sampled trials drawn at random before it models the scores (Optuna's 10)
      seed: 0                          # the sampler's seed, and the seed of the validation split
      val_fraction: 0.2                # validation share carved from the train split (the test split is never used)
      patience: 3                      # early stopping on the validation loss, in epochs (every tuned protocol)

Trial 0 is always the protocol's default setting, so the report can say how far tuning moved each init.
Studies live in the benchmark's own database (Optuna's RDB storage on the results store's URL), named by
the tuning cell's id: SLURM jobs share them and a killed study resumes where it stopped. This module
imports neither torch nor Optuna; the benchmark runs the studies, the report reads their trial records.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from rsbench.settings import StrictModel

# Protocols that train with a learning rate (probes have nothing to tune this way).
TUNABLE_PROTOCOLS = frozenset({"finetune", "frozen"})
# Space keys and the EvaluateConfig field each sets: every tunable protocol of every task applies all of them.
SPACE_KEYS = ("lr", "weight_decay", "batch_size", "epochs")
INT_KEYS = frozenset({"batch_size", "epochs"})
STUDY_PREFIX = "rsbench-hpo-"


class HpoSpec(StrictModel):
    trials: int = Field(gt=0, description="trials per study, trial 0 being the default setting")
    space: dict[str, list[Any]] = Field(min_length=1, description="lr, weight_decay, batch_size, epochs")
    metric: str | None = Field(None, description="validation metric to maximise (unset: the task's headline)")
    sampler: Literal["tpe", "random"] = "tpe"
    # TPE draws at random until `startup_trials` trials are complete, then models the scores (Optuna's default, 10,
    # which GEO-Bench-2's 16 trials also use; trial 0, the default setting, counts among them). A TPE study of
    # startup_trials trials or fewer is a random search: lower it to let TPE model a short study.
    startup_trials: int = Field(10, ge=1, description="TPE: random draws before it models the scores")
    seed: int = 0
    val_fraction: float = Field(0.2, gt=0, lt=1)
    patience: int | None = Field(3, gt=0, description="early stopping on validation loss, in epochs (null: off)")

    @field_validator("space", mode="before")
    @classmethod
    def _numbers(cls, space: Any) -> Any:
        # YAML 1.1 reads 1e-5 (no dot) as a string: take such strings as the numbers they spell.
        if not isinstance(space, dict):
            return space
        return {k: [_number(v) for v in vs] if isinstance(vs, list) else vs for k, vs in space.items()}

    @field_validator("space")
    @classmethod
    def _space(cls, space: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in space.items():
            if key not in SPACE_KEYS:
                raise ValueError(f"unknown key '{key}' (tunable: {', '.join(SPACE_KEYS)})")
            if not values:
                raise ValueError(f"'{key}' needs values")
            if is_range(values):
                low, high = float(values[0]), float(values[1])
                if not low < high or (values[-1] == "log" and low <= 0):
                    raise ValueError(f"'{key}': range {values} needs low < high (and low > 0 when log)")
            elif any(isinstance(v, (str, bool)) or not isinstance(v, (int, float)) for v in values):
                raise ValueError(f"'{key}': a list of numbers, or [low, high] / [low, high, log]")
            elif key in INT_KEYS and any(int(v) != v or v <= 0 for v in values):
                raise ValueError(f"'{key}': positive integers")
        return space


def _number(value: Any) -> Any:
    if isinstance(value, str) and value != "log":
        try:
            return float(value)
        except ValueError:
            return value
    return value


def is_range(values: list[Any]) -> bool:
    """[low, high, log] is a (log-)uniform range; [low, high] of floats too; anything else a categorical choice."""
    if len(values) == 3 and values[2] == "log":
        return True
    return len(values) == 2 and all(isinstance(v, float) for v in values)


def study_name(tuning_cell_id: str) -> str:
    return f"{STUDY_PREFIX}{tuning_cell_id}"


def best_so_far(values: list[float | None]) -> list[float | None]:
    """The trial curve: the best validation score after each trial (maximised; failed trials change nothing)."""
    out: list[float | None] = []
    best: float | None = None
    for v in values:
        if v is not None and (best is None or v > best):
            best = v
        out.append(best)
    return out
