"""Tuned fine-tuning: the `hpo` key, the same-budget rule, Optuna studies in the SQLite store, resume after a kill.

The study tests score trials with a known function of the setting (a simulation with a known truth: the best
learning rate is 1e-3), so they check the search machinery in milliseconds; the benchmark test runs real
fine-tuning trials on a few EuroSAT images.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from sqlalchemy import create_engine, inspect

from rsbench.benchmark.experiment import load_experiment
from rsbench.benchmark.matrix import HPO, expand
from rsbench.benchmark.tuning import best_trial, repeat_overrides, run_study, tuned_record
from rsbench.contracts.hpo import HpoSpec, best_so_far, study_name
from rsbench.errors import ConfigError, DataError
from rsbench.evaluate.splits import validation_split
from rsbench.results_store.db import db_url
from rsbench.results_store.studies import open_storage, study_records

SPACE = {"lr": ["1e-5", "1e-1", "log"], "batch_size": [8, 16, 32]}


def fake_evaluate(calls: list, fail_at: int | None = None, record_patience: bool = True):
    """Validation accuracy peaks at lr = 1e-3 (default 5e-4); records the values each trial got."""

    def evaluate(values: dict) -> list[dict]:
        calls.append(values)
        if fail_at is not None and len(calls) == fail_at:
            raise KeyboardInterrupt  # the worker is stopped in the middle of a trial
        lr = values.get("lr") or 5e-4
        acc = 1.0 - abs(math.log10(lr) + 3) / 5
        hp = {"lr": lr, "batch_size": values.get("batch_size") or 64, "weight_decay": 0.05, "epochs": 1}
        hp["early_stop_patience"] = values["early_stop_patience"] if record_patience else None
        return [{"metric": "accuracy", "value": acc, "headline": True, "hparams": hp, "split": values["holdout"]}]

    return evaluate


def tuning_cell(tmp_path: Path, cid: str = "c0ffee", trials: int = 5, **hpo) -> dict:
    spec = HpoSpec(trials=trials, space=SPACE, seed=7, **hpo)
    config = {"protocol": "finetune", "fraction": None, "hpo": spec.model_dump()}
    return {"id": cid, "config": config, "init_label": "random", "task": "tiny", "out_dir": str(tmp_path / cid)}


def completed(url: str, cid: str) -> list:
    study = optuna.load_study(study_name=study_name(cid), storage=open_storage(url))
    return study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))


def test_study_lives_in_the_sqlite_store_and_trials_never_see_the_test_split(tmp_path):
    url = db_url(None, tmp_path)
    calls: list = []
    best = run_study(url, tuning_cell(tmp_path), {"data": "x", "lr": None}, fake_evaluate(calls), log=lambda m: None)
    assert {"studies", "trials", "trial_params"} <= set(inspect(create_engine(url)).get_table_names())
    assert len(calls) == 5 and all(c["holdout"] == "validation" and c["seeds"] == [7] for c in calls)
    assert "lr" not in {k for k, v in calls[0].items() if v is not None}  # trial 0: the protocol's default
    trials = completed(url, "c0ffee")
    assert [t.number for t in trials] == list(range(5))
    top = max(trials, key=lambda t: (t.value, -t.number))
    assert best["trial"] == top.number and best["val_value"] == pytest.approx(top.value)
    assert best["overrides"] == top.user_attrs["overrides"]
    [record] = study_records(url)
    assert record["init"] == "random" and record["hpo"]["trials"] == 5 and len(record["trials"]) == 5
    assert best_so_far([t["value"] for t in record["trials"]]) == list(
        np.maximum.accumulate([t["value"] for t in record["trials"]])
    )


@pytest.mark.parametrize("recorded", [True, False])
def test_repeats_record_the_patience_the_trials_trained_with(tmp_path, recorded: bool):
    """The GEO-Bench-2 export's early_stop_patience is what the protocol recorded in its trials (spec: 3)."""
    url = db_url(None, tmp_path)
    cell = tuning_cell(tmp_path, trials=2)
    run_study(url, cell, {"data": "x"}, fake_evaluate([], record_patience=recorded), log=lambda m: None)
    tuned = tuned_record(best_trial(url, cell["id"], trials=2))
    assert tuned["patience"] == (3 if recorded else None) and tuned["trials"] == 2


def test_a_repeat_trains_as_many_epochs_as_the_best_trial_did(tmp_path):
    """Early stopping ended the trials after 4 of 10 epochs: the repeat (scored on test, nothing stops there)
    trains 4 epochs with the best trial's setting, and says so in hparams.tuned."""
    url = db_url(None, tmp_path)
    cell = tuning_cell(tmp_path, trials=3)

    def stops_early(values: dict) -> list[dict]:
        [row] = fake_evaluate([])(values)
        row["hparams"].update(epochs=10, epochs_trained=4)
        return [row]

    run_study(url, cell, {"data": "x"}, stops_early, log=lambda m: None)
    best = best_trial(url, cell["id"], trials=3)
    assert repeat_overrides(best) == {**best["overrides"], "epochs": 4}
    assert tuned_record(best)["epochs"] == 4
    # A trial that trained every epoch (or a protocol that records none) leaves the epochs as they were.
    for setting in ({"epochs": 10, "epochs_trained": 10}, {"lr": 0.01}, None):
        assert repeat_overrides({"overrides": {"lr": 0.01}, "setting": setting}) == {"lr": 0.01}


def test_killed_study_resumes_to_exactly_n_trials_with_the_same_settings(tmp_path):
    straight: list = []
    url_a = db_url(None, tmp_path / "a")
    run_study(url_a, tuning_cell(tmp_path / "a"), {}, fake_evaluate(straight), log=lambda m: None)

    url = db_url(None, tmp_path / "b")
    cell = tuning_cell(tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):  # interrupted in its 3rd trial
        run_study(url, cell, {}, fake_evaluate([], fail_at=3), log=lambda m: None)
    assert len(completed(url, "c0ffee")) == 2
    # A worker killed outright leaves its trial RUNNING in the store: the next claim must not count it.
    optuna.load_study(study_name=study_name("c0ffee"), storage=open_storage(url)).ask()
    resumed: list = []
    run_study(url, cell, {}, fake_evaluate(resumed), log=lambda m: None)
    done = completed(url, "c0ffee")
    assert len(done) == 5 and len(resumed) == 3, "only the missing trials ran"
    assert len({t.number for t in done}) == 5
    assert [t.user_attrs["overrides"] for t in done] == [
        t.user_attrs["overrides"] for t in completed(url_a, "c0ffee")
    ], "a resumed study draws what an uninterrupted one draws"
    run_study(url, cell, {}, fake_evaluate(resumed), log=lambda m: None)
    assert len(resumed) == 3 and len(completed(url, "c0ffee")) == 5, "a finished study runs nothing more"


def test_tpe_models_the_scores_after_startup_trials_and_draws_at_random_before(tmp_path):
    """With Optuna's default (10 startup trials) an 8-trial TPE study is a random search; startup_trials: 3 lets
    TPE model trials 3-7. Both draw the same settings until 3 trials are complete (TPE's own random draws)."""
    draws = {}
    for startup in (3, 10):
        url = db_url(None, tmp_path / str(startup))
        cell = tuning_cell(tmp_path / str(startup), trials=8, startup_trials=startup)
        run_study(url, cell, {}, fake_evaluate([]), log=lambda m: None)
        draws[startup] = [t.user_attrs["overrides"] for t in completed(url, "c0ffee")]
    assert draws[3][:3] == draws[10][:3]
    assert all(a != b for a, b in zip(draws[3][3:], draws[10][3:])), "TPE modelled the scores after 3 trials"


def test_repeats_refuse_a_study_with_another_budget(tmp_path):
    url = db_url(None, tmp_path)
    run_study(url, tuning_cell(tmp_path, trials=3), {}, fake_evaluate([]), log=lambda m: None)
    assert best_trial(url, "c0ffee", trials=3)["trials"] == 3
    with pytest.raises(DataError, match="3 completed trials, not the 4 every init gets"):
        best_trial(url, "c0ffee", trials=4)
    with pytest.raises(DataError, match="not found"):
        best_trial(url, "deadbeef")


def test_store_url_password_is_never_printed():
    with pytest.raises(DataError) as err:
        open_storage("postgresql+psycopg://bench:s3cret@127.0.0.1:1/rs")
    assert "s3cret" not in str(err.value) and "***" in str(err.value)


def test_validation_split_is_carved_from_train_only_and_deterministic():
    labels = np.repeat(np.arange(4), 10)
    train = np.arange(0, 40, 2)  # the test split is every odd index
    keep, val, how = validation_split(train, 0.25, seed=3, labels=labels)
    again = validation_split(train, 0.25, seed=3, labels=labels)
    assert np.array_equal(keep, again[0]) and np.array_equal(val, again[1])
    assert set(keep) | set(val) == set(train) and not set(keep) & set(val)
    assert all(np.sum(labels[val] == c) >= 1 for c in range(4)) and "test unused" in how


def write(tmp_path: Path, **extra) -> Path:
    doc = {
        "name": "t",
        "code_version": "test",
        "baselines": [{"init": "random", "backbone": "resnet18"}, {"init": "random", "backbone": "resnet34"}],
        "tasks": [{"name": "eurosat", "data": str(tmp_path)}],
        "protocols": ["knn", "finetune"],
        "seeds": [0, 1],
        "hpo": {"trials": 4, "space": {"lr": ["1e-5", "1e-2", "log"]}},
        **extra,
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def test_matrix_tunes_each_init_once_and_repeats_over_seeds(tmp_path):
    cells = expand(load_experiment(write(tmp_path)), "exp", tmp_path)
    tunes = [c for c in cells if c.kind == HPO]
    assert sorted(c.init_label for c in tunes) == ["random-resnet18", "random-resnet34"]
    assert all(c.config["protocol"] == "finetune" and c.config["hpo"]["trials"] == 4 for c in tunes)
    evals = [c for c in cells if c.kind == "eval"]
    tuned = [c for c in evals if c.config["protocol"] == "finetune"]
    assert len(tuned) == 4 and all(c.depends_on == c.config["tuned_by"] for c in tuned)
    assert {c.config["tuned_by"] for c in tuned} == {c.id for c in tunes}
    assert all("tuned_by" not in c.config for c in evals if c.config["protocol"] == "knn"), "probes are not tuned"
    assert max(c.priority for c in tunes) < min(c.priority for c in evals)


def test_an_init_with_its_own_budget_is_refused(tmp_path):
    own = {"init": "random", "backbone": "resnet34", "hpo": {"trials": 8, "space": {"lr": ["1e-5", "1e-2", "log"]}}}
    path = write(tmp_path, baselines=[{"init": "random", "backbone": "resnet18"}, own])
    with pytest.raises(ConfigError, match="unfair tuning.*4 trials.*8 trials.*baselines.1.hpo"):
        expand(load_experiment(path), "exp", tmp_path)


def test_bad_hpo_keys_are_named(tmp_path):
    with pytest.raises(ConfigError, match="hpo.space.*unknown key 'momentum'"):
        load_experiment(write(tmp_path, hpo={"trials": 2, "space": {"momentum": [0.9, 0.99]}}))
    # Dense heads tune every space key too (weight decay included): the tuning cell carries the whole space.
    seg = {"name": "dubai", "task": "segmentation", "data": str(tmp_path)}
    space = {"weight_decay": [0.0, 0.1], "batch_size": [8, 16]}
    path = write(tmp_path, tasks=[seg], protocols=["frozen"], hpo={"trials": 2, "space": space})
    tunes = [c for c in expand(load_experiment(path), "exp", tmp_path) if c.kind == HPO]
    assert tunes and all(c.config["hpo"]["space"] == space for c in tunes)


def _record(init: str, values: list[float]) -> dict:
    trials = [
        {"number": n, "state": "complete", "value": v, "overrides": {} if n == 0 else {"lr": 10.0**-n}, "setting": {}}
        for n, v in enumerate(values)
    ]
    return {
        "init": init,
        "task": "eurosat",
        "protocol": "finetune",
        "fraction": None,
        "hpo": {"trials": 3},
        "trials": trials,
    }


def test_report_ranking_change_and_settings_from_trial_records():
    from rsbench.report.tuning import chosen, ranking_table, settings_table, tuning_section

    # Default (trial 0) ranks a > b > c; tuned ranks c > b > a: reversed, so Kendall's tau is -1 (by hand).
    studies = [_record("a", [0.7, 0.6, 0.7]), _record("b", [0.6, 0.8, 0.75]), _record("c", [0.5, 0.9, 0.9])]
    assert chosen(studies[0])["best"]["number"] == 0, "a tie keeps the earlier trial (the default)"
    assert chosen(studies[2])["best"]["number"] == 1
    [row] = ranking_table(studies).rows
    assert row[3] == "-1" and row[4].startswith("c 3→1")
    studies[2]["trials"][1]["value"] = studies[2]["trials"][2]["value"] = 0.55  # c stays last: a/b swap only
    [row] = ranking_table(studies).rows
    assert row[3] == f"{1 / 3:.3g}"  # (2 concordant - 1 discordant) / 3 pairs
    table = settings_table(studies)
    assert [r[0] for r in table.rows] == ["a", "b", "c"] and table.rows[1][6:] == ["0.6", "0.8"]
    section = tuning_section(studies)
    assert section["curve"].startswith("data:image/png;base64,")


def test_a_diverging_setting_is_a_trial_at_the_floor_and_bad_data_fails_the_cell(tmp_path):
    from rsbench.errors import RsbenchError

    url = db_url(None, tmp_path)

    def diverges(values: dict) -> list[dict]:
        if values.get("lr"):
            raise RsbenchError("training diverged (loss nan at step 3); lower --lr")
        return fake_evaluate([])(values)

    run_study(url, tuning_cell(tmp_path, trials=3), {}, diverges, log=lambda m: None)
    trials = completed(url, "c0ffee")
    assert [t.value for t in trials][1:] == [0.0, 0.0] and "diverged" in trials[1].user_attrs["error"]

    def missing(values: dict) -> list[dict]:
        raise DataError("no images found in /nowhere")

    with pytest.raises(DataError):
        run_study(url, tuning_cell(tmp_path, "bad", trials=2), {}, missing, log=lambda m: None)


def test_default_and_tuned_rows_of_one_init_are_two_conditions():
    """A store holding an init at its default and at a tuned setting keeps both (no row overwrites the other)."""
    from rsbench.contracts.results import deduplicate, disambiguate_shapes

    base = {"task": "cls", "dataset": "eurosat", "protocol": "finetune", "label_fraction": 1.0, "init": "simclr"}
    base |= {"seed": 0, "metric": "accuracy", "image_size": 32, "patch_size": None}
    default = {**base, "value": 0.5, "hparams": {"lr": 1e-3}, "created": "2026-01-01T00:00:00"}
    tuned = {**base, "value": 0.6, "hparams": {"lr": 3e-3, "tuned": {"study": "s", "trial": 2}}, "created": "2026"}
    rows = deduplicate(disambiguate_shapes([default, tuned]))
    assert sorted((r["init"], r["value"]) for r in rows) == [("simclr (default)", 0.5), ("simclr (tuned)", 0.6)]
    # Only tuned rows (an experiment with hpo): the name stays as it is.
    assert [r["init"] for r in disambiguate_shapes([tuned])] == ["simclr"]
