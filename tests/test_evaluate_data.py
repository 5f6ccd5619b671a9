"""`rsbench evaluate` data side: CSV and ImageFolder adapters (JPEG and multi-band GeoTIFF), task spec
files, and one-line errors for bad inputs, on real EuroSAT files."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image
from rasterio.transform import from_origin
from rich.console import Console
from typer.testing import CliRunner

from rsbench.cli import app
from rsbench.data.images import index_image_folder
from rsbench.evaluate import EvaluateConfig, evaluate, load_task_spec
from rsbench.io import read_jsonl

REPO = Path(__file__).resolve().parents[1]


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def cli(*args):
    return CliRunner().invoke(app, ["evaluate", *map(str, args)])


def cached(out: Path, row: dict) -> torch.Tensor:
    return torch.load(out / "features" / f"{row['features_key']}.pt", weights_only=True)["features"]


@pytest.fixture(scope="module")
def eurosat_tif(tmp_path_factory, eurosat_small) -> Path:
    """10 per class of the real EuroSAT images as 4-band uint16 GeoTIFFs (R, G, B, and their mean x 4)."""
    root = tmp_path_factory.mktemp("eurosat_tif")
    for cls in sorted(p for p in eurosat_small.iterdir() if p.is_dir()):
        (root / cls.name).mkdir()
        for f in sorted(cls.iterdir())[:10]:
            rgb = np.asarray(Image.open(f)).transpose(2, 0, 1).astype(np.uint16)
            arr = np.concatenate([rgb, rgb.sum(0, keepdims=True) * 4 // 3])
            with rasterio.open(
                root / cls.name / f"{f.stem}.tif",
                "w",
                driver="GTiff",
                width=64,
                height=64,
                count=4,
                dtype="uint16",
                crs="EPSG:32632",
                transform=from_origin(500000, 5000640, 10, 10),
            ) as dst:
                dst.write(arr)
    return root


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    path.write_text("\n".join(",".join(r) for r in rows) + "\n")
    return path


def test_csv_equals_imagefolder_on_multiband_geotiffs(eurosat_tif, tmp_path):
    index = index_image_folder(eurosat_tif)
    # Columns in another order, capitalised, with an extra one: they are found by name. Paths are relative.
    csv = write_csv(
        tmp_path / "labels.csv",
        [["Label", "note", "image_path"]]
        + [[index.classes[y], "x", os.path.relpath(p, tmp_path)] for p, y in zip(index.paths, index.labels)],
    )
    kw = {"init": "random", "image_size": 32, "seeds": [0, 1], "protocol": ["knn", "linear"]}
    folder_rows = evaluate(EvaluateConfig(data=eurosat_tif, out=tmp_path / "a", **kw), console=quiet())
    csv_rows = evaluate(EvaluateConfig(data=csv, out=tmp_path / "b", **kw), console=quiet())
    assert csv_rows[0]["dataset"] == "labels" and folder_rows[0]["dataset"] == eurosat_tif.name
    assert [r["value"] for r in csv_rows] == [r["value"] for r in folder_rows]
    assert csv_rows[0]["normalization"] == folder_rows[0]["normalization"]
    assert len(csv_rows[0]["normalization"]["mean"]) == 4 and csv_rows[0]["n_train"] == 80
    assert torch.equal(cached(tmp_path / "a", folder_rows[0]), cached(tmp_path / "b", csv_rows[0]))


# ---------------------------------------------------------------- task specs


def test_example_task_spec_points_at_the_shared_eurosat(shared_data, eurosat_dir, monkeypatch):
    monkeypatch.setenv("RSBENCH_SHARED_DATA", str(shared_data))
    spec = load_task_spec(REPO / "examples" / "tasks" / "eurosat.yaml")
    assert spec.data == eurosat_dir and spec.adapter == "imagefolder" and spec.metric == "accuracy"
    assert spec.classes == index_image_folder(spec.data).classes
    monkeypatch.delenv("RSBENCH_SHARED_DATA")
    res = cli("--task-spec", REPO / "examples" / "tasks" / "eurosat.yaml", "--init", "random")
    assert res.exit_code == 1 and "environment variable RSBENCH_SHARED_DATA is not set" in res.stderr


def test_task_spec_run_and_precedence(eurosat_small, tmp_path):
    spec = tmp_path / "specs" / "small.yaml"
    spec.parent.mkdir()
    rel = os.path.relpath(eurosat_small, spec.parent)  # relative to the spec file, not the working directory
    spec.write_text(
        f"name: eurosat_small_spec\ntask: classification\nadapter: imagefolder\ndata: {rel}\n"
        f"metric: f1_macro\nimage_size: 48\noptions: {{}}\n"
    )
    conf = tmp_path / "run.yaml"
    conf.write_text("protocol: knn\nseeds: 0\nimage_size: 40\n")
    res = cli("--task-spec", spec, "--config", conf, "--init", "random", "--out", tmp_path / "out")
    assert res.exit_code == 0, res.output
    rows = read_jsonl(tmp_path / "out" / "results.jsonl")
    assert {r["dataset"] for r in rows} == {"eurosat_small_spec"} and rows[0]["image_size"] == 40  # file > spec
    assert rows[0]["data"] == str(eurosat_small.resolve())
    res = cli("--task-spec", spec, "--config", conf, "--init", "random", "--image-size", 32, "--out", tmp_path / "o2")
    assert res.exit_code == 0 and read_jsonl(tmp_path / "o2" / "results.jsonl")[0]["image_size"] == 32  # CLI wins


# ---------------------------------------------------------------- bad inputs -> one-line errors


@pytest.fixture
def bad(tmp_path, eurosat_small) -> Path:
    forest = sorted((eurosat_small / "Forest").iterdir())[:3]
    river = sorted((eurosat_small / "River").iterdir())[:3]
    good = [["path", "label"]] + [[str(p), "Forest"] for p in forest] + [[str(p), "River"] for p in river]
    write_csv(tmp_path / "unknown_class.csv", good + [[str(river[0]), "Lava"]])
    write_csv(tmp_path / "missing_file.csv", good[:3] + [["nope/ghost.jpg", "Forest"]] + good[3:])
    write_csv(tmp_path / "no_label.csv", [["path", "what"]] + [[str(p), "Forest"] for p in forest])
    write_csv(tmp_path / "header_only.csv", [["path", "label"]])
    write_csv(tmp_path / "ok.csv", good)
    (tmp_path / "empty").mkdir()
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "results.jsonl").write_text("\n{not json\n")
    for name, files in (("Forest", forest), ("River", river), ("Lava", [])):
        (tmp_path / "one_empty" / name).mkdir(parents=True)
        for f in files:
            shutil.copy(f, tmp_path / "one_empty" / name)
    (tmp_path / "classes.yaml").write_text(
        f"name: t\ndata: {tmp_path / 'unknown_class.csv'}\nclasses: [Forest, River]\n"
    )
    (tmp_path / "bogus.yaml").write_text(f"name: t\ndata: {tmp_path / 'ok.csv'}\nsplits: 3\n")
    (tmp_path / "metric.yaml").write_text(f"name: t\ndata: {tmp_path / 'ok.csv'}\nmetric: miou\n")
    (tmp_path / "options.yaml").write_text(f"name: t\ndata: {tmp_path / 'ok.csv'}\noptions: {{colors: x.json}}\n")
    return tmp_path


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--task-spec", "{tmp}/classes.yaml"], "CSV file {tmp}/unknown_class.csv line 8: unknown class 'Lava'"),
        (
            ["--data", "{tmp}/missing_file.csv"],
            "CSV file {tmp}/missing_file.csv line 4: image not found: {tmp}/nope/ghost.jpg",
        ),
        (["--data", "{tmp}/no_label.csv"], "CSV file {tmp}/no_label.csv needs an image column"),
        (["--data", "{tmp}/header_only.csv"], "CSV file {tmp}/header_only.csv has a header but no rows"),
        (["--data", "{tmp}/nothing.csv"], "CSV file not found: {tmp}/nothing.csv"),
        (["--data", "{tmp}/empty"], "{tmp}/empty has no class sub-folders"),
        (["--data", "{tmp}/one_empty"], "class folder(s) without images in {tmp}/one_empty: Lava"),
        (["--data", "{tmp}/ok.csv", "--out", "{tmp}/damaged"], "{tmp}/damaged/results.jsonl:2: malformed JSON"),
        (["--task-spec", "{tmp}/bogus.yaml"], "invalid config key 'splits' in task spec {tmp}/bogus.yaml: unknown key"),
        (["--task-spec", "{tmp}/nope.yaml"], "config file not found: {tmp}/nope.yaml"),
        (["--task-spec", "{tmp}/metric.yaml"], "'miou' is not reported for single-label classification"),
        (["--task-spec", "{tmp}/options.yaml"], "invalid config key 'options.colors': adapter 'csv' takes no options"),
        (["--data", "{tmp}/ok.csv", "--adapter", "coco"], "unknown adapter 'coco' for task 'classification'"),
        (["--data", "{tmp}/ok.csv", "--fractions", "0.5,1.5"], "label fractions must be in (0, 1], got 1.5"),
        (
            ["--data", "{tmp}/ok.csv", "--init", "bandstats", "--protocol", "finetune"],
            "protocol 'finetune' needs a network",
        ),
        (["--data", "{tmp}/ok.csv", "--init", "pixels", "--weights", "{tmp}/ok.csv"], "--weights only applies to"),
    ],
)
def test_bad_inputs_give_one_line_errors(args, expected, bad):
    base = {"--init": "random", "--protocol": "knn", "--out": str(bad / "out")}
    given = [a.format(tmp=bad) for a in args]
    extra = [x for k, v in base.items() if k not in given for x in (k, v)]
    res = cli(*given, *extra)
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 1 and len(lines) == 1, res.output
    assert lines[0].startswith("error: ") and expected.format(tmp=bad) in lines[0], lines[0]
    assert not (bad / "out" / "results.jsonl").exists()
