"""`rsbench benchmark run` on an experiment that includes the rsbench-mini suite, end to end on the shared data.

The suite's root is a symlinked excerpt of /work/shared/data in the same layout (4 EuroSAT images per class,
two Dubai tiles, the NEON images), and one random ResNet-18 baseline at 32 px, one seed: every task kind of
the suite runs through the executor, the store and the report in well under a minute. The Dubai task is also
tuned (2 trials), so a dense protocol goes through a study whose trials never see the test split.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rsbench.benchmark.plan import load_plan
from rsbench.cli import app
from rsbench.results_store.store import DONE
from rsbench.results_store.studies import study_records

pytestmark = pytest.mark.slow
runner = CliRunner()


@pytest.fixture(scope="module")
def mini_root(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    root = tmp_path_factory.mktemp("mini_root")
    src = shared_data / "classification" / "eurosat_rgb"
    for cls in sorted(p for p in src.iterdir() if p.is_dir()):
        (root / "classification" / "eurosat_rgb" / cls.name).mkdir(parents=True)
        for f in sorted(cls.iterdir())[:4]:
            (root / "classification" / "eurosat_rgb" / cls.name / f.name).symlink_to(f)
    for tile in ("tile_1", "tile_5"):  # two tiles: a test region and train regions to carve a validation from
        for sub in ("images", "masks"):
            dst = root / "segmentation" / "dubai_aerial" / tile / sub
            dst.mkdir(parents=True)
            for f in sorted((shared_data / "segmentation" / "dubai_aerial" / tile / sub).iterdir())[:2]:
                (dst / f.name).symlink_to(f)
    (root / "detection").mkdir()
    (root / "detection" / "neon_tree_crowns").symlink_to(shared_data / "detection" / "neon_tree_crowns")
    return root


def test_benchmark_run_on_the_rsbench_mini_suite_end_to_end(tmp_path, mini_root):
    out = tmp_path / "bench"
    doc = {
        "name": "mini",
        "out": str(out),
        "code_version": "test",
        "baselines": [{"init": "random", "backbone": "resnet18", "image_size": 32}],
        "evaluate": {"batch_size": 8, "epochs": 1},
        "tasks": [{"suite": "rsbench-mini", "root": str(mini_root)}],
        "fractions": [1.0],
        "seeds": [0],
        "executor": {"max_parallel": 1, "threads_per_cell": 2},
    }
    exp = tmp_path / "mini.yaml"
    exp.write_text(yaml.safe_dump(doc), encoding="utf-8")
    result = runner.invoke(app, ["benchmark", "run", str(exp)])
    assert result.exit_code == 0, result.output

    plan = load_plan(exp)
    store = plan.store()
    cells = store.cells(plan.ids)
    assert all(c["status"] == DONE for c in cells), [(c["label"], c["error"]) for c in cells]
    # eurosat: knn, linear; dubai: frozen, finetune; neon: frozen (the suite's protocols), one init, one seed
    got = {(c["task"], c["config"]["protocol"]) for c in cells}
    assert got == {
        ("eurosat_rgb", "knn"),
        ("eurosat_rgb", "linear"),
        ("dubai_aerial", "frozen"),
        ("dubai_aerial", "finetune"),
        ("neon_tree_crowns", "frozen"),
    }
    rows = store.result_rows()
    headline = {(r["dataset"], r["protocol"]): r for r in rows if r["headline"]}
    assert set(headline) == got
    assert {r["metric"] for r in headline.values()} == {"accuracy", "miou", "map_50_95"}
    assert all(0.0 <= r["value"] <= 1.0 for r in headline.values())
    assert headline[("eurosat_rgb", "knn")]["n_train"] + headline[("eurosat_rgb", "knn")]["n_test"] == 40

    report = runner.invoke(app, ["report", "--db", str(out), "--out", str(tmp_path / "report.html")])
    assert report.exit_code == 0, report.output
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "dubai_aerial" in html and "neon_tree_crowns" in html and "eurosat_rgb" in html
    assert json.loads((out / "last_run.json").read_text())["done"] == len(cells)
    assert study_records(plan.url) == []  # nothing was tuned
