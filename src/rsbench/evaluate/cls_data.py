"""Classification dataset adapters: ImageFolder, CSV (single- or multi-label), torchgeo datasets by name.

Each adapter turns one source (`--data`, and `--test-data` when given) into images + labels + class
names; `load_classification` joins train pool and fixed test set and checks that their classes agree.
Single-label labels are class indices (N,); multi-label labels are multi-hot (N, C).
"""

from __future__ import annotations

import csv
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rsbench.contracts.evaluate_config import EvaluateConfig
from rsbench.data.images import index_image_folder
from rsbench.errors import ConfigError, DataError
from rsbench.evaluate.datasets.torchgeo_open import open_torchgeo
from rsbench.evaluate.images import FileImages, ImageSource, TorchgeoImages

PATH_COLUMNS = ("path", "image", "image_path", "file", "filename")
LABEL_COLUMNS = ("label", "class", "category")
MULTILABEL_COLUMNS = ("labels",)
MULTILABEL_SEPARATOR = ";"


@dataclass
class Labelled:
    images: ImageSource
    labels: np.ndarray
    classes: list[str]
    multilabel: bool
    band_names: list[str] | None = None


@dataclass
class ClassificationData:
    name: str  # `dataset` in result rows
    images: ImageSource  # the train pool, then the fixed test set (if any)
    labels: np.ndarray
    classes: list[str]
    multilabel: bool
    n_pool: int
    adapter: str
    band_names: list[str] | None = None  # when the source knows them (torchgeo datasets, GeoTIFF descriptions)

    @property
    def has_test(self) -> bool:
        return self.n_pool < len(self.images)


def geotiff_band_names(paths: list[Path]) -> list[str] | None:
    """The band descriptions of GeoTIFFs (rasterio `descriptions`, e.g. 'B4_red'), when every file is a
    GeoTIFF, every band has one and they are the same in every file; else None."""
    if not paths or any(Path(p).suffix.lower() not in (".tif", ".tiff") for p in paths):
        return None
    import rasterio

    names: list[str] | None = None
    # Stops at the first file without descriptions, so ordinary data costs one open.
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"):
        for p in paths:
            try:
                with rasterio.open(p) as src:
                    found = [d.strip() if d else "" for d in src.descriptions]
            except Exception:  # an unreadable file is reported when it is read
                return None
            if not found or not all(found) or (names is not None and found != names):
                return None
            names = names or found
    return names


def _imagefolder(path: Path, classes: list[str] | None, cfg: EvaluateConfig) -> Labelled:
    index = index_image_folder(path)
    if classes is not None and list(index.classes) != list(classes):
        raise DataError(
            f"class folders of {path} ({', '.join(index.classes)}) differ from the classes {', '.join(classes)}"
        )
    return Labelled(FileImages(index.paths), index.labels, list(index.classes), False, geotiff_band_names(index.paths))


def _find_column(header: list[str], names: tuple[str, ...]) -> int | None:
    lowered = [h.strip().lower() for h in header]
    return next((lowered.index(n) for n in names if n in lowered), None)


def _csv(path: Path, classes: list[str] | None, cfg: EvaluateConfig) -> Labelled:
    """A CSV with a header: an image column and a `label` (one class) or `labels` ('a;b') column, found by name."""
    if not path.is_file():
        raise DataError(f"CSV file not found: {path}")
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise DataError(f"CSV file {path} is empty")
    header, body = rows[0], [r for r in rows[1:] if any(c.strip() for c in r)]
    path_col = _find_column(header, PATH_COLUMNS)
    multi_col, label_col = _find_column(header, MULTILABEL_COLUMNS), _find_column(header, LABEL_COLUMNS)
    if path_col is None or (multi_col is None and label_col is None):
        raise DataError(
            f"CSV file {path} needs an image column ({'/'.join(PATH_COLUMNS)}) and a label column "
            f"(label, or labels with '{MULTILABEL_SEPARATOR}'-separated names); header: {','.join(header)}"
        )
    if not body:
        raise DataError(f"CSV file {path} has a header but no rows")
    multilabel = multi_col is not None
    col = multi_col if multilabel else label_col
    paths, names = [], []
    for line, row in enumerate(body, start=2):
        if len(row) <= max(path_col, col):
            raise DataError(f"CSV file {path} line {line}: expected {len(header)} columns, got {len(row)}")
        image = path.parent / row[path_col].strip()
        if not image.is_file():
            raise DataError(f"CSV file {path} line {line}: image not found: {image}")
        value = row[col].strip()
        labels = [v.strip() for v in value.split(MULTILABEL_SEPARATOR) if v.strip()] if multilabel else [value]
        if not multilabel and not value:
            raise DataError(f"CSV file {path} line {line}: empty label")
        if classes is not None:
            unknown = [n for n in labels if n not in classes]
            if unknown:
                raise DataError(
                    f"CSV file {path} line {line}: unknown class '{unknown[0]}' (classes: {', '.join(classes)})"
                )
        paths.append(image)
        names.append(labels)
    classes = list(classes) if classes is not None else sorted({n for ns in names for n in ns})
    lookup = {c: i for i, c in enumerate(classes)}
    if multilabel:
        y = np.zeros((len(names), len(classes)), dtype=np.int64)
        for i, ns in enumerate(names):
            y[i, [lookup[n] for n in ns]] = 1
    else:
        y = np.asarray([lookup[ns[0]] for ns in names], dtype=np.int64)
    return Labelled(FileImages(paths), y, classes, multilabel, geotiff_band_names(paths))


def _torchgeo(path: Path, classes: list[str] | None, cfg: EvaluateConfig, split_key: str = "split") -> Labelled:
    """A torchgeo NonGeo classification dataset on disk: options {dataset: EuroSAT, split: train, ...}."""
    opts = dict(cfg.options)
    name = opts.pop("dataset", None)
    split = opts.pop(split_key, None) or ("test" if split_key == "test_split" else "train")
    opts.pop("test_split" if split_key == "split" else "split", None)
    # Never downloads: download=False where the class has it, checksum=False unless set (torchgeo_open).
    ds = open_torchgeo(name, path, split, opts)
    if len(ds) == 0:
        raise DataError(f"torchgeo dataset {name} (split {split}) in {path} has no samples")
    raw = _torchgeo_labels(ds)
    multilabel = raw.ndim == 2
    n_classes = raw.shape[1] if multilabel else int(raw.max()) + 1
    names = list(getattr(ds, "classes", None) or [])
    class_sets = getattr(ds, "class_sets", None)  # BigEarthNet: {19: [...], 43: [...]} by num_classes
    if not names and isinstance(class_sets, dict):
        names = list(class_sets.get(getattr(ds, "num_classes", None)) or [])
    # Single-label: a split may lack the last classes, so the names need only cover the labels seen.
    if (len(names) != n_classes) if multilabel else (len(names) < n_classes):
        names = [str(i) for i in range(n_classes)]
    if classes is not None and classes != names:
        raise DataError(f"torchgeo dataset {name} has classes {', '.join(names)}, not {', '.join(classes)}")
    identity = {"dataset": str(name), "root": str(path.resolve()), "split": split, "options": opts, "n": len(ds)}
    # `bands` is a list of band names for most classes, but a band-set key for some (BigEarthNet: 's2').
    found = getattr(ds, "bands", None)
    bands = [str(b) for b in found] if isinstance(found, (list, tuple)) and found else None
    return Labelled(TorchgeoImages(ds, identity), raw.astype(np.int64), names, multilabel, bands)


def _torchgeo_labels(ds) -> np.ndarray:
    """Every label, without decoding images where the class allows it."""
    targets = getattr(ds, "targets", None)  # ImageFolder-based classes (EuroSAT, RESISC45, UCMerced)
    if targets is not None:
        return np.asarray(targets)
    load_target = getattr(ds, "_load_target", None)  # BigEarthNet: reads only the patch's labels JSON
    if callable(load_target) and list(inspect.signature(load_target).parameters) == ["index"]:
        first = np.asarray(load_target(0))
        if np.array_equal(first, np.asarray(ds[0]["label"])):  # what the samples hold, not something else
            return np.stack([first, *(np.asarray(load_target(i)) for i in range(1, len(ds)))])
    return np.stack([np.asarray(ds[i]["label"]) for i in range(len(ds))])


def _torchgeo_test(path: Path, classes, cfg: EvaluateConfig) -> Labelled:
    return _torchgeo(path, classes, cfg, split_key="test_split")


ADAPTERS: dict[str, Callable[[Path, list[str] | None, EvaluateConfig], Labelled]] = {
    "imagefolder": _imagefolder,
    "csv": _csv,
    "torchgeo": _torchgeo,
}


def adapter_name(cfg: EvaluateConfig) -> str:
    if cfg.adapter is not None:
        if cfg.adapter not in ADAPTERS:
            raise ConfigError(
                f"unknown adapter '{cfg.adapter}' for task 'classification' (available: {', '.join(ADAPTERS)})"
            )
        return cfg.adapter
    return "csv" if cfg.data.suffix.lower() == ".csv" else "imagefolder"


def load_classification(cfg: EvaluateConfig) -> ClassificationData:
    adapter = adapter_name(cfg)
    if adapter != "torchgeo" and cfg.options:
        raise ConfigError(
            f"invalid config key 'options.{next(iter(cfg.options))}': adapter '{adapter}' takes no options"
        )
    pool = ADAPTERS[adapter](cfg.data, cfg.classes, cfg)
    test = None
    if adapter == "torchgeo" and cfg.test_data is None:
        test = _torchgeo_test(cfg.data, pool.classes, cfg)  # torchgeo datasets ship their own test split
    elif cfg.test_data is not None:
        loader = _torchgeo_test if adapter == "torchgeo" else ADAPTERS[adapter]
        try:
            test = loader(cfg.test_data, pool.classes, cfg)
        except DataError as e:
            raise DataError(f"{e} (test data must use the classes of {cfg.data})") from None
    if test is not None and (test.classes != pool.classes or test.multilabel != pool.multilabel):
        raise DataError(
            f"classes of {cfg.test_data or cfg.data} ({', '.join(test.classes)}) differ from "
            f"those of {cfg.data} ({', '.join(pool.classes)})"
        )
    images = pool.images + test.images if test is not None else pool.images
    labels = np.concatenate([pool.labels, test.labels]) if test is not None else pool.labels
    name = cfg.dataset_name or (cfg.data.stem if cfg.data.is_file() else cfg.data.resolve().name)
    return ClassificationData(
        name, images, labels, pool.classes, pool.multilabel, len(pool.images), adapter, pool.band_names
    )
