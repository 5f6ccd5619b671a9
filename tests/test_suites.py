"""Suites: named task sets read from one root; the shared data as `rsbench-mini`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rsbench.contracts.evaluate_config import EvaluateConfig
from rsbench.errors import ConfigError, DataError
from rsbench.suites import available_suites, load_suite, require_data


def test_rsbench_mini_reads_the_shared_data(shared_data: Path):
    suite = load_suite("rsbench-mini", root=shared_data)
    assert [t.task for t in suite.tasks] == ["classification", "segmentation", "detection"]
    assert suite.missing() == []
    require_data(suite)
    for entry in suite.task_entries():
        # Every entry is a valid `rsbench evaluate` configuration once an init is named.
        options = {k: v for k, v in entry.items() if k not in ("name", "protocols", "fractions")}
        cfg = EvaluateConfig(init="random", dataset_name=entry["name"], **options)
        assert Path(cfg.data).is_dir() and cfg.task == entry["task"]
    assert suite.task_entries()[0]["fractions"] == [0.1, 1.0]


def test_default_root_comes_from_the_environment(shared_data: Path, monkeypatch):
    monkeypatch.setenv("RSBENCH_SHARED_DATA", str(shared_data))
    assert load_suite("rsbench-mini").root == shared_data
    monkeypatch.delenv("RSBENCH_SHARED_DATA")
    with pytest.raises(ConfigError, match="invalid key 'root'.*not set"):
        load_suite("rsbench-mini")


def test_missing_dataset_names_its_folder_and_what_belongs_there(tmp_path: Path):
    (tmp_path / "classification" / "eurosat_rgb").mkdir(parents=True)
    suite = load_suite("rsbench-mini", root=tmp_path)
    missing = suite.missing()
    assert len(missing) == 2
    assert str(tmp_path / "segmentation" / "dubai_aerial") in missing[0] and "masks/*.png" in missing[0]
    with pytest.raises(DataError, match="neon_tree_crowns not found"):
        require_data(suite)


def test_suite_files_are_found_and_validated(tmp_path: Path, monkeypatch):
    assert "rsbench-mini" in available_suites()
    (tmp_path / "mine.yaml").write_text("name: mine\nroot: /data\ntasks:\n  - {name: a, data: a, colour: red}\n")
    monkeypatch.setenv("RSBENCH_SUITES", str(tmp_path))
    assert available_suites()["mine"] == tmp_path / "mine.yaml"
    with pytest.raises(ConfigError, match="tasks.0"):
        load_suite("mine")
    with pytest.raises(ConfigError, match="unknown suite 'nope'.*rsbench-mini"):
        load_suite("nope")


def test_suites_import_no_torch():
    code = "import sys, rsbench.suites; sys.exit(int('torch' in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def _experiment(tmp_path: Path, tasks: list) -> Path:
    doc = {
        "name": "suite",
        "out": str(tmp_path / "bench"),
        "baselines": ["random"],
        "evaluate": {"batch_size": 128},
        "tasks": tasks,
        "seeds": [0],
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_benchmark_expands_a_suite_into_its_tasks(tmp_path: Path, shared_data: Path):
    from rsbench.benchmark.plan import load_plan

    plan = load_plan(_experiment(tmp_path, [{"suite": "rsbench-mini", "root": str(shared_data)}]))
    cells = [c for c in plan.cells if c.kind == "eval"]
    protocols = {(c.task, c.config["protocol"]) for c in cells}
    assert protocols == {
        ("eurosat_rgb", "knn"),
        ("eurosat_rgb", "linear"),
        ("dubai_aerial", "frozen"),
        ("dubai_aerial", "finetune"),
        ("neon_tree_crowns", "frozen"),
    }
    fractions = {c.config.get("fraction") for c in cells if c.task == "eurosat_rgb"}
    assert fractions == {0.1, 1.0}, fractions
    with pytest.raises(DataError, match="dubai_aerial not found"):
        load_plan(_experiment(tmp_path, [{"suite": "rsbench-mini", "root": str(tmp_path)}]))
    with pytest.raises(ConfigError, match="has no task nope"):
        load_plan(_experiment(tmp_path, [{"suite": "rsbench-mini", "root": str(shared_data), "only": ["nope"]}]))
    with pytest.raises(ConfigError, match="invalid key 'tasks.0.colour'"):
        load_plan(_experiment(tmp_path, [{"suite": "rsbench-mini", "colour": "red"}]))


def test_benchmark_runs_a_suite_task_end_to_end(tmp_path: Path, shared_data: Path):
    from typer.testing import CliRunner

    from rsbench.cli import app
    from rsbench.results_store.store import Store

    path = _experiment(tmp_path, [{"suite": "rsbench-mini", "root": str(shared_data), "only": ["eurosat_rgb"]}])
    res = CliRunner().invoke(app, ["benchmark", "run", str(path)])
    assert res.exit_code == 0, res.output[-3000:]
    rows = Store(f"sqlite:///{tmp_path / 'bench' / 'results.db'}").result_rows()
    headline = {(r["protocol"], r["label_fraction"]) for r in rows if r["metric"] == "accuracy"}
    assert headline == {("knn", 0.1), ("knn", 1.0), ("linear", 0.1), ("linear", 1.0)}
    assert {r["dataset"] for r in rows} == {"eurosat_rgb"} and all(r["image_size"] == 64 for r in rows)
