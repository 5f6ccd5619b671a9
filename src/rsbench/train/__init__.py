"""Pretraining stage: `pretrain(PretrainConfig)` -> run directory with an exported backbone.

`pretrain` (torch + Lightning) is imported on first use (PEP 562), so that reading run directories
(rsbench.train.run_status, `rsbench runs`) does not load the training stack.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from rsbench.contracts.pretrain_config import PretrainConfig

if TYPE_CHECKING:
    from rsbench.train.pretrain import pretrain

__all__ = ["PretrainConfig", "pretrain"]


def __getattr__(name: str) -> Any:
    if name == "pretrain":
        importlib.import_module("rsbench.train.pretrain")  # binds the function here (_Package below)
        return globals()["pretrain"]
    raise AttributeError(f"module 'rsbench.train' has no attribute {name!r}")


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        # Loading the submodule rsbench.train.pretrain (here, or by any import of it) binds the module
        # under the name of its function: `rsbench.train.pretrain` stays the function.
        if name == "pretrain" and isinstance(value, types.ModuleType):
            value = value.pretrain
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
