"""Checkpoints: atomic writes, and a check of a checkpoint before any resume touches the run.

Every checkpoint Lightning writes goes through `AtomicCheckpointIO`: streamed to a temp file beside
the target, fsynced, renamed. A kill at any moment leaves either the previous `last.ckpt` or the new
one, never a truncated file. `check_resumable` opens a checkpoint with `weights_only=True` (memory
mapped, so a multi-GB file costs little) and compares it with the model before the run directory
is modified in any way: a corrupt or foreign checkpoint is a one-line DataError naming the file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import _load as lightning_load
from lightning.pytorch.plugins.io import TorchCheckpointIO

from rsbench.errors import DataError, RsbenchError

_TRAINING_KEYS = ("state_dict", "global_step", "loops", "optimizer_states", "lr_schedulers")
_UMASK = os.umask(0)
os.umask(_UMASK)


class RunPreempted(RsbenchError):
    """Training stopped on a signal after saving a checkpoint; running the command again resumes."""


class RunInterrupted(RunPreempted):
    """Stopped by Ctrl-C (SIGINT) after saving a checkpoint: exit status 130, as for any interrupted command."""

    exit_code = 130


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose saves are atomic (temp file + fsync + rename). `on_saved(path, step)`
    is called once a checkpoint is complete on disk (Lightning's callback hooks run before the write)."""

    def __init__(self, on_saved=None):
        super().__init__()
        self.on_saved = on_saved

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            # Streamed to disk rather than through rsbench.io.atomic_write_bytes: a ViT-B checkpoint with
            # optimizer state is ~1 GB and should not be held twice in memory.
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files
            os.replace(tmp, path)
        except BaseException as e:
            Path(tmp).unlink(missing_ok=True)
            # A full disk surfaces from torch's zip writer as RuntimeError("unexpected pos ...") raised while
            # handling the OSError: report the OSError, naming the checkpoint (the CLI prints it as one line).
            cause = e if isinstance(e, OSError) else e.__context__
            if isinstance(cause, OSError) and cause.errno:
                raise OSError(cause.errno, os.strerror(cause.errno), str(path)) from None
            raise
        if self.on_saved is not None:
            self.on_saved(path, int(checkpoint.get("global_step", -1)))

    def load_checkpoint(
        self, path, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        try:
            return lightning_load(path, map_location=map_location or "cpu", weights_only=True)
        except Exception as e:  # any failure here means "cannot use this file"
            raise DataError(f"cannot load checkpoint {path}: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


def check_resumable(path: Path, model: torch.nn.Module) -> int:
    """The checkpoint's global step, after checking it is a Lightning training checkpoint of `model`."""
    hint = "move it away (or choose another --out) to start over"
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        # torch's own words (mmap, zipfile central directory) describe its reader, not the file: say what it means.
        if "weights only load failed" in str(e).lower():
            what = "it holds objects other than tensors, which a safe load (weights_only) refuses"
        else:
            size = path.stat().st_size if path.exists() else 0
            what = f"not a PyTorch checkpoint ({size} bytes: truncated, or overwritten with something else)"
        raise DataError(f"cannot resume from {path}: {what}; {hint}") from None
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in _TRAINING_KEYS):
        missing = [k for k in _TRAINING_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
        raise DataError(
            f"cannot resume from {path}: not a Lightning training checkpoint (no {', '.join(missing)}); {hint}"
        )
    saved, expected = ckpt["state_dict"], model.state_dict()
    missing = [k for k in expected if k not in saved]
    unexpected = [k for k in saved if k not in expected]
    if missing or unexpected:
        key = missing[0] if missing else unexpected[0]
        what = f"{len(missing)} missing and {len(unexpected)} unexpected weights, e.g. '{key}'"
        raise DataError(f"cannot resume from {path}: it belongs to another model ({what}); {hint}")
    for k, v in expected.items():
        if tuple(saved[k].shape) != tuple(v.shape):
            raise DataError(
                f"cannot resume from {path}: weight '{k}' has shape {tuple(saved[k].shape)}, this model "
                f"needs {tuple(v.shape)}; {hint}"
            )
    return int(ckpt["global_step"])
