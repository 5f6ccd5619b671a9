"""Reading a built corpus: its metadata, its normalization, and a streaming torch dataset."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import IterableDataset

from rsbench.bands import pick_bands
from rsbench.contracts.corpus_info import CorpusInfo, choose_group
from rsbench.data.normalization import Normalization
from rsbench.errors import ConfigError, DataError


def read_corpus_info(corpus_dir: str | Path) -> dict[str, Any]:
    """corpus.json of a finished corpus; DataError when `corpus_dir` is not one."""
    return CorpusInfo(corpus_dir).read()


def _band_group(info: dict[str, Any], corpus_dir: str | Path, bands: Any) -> dict[str, Any]:
    """The group `bands` selects (count, names or key; None: the largest): see contracts.corpus_info.choose_group."""
    return choose_group(info, bands, where=f"corpus {corpus_dir}")


def corpus_normalization(corpus_dir: str | Path, bands: Any) -> Normalization:
    """Per-band mean/std of a band group's tiles (valid pixels only), in raw units; `bands` as in CorpusDataset."""
    group = _band_group(read_corpus_info(corpus_dir), corpus_dir, bands)
    stats = group["stats"]
    return Normalization(list(stats["mean"]), list(stats["std"]), source=f"corpus:{Path(corpus_dir).resolve()}")


def _decode(sample: dict[str, Any]) -> tuple[str, np.ndarray, dict[str, Any]]:
    meta = json.loads(sample["json"])
    blob = sample["npy"]
    # The builder's .npy is a header then C-order native-endian data whose shape and dtype the
    # sample's JSON states: view the tail directly (np.load parses the header with `ast`, which
    # costs more than the rest of the decode). Anything else goes through np.load.
    try:
        shape = (len(meta["band_names"]), meta["window"]["height"], meta["window"]["width"])
        dtype = np.dtype(meta["dtype"])
        nbytes = int(np.prod(shape)) * dtype.itemsize
        header = len(blob) - nbytes
        head = blob[:header] if header > 10 else b""
        if (
            not head.startswith(b"\x93NUMPY")
            or b"'fortran_order': False" not in head
            or f"'{dtype.str}'".encode() not in head
        ):
            raise ValueError("not the builder's layout")
        array = np.frombuffer(blob, dtype=dtype, offset=header).reshape(shape)
    except (KeyError, TypeError, ValueError):
        array = np.load(io.BytesIO(blob), allow_pickle=False)
    return sample["__key__"], array, meta


def _subset_indexes(subset: list[int | str], names: list[str], corpus_dir) -> list[int]:
    """0-based positions of a band subset given as 1-based indexes and/or band names (any spelling of
    rsbench.bands: 'B11_swir1' finds 'swir1')."""
    out = []
    for item in subset:
        if isinstance(item, str) and item.strip().isdigit():
            item = int(item)
        if isinstance(item, int):
            if not 1 <= item <= len(names):
                raise DataError(
                    f"band {item} is not in corpus {corpus_dir} (bands 1..{len(names)}: {', '.join(names)})"
                )
            out.append(item - 1)
            continue
        try:
            out.append(pick_bands([item], names, what=f"corpus {corpus_dir}")[0])
        except ConfigError:
            raise DataError(f"no band named '{item}' in corpus {corpus_dir} (bands: {', '.join(names)})") from None
    if not out:
        raise DataError("band_subset is empty")
    return out


class CorpusDataset(IterableDataset):
    """Streams one band group of a corpus as normalized float32 C x H x W tensors.

    `bands` picks the group: unset, the one with the most tiles; a band count; band names in order
    ("red,green,blue", any spelling of rsbench.bands); or a group key ("red,green,blue|uint8"). `group`
    describes it (key, band names, units, sensors, tiles), `tiles_in_corpus` counts every group's tiles.

    Shards are split across ranks (RANK/WORLD_SIZE or torch.distributed) and then across
    DataLoader workers, so every sample is seen once per epoch by exactly one reader. With fewer
    shards than readers some readers get no data; build with a smaller --shard-size in that case.
    `num_samples` counts the whole group (all ranks together).

    `band_subset` keeps some bands of the group, in the given order (1-based indexes or band names);
    `bands` and `normalization` then describe the subset. `clip=True` clips raw values to the
    group's 1st/99th percentiles before normalizing (tames saturated pixels and outliers).

    Pixels that are nodata in every band (per the tile's recorded fill value: the declared nodata or
    the implicit zero fill) are set to 0 after normalization, i.e. to the band mean, so collars do
    not appear as extreme values.
    """

    def __init__(
        self,
        corpus_dir: str | Path,
        bands: int | str | list[str] | None = None,
        shuffle: bool = True,
        seed: int = 0,
        shuffle_buffer: int = 1000,
        return_key: bool = False,
        band_subset: list[int | str] | None = None,
        clip: bool = False,
    ) -> None:
        super().__init__()
        self.corpus_dir = Path(corpus_dir)
        info = read_corpus_info(self.corpus_dir)
        group = _band_group(info, self.corpus_dir, bands)
        self.group: dict[str, Any] = {k: v for k, v in group.items() if k not in ("stats", "shards")}
        self.tiles_in_corpus: int = sum(g["tiles"] for g in info["band_groups"].values())
        stats = group["stats"]
        self.group_bands: int = group["bands"]
        names = list(group["band_names"])
        self.subset = _subset_indexes(band_subset, names, self.corpus_dir) if band_subset else None
        pick = self.subset if self.subset is not None else list(range(self.group_bands))
        self.bands: int = len(pick)
        self.band_names: list[str] = [names[i] for i in pick]
        self.num_samples: int = group["tiles"]
        self.normalization = Normalization(
            [stats["mean"][i] for i in pick],
            [stats["std"][i] for i in pick],
            source=f"corpus:{self.corpus_dir.resolve()}",
        )
        self.clip_range = None
        if clip:
            if "p1" not in stats:
                raise DataError(f"corpus {self.corpus_dir} has no percentiles; rebuild it to use clip=True")
            self.clip_range = ([stats["p1"][i] for i in pick], [stats["p99"][i] for i in pick])
        self._mean = torch.tensor(self.normalization.mean, dtype=torch.float32)[:, None, None]
        self._std = torch.tensor(self.normalization.std, dtype=torch.float32)[:, None, None]
        if self.clip_range is not None:
            self._clip_lo, self._clip_hi = (
                torch.tensor(v, dtype=torch.float32)[:, None, None] for v in self.clip_range
            )
        CorpusInfo(self.corpus_dir).verify_shards(info, group["shards"])
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
        fill = meta.get("fill_value", meta.get("nodata"))
        invalid = None
        if fill is not None:
            # Invalid = fill value in every band of the *stored* tile, as at build time.
            invalid = np.isnan(array).all(axis=0) if fill == "nan" else (array == float(fill)).all(axis=0)
        if self.subset is not None:
            array = array[self.subset]
        x = torch.from_numpy(array.astype(np.float32))
        if self.clip_range is not None:
            x = torch.maximum(torch.minimum(x, self._clip_hi), self._clip_lo)
        # Same arithmetic as self.normalization(x), with the mean/std tensors made once, not per sample.
        x = x.sub_(self._mean).div_(self._std)
        if invalid is not None and invalid.any():
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
        ds = ds.map(_decode).select(lambda s: s[1].ndim == 3 and s[1].shape[0] == self.group_bands)
        for key, array, meta in ds:
            yield self._to_tensor(key, array, meta)
