"""Corpus stage: tile GeoTIFFs into WebDataset shards with a manifest, stats and a streaming loader."""

from rsbench.corpus.build import CorpusBuildConfig, build_corpus, discover_inputs
from rsbench.corpus.loader import CorpusDataset, corpus_normalization, read_corpus_info
from rsbench.corpus.tiling import Tile, key_prefix, tile_count, tile_raster

__all__ = [
    "CorpusBuildConfig",
    "CorpusDataset",
    "Tile",
    "build_corpus",
    "corpus_normalization",
    "discover_inputs",
    "key_prefix",
    "read_corpus_info",
    "tile_count",
    "tile_raster",
]
