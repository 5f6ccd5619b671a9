"""Corpus-wide decisions, taken centrally after tiling, in the fixed global tile order.

Near-duplicates (any pair of rasters) and the --max-tiles cap cannot be decided by one part alone;
doing them here, on metadata only (hashes, features, raster ids), in raster-then-window order, keeps
the corpus independent of the number of workers.
"""

from __future__ import annotations

from array import array

import numpy as np

KMEANS_FULL_LIMIT = 50_000  # above this many tiles, MiniBatchKMeans
DEDUP_BLOCK = 4096


def find_duplicates(hashes: np.ndarray, distance: int) -> np.ndarray:
    """For each hash in order: the index of the first earlier non-duplicate within `distance` bits, or -1.

    Multi-index hashing: split the 64 bits into distance+1 chunks; by pigeonhole two hashes within
    `distance` agree exactly on at least one chunk, so only bucket-mates are compared. A bucket holds
    the indexes of non-duplicates only, packed (8 bytes each, not Python objects), and is compared to a
    new hash in one vectorized pass: about 60 bytes a hash at distance 4. Time: each hash is compared
    with its bucket-mates, about 5 x n / 2^13 at distance 4 when hashes spread evenly (the slowest case).
    """
    unsigned = np.asarray(hashes).astype(np.int64).view(np.uint64)
    bounds = np.linspace(0, 64, distance + 2).astype(int)
    widest = int(np.diff(bounds).max())
    key_type = np.uint16 if widest <= 16 else np.uint32 if widest <= 32 else np.uint64  # 2 bytes at distance 4
    keys = np.stack(
        [
            ((unsigned >> np.uint64(lo)) & np.uint64((1 << int(hi - lo)) - 1)).astype(key_type)
            for lo, hi in zip(bounds[:-1], bounds[1:])
        ],
        axis=1,
    )
    tables: list[dict[int, array]] = [{} for _ in bounds[1:]]
    out = np.full(len(unsigned), -1, dtype=np.int64)
    for start in range(0, len(unsigned), DEDUP_BLOCK):  # Python ints for one block of keys at a time
        for i, row in enumerate(keys[start : start + DEDUP_BLOCK].tolist(), start):
            buckets = [members for table, key in zip(tables, row) if (members := table.get(key))]
            if buckets:
                index = np.concatenate([np.frombuffer(members, dtype=np.int64) for members in buckets])
                near = index[np.bitwise_count(unsigned[index] ^ unsigned[i]) <= distance]
                if len(near):
                    out[i] = near.min()
                    continue
            for table, key in zip(tables, row):
                table.setdefault(key, array("q")).append(i)
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
