"""Pretraining inputs as multi-view batches, sharded over ranks and resumable mid-epoch.

Two sources: an image folder (map-style, `ImageFilesDataset` + `EpochSampler`) and a corpus
(streaming shards, `CorpusStream`). Both follow the same rules, which make a run reproducible
whatever its topology or interruptions:

- Every rank draws the same number of micro-batches per epoch (a rank that ran dry first would hang
  DDP's collectives).
- Augmentation randomness is a function of the sample, not of a worker's RNG state: each sample's
  views are drawn under RNGs seeded from (seed, epoch, sample), so 1 process with a global batch of
  B and 2 processes with B/2 each see identical views, and a resumed run needs no worker RNG state.
- The position in the data is (epoch, micro-batches consumed on each rank); `DataPosition` (see
  callbacks.py) saves it in the checkpoint and `resume_at` skips what was consumed.
"""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, Sampler, get_worker_info

from rsbench.data import Normalization, band_stats, list_images, read_image
from rsbench.errors import DataError

_STATS_SAMPLE = 512  # images used to estimate per-band statistics of an image folder


def seed_from(*words: int) -> int:
    """A 63-bit seed mixing integers (numpy's SeedSequence: nearby inputs give unrelated streams)."""
    return int(
        np.random.SeedSequence([int(w) & 0xFFFFFFFF for w in words]).generate_state(2, np.uint32).view(np.uint64)[0]
        >> 1
    )


@contextmanager
def seeded_rngs(*words: int):
    """Seed python `random`, numpy and torch's CPU generator for one block, then restore them.

    Restoring keeps the caller's streams (the model's dropout/masking RNG when num_workers=0) intact.
    """
    s = seed_from(*words)
    saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(s)
    np.random.seed(s & 0xFFFFFFFF)
    torch.default_generator.manual_seed(s)
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.set_rng_state(saved[2])


class ImageFilesDataset(Dataset):
    """Every image below a folder (labels, if any, ignored), normalized, passed through `transform`.

    Keys are an index or (index, epoch); the views of (i, epoch) are the same in any process.
    """

    def __init__(self, paths: list[Path], normalization: Normalization, transform=None, seed: int = 0):
        self.paths, self.normalization, self.transform, self.seed = paths, normalization, transform, seed

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key):
        i, epoch = key if isinstance(key, tuple) else (key, 0)
        arr = read_image(self.paths[i])
        if arr.shape[0] != self.normalization.bands:
            raise DataError(f"{self.paths[i]} has {arr.shape[0]} bands, expected {self.normalization.bands}")
        x = self.normalization(torch.from_numpy(arr.astype(np.float32)))
        if self.transform is None:
            return x
        with seeded_rngs(self.seed, epoch, i):
            return self.transform(x)


class EpochSampler(Sampler):
    """A seeded permutation per epoch, cut into global micro-batches and sharded by rank.

    Micro-batch m of the epoch is perm[m*W*P : (m+1)*W*P] (W ranks x P images per rank); rank r
    takes its r-th slice of P. With W=1 and P=B this is exactly a plain shuffled loader with batch B,
    so DDP on W ranks sees the same global batches as one process. Yields (index, epoch) keys.
    """

    def __init__(self, n: int, per_device: int, micro_batches: int, seed: int = 0):
        self.n, self.per_device, self.micro_batches, self.seed = n, per_device, micro_batches, seed
        self.rank, self.world = 0, 1
        self.epoch, self.start = 0, 0

    def set_distributed(self, rank: int, world: int) -> None:
        if self.micro_batches * self.per_device * world > self.n:
            raise DataError(f"{self.n} images cannot fill {self.micro_batches} batches of {self.per_device} x {world}")
        self.rank, self.world = rank, world

    def set_epoch(self, epoch: int) -> None:
        # Lightning calls this before every epoch; the resumed epoch keeps its start offset.
        if epoch != self.epoch:
            self.epoch, self.start = epoch, 0

    def resume_at(self, epoch: int, consumed: int) -> None:
        self.epoch, self.start = (epoch + 1, 0) if consumed >= self.micro_batches else (epoch, consumed)

    def __len__(self) -> int:
        # The full epoch: Lightning counts a resumed epoch's batches from its restored progress.
        return self.micro_batches * self.per_device

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, start = self.epoch, self.start
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(seed_from(self.seed, epoch))).tolist()
        p, w = self.per_device, self.world
        for m in range(start, self.micro_batches):
            first = (m * w + self.rank) * p
            for i in perm[first : first + p]:
                yield i, epoch


class CorpusStream(IterableDataset):
    """A corpus band group as an endless per-epoch stream for one reader (rank x DataLoader worker).

    Shards are split by rank (CorpusDataset, via RANK/WORLD_SIZE) and by worker. Epoch e of a reader
    is its shards shuffled with seed (seed, e), cycled if the reader needs more samples than its
    shards hold, so every rank can always deliver `micro_batches` batches. Workers are persistent:
    each call of `__iter__` in a worker starts the next epoch, and the first one after a resume skips
    the samples this reader had delivered (DataLoader takes batch k from worker k % num_workers).
    """

    def __init__(self, corpus, transform, seed: int, per_device: int, micro_batches: int):
        super().__init__()
        self.corpus, self.transform, self.seed, self.per_device = corpus, transform, seed, per_device
        self.micro_batches = micro_batches
        self.rank, self.world = 0, 1
        self.start_epoch, self.start_batches = 0, 0
        self._iterations = 0

    def set_distributed(self, rank: int, world: int) -> None:
        self.rank, self.world = rank, world

    def resume_at(self, epoch: int, consumed: int) -> None:
        done = consumed >= self.micro_batches
        self.start_epoch, self.start_batches = (epoch + 1, 0) if done else (epoch, consumed)

    def __iter__(self) -> Iterator[list[torch.Tensor]]:
        epoch = self.start_epoch + self._iterations
        skip_batches = self.start_batches if self._iterations == 0 else 0
        self._iterations += 1
        return self._stream(epoch, skip_batches)

    def _stream(self, epoch: int, skip_batches: int) -> Iterator[list[torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # The DataLoader restarts its round robin at worker 0, but the first batch after the skipped
        # ones came from worker (skip_batches % workers): each worker takes over the role (shards,
        # position, seeds) of the worker that would have produced its batches.
        role = (worker + skip_batches) % workers
        if info is not None:
            # Told through webdataset's environment variables (a process of its own, so no side effect);
            # a worker started by spawn/forkserver has no process group to learn the rank from either.
            os.environ.update(
                RANK=str(self.rank), WORLD_SIZE=str(self.world), WORKER=str(role), NUM_WORKERS=str(workers)
            )
        mine = len(range(role, skip_batches, workers))  # skipped batches that came from this role
        skip = mine * self.per_device
        n = 0
        for cycle in itertools.count():
            self.corpus.set_epoch(epoch * 1000 + cycle)
            delivered = 0
            for x in self.corpus:
                delivered += 1
                if n >= skip:
                    with seeded_rngs(self.seed, epoch, self.rank, role, n):
                        views = self.transform(x)
                    yield views
                n += 1
            if delivered == 0:
                raise DataError(f"corpus {self.corpus.corpus_dir}: reader rank {self.rank} worker {role} has no tiles")


def image_folder_source(root: Path) -> tuple[list[Path], Normalization]:
    """List the images and estimate per-band mean/std from an evenly spaced sample of them."""
    paths = list_images(root)
    step = max(1, len(paths) // _STATS_SAMPLE)
    sample = [read_image(p) for p in paths[::step]]
    bands = {a.shape[0] for a in sample}
    if len(bands) > 1:
        raise DataError(
            f"images in {root} have different band counts {sorted(bands)}; pretrain on one sensor at a time"
        )
    return paths, Normalization.from_stats(band_stats(sample), source=f"images:{root.name}")


def collate_views(batch: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    """[[v0, v1], [v0, v1], ...] -> [V0 (B,C,H,W), V1 (B,C,H,W)]."""
    return [torch.stack(views) for views in zip(*batch)]
