"""Suites: named task sets read from one root; the shared data as `rsbench-mini`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rsbench.contracts.evaluate import EvaluateConfig
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
