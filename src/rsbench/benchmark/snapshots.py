"""Intermediate checkpoints of a pretraining run, exported as evaluable backbones.

`rsbench pretrain` keeps only `checkpoints/last.ckpt`, rewritten every `checkpoint_every` steps by
Lightning with an atomic rename. While the run trains, a thread hard-links each new version (a new
inode) into `snapshots/.raw/`, so no version is lost and none is read half-written. Checkpoints that the
run keeps itself (`checkpoints/*.ckpt` other than last.ckpt) are used as well. After training, the
wanted steps become `snapshots/<run>@step-<N>/` holding an exported backbone (backbone.pt +
backbone.json, rsbench.contracts.backbone_export), the layout `rsbench evaluate --init` reads. File and
directory names: rsbench.contracts.run_dir.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterable
from pathlib import Path

from rsbench.contracts.backbone_export import DEFAULT_EXPORTED_MODULE, BackboneExport, module_state_dict
from rsbench.contracts.run_dir import CKPT_SUFFIX, RunDir


def snapshot_dir(run_dir: Path, step: int) -> Path:
    return RunDir(run_dir).snapshot(step)


class CheckpointWatcher:
    """Context manager: while open, capture every version of run_dir/checkpoints/last.ckpt."""

    def __init__(self, run_dir: Path, poll_s: float = 0.05) -> None:
        self.last = RunDir(run_dir).last_ckpt
        self.raw = RunDir(run_dir).raw_snapshots
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._seen: set[tuple[int, int]] = set()
        self._thread = threading.Thread(target=self._loop, name="checkpoint-watcher", daemon=True)

    def _capture(self) -> None:
        try:
            st = os.stat(self.last)
        except FileNotFoundError:
            return
        key = (st.st_ino, st.st_mtime_ns)
        if key in self._seen:
            return
        self._seen.add(key)
        self.raw.mkdir(parents=True, exist_ok=True)
        dest = self.raw / f"{st.st_ino}-{st.st_mtime_ns}{CKPT_SUFFIX}"
        try:
            os.link(self.last, dest)  # the inode as it is now, even if last.ckpt is replaced a moment later
        except FileExistsError:
            pass
        except OSError:
            shutil.copy2(self.last, dest)

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            self._capture()

    def __enter__(self) -> CheckpointWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._capture()


def _candidates(run: RunDir) -> Iterable[Path]:
    yield from sorted(run.raw_snapshots.glob(f"*{CKPT_SUFFIX}"))
    yield from run.kept_checkpoints()


def export_snapshots(run_dir: Path, steps: Iterable[int]) -> dict[int, Path]:
    """Export the wanted steps found among the captured checkpoints; returns {step: snapshot dir}."""
    import torch

    run = RunDir(run_dir)
    wanted = set(steps)
    final_meta = run.read_backbone_meta()
    # The module the run exported (SSLMethod.exported_module: DINO's teacher, else `backbone`).
    module = final_meta.get("exported_module", DEFAULT_EXPORTED_MODULE)
    found: dict[int, Path] = {}
    for step in wanted:
        if BackboneExport(run.snapshot(step)).exists():
            found[step] = run.snapshot(step)
    for path in _candidates(run):
        if not wanted - set(found):
            break
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        step = int(ckpt.get("global_step", -1))
        if step not in wanted or step in found:
            continue
        out = run.snapshot(step)
        total = max(int(final_meta.get("steps") or step), 1)
        meta = {
            **final_meta,
            "steps": step,
            "epochs": round(float(final_meta.get("epochs") or 0) * step / total, 3),
            "epoch": ckpt.get("epoch"),
            "snapshot_of": str(run.path.resolve()),
        }
        BackboneExport(out).write(module_state_dict(ckpt["state_dict"], module), meta)
        found[step] = out
    shutil.rmtree(run.raw_snapshots, ignore_errors=True)
    return found
