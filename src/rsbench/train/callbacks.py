"""Lightning callbacks that make a run reproducible, resumable and stoppable at any time.

- `StepSeeder`: the model-side RNGs (python, numpy, torch on every device) are re-seeded from
  (seed, rank, epoch, batch) before each batch. The random state at any step is then a function of
  the step alone, so a resumed run continues with exactly the RNG state the uninterrupted run had,
  without storing per-process generator states (the data side is seeded per sample, see data.py).
- `DataPosition`: saves (epoch, micro-batches consumed) in the checkpoint and moves the sampler or
  stream there on restore, before Lightning creates the first data iterator.
- `SignalCheckpoint`: SIGTERM / SIGUSR1 / SIGUSR2 / SIGINT (Ctrl-C) set a flag only; at the next
  optimizer-step boundary all ranks agree (one tiny all-reduce), save last.ckpt and, for stop signals, stop.
  Saving from inside a signal handler would catch the model mid-update and, under DDP, deadlock. A second
  Ctrl-C while the first waits for the step boundary aborts at once (KeyboardInterrupt).
"""

from __future__ import annotations

import random
import signal
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import convert_inf

from rsbench.train.data import seed_from

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT)


class StepSeeder(Callback):
    def __init__(self, seed: int):
        self.seed = seed

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        s = seed_from(self.seed, trainer.global_rank, trainer.current_epoch, batch_idx)
        random.seed(s)
        np.random.seed(s & 0xFFFFFFFF)
        torch.manual_seed(s)  # all devices


class DataPosition(Callback):
    """Where the data stream is: (epoch, micro-batches this rank consumed in it)."""

    def __init__(self, source, world_size: int):
        self.source, self.world_size = source, world_size
        self.epoch, self.consumed = 0, 0
        self.restored: tuple[int, int] | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.source.set_distributed(trainer.global_rank, trainer.world_size)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.epoch, self.consumed = trainer.current_epoch, batch_idx + 1

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "consumed": self.consumed, "world_size": self.world_size}

    def load_state_dict(self, state: dict) -> None:
        # Micro-batches per rank per epoch do not depend on the number of ranks (the global batch is
        # fixed), so the position carries over to another topology.
        self.epoch, self.consumed = int(state["epoch"]), int(state["consumed"])
        self.source.resume_at(self.epoch, self.consumed)
        self.restored = (self.epoch, self.consumed)


class SignalCheckpoint(Callback):
    """Checkpoint on SIGTERM/SIGUSR2 (then stop) and SIGUSR1 (then stop under SLURM, else go on)."""

    def __init__(self, ckpt_path: Path, accumulate: int, stop_on_usr1: bool):
        self.ckpt_path, self.accumulate = ckpt_path, accumulate
        self.stop_signals = STOP_SIGNALS + ((signal.SIGUSR1,) if stop_on_usr1 else ())
        self.pending: int | None = None
        self.stopped_by: str | None = None
        self.saved_step: int | None = None
        self._previous: dict[int, object] = {}

    def _handler(self, signum, frame) -> None:
        # Async-signal context: record only. A stop request outranks a checkpoint request.
        if signum == signal.SIGINT and self.pending == signal.SIGINT:
            raise KeyboardInterrupt  # Ctrl-C twice: do not wait for the step boundary
        if self.pending is None or signum in self.stop_signals:
            self.pending = signum

    def on_fit_start(self, trainer, pl_module) -> None:
        # Installed before Lightning's own handlers (registered right after on_fit_start), which then
        # chain to ours for SIGTERM and leave SIGUSR1 to us.
        for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread: signals cannot be handled here
                return

    def restore_handlers(self) -> None:
        """Put back the handlers found at fit start. Called after `Trainer.fit` returns or raises:
        after an exception Lightning skips the teardown hooks and restores *our* handlers."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        sigterm = bool(getattr(trainer, "received_sigterm", False))
        at_boundary = (batch_idx + 1) % self.accumulate == 0
        # Lightning stops right after this hook on SIGTERM, boundary or not. Under DDP the agreement
        # below is a collective, so it may only run where every rank runs it: at step boundaries.
        if not at_boundary and not (sigterm and trainer.world_size == 1):
            return
        code = 0 if self.pending is None else (2 if self.pending in self.stop_signals else 1)
        if sigterm:
            code, self.pending = 2, self.pending or signal.SIGTERM
        if trainer.world_size > 1:
            t = torch.tensor([code], device=trainer.strategy.root_device)
            code = int(trainer.strategy.reduce(t, reduce_op="max").item())
        if code == 0:
            return
        trainer.save_checkpoint(self.ckpt_path, weights_only=False)
        self.saved_step = trainer.global_step
        name = signal.Signals(self.pending).name if self.pending else "a signal on another rank"
        self.pending = None
        if code == 2:
            self.stopped_by = name
            trainer.should_stop = True


class StepProgressBar(TQDMProgressBar):
    """Lightning's bar (ETA, it/s) with the global step and without the logger's version number. Its epochs
    are counted from 1 out of the run's total ("epoch 3/20"), the unit `epochs` and backbone.json use (one
    pass over the training samples, PretrainConfig.steps_per_epoch)."""

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = epochs

    @property
    def train_description(self) -> str:  # the bar's first drawing (Lightning: "Training")
        return self._epoch_label()

    def _epoch_label(self) -> str:
        epoch = self._trainer.current_epoch if self._trainer is not None else 0
        return f"epoch {epoch + 1}/{self.epochs}"

    def on_train_epoch_start(self, trainer, *args) -> None:
        # Lightning's, with our description set before the reset draws the bar (not "Epoch 0", then ours).
        if self._leave:
            self.train_progress_bar = self.init_train_tqdm()
        self.train_progress_bar.set_description_str(self._epoch_label(), refresh=False)
        self.train_progress_bar.reset(total=convert_inf(self.total_train_batches))
        self.train_progress_bar.initial = 0

    def get_metrics(self, trainer, pl_module):
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return {"step": f"{trainer.global_step}/{trainer.max_steps}", **items}
