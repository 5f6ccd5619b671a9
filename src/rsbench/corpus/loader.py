"""Reading a built corpus: its metadata, its normalization, and a streaming torch dataset."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import IterableDataset

from rsbench.data.normalization import Normalization
from rsbench.errors import DataError
from rsbench.io import read_json

CORPUS_JSON = "corpus.json"


def read_corpus_info(corpus_dir: str | Path) -> dict[str, Any]:
    """corpus.json of a finished corpus; DataError when `corpus_dir` is not one."""
    marker = Path(corpus_dir) / CORPUS_JSON
    if not marker.is_file():
        raise DataError(f"{corpus_dir} is not an rsbench corpus (no {CORPUS_JSON}; build one with `rsbench corpus build`)")
    try:
        info = read_json(marker)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {marker}: {e}") from None
    if not isinstance(info, dict) or not {"band_groups", "shards", "settings"} <= info.keys():
        raise DataError(f"{marker} is not an rsbench corpus description (missing band_groups/shards/settings)")
    return info


def _band_group(info: dict[str, Any], corpus_dir: str | Path, bands: int | None) -> dict[str, Any]:
    groups = info["band_groups"]
    if not groups:
        raise DataError(f"corpus {corpus_dir} has no kept tiles")
    if bands is None:
        # Largest group; ties go to the smaller band count so the choice is stable.
        return max(groups.values(), key=lambda g: (g["tiles"], -g["bands"]))
    group = groups.get(str(bands))
    if group is None:
        have = ", ".join(f"{g['bands']} ({g['tiles']} tiles)" for g in groups.values())
        raise DataError(f"corpus {corpus_dir} has no {bands}-band tiles; band groups: {have}")
    return group


def corpus_normalization(corpus_dir: str | Path, bands: int) -> Normalization:
    """Per-band mean/std of the corpus's `bands`-band tiles (valid pixels only), in raw units."""
    group = _band_group(read_corpus_info(corpus_dir), corpus_dir, bands)
    stats = group["stats"]
    return Normalization(list(stats["mean"]), list(stats["std"]), source=f"corpus:{Path(corpus_dir).resolve()}")


def _decode(sample: dict[str, Any]) -> tuple[str, np.ndarray, dict[str, Any]]:
    array = np.load(io.BytesIO(sample["npy"]), allow_pickle=False)
    return sample["__key__"], array, json.loads(sample["json"])


class CorpusDataset(IterableDataset):
    """Streams one band group of a corpus as normalized float32 C x H x W tensors.

    Shards are split across ranks (RANK/WORLD_SIZE or torch.distributed) and then across
    DataLoader workers, so every sample is seen once per epoch by exactly one reader. With fewer
    shards than readers some readers get no data; build with a smaller --shard-size in that case.
    `num_samples` counts the whole group (all ranks together).

    Pixels that are nodata in every band (per the tile's recorded nodata value) are set to 0
    after normalization, i.e. to the band mean, so collars do not appear as extreme values.
    """

    def __init__(
        self,
        corpus_dir: str | Path,
        bands: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        shuffle_buffer: int = 1000,
        return_key: bool = False,
    ) -> None:
        super().__init__()
        self.corpus_dir = Path(corpus_dir)
        info = read_corpus_info(self.corpus_dir)
        group = _band_group(info, self.corpus_dir, bands)
        self.bands: int = group["bands"]
        self.num_samples: int = group["tiles"]
        self.band_names: list[str] = list(group["band_names"])
        self.normalization = Normalization(
            list(group["stats"]["mean"]), list(group["stats"]["std"]), source=f"corpus:{self.corpus_dir.resolve()}"
        )
        self.urls = [str(self.corpus_dir / name) for name in group["shards"]]
        self.shuffle = shuffle
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.return_key = return_key
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Vary the shuffle order per epoch (same seed and epoch -> same order on one reader)."""
        self.epoch = epoch

    def _to_tensor(self, key: str, array: np.ndarray, meta: dict[str, Any]):
        x = self.normalization(torch.from_numpy(array.astype(np.float32)))
        nodata = meta.get("nodata")
        if nodata is not None:
            raw_nodata = np.nan if nodata == "nan" else float(nodata)
            invalid = np.isnan(array).all(axis=0) if np.isnan(raw_nodata) else (array == raw_nodata).all(axis=0)
            if invalid.any():
                x[:, torch.from_numpy(invalid)] = 0.0
        return (key, x) if self.return_key else x

    def __iter__(self) -> Iterator[torch.Tensor] | Iterator[tuple[str, torch.Tensor]]:
        # The pipeline is built per iteration (inside the worker process), so the dataset object
        # itself stays a few plain fields and pickles cheaply for DataLoader workers.
        epoch_seed = self.seed * 1_000_003 + self.epoch
        ds = wds.WebDataset(
            self.urls,
            shardshuffle=len(self.urls) if self.shuffle else False,
            detshuffle=True,
            seed=epoch_seed,
            nodesplitter=wds.split_by_node,
            workersplitter=wds.split_by_worker,
            empty_check=False,
        )
        if self.shuffle and self.shuffle_buffer > 1:
            ds = ds.shuffle(self.shuffle_buffer, seed=epoch_seed)
        ds = ds.map(_decode).select(lambda s: s[1].ndim == 3 and s[1].shape[0] == self.bands)
        for key, array, meta in ds:
            yield self._to_tensor(key, array, meta)
