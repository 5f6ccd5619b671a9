"""Tuning cells: an Optuna study per (init, task, protocol, label fraction), then its best setting over the seeds.

A tuning cell runs `rsbench evaluate` (its public entry point) once per trial with `holdout: validation`: the
model trains on the train split minus a validation split carved from it (deterministic in the spec's seed,
recorded in the trial) and is scored there, never on the test split, with early stopping on the validation
loss. Trial 0 is the protocol's default setting; the others are drawn by the sampler from `space`.

Resumable and deterministic: the study lives in the results store's database under a name made of the cell
id, so a killed cell's next claim loads it, marks the trial that was running when it died as failed, and
runs only the trials still missing. The sampler of trial n is seeded with (seed, n completed trials), so a
study that was stopped and resumed draws the same settings as one that ran straight through. The seeds'
cells (ordinary benchmark cells) wait for the study and repeat its best setting (`repeat_overrides`), training
as many epochs as the best trial did when early stopping ended it.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rsbench.contracts.hpo import INT_KEYS, HpoSpec, is_range, study_name
from rsbench.errors import DataError, RsbenchError
from rsbench.io import stable_hash
from rsbench.results_store.studies import open_storage

# values -> result rows: `rsbench evaluate` on the given EvaluateConfig values (the benchmark's run_eval).
Evaluate = Callable[[dict[str, Any]], list[dict]]


def distributions(spec: HpoSpec) -> dict[str, Any]:
    import optuna.distributions as d

    out: dict[str, Any] = {}
    for key, values in spec.space.items():
        if is_range(values):
            low, high, log = values[0], values[1], values[-1] == "log"
            if key in INT_KEYS:
                out[key] = d.IntDistribution(int(low), int(high), log=log)
            else:
                out[key] = d.FloatDistribution(float(low), float(high), log=log)
        else:
            out[key] = d.CategoricalDistribution([int(v) if key in INT_KEYS else float(v) for v in values])
    return out


def _suggest(trial: Any, key: str, dist: Any) -> Any:
    import optuna.distributions as d

    if isinstance(dist, d.CategoricalDistribution):
        return trial.suggest_categorical(key, dist.choices)
    if isinstance(dist, d.IntDistribution):
        return trial.suggest_int(key, dist.low, dist.high, log=dist.log)
    return trial.suggest_float(key, dist.low, dist.high, log=dist.log)


def _sampler(spec: HpoSpec, completed: int) -> Any:
    import optuna

    seed = int(stable_hash([spec.seed, completed])[:8], 16)
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=spec.startup_trials)


def trial_values(base: dict[str, Any], spec: HpoSpec, overrides: dict[str, Any]) -> dict[str, Any]:
    """EvaluateConfig values of one trial: the cell's, on the validation split of the spec's seed."""
    return {
        **base,
        **overrides,
        "seeds": [spec.seed],
        "holdout": "validation",
        "val_fraction": spec.val_fraction,
        "early_stop_patience": spec.patience,
    }


def _score(rows: list[dict], metric: str | None) -> tuple[float, str]:
    pick = [r for r in rows if (r["metric"] == metric if metric else r.get("headline"))]
    if not pick:
        raise DataError(f"the trial reported no '{metric or 'headline'}' metric")
    return float(pick[0]["value"]), pick[0]["metric"]


def _setting(rows: list[dict]) -> dict[str, Any]:
    """The setting a trial actually trained with, from its rows (defaults filled in by the protocol)."""
    hp = rows[0].get("hparams") or {}
    keep = ("lr", "weight_decay", "batch_size", "epochs", "epochs_trained", "early_stop_patience")
    return {k: hp[k] for k in keep if hp.get(k) is not None}


def run_study(
    url: str, cell: dict, base: dict[str, Any], evaluate: Evaluate, log: Callable[[str], None] = print
) -> dict:
    """Run the tuning cell's study until it holds `trials` completed trials; returns the best trial's record."""
    import optuna
    from optuna.trial import TrialState

    config = cell["config"]
    spec = HpoSpec.model_validate(config["hpo"])
    storage = open_storage(url)
    name = study_name(cell["id"])
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True)
    attrs = {
        "init": cell["init_label"],
        "task": cell.get("task"),
        "protocol": config["protocol"],
        "fraction": config.get("fraction"),
        "hpo": spec.model_dump(),
        "cell": cell["id"],
    }
    for key, value in attrs.items():
        if study.user_attrs.get(key) != value:
            study.set_user_attr(key, value)
    sid = storage.get_study_id_from_name(name)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        # This worker holds the cell's claim: a running trial is one whose worker died. It never counts.
        storage.set_trial_state_values(storage.get_trial_id_from_study_id_trial_number(sid, t.number), TrialState.FAIL)
        log(f"trial {t.number}: its worker died; marked failed and run again")
    dists = distributions(spec)
    while True:
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(done) >= spec.trials:
            break
        study.sampler = _sampler(spec, len(done))
        trial = study.ask()
        overrides = {} if not done else {k: _suggest(trial, k, dist) for k, dist in dists.items()}
        out = Path(tempfile.mkdtemp(prefix=f"trial-{trial.number}-", dir=_scratch(cell)))
        start = time.perf_counter()
        try:
            rows = evaluate({**trial_values(base, spec, overrides), "out": str(out)})
            value, metric = _score(rows, spec.metric)
        except RsbenchError as e:
            if type(e) is not RsbenchError:  # bad data or config: the cell fails, whatever the setting
                study.tell(trial, state=TrialState.FAIL)
                raise
            # The setting itself failed (training diverged): a completed trial with the floor score, so the
            # budget and the sampler's sequence stay those of every other init.
            rows, value, metric = [{"hparams": overrides, "split": None, "fit_time_s": None}], 0.0, "diverged"
            trial.set_user_attr("error", str(e).splitlines()[0] if str(e) else "diverged")
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)
            raise
        finally:
            shutil.rmtree(out, ignore_errors=True)  # a trial's weights and predictions are not kept
        trial.set_user_attr("overrides", overrides)
        trial.set_user_attr("setting", _setting(rows))
        trial.set_user_attr("metric", metric)
        trial.set_user_attr("split", rows[0].get("split"))
        trial.set_user_attr("fit_time_s", rows[0].get("fit_time_s"))
        study.tell(trial, value)
        log(
            f"trial {trial.number} ({len(done) + 1}/{spec.trials}): val {metric} {value:.4f} "
            f"with {overrides or 'the default setting'} in {time.perf_counter() - start:.1f}s"
        )
    return best_trial(url, cell["id"])


def _scratch(cell: dict) -> Path:
    path = Path(cell["out_dir"]) / "trials"
    path.mkdir(parents=True, exist_ok=True)
    return path


def best_trial(url: str, tuning_cell_id: str, trials: int | None = None) -> dict:
    """The best completed trial of a tuning cell's study (ties: the earlier trial, so the default wins a tie);
    with `trials`, the study must hold exactly that many completed trials (the same budget for every init)."""
    import optuna
    from optuna.trial import TrialState

    name = study_name(tuning_cell_id)
    try:
        study = optuna.load_study(study_name=name, storage=open_storage(url))
    except KeyError:
        raise DataError(f"tuning study {name} not found in the results store (was its tuning cell run?)") from None
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done or (trials is not None and len(done) != trials):
        raise DataError(f"tuning study {name} holds {len(done)} completed trials, not the {trials} every init gets")
    best = max(done, key=lambda t: (t.value, -t.number))
    return {
        "study": name,
        "trial": best.number,
        "trials": len(done),
        "val_value": best.value,
        "val_metric": best.user_attrs.get("metric"),
        "overrides": dict(best.user_attrs.get("overrides") or {}),
        "setting": best.user_attrs.get("setting"),
        "split": best.user_attrs.get("split"),
    }


def repeat_overrides(best: dict) -> dict[str, Any]:
    """The EvaluateConfig values a repeat of the best trial sets: the trial's overrides and, when early stopping
    ended the trial before its `epochs`, the epochs it trained. A repeat scores on the test split, where nothing
    stops early (there is no validation split to watch): it trains as long as the validated trial did."""
    setting = best.get("setting") or {}
    trained, asked = setting.get("epochs_trained"), setting.get("epochs")
    stopped = trained is not None and asked is not None and 0 < trained < asked
    return {**best["overrides"], **({"epochs": int(trained)} if stopped else {})}


def tuned_record(best: dict) -> dict:
    """What a repeat of the best setting records in its rows' `hparams.tuned`: the study, the trial, its score,
    and the early-stopping patience the trials trained with as the protocol recorded it (None: none stopped
    early), which the GEO-Bench-2 export reports as `early_stop_patience`."""
    return {
        **{k: best[k] for k in ("study", "trial", "trials", "val_value", "val_metric", "overrides")},
        "patience": (best.get("setting") or {}).get("early_stop_patience"),
        "epochs": repeat_overrides(best).get("epochs"),  # set when the trial stopped early: the repeat's epochs
    }
