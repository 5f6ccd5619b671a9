"""Shard writing: per-raster spools, then WebDataset tars that each hold one band count.

Why a spool: a raster can open fine and fail half-way (truncated file). Its tiles are first
written to a private spool file and only copied into the shards once the whole raster has been
read, so a failed raster leaves no samples behind. Spools are also the natural hand-off point for
parallel per-raster workers later: workers fill spools, one packer writes shards in raster order.

Why one band count per shard: a corpus can mix sensors (3-, 4-, 6-, 7-band rasters). Homogeneous
shards let the loader open only the shards of the band group it trains on, so splitting shards
across ranks/workers splits the actual training data rather than mostly-discarded samples.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import numpy as np
import webdataset as wds

SHARDS_DIRNAME = "shards"


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


class Spool:
    """Append-only file of .npy blobs for one raster's kept tiles, read back in the same order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sizes: list[int] = []
        self._file: BinaryIO | None = open(path, "wb")

    def add(self, array: np.ndarray) -> None:
        data = npy_bytes(array)
        assert self._file is not None
        self._file.write(data)
        self.sizes.append(len(data))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def blobs(self) -> Iterator[bytes]:
        self.close()
        with open(self.path, "rb") as f:
            for size in self.sizes:
                yield f.read(size)

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


class _OpenShard:
    def __init__(self, out_dir: Path, index: int) -> None:
        self.name = f"{SHARDS_DIRNAME}/shard-{index:06d}.tar"
        self.final = out_dir / self.name
        self.tmp = self.final.with_name(self.final.name + ".tmp")
        self.file = open(self.tmp, "wb")
        # mtime fixed so that the same inputs give byte-identical tars.
        self.writer = wds.TarWriter(self.file, encoder=False, mtime=0)
        self.count = 0

    def finish(self) -> None:
        self.writer.close()
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, self.final)

    def abort(self) -> None:
        try:
            self.writer.close()
            self.file.close()
        finally:
            self.tmp.unlink(missing_ok=True)


class ShardPacker:
    """Writes samples into DIR/shards/shard-NNNNNN.tar, at most `shard_size` per shard.

    Shards are numbered in the order they are opened, which is deterministic for a fixed raster
    order. Each shard is written to `<name>.tmp` and renamed only when complete.
    """

    def __init__(self, out_dir: Path, shard_size: int) -> None:
        self.out_dir = out_dir
        self.shard_size = shard_size
        (out_dir / SHARDS_DIRNAME).mkdir(parents=True, exist_ok=True)
        self.shards: list[str] = []
        self.group_shards: dict[int, list[str]] = {}
        self._open: dict[int, _OpenShard] = {}

    def add(self, bands: int, key: str, npy: bytes, meta: dict[str, Any]) -> str:
        """Write one sample; returns the shard name (relative to the corpus dir) that holds it."""
        shard = self._open.get(bands)
        if shard is None:
            shard = _OpenShard(self.out_dir, len(self.shards))
            self._open[bands] = shard
            self.shards.append(shard.name)
            self.group_shards.setdefault(bands, []).append(shard.name)
        shard.writer.write({"__key__": key, "npy": npy, "json": json.dumps(meta).encode("utf-8")})
        shard.count += 1
        if shard.count >= self.shard_size:
            shard.finish()
            del self._open[bands]
        return shard.name

    def close(self) -> None:
        for bands in sorted(self._open, key=lambda b: self._open[b].name):
            self._open.pop(bands).finish()

    def abort(self) -> None:
        for shard in self._open.values():
            shard.abort()
        self._open.clear()
