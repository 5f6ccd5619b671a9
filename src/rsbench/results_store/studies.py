"""Tuning studies in the results store: Optuna's RDB storage on the store's own SQLAlchemy URL.

Optuna keeps its tables (studies, trials, trial_params, ...) beside rsbench's (cells, runs, results), so one
database holds the queue, the results and every trial; SLURM jobs of one benchmark share it. rsbench's
studies are named `rsbench-hpo-<tuning cell id>` (rsbench.contracts.hpo) and carry what they tune in their
user attributes. `study_records` is what the report reads: every trial, reproducible from the database alone.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from rsbench.contracts.hpo import STUDY_PREFIX
from rsbench.errors import DataError
from rsbench.results_store.db import display_url, engine_for, retrying


def open_storage(url: str) -> Any:
    """Optuna's RDBStorage on `url` (tables created when missing); a bad store is one line, password hidden."""
    import optuna

    optuna.logging.set_verbosity(logging.WARNING)  # per-trial INFO lines would drown the cell logs
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite:") else {"pool_pre_ping": True}
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    except Exception as e:  # driver errors quote the URL: never print it whole
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        where = display_url(url)
        raise DataError(f"cannot open tuning studies in {where}: {reason.replace(url, where)}") from None


def study_records(url: str) -> list[dict]:
    """Every rsbench study in the store: its user attributes (init, task, protocol, label fraction, spec) and
    its trials (number, state, value, overrides, setting), trials in number order."""
    import optuna
    from sqlalchemy import inspect

    if not retrying(lambda: inspect(engine_for(url)).has_table("studies"))():
        return []  # nothing was tuned: a reader creates no tables
    storage = open_storage(url)
    out = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        if not summary.study_name.startswith(STUDY_PREFIX):
            continue
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        trials = [
            {
                "number": t.number,
                "state": t.state.name.lower(),
                "value": t.value,
                "overrides": t.user_attrs.get("overrides"),
                "setting": t.user_attrs.get("setting"),
                "fit_time_s": t.user_attrs.get("fit_time_s"),
                "duration_s": t.duration.total_seconds() if t.duration is not None else None,
            }
            for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
        ]
        out.append({"study": summary.study_name, **study.user_attrs, "trials": trials})
    return out
