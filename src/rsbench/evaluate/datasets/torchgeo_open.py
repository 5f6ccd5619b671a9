"""Open a torchgeo NonGeo dataset class from a local root, never downloading, with one-line errors.

Shared by the `torchgeo` adapters of classification (rsbench.evaluate.cls_data) and segmentation
(rsbench.evaluate.datasets.torchgeo_seg). `download=False` is passed to every class that has the argument
(some, such as So2Sat and DeepGlobeLandCover, cannot download at all) and `checksum=False` unless the
options set it. A dataset that is not where it should be is a `DataError` naming the folder and the files
torchgeo's class looks for there; a bad option is a `ConfigError` naming it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rsbench.errors import ConfigError, DataError
from rsbench.models.torchgeo_weights import import_torchgeo

# Arguments the adapters set themselves: never options.
RESERVED = ("root", "split", "download", "transforms")


def _eurosat(cls, split: str, kw: dict) -> str:
    return (
        f"{cls.split_filenames[split]} and {cls.base_dir}/<class>/*.tif "
        f"(or {cls.filename}, which torchgeo extracts there)"
    )


def _imagefolder_zip(folder: str, split_file: str, ext: str, archive: str) -> str:
    return f"{split_file} and {folder}/<class>/*.{ext} (or {archive}, which torchgeo extracts there)"


def _bigearthnet(cls, split: str, kw: dict) -> str:
    bands = kw.get("bands", "all")
    keys = ["s1", "s2"] if bands == "all" else [bands]
    splits = ", ".join(m["filename"] for m in cls.splits_metadata.values())
    dirs = " and ".join(f"{cls.metadata[k]['directory']}/<patch>/ (or {cls.metadata[k]['filename']})" for k in keys)
    return f"{splits} (all three), {dirs}: one folder per patch with its band GeoTIFFs and labels_metadata.json"


def _so2sat(cls, split: str, kw: dict) -> str:
    version = str(kw.get("version", "2"))
    name = cls.filenames_by_version.get(version, {}).get(split, f"<{split} file of version {version}>")
    return f"{name} (HDF5 with datasets sen1, sen2 and label)"


def _loveda(cls, split: str, kw: dict) -> str:
    scenes = kw.get("scene", ["urban", "rural"])
    folders = " and ".join(f"{split.capitalize()}/{s.capitalize()}/" for s in scenes)
    masks = " and masks_png/*.png" if split != "test" else ""
    return f"{folders}, each with images_png/*.png{masks} (torchgeo reads {split.capitalize()}.zip only once extracted)"


def _deepglobe(cls, split: str, kw: dict) -> str:
    folder = "training_data" if split == "train" else "test_data"
    return (
        f"{cls.data_root}/{folder}/images/<id>_sat.jpg with {cls.data_root}/{folder}/masks/<id>_mask.png "
        f"(or {cls.filename}, which torchgeo extracts there)"
    )


# What each class reads from its root (from torchgeo 0.8's sources), by class name; subclasses inherit.
EXPECTS: dict[str, Callable[[type, str, dict], str]] = {
    "EuroSAT": _eurosat,
    "UCMerced": lambda cls, split, kw: _imagefolder_zip(cls.base_dir, cls.split_filenames[split], "tif", cls.filename),
    "RESISC45": lambda cls, split, kw: _imagefolder_zip(cls.directory, f"resisc45-{split}.txt", "jpg", cls.filename),
    "BigEarthNet": _bigearthnet,
    "So2Sat": _so2sat,
    "LoveDA": _loveda,
    "DeepGlobeLandCover": _deepglobe,
}


def torchgeo_expects(cls: type, split: str, kwargs: dict | None = None) -> str:
    """What torchgeo's `cls` looks for in its root for `split` (a phrase for error messages)."""
    for klass in cls.__mro__:
        describe = EXPECTS.get(klass.__name__)
        if describe is not None:
            try:
                return describe(cls, split, dict(kwargs or {}))
            except (KeyError, AttributeError, TypeError):
                break
    names = [getattr(cls, a) for a in ("filename", "directory", "base_dir", "data_root")]
    names = [n for n in names if isinstance(n, str)]
    found = f" ({', '.join(dict.fromkeys(names))})" if names else ""
    return f"the files of torchgeo's {cls.__name__} for split {split}{found}, as its documentation describes"


def torchgeo_class(name: Any) -> type:
    """The torchgeo NonGeo dataset class named `name` (ConfigError if there is none)."""
    if not name:
        raise ConfigError("adapter 'torchgeo' needs options.dataset (a torchgeo dataset class, e.g. EuroSAT)")
    datasets = import_torchgeo("torchgeo.datasets")
    cls = getattr(datasets, str(name), None)
    if not isinstance(cls, type):
        raise ConfigError(f"invalid key 'options.dataset': torchgeo has no dataset '{name}'")
    if not issubclass(cls, datasets.NonGeoDataset):
        raise ConfigError(
            f"invalid key 'options.dataset': torchgeo's {name} is not a NonGeo dataset (image chips read from "
            f"a root folder); adapter 'torchgeo' reads only those"
        )
    return cls


def open_torchgeo(name: Any, root: Path, split: str, options: dict[str, Any]) -> Any:
    """An instance of torchgeo's dataset class `name` for `split`, read from `root` (never downloaded).
    `options` are the class's other keyword arguments (bands, version, scene, checksum, ...)."""
    cls = torchgeo_class(name)
    datasets = import_torchgeo("torchgeo.datasets")
    params = inspect.signature(cls.__init__).parameters
    for key in options:
        if key in RESERVED or key not in params:
            takes = ", ".join(
                p for p in params if p not in ("self", *RESERVED) and params[p].kind.name != "VAR_KEYWORD"
            )
            raise ConfigError(
                f"invalid key 'options.{key}' for adapter 'torchgeo': torchgeo's {name} takes "
                f"{takes or 'no other options'}"
            )
    if "root" not in params:
        raise ConfigError(f"torchgeo dataset {name} is not read from a root folder; adapter 'torchgeo' cannot read it")
    if "split" not in params:
        raise ConfigError(
            f"torchgeo dataset {name} has no train/test splits (no 'split' argument); adapter 'torchgeo' "
            f"needs a dataset with official splits"
        )
    splits = getattr(cls, "splits", None)
    if isinstance(splits, (tuple, list)) and splits and split not in splits:
        raise ConfigError(f"invalid split '{split}' for torchgeo dataset {name} (splits: {', '.join(splits)})")
    kwargs: dict[str, Any] = {"root": str(root), "split": split, **options}
    if "download" in params:
        kwargs["download"] = False
    if "checksum" in params:
        kwargs.setdefault("checksum", False)
    expects = torchgeo_expects(cls, split, options)
    if not root.is_dir():
        raise DataError(f"torchgeo dataset root not found: {root} (torchgeo's {name} expects {expects})")
    try:
        return cls(**kwargs)
    except datasets.DatasetNotFoundError:
        raise DataError(f"torchgeo dataset {name} (split {split}) not found in {root}: expected {expects}") from None
    except datasets.DependencyNotFoundError as e:
        raise ConfigError(f"torchgeo dataset {name} needs a package that is not installed: {e}") from None
    except (OSError, RuntimeError) as e:  # a missing split file, an empty class folder, a corrupt archive
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(
            f"torchgeo dataset {name} (split {split}) cannot be read from {root} ({detail}); expected {expects}"
        ) from None
    except (TypeError, AssertionError, ValueError, KeyError) as e:
        shown = {k: v for k, v in kwargs.items() if k not in ("root", "download")}
        raise ConfigError(
            f"torchgeo dataset {name} rejected options {shown}: {e or 'an assertion on its arguments failed'}"
        ) from None
