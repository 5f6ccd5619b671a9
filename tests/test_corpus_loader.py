"""The streaming loader over real-raster shards: normalization, nodata, band subset, clipping,
shuffling, DataLoader workers and the shard split across 2 ranks."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from rsbench.contracts.corpus_info import choose_group
from rsbench.corpus import CorpusBuildConfig, CorpusDataset, build_corpus
from rsbench.errors import RsbenchError

T = 64


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, rasters_dir):
    out = tmp_path_factory.mktemp("corpus") / "c"
    # Small shards so that every band group spans several shards (needed for the rank split).
    info = build_corpus(
        CorpusBuildConfig(inputs=[str(rasters_dir)], out=str(out), tile_size=T, shard_size=40, workers=1)
    )
    return out, info, pq.read_table(out / "manifest.parquet").to_pylist()


def _raw(out, row):
    with tarfile.open(out / row["shard"]) as tar:
        return np.load(io.BytesIO(tar.extractfile(f"{row['key']}.npy").read()))


def test_dataset_yields_normalized_tensors(corpus):
    out, info, rows = corpus
    largest = max(info["band_groups"].values(), key=lambda g: g["tiles"])
    assert CorpusDataset(out).bands == largest["bands"]  # default: the largest band group
    ds = CorpusDataset(out, bands=6, shuffle=False, return_key=True)
    s2 = choose_group(info, 6)
    assert ds.bands == 6 and ds.num_samples == s2["tiles"]
    items = list(ds)
    assert len(items) == s2["tiles"] and len({k for k, _ in items}) == len(items)
    x = torch.stack([t for _, t in items])
    assert x.dtype == torch.float32 and x.shape == (len(items), 6, T, T)
    # All Sentinel-2 pixels are valid, so the normalized group has mean 0 and std 1 per band.
    flat = x.permute(1, 0, 2, 3).reshape(6, -1).double()
    np.testing.assert_allclose(flat.mean(dim=1), 0.0, atol=1e-4)
    np.testing.assert_allclose(flat.std(dim=1), 1.0, atol=1e-4)
    key, t = items[17]
    raw = _raw(out, next(r for r in rows if r["key"] == key)).astype(np.float64)
    expected = (raw - np.array(s2["stats"]["mean"])[:, None, None]) / np.array(s2["stats"]["std"])[:, None, None]
    np.testing.assert_allclose(t.numpy(), expected, rtol=1e-5, atol=1e-5)
    assert ds.normalization.mean == s2["stats"]["mean"] and ds.band_names == s2["band_names"]


def test_band_subset_and_percentile_clipping(corpus):
    out, info, rows = corpus
    full = dict(CorpusDataset(out, bands=6, shuffle=False, return_key=True))
    by_name = CorpusDataset(out, bands=6, shuffle=False, return_key=True, band_subset=["b11_swir1", "B05_rededge1"])
    by_index = CorpusDataset(out, bands=6, shuffle=False, return_key=True, band_subset=[5, 1])
    assert by_name.bands == by_index.bands == 2 and by_name.band_names == ["swir1", "rededge1"]
    stats = choose_group(info, 6)["stats"]
    assert by_name.normalization.mean == [stats["mean"][4], stats["mean"][0]]
    for (ka, a), (kb, b) in zip(by_name, by_index):
        assert ka == kb and torch.equal(a, b) and torch.allclose(a, full[ka][[4, 0]])
    clipped = CorpusDataset(out, bands=6, shuffle=False, clip=True)
    hi = (torch.tensor(stats["p99"]) - torch.tensor(stats["mean"])) / torch.tensor(stats["std"])
    lo = (torch.tensor(stats["p1"]) - torch.tensor(stats["mean"])) / torch.tensor(stats["std"])
    x = torch.stack(list(clipped)).transpose(0, 1).reshape(6, -1)
    assert (x.max(dim=1).values <= hi + 1e-5).all() and (x.min(dim=1).values >= lo - 1e-5).all()
    assert torch.allclose(x.max(dim=1).values, hi, atol=1e-5)  # the p99 is reached: clipping happened
    with pytest.raises(RsbenchError, match="no band named 'nir'"):
        CorpusDataset(out, bands=6, band_subset=["nir"])
    with pytest.raises(RsbenchError, match="band 7 is not in corpus"):
        CorpusDataset(out, bands=6, band_subset=[7])


def test_nodata_pixels_become_zero_and_bad_band_count(corpus):
    out, info, rows = corpus
    ds = CorpusDataset(out, bands=3, shuffle=False, return_key=True)
    collar = {r["key"] for r in rows if r["kept"] and r["bands"] == 3 and r["nodata_fraction"] > 0}
    key, t = next((k, t) for k, t in ds if k in collar)
    raw = _raw(out, next(r for r in rows if r["key"] == key))
    invalid = torch.from_numpy((raw == 0).all(axis=0))
    assert invalid.any() and (t[:, invalid] == 0).all() and (t[:, ~invalid] != 0).any()
    with pytest.raises(RsbenchError, match="has no 5-band band group"):
        CorpusDataset(out, bands=5)


def test_shuffles_reproducibly_and_works_with_workers(corpus):
    out, info, _ = corpus
    keys = lambda ds: [k for k, _ in ds]  # noqa: E731
    a = keys(CorpusDataset(out, bands=7, seed=3, shuffle_buffer=50, return_key=True))
    b = keys(CorpusDataset(out, bands=7, seed=3, shuffle_buffer=50, return_key=True))
    plain = keys(CorpusDataset(out, bands=7, shuffle=False, return_key=True))
    assert a == b and a != plain and sorted(a) == sorted(plain) and len(plain) == choose_group(info, 7)["tiles"]
    ds = CorpusDataset(out, bands=7, seed=3, return_key=True)
    ds.set_epoch(1)
    assert keys(ds) != a
    loader = torch.utils.data.DataLoader(CorpusDataset(out, bands=7, return_key=True), batch_size=16, num_workers=2)
    seen = [k for batch_keys, batch in loader for k in batch_keys]
    assert sorted(seen) == sorted(plain)  # each sample once across the two workers


def test_splits_shards_across_two_ranks(corpus, monkeypatch):
    out, info, rows = corpus
    assert len(choose_group(info, 6)["shards"]) >= 2
    per_rank = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        per_rank.append([k for k, _ in CorpusDataset(out, bands=6, return_key=True)])
    a, b = map(set, per_rank)
    assert a and b and not a & b
    assert a | b == {r["key"] for r in rows if r["kept"] and r["bands"] == 6}
    shard_of = {r["key"]: r["shard"] for r in rows}
    assert not {shard_of[k] for k in a} & {shard_of[k] for k in b}  # split by whole shards
