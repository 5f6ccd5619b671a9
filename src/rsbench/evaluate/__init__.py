"""`rsbench evaluate`: score frozen backbones on labelled downstream data.

Library entry point: `evaluate(cfg) -> rows` (also appended to cfg.out/results.jsonl). Tasks register
themselves in `rsbench.evaluate.tasks`; importing a task module below is what makes it available.
"""

from __future__ import annotations

from rich.console import Console

from rsbench.contracts.evaluate_config import EvaluateConfig
from rsbench.contracts.task_spec import TaskSpec, load_task_spec
from rsbench.evaluate import classification, detection, segmentation  # noqa: F401 - register their tasks
from rsbench.evaluate.comparability import check_comparable
from rsbench.evaluate.results import (
    RESULT_FIELDS,
    RESULTS_FILE,
    ROW_KEY,
    append_results,
    check_results_file,
    results_table,
)
from rsbench.evaluate.tasks import available_tasks, get_task, register_task
from rsbench.io import stable_hash
from rsbench.settings import save_config

__all__ = [
    "RESULT_FIELDS",
    "RESULTS_FILE",
    "ROW_KEY",
    "EvaluateConfig",
    "TaskSpec",
    "append_results",
    "available_tasks",
    "evaluate",
    "load_task_spec",
    "register_task",
    "results_table",
]


def evaluate(cfg: EvaluateConfig, console: Console | None = None) -> list[dict]:
    """Run every (seed, protocol) of `cfg`, append the rows to cfg.out/results.jsonl and return them."""
    console = console or Console(stderr=True)
    task = get_task(cfg.task, cfg.protocol)  # unknown task/protocol fails before any work
    check_results_file(cfg.out)  # so does a damaged results.jsonl in the output folder
    rows = task.run(cfg, console)
    if cfg.metric is not None:
        # The report ranks a dense task by the first metric it reads: put the task spec's headline first.
        rows.sort(key=lambda r: r["metric"] != cfg.metric)
        for r in rows:
            r["headline"] = r["metric"] == cfg.metric
    if rows:  # the band set is known once the rows are: checked before anything is written
        note = check_comparable(cfg, rows[0], ("band set",), console)
        for r in rows if note else ():
            r["mixed_inputs"] = "; ".join(filter(None, (r.get("mixed_inputs"), note)))
    # Saved with the rows, not before: a failed run leaves no config behind that matches no results.
    save_config(cfg, cfg.out / "configs" / f"{stable_hash(cfg.model_dump(mode='json'))}.yaml")
    append_results(cfg.out, rows)
    return rows
