"""Fair baselines in benchmark matrices: baselines inherit the input shape (backbone, image size, ViT patch
size) of the runs they are compared with, and a leaderboard that would compare inits at different input
shapes or bands fails at plan time with one `error:` line, before any work. Dry runs only: no training."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rsbench.benchmark.execute import eval_values
from rsbench.benchmark.experiment import load_experiment
from rsbench.benchmark.matrix import expand
from rsbench.benchmark.plan import load_plan
from rsbench.cli import app
from rsbench.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
DATA = "${RSBENCH_SHARED_DATA}/classification/eurosat_rgb"
runner = CliRunner()


@pytest.fixture(autouse=True)
def _shared_data_env(monkeypatch, shared_data):
    monkeypatch.setenv("RSBENCH_SHARED_DATA", str(shared_data))


def write(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def vit_experiment(tmp_path: Path, baselines: list, runs: list[dict] | None = None, **over) -> dict:
    """A ViT-Tiny/8 run at 64 px (64 tokens; the architecture's own patch is 16)."""
    run = {
        "name": "mocov3-vit",
        "method": "mocov3",
        "images": DATA,
        "backbone": "vit_tiny_patch16_224",
        "patch_size": 8,
        "image_size": 64,
        "max_steps": 4,
    }
    doc = {
        "name": "fair",
        "out": str(tmp_path / "bench"),
        "code_version": "pinned",
        "pretrain": {"runs": runs if runs is not None else [run]},
        "baselines": baselines,
        "tasks": [{"name": "eurosat", "data": DATA}],
        "protocols": ["knn"],
        "seeds": [0],
    }
    doc.update(over)
    return doc


def dry_run(path: Path, *extra: str):
    return runner.invoke(app, ["benchmark", "run", str(path), "--dry-run", *extra])


def one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def baseline_cells(path: Path):
    return [c for c in load_plan(path).cells if c.kind == "eval" and c.config["init"]["kind"] == "baseline"]


def test_random_baseline_inherits_the_runs_patch_and_image_size(tmp_path):
    """Before, the baseline's init entry carried the run's backbone and image size but no patch size, so
    random-vit_tiny_patch16_224 ran at patch 16 (16 tokens) against the run's 64 tokens."""
    path = write(tmp_path / "e.yaml", vit_experiment(tmp_path, ["random", "imagenet"]))
    result = dry_run(path)
    assert result.exit_code == 0, result.stderr
    assert "fair: 4 cells" in result.stdout  # the run, its random and ImageNet baselines and the run's kNN cell
    cells = baseline_cells(path)
    assert {c.init_label for c in cells} == {"random-vit_tiny_patch16_224", "imagenet-vit_tiny_patch16_224"}
    for cell in cells:
        init = cell.config["init"]
        assert (init["backbone"], init["image_size"], init["patch_size"]) == ("vit_tiny_patch16_224", 64, 8)
        # ... and that is what the worker hands to `rsbench evaluate`.
        from rsbench.evaluate import EvaluateConfig

        cfg = EvaluateConfig.model_validate(eval_values({"config": cell.config, "out_dir": "unused"}, init["init"]))
        assert (cfg.backbone, cfg.image_size, cfg.patch_size) == ("vit_tiny_patch16_224", 64, 8)
    assert not (tmp_path / "bench").exists()


def test_baseline_with_another_image_size_fails_before_any_work(tmp_path):
    doc = vit_experiment(tmp_path, [{"init": "random", "image_size": 32}])
    result = dry_run(write(tmp_path / "e.yaml", doc))
    assert one_error_line(result) == (
        "error: leaderboard eurosat/knn compares inits at different input shapes: mocov3-vit (64 px, patch 8, 64 "
        "tokens) vs random-vit_tiny_patch16_224 (32 px, patch 8, 16 tokens); set image_size/patch_size on the "
        "baseline or let it inherit them"
    )
    # Without --dry-run too, and nothing is written: no benchmark folder, no store, no rows.
    result = runner.invoke(app, ["benchmark", "run", str(tmp_path / "e.yaml")])
    assert one_error_line(result).startswith("error: leaderboard eurosat/knn compares inits at different input shapes")
    assert not (tmp_path / "bench").exists()


def test_baseline_with_another_patch_size_fails(tmp_path):
    doc = vit_experiment(
        tmp_path, [{"init": "imagenet", "backbone": "vit_tiny_patch16_224", "options": {"patch_size": 16}}]
    )
    line = one_error_line(dry_run(write(tmp_path / "e.yaml", doc)))
    assert (
        "mocov3-vit (64 px, patch 8, 64 tokens) vs imagenet-vit_tiny_patch16_224 (64 px, patch 16, 16 tokens)" in line
    )
    assert not (tmp_path / "bench").exists()


def test_runs_at_two_image_sizes_on_one_task_fail(tmp_path):
    doc = vit_experiment(tmp_path, ["random"], runs=[])
    doc["pretrain"] = {"defaults": {"images": DATA, "max_steps": 4}, "grid": {"image_size": [32, 64]}}
    path = write(tmp_path / "e.yaml", doc)
    expected = (
        "error: leaderboard eurosat/knn compares inits at different input shapes: simclr-image_size32 "
        "(32 px) vs simclr-image_size64 (64 px); pretrain the runs at one image_size/patch_size or "
        "compare them in separate experiments"
    )
    assert one_error_line(dry_run(path)) == expected
    assert one_error_line(runner.invoke(app, ["benchmark", "status", str(path)])) == expected  # status plans too
    assert not (tmp_path / "bench").exists()


def test_cnn_and_vit_runs_share_a_leaderboard_at_one_image_size(tmp_path):
    """Token counts are compared between ViTs only; a bare baseline is one init per run backbone."""
    vit = {
        "name": "mocov3-vit",
        "method": "mocov3",
        "images": DATA,
        "backbone": "vit_tiny_patch16_224",
        "patch_size": 8,
        "max_steps": 4,
    }
    cnn = {"name": "simclr", "method": "simclr", "images": DATA, "max_steps": 4}
    path = write(tmp_path / "e.yaml", vit_experiment(tmp_path, ["random"], runs=[cnn, vit]))
    assert dry_run(path).exit_code == 0
    inits = {c.init_label: c.config["init"] for c in baseline_cells(path)}
    # The ResNet baseline's entry is exactly what it was before inheritance existed: its cell ids are kept.
    assert inits["random"] == {
        "kind": "baseline",
        "init": "random",
        "backbone": None,
        "image_size": None,
        "weights": None,
    }
    assert inits["random-vit_tiny_patch16_224"]["patch_size"] == 8


def test_method_default_backbone_is_inherited(tmp_path):
    """A run without `backbone` trains its method's default (MAE: ViT-B/16); its random baseline was a
    ResNet-18 before."""
    run = {"name": "mae", "method": "mae", "images": DATA, "max_steps": 4}
    path = write(tmp_path / "e.yaml", vit_experiment(tmp_path, ["random"], runs=[run]))
    [cell] = baseline_cells(path)
    assert cell.init_label == "random-vit_base_patch16_224"
    assert cell.config["init"]["backbone"] == "vit_base_patch16_224" and "patch_size" not in cell.config["init"]


def test_dense_task_baselines_take_the_crop_size_runs_are_evaluated_at(tmp_path):
    """Segmentation evaluates every run at the task's image_size (crop): the baseline follows it there,
    and the run's own size on classification."""
    seg = {"name": "dubai", "task_spec": str(REPO / "examples" / "tasks" / "dubai.yaml")}  # image_size: 256
    doc = vit_experiment(
        tmp_path,
        ["random"],
        runs=[{"images": DATA, "image_size": 32, "max_steps": 4}],
        tasks=[{"name": "eurosat", "data": DATA}, seg],
    )
    del doc["protocols"]
    cells = [c for c in expand(load_experiment(write(tmp_path / "e.yaml", doc))) if c.init_label == "random"]
    assert {c.task: c.config["init"]["image_size"] for c in cells} == {"eurosat": 32, "dubai": 256}


def test_explicit_baseline_backbone_inherits_image_size(tmp_path):
    run = {"name": "simclr", "method": "simclr", "images": DATA, "image_size": 32, "max_steps": 4}
    doc = vit_experiment(tmp_path, [{"init": "imagenet", "backbone": "resnet50"}], runs=[run])
    [cell] = baseline_cells(write(tmp_path / "e.yaml", doc))
    assert cell.init_label == "imagenet-resnet50"
    assert (cell.config["init"]["backbone"], cell.config["init"]["image_size"]) == ("resnet50", 32)


@pytest.mark.parametrize(
    "change, expected",
    [
        (
            {"baselines": [{"init": "random", "options": {"bands": ["B08", "B04", "B03"]}}]},
            "compares inits with different band selections: simclr (bands B04,B03,B02) vs random (bands B08,B04,B03)",
        ),
        (
            {
                "runs": [
                    {"name": "a", "images": DATA, "bands": 3, "max_steps": 4},
                    {"name": "b", "images": DATA, "bands": 4, "max_steps": 4},
                ]
            },
            "compares inits with different band selections: a (3-band corpus group) vs b (4-band corpus group)",
        ),
    ],
)
def test_different_band_selections_fail(tmp_path, change, expected):
    runs = change.get("runs", [{"name": "simclr", "method": "simclr", "images": DATA, "max_steps": 4}])
    doc = vit_experiment(
        tmp_path, change.get("baselines", ["random"]), runs=runs, evaluate={"bands": ["B04", "B03", "B02"]}
    )
    with pytest.raises(ConfigError, match=re.escape(f"leaderboard eurosat/knn {expected}")):
        expand(load_experiment(write(tmp_path / "e.yaml", doc)))


def test_plan_time_defaults_mirror_the_stages():
    """shapes.py keeps only what its sources cannot give without torch (the network-free baselines);
    keep that equal to the stages. Method default backbones come from rsbench.ssl.catalog (checked
    against the method classes in tests/test_ssl_catalog.py). Names are read by contracts.architectures."""
    from rsbench.benchmark import shapes
    from rsbench.contracts.architectures import patch_size_from_name
    from rsbench.evaluate.inits import BASELINES

    # PRETRAIN_METHOD / PRETRAIN_IMAGE_SIZE are read from PretrainConfig itself: nothing to mirror.
    assert (shapes.PRETRAIN_METHOD, shapes.PRETRAIN_IMAGE_SIZE) == ("simclr", 64)
    assert set(shapes.NETWORK_FREE) == set(BASELINES)
    assert patch_size_from_name("vit_small_patch8_224") == 8 and patch_size_from_name("resnet18") is None


def test_run_directory_baseline_is_checked_by_its_backbone_json(tmp_path):
    """A finished run given as a baseline keeps its own shape (read from backbone.json at plan time)."""
    run_dir = tmp_path / "big-run"
    run_dir.mkdir()
    (run_dir / "backbone.json").write_text(
        '{"arch": "vit_tiny_patch16_224", "in_chans": 3, "image_size": 64, '
        '"timm_kwargs": {"img_size": 64, "patch_size": 16}}'
    )
    doc = vit_experiment(tmp_path, [{"init": str(run_dir), "name": "big-run"}])
    line = one_error_line(dry_run(write(tmp_path / "e.yaml", doc)))
    assert "mocov3-vit (64 px, patch 8, 64 tokens) vs big-run (64 px, patch 16, 16 tokens)" in line
