"""`rsbench evaluate`: score a backbone (or a trivial baseline) on a labelled downstream task.

Its options are generated from `EvaluateConfig` (cli/model_options.py): one per field, help and default from
the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rsbench.cli.common import ConfigOption, console, handle_errors, stdout_console
from rsbench.cli.model_options import GIVEN, Opt, model_options
from rsbench.contracts.evaluate_config import EvaluateConfig
from rsbench.settings import resolve_config

# Not a flag: `options` (a task spec's adapter/task-specific mapping; task spec or config file only).
EVALUATE_EXCLUDE = frozenset({"options", "tuned"})  # tuned: set by the benchmark only
TRAINED = "Trained parts and probes"
EVALUATE_OPTIONS = {
    # Their defaults depend on other keys (the task, the protocols); the descriptions say how.
    "protocol": Opt(show_default=False),
    "seeds": Opt(show_default=False),
    **{k: Opt(panel=TRAINED) for k in ("epochs", "lr", "decoder", "layer_decay", "knn_k", "knn_temperature")},
    "linear_c_grid": Opt(panel=TRAINED),
}


@handle_errors
@model_options(EvaluateConfig, exclude=EVALUATE_EXCLUDE, options=EVALUATE_OPTIONS)
def evaluate_command(given: dict[str, Any] = GIVEN, config: Path | None = ConfigOption) -> None:
    """Score a backbone with kNN / linear probes or fine-tuning; rows go to OUT/results.jsonl."""
    # Imported here so `rsbench --help` stays fast (torch, timm).
    from rsbench.evaluate import evaluate, results_table
    from rsbench.evaluate.results import RESULTS_FILE

    cfg = resolve_config(EvaluateConfig, config, **given)
    rows = evaluate(cfg, console=console)
    stdout_console().print(results_table(rows))
    console.print(f"{len(rows)} rows written to {cfg.out / RESULTS_FILE}", markup=False, highlight=False)
