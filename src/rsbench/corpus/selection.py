"""Corpus-wide decisions, taken centrally after tiling, in the fixed global tile order.

Near-duplicates (any pair of rasters) and the --max-tiles cap cannot be decided by one part alone;
doing them here, on metadata only (hashes, features, raster ids), in raster-then-window order, keeps
the corpus independent of the number of workers.
"""

from __future__ import annotations

import numpy as np

from rsbench.corpus.filters import hamming

_MASK = 0xFFFF_FFFF_FFFF_FFFF
KMEANS_FULL_LIMIT = 50_000  # above this many tiles, MiniBatchKMeans


def find_duplicates(hashes: list[int], distance: int) -> list[int | None]:
    """For each hash in order: the index of the first earlier non-duplicate within `distance` bits, or None.

    Multi-index hashing: split the 64 bits into distance+1 chunks; by pigeonhole two hashes within
    `distance` agree exactly on at least one chunk, so only bucket-mates are compared.
    """
    chunks = distance + 1
    bounds = np.linspace(0, 64, chunks + 1).astype(int)
    ranges = [(int(lo), int(hi - lo)) for lo, hi in zip(bounds[:-1], bounds[1:])]
    tables: list[dict[int, list[int]]] = [{} for _ in ranges]
    unsigned = [h & _MASK for h in hashes]
    out: list[int | None] = []
    for i, u in enumerate(unsigned):
        keys = [(u >> start) & ((1 << width) - 1) for start, width in ranges]
        candidates = sorted({j for table, key in zip(tables, keys) for j in table.get(key, ())})
        match = next((j for j in candidates if hamming(u, unsigned[j]) <= distance), None)
        if match is None:
            for table, key in zip(tables, keys):
                table.setdefault(key, []).append(i)
        out.append(match)
    return out


def quotas(available: np.ndarray, total: int) -> np.ndarray:
    """Split `total` as evenly as possible over buckets holding `available` items (water-filling)."""
    out = np.zeros(len(available), dtype=np.int64)
    remaining = min(int(total), int(available.sum()))
    order = np.argsort(available, kind="stable")
    for n_left, b in zip(range(len(order), 0, -1), order):
        give = min(int(available[b]), remaining // n_left)
        out[b] = give
        remaining -= give
    return out


def balanced_pick(buckets: np.ndarray, total: int, seed: int) -> np.ndarray:
    """Boolean mask choosing `total` items spread evenly over bucket ids, seeded-random within a bucket."""
    ids, counts = np.unique(buckets, return_counts=True)
    take = quotas(counts, total)
    rng = np.random.default_rng(seed)
    chosen = np.zeros(len(buckets), dtype=bool)
    for bucket, k in zip(ids, take):
        members = np.flatnonzero(buckets == bucket)
        chosen[rng.choice(members, size=int(k), replace=False)] = True
    return chosen


def cluster_tiles(features: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k-means labels of standardized tile features (scikit-learn; seeded, so deterministic)."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    k = min(k, len(features))
    if k <= 1:
        return np.zeros(len(features), dtype=np.int64)
    x = features.astype(np.float64)
    std = x.std(axis=0)
    x = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    if len(x) > KMEANS_FULL_LIMIT:
        model = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=4096)
    else:
        model = KMeans(n_clusters=k, random_state=seed, n_init=4)
    return model.fit_predict(x).astype(np.int64)
