"""The torchgeo suites (torchgeo-classification, torchgeo-segmentation) on tiny fake roots.

Each dataset folder is laid out the way torchgeo's own test fixtures (torchgeo/tests/data/<dataset>/) lay
it out, written here by small generators: a few tiny images per class and split. Every task of both suites
loads through rsbench's `torchgeo` adapters; nothing is downloaded (the adapters pass download=False).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.transform import from_origin
from rich.console import Console

from rsbench.contracts.evaluate_config import EvaluateConfig
from rsbench.errors import ConfigError, DataError
from rsbench.evaluate import evaluate
from rsbench.evaluate.cls_data import load_classification
from rsbench.evaluate.datasets import load_segmentation_data
from rsbench.suites import load_suite

try:
    import h5py
except ImportError:  # torchgeo's So2Sat reads HDF5 through h5py
    h5py = None

CLS, SEG = "torchgeo-classification", "torchgeo-segmentation"
RNG = np.random.default_rng(0)

# ---------------------------------------------------------------- fake roots, torchgeo's fixture layouts


def _tif(path: Path, array: np.ndarray) -> None:
    """A GeoTIFF of a C x H x W array (torchgeo's NonGeo classes ignore where it lies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    c, h, w = array.shape
    geo = {"crs": "EPSG:32632", "transform": from_origin(500000, 5000000, 10, 10)}
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=c, dtype=array.dtype, **geo) as dst:
        dst.write(array)


def _rgb(path: Path, size: int = 8, array: np.ndarray | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = array if array is not None else RNG.integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _lines(path: Path, names: list[str]) -> None:
    path.write_text("".join(f"{n}\n" for n in names))


# Per split, images per class (train, val, test) of the ImageFolder-style classification datasets.
PER_CLASS = {"train": 3, "val": 1, "test": 2}


def make_eurosat(root: Path) -> None:
    """ds/images/remote_sensing/otherDatasets/sentinel_2/tif/<Class>/<Class>_<i>.tif (13 bands) and
    eurosat-{train,val,test}.txt listing .jpg names, as torchgeo's split files do."""
    tif = root / "ds" / "images" / "remote_sensing" / "otherDatasets" / "sentinel_2" / "tif"
    splits: dict[str, list[str]] = {s: [] for s in PER_CLASS}
    for cls in ("AnnualCrop", "Forest"):
        i = 0
        for split, n in PER_CLASS.items():
            for _ in range(n):
                i += 1
                _tif(tif / cls / f"{cls}_{i}.tif", RNG.integers(0, 3000, (13, 16, 16), dtype=np.uint16))
                splits[split].append(f"{cls}_{i}.jpg")
    for split, names in splits.items():
        _lines(root / f"eurosat-{split}.txt", names)


def make_resisc45(root: Path) -> None:
    """NWPU-RESISC45/<class>/<class>_NNN.jpg and resisc45-{train,val,test}.txt."""
    splits: dict[str, list[str]] = {s: [] for s in PER_CLASS}
    for cls in ("airplane", "airport", "baseball_diamond"):
        i = 0
        for split, n in PER_CLASS.items():
            for _ in range(n):
                i += 1
                _rgb(root / "NWPU-RESISC45" / cls / f"{cls}_{i:03d}.jpg")
                splits[split].append(f"{cls}_{i:03d}.jpg")
    for split, names in splits.items():
        _lines(root / f"resisc45-{split}.txt", names)


def make_ucmerced(root: Path) -> None:
    """UCMerced_LandUse/Images/<class>/<class>NN.tif (RGB) and uc_merced-{train,val,test}.txt."""
    splits: dict[str, list[str]] = {s: [] for s in PER_CLASS}
    for cls in ("agricultural", "airplane"):
        i = 0
        for split, n in PER_CLASS.items():
            for _ in range(n):
                _rgb(root / "UCMerced_LandUse" / "Images" / cls / f"{cls}{i:02d}.tif")
                splits[split].append(f"{cls}{i:02d}.tif")
                i += 1
    for split, names in splits.items():
        _lines(root / f"uc_merced-{split}.txt", names)


S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B11", "B12", "B8A")
BEN_LABELS = [  # BigEarthNet's 43-class names, each of which has a 19-class counterpart
    ["Non-irrigated arable land", "Broad-leaved forest", "Water courses"],
    ["Coniferous forest", "Pastures"],
    ["Sea and ocean"],
    ["Discontinuous urban fabric", "Mixed forest"],
    ["Non-irrigated arable land", "Pastures"],
    ["Broad-leaved forest"],
]
BEN_SPLITS = {"train": [0, 1, 2], "val": [3], "test": [4, 5]}


def make_bigearthnet(root: Path) -> None:
    """v1: BigEarthNet-v1.0/<S2 patch>/<patch>_<band>.tif + <patch>_labels_metadata.json, the same for
    Sentinel-1 under BigEarthNet-S1-v1.0/, and bigearthnet-{train,val,test}.csv pairing S2 with S1 patches."""
    rows = {}
    for i, labels in enumerate(BEN_LABELS):
        s2, s1 = f"S2A_MSIL2A_20170613T101031_61_{39 + i}", f"S1A_IW_GRDH_1SDV_20170613T165043_33UUP_61_{39 + i}"
        meta = json.dumps({"labels": labels, "coordinates": {}, "projection": "", "acquisition_date": ""})
        for band in S2_BANDS:
            size = {"B01": 2, "B09": 2, "B02": 6, "B03": 6, "B04": 6, "B08": 6}.get(band, 3)  # 60, 10, 20 m
            _tif(root / "BigEarthNet-v1.0" / s2 / f"{s2}_{band}.tif", RNG.integers(0, 4000, (1, size, size), np.uint16))
        (root / "BigEarthNet-v1.0" / s2 / f"{s2}_labels_metadata.json").write_text(meta)
        for pol in ("VH", "VV"):
            _tif(root / "BigEarthNet-S1-v1.0" / s1 / f"{s1}_{pol}.tif", RNG.normal(size=(1, 6, 6)).astype(np.float32))
        (root / "BigEarthNet-S1-v1.0" / s1 / f"{s1}_labels_metadata.json").write_text(meta)
        rows[i] = f"{s2},{s1}"
    for split, ids in BEN_SPLITS.items():
        _lines(root / f"bigearthnet-{split}.csv", [rows[i] for i in ids])


SO2SAT_N = {"training": 4, "validation": 1, "testing": 3}


def make_so2sat(root: Path) -> None:
    """Version 2: training.h5, validation.h5, testing.h5 with sen1 (N x H x W x 8), sen2 (N x H x W x 10)
    and one-hot label (N x 17); version 3 folders (random/, block/, culture_10/) are not used."""
    if h5py is None:
        return
    for split, n in SO2SAT_N.items():
        with h5py.File(root / f"{split}.h5", "w") as f:
            f.create_dataset("label", data=np.eye(17, dtype=np.float64)[RNG.integers(0, 17, n)])
            f.create_dataset("sen1", data=RNG.normal(size=(n, 8, 8, 8)))
            f.create_dataset("sen2", data=RNG.random((n, 8, 8, 10)))


LOVEDA_N = {"Train": 2, "Val": 1, "Test": 1}  # per scene (Urban, Rural)


def make_loveda(root: Path) -> None:
    """{Train,Val,Test}/{Urban,Rural}/images_png/<n>.png and masks_png/<n>.png (no masks for Test); mask
    values 0 (no-data) to 7."""
    for split, n in LOVEDA_N.items():
        for scene in ("Urban", "Rural"):
            for i in range(n):
                _rgb(root / split / scene / "images_png" / f"{i + 1:02d}.png", 32)
                if split != "Test":
                    (root / split / scene / "masks_png").mkdir(parents=True, exist_ok=True)
                    mask = RNG.integers(0, 8, (32, 32), dtype=np.uint8)
                    Image.fromarray(mask).save(root / split / scene / "masks_png" / f"{i + 1:02d}.png")


DEEPGLOBE_COLORS = [(0, 255, 255), (255, 255, 0), (255, 0, 255), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)]


def make_deepglobe(root: Path) -> None:
    """data/training_data/{images/<id>_sat.jpg, masks/<id>_mask.png} (ids 1-3) and data/test_data/... (ids 8-10),
    masks RGB-coded with torchgeo's DeepGlobeLandCover colormap (black: Unknown)."""
    for folder, ids in (("training_data", (1, 2, 3)), ("test_data", (8, 9, 10))):
        for i in ids:
            _rgb(root / "data" / folder / "images" / f"{i}_sat.jpg", 32)
            colors = np.asarray(DEEPGLOBE_COLORS, dtype=np.uint8)[RNG.integers(0, 7, (32, 32))]
            _rgb(root / "data" / folder / "masks" / f"{i}_mask.png", array=colors)


MAKERS = {
    "eurosat": make_eurosat,
    "resisc45": make_resisc45,
    "ucmerced": make_ucmerced,
    "bigearthnet": make_bigearthnet,
    "so2sat": make_so2sat,
    "loveda": make_loveda,
    "deepglobe_landcover": make_deepglobe,
}


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("torchgeo_data")
    for folder, make in MAKERS.items():
        (root / folder).mkdir()
        make(root / folder)
    return root


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def _config(entry: dict, **kw) -> EvaluateConfig:
    options = {k: v for k, v in entry.items() if k not in ("name", "protocols", "fractions")}
    return EvaluateConfig(**{"init": "random", "dataset_name": entry["name"], **options, **kw})


def _entries(suite: str, root: Path) -> dict[str, dict]:
    return {e["name"]: e for e in load_suite(suite, root=root).task_entries()}


# ---------------------------------------------------------------- the suites on the fake roots

# name -> (train pool, test set, classes, bands, multi-label)
CLASSIFICATION = {
    "eurosat_ms": (6, 4, 2, 13, False),
    "eurosat_ms_rgb": (6, 4, 2, 3, False),
    "bigearthnet_s2": (3, 2, 19, 12, True),
    "so2sat_s2": (4, 3, 17, 10, False),
    "resisc45": (9, 6, 3, 3, False),
    "ucmerced": (6, 4, 2, 3, False),
}
# name -> (train images, test images, classes, bands)
SEGMENTATION = {"loveda": (4, 2, 7, 3), "deepglobe_landcover": (3, 3, 6, 3)}


def test_suites_cover_every_dataset_and_find_it(fake_root: Path):
    cls, seg = load_suite(CLS, root=fake_root), load_suite(SEG, root=fake_root)
    assert [t.name for t in cls.tasks] == list(CLASSIFICATION)
    assert [t.name for t in seg.tasks] == list(SEGMENTATION)
    assert cls.missing() == [] and seg.missing() == []
    for task in cls.tasks + seg.tasks:
        assert task.adapter == "torchgeo" and task.options.get("checksum") is False
        assert task.bands and task.metric and task.protocols and "download" not in task.options
        assert len(task.bands) == CLASSIFICATION.get(task.name, SEGMENTATION.get(task.name))[3]
    assert {tuple(t.protocols) for t in cls.tasks} == {("knn", "linear")}
    assert {tuple(t.protocols) for t in seg.tasks} == {("frozen", "finetune")}
    assert {t.metric for t in seg.tasks} == {"miou"}
    assert next(t for t in cls.tasks if t.name == "bigearthnet_s2").metric == "map"


@pytest.mark.parametrize("name", list(CLASSIFICATION))
def test_classification_task_loads_through_the_adapter(fake_root: Path, name: str):
    if name == "so2sat_s2" and h5py is None:
        pytest.skip("h5py is not installed (torchgeo's So2Sat needs it)")
    n_pool, n_test, n_classes, n_bands, multilabel = CLASSIFICATION[name]
    cfg = _config(_entries(CLS, fake_root)[name])
    data = load_classification(cfg)
    assert (data.n_pool, len(data.images) - data.n_pool) == (n_pool, n_test)
    assert len(data.classes) == n_classes and data.multilabel == multilabel and data.name == name
    assert data.labels.shape == ((n_pool + n_test, n_classes) if multilabel else (n_pool + n_test,))
    assert data.images.read(0).shape[0] == n_bands == len(cfg.bands)
    assert data.images.read(n_pool).shape[0] == n_bands  # a test-split sample
    if name.startswith("eurosat"):
        assert data.classes == ["AnnualCrop", "Forest"] and data.band_names == cfg.bands
    if name == "bigearthnet_s2":
        assert data.classes[0] == "Urban fabric" and data.labels.sum(1).min() >= 1
        assert data.band_names is None  # torchgeo's `bands` is the band-set key 's2': the suite names them


def _seg_data(entry: dict, test: bool):
    return load_segmentation_data(
        Path(entry["test_data" if test else "data"]),
        entry["adapter"],
        entry.get("classes"),
        entry.get("options"),
        entry["name"],
        test=test,
    )


@pytest.mark.parametrize("name", list(SEGMENTATION))
def test_segmentation_task_loads_through_the_adapter(fake_root: Path, name: str):
    n_train, n_test, n_classes, n_bands = SEGMENTATION[name]
    entry = _entries(SEG, fake_root)[name]
    assert entry["test_data"] == entry["data"]  # a fixed test set: the class's test split
    train, test = _seg_data(entry, test=False), _seg_data(entry, test=True)
    assert (len(train.pairs), len(test.pairs)) == (n_train, n_test)
    assert train.classes == test.classes == entry["classes"] and len(train.classes) == n_classes
    assert {Path(p[0]) for p in train.pairs}.isdisjoint(Path(p[0]) for p in test.pairs)
    image, mask = train.read(0)
    assert image.shape == (n_bands, 32, 32) and image.dtype == np.uint8 and mask.shape == (32, 32)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {*range(n_classes), train.ignore_index}
    assert train.ignore_index in mask  # LoveDA's 0 (no-data) and DeepGlobe's Unknown are ignored


def test_loveda_masks_map_values_to_classes(fake_root: Path):
    train = _seg_data(_entries(SEG, fake_root)["loveda"], test=False)
    _, mask = train.read(1)
    raw = np.asarray(Image.open(train.pairs[1][1]))
    np.testing.assert_array_equal(mask, np.where(raw == 0, 255, raw.astype(np.int64) - 1))


def test_classification_suite_runs_end_to_end(fake_root: Path, tmp_path: Path):
    entry = _entries(CLS, fake_root)["eurosat_ms"]
    cfg = _config(entry, protocol=["knn"], image_size=32, seeds=[0], out=tmp_path, batch_size=8)
    rows = evaluate(cfg, console=quiet())
    assert rows and {r["dataset"] for r in rows} == {"eurosat_ms"}
    accuracy = next(r for r in rows if r["metric"] == "accuracy")
    assert (accuracy["n_train"], accuracy["n_test"]) == (6, 4) and 0 <= accuracy["value"] <= 1
    assert accuracy["split"] == "fixed (torchgeo test split)"


def test_segmentation_suite_runs_end_to_end(fake_root: Path, tmp_path: Path):
    entry = _entries(SEG, fake_root)["loveda"]
    cfg = _config(entry, protocol=["frozen"], image_size=32, seeds=[0], epochs=1, batch_size=4, out=tmp_path)
    rows = evaluate(cfg, console=quiet())
    miou = next(r for r in rows if r["metric"] == "miou")
    assert miou["dataset"] == "loveda" and 0 <= miou["value"] <= 1 and miou["headline"]
    assert (miou["n_train"], miou["n_test"]) == (4, 2) and miou["split"] == "fixed (--test-data)"


# ---------------------------------------------------------------- missing data: one line naming what belongs there

# Names torchgeo looks for in each dataset folder (from the classes' sources), per task.
EXPECTED_NAMES = {
    "eurosat_ms": ["eurosat-train.txt", "ds/images/remote_sensing/otherDatasets/sentinel_2/tif", "EuroSATallBands.zip"],
    "eurosat_ms_rgb": ["eurosat-train.txt", "EuroSATallBands.zip"],
    "bigearthnet_s2": ["bigearthnet-train.csv", "bigearthnet-test.csv", "BigEarthNet-v1.0/"],
    "so2sat_s2": ["training.h5"],
    "resisc45": ["resisc45-train.txt", "NWPU-RESISC45/", "NWPU-RESISC45.zip"],
    "ucmerced": ["uc_merced-train.txt", "UCMerced_LandUse/Images/", "UCMerced_LandUse.zip"],
    "loveda": ["masks_png", "Train/Urban/", "Train/Rural/"],
    "deepglobe_landcover": ["data/training_data/", "_sat.jpg", "_mask.png", "data.zip"],
}


def test_empty_root_names_each_folder_and_what_torchgeo_expects(tmp_path: Path):
    for suite_name in (CLS, SEG):
        suite = load_suite(suite_name, root=tmp_path)
        lines = list(dict.fromkeys(suite.missing()))  # a task whose test_data is its data folder: one line
        assert len(lines) == len(suite.tasks)
        for task, line in zip(suite.tasks, lines):
            assert "\n" not in line and str(task.data) in line and task.expects in line
            assert all(n in line for n in EXPECTED_NAMES[task.name][:1])


@pytest.mark.parametrize("name", list(CLASSIFICATION) + list(SEGMENTATION))
def test_empty_dataset_folder_is_one_data_error_naming_what_torchgeo_expects(tmp_path: Path, name: str):
    if name == "so2sat_s2" and h5py is None:
        pytest.skip("h5py is not installed (torchgeo's So2Sat needs it)")
    entries = {**_entries(CLS, tmp_path), **_entries(SEG, tmp_path)}
    entry = entries[name]
    Path(entry["data"]).mkdir()
    with pytest.raises(DataError) as err:
        if entry["task"] == "classification":
            load_classification(_config(entry))
        else:
            _seg_data(entry, test=False)
    message = str(err.value)
    assert "\n" not in message and entry["data"] in message and "download=True" not in message
    for expected in EXPECTED_NAMES[name]:
        assert expected in message, message


def test_adapter_options_are_checked(fake_root: Path):
    entry = _entries(CLS, fake_root)["eurosat_ms"]
    with pytest.raises(ConfigError, match="invalid key 'options.bandz'.*EuroSAT takes bands, checksum"):
        load_classification(_config(entry, options={**entry["options"], "bandz": ["B04"]}))
    with pytest.raises(ConfigError, match="invalid split 'valid' for torchgeo dataset EuroSAT"):
        load_classification(_config(entry, options={**entry["options"], "test_split": "valid"}))
    with pytest.raises(ConfigError, match="torchgeo has no dataset 'EuroSet'"):
        load_classification(_config(entry, options={"dataset": "EuroSet"}))
    seg = _entries(SEG, fake_root)["loveda"]
    with pytest.raises(ConfigError, match="invalid key 'options.scenes'"):
        _seg_data({**seg, "options": {**seg["options"], "scenes": ["urban"]}}, test=False)
    with pytest.raises(ConfigError, match="options.class_values.*6 value"):
        _seg_data({**seg, "options": {**seg["options"], "class_values": [1, 2, 3, 4, 5, 6]}}, test=False)
    # LoveDA's test split has no masks: reading it is a one-line DataError, not a KeyError.
    unlabelled = _seg_data({**seg, "options": {**seg["options"], "test_split": "test"}}, test=True)
    with pytest.raises(DataError, match="LoveDA has no masks in split test"):
        unlabelled.read(0)
    # A mask value that is neither a class nor ignored is named.
    strict = _seg_data({**seg, "options": {**seg["options"], "ignore_values": []}}, test=False)
    with pytest.raises(DataError, match=r"mask value\(s\) 0 are neither class values"):
        strict.read(0)
