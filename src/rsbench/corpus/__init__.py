"""Corpus stage: rasters -> filtered tiles in WebDataset shards, a manifest, stats; a streaming loader.

The loader (torch + webdataset, about 700 MiB resident) is imported on first use only, so that
building a corpus, in this process and in every Dask worker, never loads torch.
"""

from rsbench.corpus.build import build_corpus
from rsbench.corpus.build_config import CorpusBuildConfig
from rsbench.corpus.filters import REASONS
from rsbench.corpus.inputs import discover_inputs
from rsbench.corpus.raster import key_prefix, probe_raster
from rsbench.corpus.tiling import plan_windows

_LOADER = ("CorpusDataset", "corpus_normalization", "read_corpus_info")

__all__ = [
    "REASONS",
    "CorpusBuildConfig",
    "CorpusDataset",
    "build_corpus",
    "corpus_normalization",
    "discover_inputs",
    "key_prefix",
    "plan_windows",
    "probe_raster",
    "read_corpus_info",
]


def __getattr__(name: str):
    if name in _LOADER:
        from rsbench.corpus import loader

        return getattr(loader, name)
    raise AttributeError(f"module 'rsbench.corpus' has no attribute {name!r}")
