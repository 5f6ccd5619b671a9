"""Detection: VOC / COCO / CSV adapters on the NEON tree crowns, box checks, tiling + merging, COCO metrics
and a short frozen-backbone Faster R-CNN run."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

from rsbench.errors import ConfigError, DataError
from rsbench.evaluate import EvaluateConfig, evaluate
from rsbench.evaluate.datasets import load_detection_data
from rsbench.evaluate.datasets.samples import dihedral, dihedral_boxes, overlap_stride
from rsbench.evaluate.datasets.tiling import ArrayWindow, clip_boxes, grid_windows, merge_tile_detections
from rsbench.evaluate.detection import detection_metrics, match_detections

REPO = Path(__file__).resolve().parents[1]
PAIRS = ("OSBS_029", "SOAP_061")  # the images annotated both in VOC XML and in DeepForest CSV
IMAGES = {"OSBS_029": "OSBS_029.tif", "SOAP_061": "SOAP_061.png"}


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


@pytest.fixture(scope="module")
def neon(shared_data: Path) -> Path:
    return shared_data / "detection" / "neon_tree_crowns"


@pytest.fixture()
def neon2(tmp_path: Path, neon: Path) -> Path:
    """OSBS + SOAP (400x400 each) with copies of their annotation files, in a layout tests may edit."""
    (tmp_path / "images").mkdir()
    (tmp_path / "annotations").mkdir()
    for stem, image in IMAGES.items():
        (tmp_path / "images" / image).symlink_to(neon / "images" / image)
        shutil.copy(neon / "annotations" / f"{stem}.xml", tmp_path / "annotations")
    return tmp_path


def _by_image(data) -> dict[str, tuple[np.ndarray, list[str]]]:
    return {it.image.name: (it.boxes, it.labels) for it in data.items}


def test_voc_and_csv_give_the_same_boxes(neon: Path):
    voc = _by_image(load_detection_data(neon, "voc"))
    csv_data = load_detection_data(neon, "csvboxes", options={"annotations": [f"annotations/{s}.csv" for s in PAIRS]})
    from_csv = _by_image(csv_data)
    assert set(from_csv) == set(IMAGES.values())
    for name, (boxes, labels) in from_csv.items():
        np.testing.assert_array_equal(boxes, voc[name][0])
        assert labels == voc[name][1]
    assert len(voc["2019_YELL_2_528000_4978000_image_crop2.png"][0]) == 574
    assert csv_data.classes == ["Alive", "Dead", "Tree"]
    single = load_detection_data(neon, options={"single_class": "Tree"})
    assert single.classes == ["Tree"] and sum(len(it.boxes) for it in single.items) == 672


def test_coco_json_and_renamed_csv_columns(neon: Path, tmp_path: Path):
    voc = load_detection_data(neon, "voc")
    cats = {c: i + 1 for i, c in enumerate(voc.classes)}
    coco = {"images": [], "annotations": [], "categories": [{"id": i, "name": c} for c, i in cats.items()]}
    rows = [["Label", "X_Max", "Y_Min", "Image", "X_Min", "Y_Max"]]  # other names, other order
    for i, it in enumerate(voc.items):
        coco["images"].append({"id": i, "file_name": it.image.name, "width": 0, "height": 0})
        for (x0, y0, x1, y1), lab in zip(it.boxes.tolist(), it.labels):
            coco["annotations"].append(
                {
                    "id": len(coco["annotations"]),
                    "image_id": i,
                    "category_id": cats[lab],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "iscrowd": 0,
                }
            )
            rows.append([lab, x1, y0, it.image.name, x0, y1])
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    with open(tmp_path / "boxes.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    expected = _by_image(voc)
    for adapter, file in (("coco", "coco.json"), ("csvboxes", "boxes.csv")):
        got = _by_image(load_detection_data(neon, adapter, options={"annotations": [str(tmp_path / file)]}))
        assert set(got) == set(expected)
        for name in got:
            np.testing.assert_allclose(got[name][0], expected[name][0])
            assert got[name][1] == expected[name][1]
    rows[0][1] = "width"
    with open(tmp_path / "bad.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(DataError, match=r"bad\.csv: no column for xmax"):
        load_detection_data(neon, "csvboxes", options={"annotations": [str(tmp_path / "bad.csv")]})


def _edit_first_box(xml: Path, **coords: int) -> None:
    text = xml.read_text()
    for key, value in coords.items():
        start = text.index(f"<{key}>")
        end = text.index(f"</{key}>", start)
        text = text[:start] + f"<{key}>{value}" + text[end:]
    xml.write_text(text)


def test_bad_annotations_give_errors_naming_the_file(neon2: Path, tmp_path_factory):
    xml = neon2 / "annotations" / "OSBS_029.xml"
    _edit_first_box(xml, xmax=401)  # the image is 400 px wide
    data = load_detection_data(neon2, "voc")
    with pytest.raises(DataError, match="lies outside image OSBS_029.tif") as err:
        data.read([it.image.name for it in data.items].index("OSBS_029.tif"))
    assert str(xml) in str(err.value) and "\n" not in str(err.value)
    _edit_first_box(xml, xmin=50, xmax=40)
    data = load_detection_data(neon2, "voc")
    with pytest.raises(DataError, match=f"{xml}: box 0 .* is degenerate"):
        data.read([it.image.name for it in data.items].index("OSBS_029.tif"))
    with pytest.raises(DataError, match=r"SOAP_061\.xml: unknown class 'Alive'"):
        load_detection_data(neon2, "voc", classes=["Tree", "Dead"])
    empty = tmp_path_factory.mktemp("empty")
    (empty / "images").mkdir()
    (empty / "annotations").mkdir()
    with pytest.raises(DataError, match=f"no annotation files .* in {empty / 'annotations'}"):
        load_detection_data(empty)
    with pytest.raises(ConfigError, match="adapter"):
        load_detection_data(neon2, "yolo")


def test_tiling_and_merging_round_trip_real_boxes(neon: Path):
    data = load_detection_data(neon, "voc")
    i = [it.image.name for it in data.items].index("2019_YELL_2_528000_4978000_image_crop2.png")
    boxes, height, width = data.items[i].boxes, 2472, 2299
    size = 256
    windows = grid_windows(height, width, size, overlap_stride(size))
    cover = np.zeros((height, width), dtype=bool)
    for w in windows:
        cover[w.row : w.row + w.height, w.col : w.col + w.width] = True
    assert cover.all()
    # A perfect detector sees every crown that lies wholly inside a tile, in tile coordinates.
    tiles, seen = [], np.zeros(len(boxes), dtype=bool)
    for w in windows:
        inside = (
            (boxes[:, 0] >= w.col)
            & (boxes[:, 2] <= w.col + w.width)
            & (boxes[:, 1] >= w.row)
            & (boxes[:, 3] <= w.row + w.height)
        )
        seen |= inside
        local = torch.from_numpy(boxes[inside] - np.array([w.col, w.row, w.col, w.row], dtype=np.float32))
        tiles.append((w, local, torch.ones(len(local)), torch.ones(len(local), dtype=torch.int64)))
    merged, _, _ = merge_tile_detections(tiles)
    assert seen.mean() > 0.95  # the chip overlap keeps crowns whole somewhere
    got = sorted(map(tuple, merged.numpy().round(3).tolist()))
    assert got == sorted(map(tuple, boxes[seen].round(3).tolist()))  # each crown once, in place
    # Clipping: a box half outside a window keeps its inside part; a sliver is dropped.
    b, lab = clip_boxes(
        np.array([[90, 10, 130, 30], [98, 40, 140, 60]], dtype=np.float32),
        np.array([3, 4]),
        ArrayWindow(0, 0, 100, 100),
    )
    np.testing.assert_array_equal(b, [[90, 10, 100, 30]])
    assert lab.tolist() == [3]


def test_dihedral_boxes_follow_the_image():
    box = torch.tensor([[5.0, 2.0, 12.0, 30.0]])
    mask = torch.zeros(40, 60)  # not square: rotations swap height and width
    mask[2:30, 5:12] = 1
    for k in range(4):
        for flip in (False, True):
            m = dihedral(mask, k, flip)
            rows, cols = torch.nonzero(m, as_tuple=True)
            expected = [cols.min().item(), rows.min().item(), cols.max().item() + 1, rows.max().item() + 1]
            assert dihedral_boxes(box, k, flip, 40, 60)[0].tolist() == expected, (k, flip)


def test_detection_metrics_against_hand_values():
    def metrics(preds, targets):
        return detection_metrics(match_detections(preds, targets))

    gt = [{"boxes": torch.tensor([[0.0, 0.0, 100.0, 100.0]]), "labels": torch.tensor([1])}]
    perfect = [{"boxes": gt[0]["boxes"], "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}]
    assert metrics(perfect, gt) == {
        "map_50_95": pytest.approx(1.0),
        "ap50": pytest.approx(1.0),
        "ap75": pytest.approx(1.0),
        "map_50_95_maxdet1000": pytest.approx(1.0),
    }
    # IoU 0.72 passes the thresholds .50-.70 (5 of 10): mAP@[.5:.95] = 0.5, AP50 = 1, AP75 = 0.
    shifted = [
        {"boxes": torch.tensor([[0.0, 0.0, 100.0, 72.0]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}
    ]
    assert metrics(shifted, gt) == {
        "map_50_95": pytest.approx(0.5),
        "ap50": pytest.approx(1.0),
        "ap75": pytest.approx(0.0),
        "map_50_95_maxdet1000": pytest.approx(0.5),
    }
    wrong_class = [{**shifted[0], "labels": torch.tensor([2])}]
    assert metrics(wrong_class, gt)["ap50"] == pytest.approx(0.0)


def test_headline_caps_at_100_detections_per_image():
    # 150 true boxes on one image, each found once: COCO's cap of 100 detections bounds recall at 100/150.
    boxes = torch.tensor([[i * 10.0, 0.0, i * 10.0 + 8, 8.0] for i in range(150)])
    gt = [{"boxes": boxes, "labels": torch.ones(150, dtype=torch.long)}]
    preds = [{"boxes": boxes, "scores": torch.linspace(0.99, 0.5, 150), "labels": torch.ones(150, dtype=torch.long)}]
    m = metrics_of(preds, gt)
    assert m["map_50_95_maxdet1000"] == pytest.approx(1.0)
    assert m["map_50_95"] == pytest.approx(101 / 101 * 67 / 101, abs=0.01)  # precision 1 up to recall 2/3


def metrics_of(preds, targets):
    return detection_metrics(match_detections(preds, targets))


def test_frozen_faster_rcnn_short_run(neon2: Path, tmp_path: Path):
    cfg = EvaluateConfig(
        task="detection",
        data=neon2,
        out=tmp_path / "out",
        init="random",
        image_size=128,
        seeds=[0],
        protocol=["frozen"],
        epochs=1,
        batch_size=8,
        lr=1e-3,
        options={"single_class": "Tree"},
        metric="ap50",
    )
    rows = evaluate(cfg, console=quiet())
    assert {r["metric"] for r in rows} == {"map_50_95", "ap50", "ap75", "map_50_95_maxdet1000"}
    assert [r["headline"] for r in rows] == [r["metric"] == "ap50" for r in rows]
    for r in rows:
        assert 0 <= r["value"] <= 1
        assert r["n_train"] == 1 and r["n_test"] == 1 and r["num_classes"] == 1
        assert r["hparams"]["chips"] == 16 and r["hparams"]["train_boxes"] > 30
        assert math.isfinite(r["hparams"]["final_loss"]) and r["hparams"]["steps"] == 2
    # AP recomputed from the saved per-image COCO matches equals the row's (headline at 100 detections).
    from rsbench.report.recompute import metric_on_examples

    for r in rows:
        if r["metric"] in ("map_50_95", "ap50"):
            assert metric_on_examples(r["predictions_path"], r["metric"]).point() == pytest.approx(r["value"], abs=1e-6)
    state = torch.load(rows[0]["probe_path"], weights_only=True)["state_dict"]
    assert any(k.startswith("backbone.fpn.") for k in state)
    assert not any(k.startswith("backbone.body.backbone.") for k in state)  # frozen: the init's weights


def test_example_task_spec_indexes_neon(shared_data: Path, monkeypatch):
    from rsbench.evaluate.detection import _data

    monkeypatch.setenv("RSBENCH_SHARED_DATA", str(shared_data))
    cfg = EvaluateConfig(task_spec=REPO / "examples" / "tasks" / "neon.yaml", init="random", protocol=["frozen"])
    data = _data(cfg, cfg.data)
    assert cfg.task == "detection" and data.classes == ["Tree"] and len(data.items) == 3
    image, boxes, labels = data.read(1)
    assert image.shape[0] == 3 and len(boxes) == len(labels) == 61
