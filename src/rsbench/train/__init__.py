"""Pretraining stage: `pretrain(PretrainConfig)` -> run directory with an exported backbone."""

from rsbench.train.config import PretrainConfig
from rsbench.train.pretrain import pretrain

__all__ = ["PretrainConfig", "pretrain"]
