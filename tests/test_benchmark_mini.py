"""`rsbench benchmark run` on an experiment that includes the rsbench-mini suite, end to end on the shared data.

The suite's root is a symlinked excerpt of /work/shared/data in the same layout (4 EuroSAT images per class,
2 Dubai images, the two small NEON plots), one random ResNet-18 baseline at each task's input size, one seed,
one epoch: every task kind and protocol of the suite runs through the executor, the store and the report.
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
    for sub in ("images", "masks"):  # 2 of tile_1's 797x644 images: 1 test, 1 train
        dst = root / "segmentation" / "dubai_aerial" / "tile_1" / sub
        dst.mkdir(parents=True)
        for f in sorted((shared_data / "segmentation" / "dubai_aerial" / "tile_1" / sub).iterdir())[:2]:
            (dst / f.name).symlink_to(f)
    neon = shared_data / "detection" / "neon_tree_crowns"
    for sub in ("images", "annotations"):
        (root / "detection" / "neon_tree_crowns" / sub).mkdir(parents=True)
    for name in ("OSBS_029", "SOAP_061"):  # the two 400 x 400 plots (the third image is 2299 x 2472)
        image = next((neon / "images").glob(f"{name}.*"))
        (root / "detection" / "neon_tree_crowns" / "images" / image.name).symlink_to(image)
        (root / "detection" / "neon_tree_crowns" / "annotations" / f"{name}.xml").symlink_to(
            neon / "annotations" / f"{name}.xml"
        )
    return root


def test_benchmark_run_on_the_rsbench_mini_suite_end_to_end(tmp_path, mini_root):
    out = tmp_path / "bench"
    doc = {
        "name": "mini",
        "out": str(out),
        "code_version": "test",
        "baselines": [{"init": "random", "backbone": "resnet18"}],  # at each task's own input size
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
