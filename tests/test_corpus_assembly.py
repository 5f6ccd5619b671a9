"""Assembly's column algorithms against their definitions, written the slow obvious way: near-duplicate
matching (first earlier non-duplicate within the distance) and shard assignment (one open shard per band
group, closed after shard_size tiles)."""

from __future__ import annotations

import numpy as np
import pytest

from rsbench.contracts.corpus_info import shard_name
from rsbench.corpus.selection import find_duplicates
from rsbench.corpus.shards import assign_shards


def _brute_duplicates(hashes: list[int], distance: int) -> list[int]:
    out: list[int] = []
    for i, h in enumerate(hashes):
        earlier = [j for j in range(i) if out[j] < 0 and bin((h ^ hashes[j]) & (2**64 - 1)).count("1") <= distance]
        out.append(earlier[0] if earlier else -1)
    return out


@pytest.mark.parametrize("distance", [0, 2, 4, 7])
def test_find_duplicates_matches_the_definition(distance):
    rng = np.random.default_rng(distance)
    base = rng.integers(-(2**63), 2**63 - 1, 40, dtype=np.int64)
    hashes = []
    for _ in range(600):  # clusters of near copies: 0-6 flipped bits of one of 40 hashes
        h = int(base[rng.integers(0, 40)]) & (2**64 - 1)
        for bit in rng.choice(64, size=rng.integers(0, 7), replace=False).tolist():
            h ^= 1 << bit
        hashes.append(h - 2**64 if h >= 2**63 else h)  # signed, as the records store them
    got = find_duplicates(np.asarray(hashes, dtype=np.int64), distance)
    expected = _brute_duplicates(hashes, distance)
    assert got.tolist() == expected
    assert 0 < (got >= 0).sum() < len(hashes)  # both outcomes occur


def test_assign_shards_matches_one_open_shard_per_group():
    rng = np.random.default_rng(0)
    groups = rng.choice([3, 0, 7], size=2000, p=[0.6, 0.3, 0.1])
    index, names, group_shards = assign_shards(groups, 97)
    open_shard: dict[int, tuple[int, int]] = {}
    expected, opened = [], []
    for g in groups.tolist():
        shard, count = open_shard.get(g) or (len(opened), 0)
        if count == 0:
            opened.append(g)
        expected.append(shard)
        open_shard[g] = (shard, count + 1) if count + 1 < 97 else None
    assert index.tolist() == expected
    assert names == [shard_name(i) for i in range(len(opened))]
    assert group_shards == {g: [names[s] for s, o in enumerate(opened) if o == g] for g in set(opened)}
