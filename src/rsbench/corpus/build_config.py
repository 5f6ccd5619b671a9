"""`CorpusBuildConfig` lives in `rsbench.contracts.corpus_build` (importable without the corpus stage, so
`rsbench --help` builds its options without loading rasterio); re-exported here for the stage."""

from rsbench.contracts.corpus_build import EXECUTION_KEYS, LEGACY_SLURM_KEYS, CorpusBuildConfig, CorpusSlurm

__all__ = ["EXECUTION_KEYS", "LEGACY_SLURM_KEYS", "CorpusBuildConfig", "CorpusSlurm"]
