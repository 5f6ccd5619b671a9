"""Segmentation: mask adapters (RGB-coded Dubai masks, SpaceNet-4 GeoJSON), metrics, splits, the dense
encoder, and short frozen / fine-tune runs on the real data."""

from __future__ import annotations

import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image
from rich.console import Console

from rsbench.data.normalization import Normalization
from rsbench.errors import ConfigError, DataError
from rsbench.evaluate import EvaluateConfig, evaluate
from rsbench.evaluate.datasets import load_segmentation_data, parse_class_table, read_mask
from rsbench.evaluate.datasets.samples import SegmentationCrops
from rsbench.evaluate.datasets.tiling import split_regions, whole_images
from rsbench.evaluate.datasets.vector import rasterize_labels
from rsbench.evaluate.dense import build_dense_encoder, resolve_dense_init
from rsbench.evaluate.segmentation import segmentation_metrics
from rsbench.io import read_jsonl

# The colours that occur in the Dubai masks (shared/data/segmentation/SOURCE.md), written out independently.
DUBAI = {
    "Building": (60, 16, 152),
    "Land (unpaved area)": (132, 41, 246),
    "Road": (110, 193, 228),
    "Vegetation": (254, 221, 58),
    "Water": (226, 169, 41),
    "Unlabeled": (155, 155, 155),
}
DUBAI_OPTIONS = {
    "colors": {k: "#{:02X}{:02X}{:02X}".format(*v) for k, v in DUBAI.items()},
    "ignore_colors": ["#000000"],
}
SPACENET = "segmentation/spacenet4_atlanta_sample"
REPO = Path(__file__).resolve().parents[1]


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


@pytest.fixture(scope="module")
def dubai(shared_data: Path) -> Path:
    return shared_data / "segmentation" / "dubai_aerial"


@pytest.fixture(scope="module")
def dubai_tiny(tmp_path_factory, dubai: Path) -> Path:
    """Three real Dubai pairs cut to 192x160 (lossless PNG), for fast training."""
    root = tmp_path_factory.mktemp("dubai_tiny") / "tile_1"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in ("001", "002", "003"):
        Image.open(dubai / "tile_1" / "images" / f"image_part_{i}.jpg").crop((0, 0, 192, 160)).save(
            root / "images" / f"{i}.png"
        )
        Image.open(dubai / "tile_1" / "masks" / f"image_part_{i}.png").crop((0, 0, 192, 160)).save(
            root / "masks" / f"{i}.png"
        )
    return root.parent


def reference_decode(rgb: np.ndarray) -> np.ndarray:
    """Class indices by a plain loop over the colour table; 255 for black; -1 for anything else."""
    out = np.full(rgb.shape[:2], -1, dtype=np.int64)
    for i, color in enumerate(DUBAI.values()):
        out[np.all(rgb == np.array(color), axis=-1)] = i
    out[np.all(rgb == 0, axis=-1)] = 255
    return out


@pytest.mark.parametrize("mask", ["tile_4/masks/image_part_001.png", "tile_8/masks/image_part_002.png"])
def test_rgb_mask_decoding_is_pixel_exact(dubai: Path, mask: str):
    # tile_4 masks are palette PNGs; tile_8 has black no-class pixels.
    table = parse_class_table(DUBAI_OPTIONS["colors"], "test", DUBAI_OPTIONS["ignore_colors"])
    decoded = read_mask(dubai / mask, table)
    expected = reference_decode(np.asarray(Image.open(dubai / mask).convert("RGB")))
    assert (expected >= 0).all()
    np.testing.assert_array_equal(decoded, expected)
    assert len(np.unique(decoded)) >= 4


def test_shipped_classes_json_colours_are_rejected_naming_file_and_colour(dubai: Path):
    # The dataset's classes.json lists colours that do not occur in the masks: a clear error, not garbage.
    data = load_segmentation_data(dubai)
    with pytest.raises(DataError) as err:
        data.read(0)
    msg = str(err.value)
    assert str(data.pairs[0][1]) in msg and "colour (" in msg and "classes.json" in msg and "\n" not in msg


def _write_pair(root: Path, image: np.ndarray, mask: np.ndarray, name: str = "a") -> tuple[Path, Path]:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    Image.fromarray(image).save(root / "images" / f"{name}.png")
    Image.fromarray(mask).save(root / "masks" / f"{name}.png")
    return root / "images" / f"{name}.png", root / "masks" / f"{name}.png"


def test_bad_masks_give_one_line_errors_naming_files(tmp_path: Path, dubai: Path):
    real = np.asarray(Image.open(dubai / "tile_1" / "images" / "image_part_001.jpg"))[:40, :50]
    real_mask = np.asarray(Image.open(dubai / "tile_1" / "masks" / "image_part_001.png").convert("RGB"))[:40, :50]
    # mask one pixel narrower than its image
    img, msk = _write_pair(tmp_path / "size", real, real_mask[:, :-1])
    with pytest.raises(DataError, match="width x height") as err:
        load_segmentation_data(tmp_path / "size", options=DUBAI_OPTIONS).read(0)
    assert str(img) in str(err.value) and str(msk) in str(err.value)
    # a colour outside the table
    odd = real_mask.copy()
    odd[3, 7] = (1, 2, 3)
    _, msk = _write_pair(tmp_path / "colour", real, odd)
    with pytest.raises(DataError, match=r"\(1, 2, 3\).*x=7, y=3") as err:
        load_segmentation_data(tmp_path / "colour", options=DUBAI_OPTIONS).read(0)
    assert str(msk) in str(err.value)
    # an index mask with a value that is no class
    index = np.zeros((40, 50), dtype=np.uint8)
    index[5, 5] = 7
    _, msk = _write_pair(tmp_path / "index", real, index)
    with pytest.raises(DataError, match="value 7") as err:
        load_segmentation_data(tmp_path / "index", classes=["a", "b", "c"]).read(0)
    assert str(msk) in str(err.value)
    # an image without a mask, and folders without images
    (tmp_path / "nomask" / "images").mkdir(parents=True)
    (tmp_path / "nomask" / "masks").mkdir()
    with pytest.raises(DataError, match="no images found"):
        load_segmentation_data(tmp_path / "nomask", classes=["a", "b"])
    shutil.copy(img, tmp_path / "nomask" / "images" / "x.png")
    with pytest.raises(DataError, match="no mask for image .*x.png"):
        load_segmentation_data(tmp_path / "nomask", classes=["a", "b"])
    with pytest.raises(ConfigError, match="options.colours"):
        load_segmentation_data(tmp_path / "size", options={"colours": {}})


def test_spacenet_geojson_rasterizes_to_the_shipped_mask(shared_data: Path, tmp_path: Path):
    root = shared_data / SPACENET
    image, labels = root / "spacenet4_atlanta_pan_0.5m.tif", root / "spacenet4_atlanta_buildings.geojson"
    with rasterio.open(root / "spacenet4_atlanta_buildings_mask_derived.tif") as src:
        derived = src.read(1)
    table = parse_class_table(["background", "building"], "test")
    np.testing.assert_array_equal(rasterize_labels(image, labels, table), derived)
    # The same polygons in WGS84 must be reprojected onto the UTM grid (edges may move by a pixel).
    from rasterio.warp import transform_geom

    fc = json.loads(labels.read_text())
    fc.pop("crs")  # GeoJSON without a crs member is WGS84
    for f in fc["features"]:
        f["geometry"] = transform_geom("EPSG:32616", "EPSG:4326", f["geometry"])
    (tmp_path / "wgs84.geojson").write_text(json.dumps(fc))
    reprojected = rasterize_labels(image, tmp_path / "wgs84.geojson", table)
    assert (reprojected == derived).mean() > 0.995
    assert reprojected.sum() == pytest.approx(derived.sum(), rel=0.03)


def test_segmentation_metrics_match_hand_computation():
    pred = torch.tensor([[0, 0, 1, 1], [2, 2, 1, 0]])
    target = torch.tensor([[0, 1, 1, 1], [2, 255, 255, 0]])
    m = segmentation_metrics([pred], [target], ["Land", "Road x", "Water", "Absent"], ignore_index=255)
    # Non-ignored pixels: (0,0) (0,1) (1,1) (1,1) (2,2) (0,0) -> correct 5/6.
    iou_land, iou_road, iou_water = 2 / 3, 2 / 3, 1.0  # land: tp 2, fp 1 (pred 0 on target 1), fn 0
    assert m["pixel_accuracy"] == pytest.approx(5 / 6)
    assert m["iou_land"] == pytest.approx(iou_land)
    assert m["iou_road_x"] == pytest.approx(iou_road)
    assert m["iou_water"] == pytest.approx(iou_water)
    assert "iou_absent" not in m  # absent from truth and prediction: no IoU, not a zero
    assert m["miou"] == pytest.approx((iou_land + iou_road + iou_water) / 3)


def test_splits_are_seeded_disjoint_and_cover():
    train, test, how = split_regions([(900, 900)], 0.2, seed=0, crop=64)
    assert "grid regions" in how and len(train) + len(test) == 16 and len(test) == 3
    covered = np.zeros((900, 900), dtype=int)
    for r in train + test:
        covered[r.window.row : r.window.row + r.window.height, r.window.col : r.window.col + r.window.width] += 1
    assert (covered == 1).all()
    assert split_regions([(900, 900)], 0.2, seed=0, crop=64)[1] == test
    assert split_regions([(900, 900)], 0.2, seed=1, crop=64)[1] != test
    train, test, how = split_regions([(10, 10)] * 10, 0.2, seed=3, crop=64)
    assert "by image" in how and sorted(r.scene for r in train + test) == list(range(10)) and len(test) == 2


def test_crops_apply_one_transform_to_image_and_mask(dubai_tiny: Path):
    data = load_segmentation_data(dubai_tiny, options=DUBAI_OPTIONS)
    _, mask = data.read(0)
    image = np.stack([mask.astype(np.float32)] * 3)  # image band = mask value, so they must stay aligned
    crops = SegmentationCrops([image], [mask], whole_images([mask.shape]), 64, Normalization([0.0] * 3, [1.0] * 3), 255)
    torch.manual_seed(0)
    for i in range(12):
        x, y = crops[i]
        assert x.shape == (3, 64, 64) and y.shape == (64, 64)
        assert torch.equal(x[0].long(), y)


def test_dense_encoder_carries_the_init_weights():
    x = torch.randn(2, 3, 64, 64)
    for arch in ("resnet18", "convnext_atto"):  # convnext: features_only renames stages.N -> stages_N
        cfg = EvaluateConfig(task="segmentation", data=Path("."), init="random", backbone=arch, protocol=["frozen"])
        init = resolve_dense_init(cfg, 3, quiet())
        pooled = init.build().eval()
        enc = build_dense_encoder(init, 64).eval()
        with torch.no_grad():
            torch.testing.assert_close(enc(x)[-1], pooled.forward_features(x))
    cfg = EvaluateConfig(
        task="segmentation",
        data=Path("."),
        init="random",
        backbone="vit_tiny_patch16_224",
        image_size=32,
        protocol=["frozen"],
    )
    enc = build_dense_encoder(resolve_dense_init(cfg, 3, quiet()), 64).freeze()
    backbone_params, neck_params = enc.trainable_groups()
    assert backbone_params == [] and len(neck_params) > 0
    feats = enc(x)
    assert [tuple(f.shape[-2:]) for f in feats[2:]] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    sum(f.sum() for f in feats[2:]).backward()
    assert all(p.grad is None for p in enc.backbone.parameters())  # frozen ViT: only the pyramid trains
    assert all(p.grad is not None for p in enc.neck.parameters() if p.requires_grad)


def _cfg(data: Path, out: Path, **kw) -> EvaluateConfig:
    base = {
        "task": "segmentation",
        "data": data,
        "out": out,
        "init": "random",
        "image_size": 64,
        "seeds": [0],
        "epochs": 1,
        "batch_size": 16,
    }
    return EvaluateConfig(**{**base, **kw})


def test_dubai_frozen_and_finetune_runs(dubai_tiny: Path, tmp_path: Path):
    cfg = _cfg(dubai_tiny, tmp_path, options=DUBAI_OPTIONS, protocol=["frozen", "finetune"], dataset_name="dubai")
    rows = evaluate(cfg, console=quiet())
    by = {(r["protocol"], r["metric"]): r for r in rows}
    for protocol in ("frozen", "finetune"):
        assert 0 <= by[(protocol, "miou")]["value"] <= 1 and 0 <= by[(protocol, "pixel_accuracy")]["value"] <= 1
        row = by[(protocol, "miou")]
        assert row["dataset"] == "dubai" and row["n_train"] == 2 and row["n_test"] == 1
        assert row["split"].startswith("by image")
        assert math.isfinite(row["hparams"]["final_loss"]) and row["hparams"]["steps"] >= 1
        state = torch.load(row["probe_path"], weights_only=True)
        has_backbone = any(k.startswith("encoder.backbone.") for k in state["state_dict"])
        assert has_backbone == (protocol == "finetune")
        assert state["classes"] == list(DUBAI)
        # mIoU and pixel accuracy recomputed from the saved per-image confusion matrices equal the row's.
        from rsbench.contracts.predictions import read_predictions
        from rsbench.report.recompute import metric_on_examples

        meta, cols = read_predictions(row["predictions_path"])
        assert meta["kind"] == "segmentation" and cols["confusion"].shape == (1, len(DUBAI) ** 2)
        assert row["headline"] and not by[(protocol, "pixel_accuracy")]["headline"]
        assert metric_on_examples(row["predictions_path"], "miou").point() == pytest.approx(row["value"], abs=1e-6)
        acc = by[(protocol, "pixel_accuracy")]["value"]
        assert metric_on_examples(row["predictions_path"], "pixel_accuracy").point() == pytest.approx(acc, abs=1e-6)
    assert all(m.startswith(("iou_", "miou", "pixel_accuracy")) for _, m in by)
    assert len(read_jsonl(tmp_path / "results.jsonl")) == len(rows)


def test_spacenet_vector_labels_run_with_fraction(shared_data: Path, tmp_path: Path):
    cfg = _cfg(
        shared_data / SPACENET,
        tmp_path,
        adapter="vector",
        classes=["background", "building"],
        options={"images": "spacenet4_atlanta_pan_0.5m.tif", "labels": "spacenet4_atlanta_buildings.geojson"},
        protocol=["frozen"],
        fractions=[0.3],
        decoder="linear",
        batch_size=32,
        metric="iou_building",
    )
    rows = evaluate(cfg, console=quiet())
    metrics = {r["metric"]: r["value"] for r in rows}
    assert {"miou", "pixel_accuracy", "iou_background"} <= set(metrics)
    assert all(0 <= v <= 1 for v in metrics.values())
    assert rows[0]["label_fraction"] == 0.3 and rows[0]["n_train"] == 4 and rows[0]["n_test"] == 3
    assert "grid regions" in rows[0]["split"]


def test_bad_config_is_rejected_before_training(dubai_tiny: Path, tmp_path: Path):
    with pytest.raises(ConfigError, match="metric"):
        evaluate(_cfg(dubai_tiny, tmp_path, options=DUBAI_OPTIONS, protocol=["frozen"], metric="accuracy"), quiet())
    with pytest.raises(ConfigError, match="decoder"):
        evaluate(_cfg(dubai_tiny, tmp_path, options=DUBAI_OPTIONS, protocol=["frozen"], decoder="psp"), quiet())
    with pytest.raises(ConfigError, match="multiple of 32"):
        evaluate(_cfg(dubai_tiny, tmp_path, options=DUBAI_OPTIONS, protocol=["frozen"], image_size=48), quiet())
    with pytest.raises(ConfigError, match="protocol 'knn'"):
        evaluate(_cfg(dubai_tiny, tmp_path, options=DUBAI_OPTIONS, protocol=["knn"]), quiet())


def test_dense_tasks_default_to_the_frozen_protocol(dubai_tiny: Path, tmp_path: Path):
    """Without --protocol a dense task trains a decoder on the frozen backbone (knn/linear do not apply)."""
    from rsbench.evaluate.tasks import get_task

    for task in ("segmentation", "detection"):
        cfg = EvaluateConfig(task=task, data=dubai_tiny, init="random", out=tmp_path)
        assert cfg.protocol == ["frozen"]
        assert get_task(task, cfg.protocol).name == task
    assert EvaluateConfig(data=dubai_tiny, init="random").protocol == ["knn", "linear"]


@pytest.mark.parametrize("spec", ["dubai", "spacenet4"])
def test_example_task_specs_index_their_data(spec: str, shared_data: Path, monkeypatch):
    from rsbench.evaluate.segmentation import _data

    monkeypatch.setenv("RSBENCH_SHARED_DATA", str(shared_data))
    cfg = EvaluateConfig(task_spec=REPO / "examples" / "tasks" / f"{spec}.yaml", init="random", protocol=["frozen"])
    data = _data(cfg, cfg.data)
    assert cfg.task == "segmentation" and len(data.pairs) == {"dubai": 54, "spacenet4": 1}[spec]
    image, mask = data.read(0)
    assert mask.shape == image.shape[1:] and set(np.unique(mask)) <= set(range(len(data.classes))) | {255}


def test_cli_reports_bad_masks_in_one_line(dubai: Path, tmp_path: Path):
    from typer.testing import CliRunner

    from rsbench.cli import app

    res = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--task",
            "segmentation",
            "--data",
            str(dubai),
            "--init",
            "random",
            "--protocol",
            "frozen",
            "--out",
            str(tmp_path),
        ],
    )
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "tile_1/masks/image_part_001.png" in lines[0] and "colour (" in lines[0]
