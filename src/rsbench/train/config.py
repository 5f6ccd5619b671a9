"""Configuration of `rsbench pretrain`: defined in `rsbench.contracts.pretrain` (torch-free, so the benchmark
planner can read it), re-exported here for the train stage."""

from rsbench.contracts.pretrain import EXECUTION_KEYS, PretrainConfig, SlurmOptions, identity_of

__all__ = ["EXECUTION_KEYS", "PretrainConfig", "SlurmOptions", "identity_of"]
