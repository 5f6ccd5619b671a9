"""Pretraining stage: `pretrain(PretrainConfig)` -> run directory with an exported backbone."""

from rsbench.contracts.pretrain import PretrainConfig
from rsbench.train.pretrain import pretrain

__all__ = ["PretrainConfig", "pretrain"]
