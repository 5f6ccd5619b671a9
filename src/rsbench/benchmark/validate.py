"""Validate every cell's stage options with the stage's own config model, before any work starts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rsbench.benchmark.band_fit import check_band_fit
from rsbench.benchmark.execute import eval_values
from rsbench.benchmark.experiment import Experiment, validate
from rsbench.benchmark.matrix import EVAL, PRETRAIN, Cell, load_tasks
from rsbench.errors import ConfigError

# Set by the matrix itself: giving them in the file would be silently overridden, so it is an error.
PRETRAIN_OWNED = ("out",)
EVAL_OWNED = ("out", "init", "protocol", "seeds", "fractions")


def _owned(options: dict, owned: Sequence[str], where: str, source: str, instead: str) -> None:
    for key in owned:
        if key in options:
            raise ConfigError(f"invalid key '{where}.{key}' in {source}: set by the benchmark ({instead})")


def validate_stage_options(exp: Experiment, cells: Sequence[Cell], source: str, base_dir: Path | None = None) -> None:
    """Unknown keys, wrong types, unknown SSL methods and task/protocol pairs, named by their key."""
    from rsbench.evaluate import EvaluateConfig
    from rsbench.evaluate.tasks import get_task
    from rsbench.ssl import get_method
    from rsbench.train import PretrainConfig

    instead = "use the matrix keys protocols/seeds/fractions and the benchmark folder"
    _owned(exp.evaluate, EVAL_OWNED, "evaluate", source, instead)
    validate(EvaluateConfig, {"data": ".", "init": "random", **exp.evaluate}, source, "evaluate")
    tasks = load_tasks(exp, source, base_dir)
    for i, task in enumerate(tasks):
        _owned(task.options, EVAL_OWNED, f"tasks.{i}", source, instead)
        validate(EvaluateConfig, {"init": "random", **exp.evaluate, **task.options}, source, f"tasks.{i}")
    for i, b in enumerate(exp.baselines):
        _owned(b.options, EVAL_OWNED, f"baselines.{i}.options", source, instead)
    checked: set[str] = set()
    for cell in cells:
        if cell.kind == PRETRAIN:
            options = cell.config["options"]
            _owned(options, PRETRAIN_OWNED, cell.where, source, "runs go to OUT/runs/")
            cfg = validate(PretrainConfig, {**options, "out": "unused"}, source, cell.where)
            try:
                card = get_method(cfg.method).card
            except ConfigError as e:
                raise ConfigError(f"invalid key '{cell.where}.method' in {source}: {e}") from None
            if card is not None and card.needs_teacher and cfg.teacher is None:
                raise ConfigError(
                    f"missing key '{cell.where}.teacher' in {source}: {cfg.method} distils a frozen teacher "
                    f"(a run directory, a timm weights file with teacher_arch, or torchgeo:<WeightsEnum>)"
                )
        elif cell.kind == EVAL:
            fake = {"config": cell.config, "out_dir": "unused"}
            cfg = validate(EvaluateConfig, eval_values(fake, "random"), source, cell.where)
            key = f"{cfg.task}/{cfg.protocol[0]}"
            if key in checked:
                continue
            checked.add(key)
            try:
                get_task(cfg.task, cfg.protocol)
            except ConfigError as e:
                raise ConfigError(f"invalid key '{cell.where}' in {source}: {e}") from None
    check_band_fit(cells, tasks, exp.evaluate, source)
