"""Third-party chatter off while a stage trains: Lightning's banners, tips and hints, library deprecations.

Shared by pretraining and evaluation (both drive a Lightning Trainer). What is silenced is not actionable for an
rsbench user: the "GPU available" / "TPU available" banners (each stage prints its own one-line summary), the
advertisements for Lightning's cloud loggers, the `srun` hint (rsbench submits to SLURM itself, `--slurm`), the
notes about small data and few workers, and DeprecationWarning / FutureWarning raised inside the libraries (they
are for the libraries' maintainers). rsbench's own warnings and every error still show.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

# Messages Lightning emits on every run; none is actionable from rsbench's command line.
QUIET_WARNINGS = (
    ".*`srun` command is available.*",  # hint to prepend srun; `rsbench pretrain --slurm` submits the job
    ".*does not have many workers.*",
    ".*smaller than the logging interval.*",
    ".*exists and is not empty.*",  # the run directory is rsbench's own (resumed runs reuse it)
    ".*module\\(s\\) in eval mode.*",
    ".*LeafSpec.*",  # torch's pytree deprecation, raised from Lightning's code
    ".*have no `val_dataloader`.*",  # evaluation validates only for early stopping (tuned fine-tuning)
)
# Loggers whose INFO lines are banners and tips ("GPU available: ...", "💡 Tip: ... litlogger", "`Trainer.fit`
# stopped: `max_steps=N` reached."): raised to WARNING for the duration.
QUIET_LOGGERS = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")
# Deprecations raised from inside these packages are not the user's to fix.
LIBRARIES = r"(lightning|lightning_fabric|pytorch_lightning|torch|torchvision|lightly|timm|webdataset)(\..*)?$"


@contextmanager
def quiet() -> Iterator[None]:
    """Silence the third-party messages above inside the block (logger levels and warning filters restored after)."""
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for message in QUIET_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            for category in (DeprecationWarning, FutureWarning):
                warnings.filterwarnings("ignore", category=category, module=LIBRARIES)
            yield
    finally:
        for log, level in zip(loggers, levels):
            log.setLevel(level)
