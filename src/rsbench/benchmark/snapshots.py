"""Intermediate checkpoints of a pretraining run, exported as evaluable backbones.

`rsbench pretrain` keeps only `checkpoints/last.ckpt`, rewritten every `checkpoint_every` steps by
Lightning with an atomic rename. While the run trains, a thread hard-links each new version (a new
inode) into `snapshots/.raw/`, so no version is lost and none is read half-written. Checkpoints that the
run keeps itself (`checkpoints/*.ckpt` other than last.ckpt) are used as well. After training, the
wanted steps become `snapshots/<run>@step-<N>/` holding `backbone.pt` + `backbone.json`, the layout
`rsbench evaluate --init` reads.
"""

from __future__ import annotations

import io
import os
import shutil
import threading
from collections.abc import Iterable
from pathlib import Path

from rsbench.io import atomic_write_bytes, read_json, write_json

RAW = ".raw"


def snapshot_dir(run_dir: Path, step: int) -> Path:
    return run_dir / "snapshots" / f"{run_dir.name}@step-{step:06d}"


class CheckpointWatcher:
    """Context manager: while open, capture every version of run_dir/checkpoints/last.ckpt."""

    def __init__(self, run_dir: Path, poll_s: float = 0.05) -> None:
        self.last = run_dir / "checkpoints" / "last.ckpt"
        self.raw = run_dir / "snapshots" / RAW
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
        dest = self.raw / f"{st.st_ino}-{st.st_mtime_ns}.ckpt"
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


def _candidates(run_dir: Path) -> Iterable[Path]:
    yield from sorted((run_dir / "snapshots" / RAW).glob("*.ckpt"))
    yield from sorted(p for p in (run_dir / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt")


def export_snapshots(run_dir: Path, steps: Iterable[int]) -> dict[int, Path]:
    """Export the wanted steps found among the captured checkpoints; returns {step: snapshot dir}."""
    import torch

    wanted = set(steps)
    final_meta = read_json(run_dir / "backbone.json")
    # The module the run exported (SSLMethod.exported_module: DINO's teacher, else `backbone`).
    prefix = final_meta.get("exported_module", "backbone") + "."
    found: dict[int, Path] = {}
    for step in wanted:
        if (snapshot_dir(run_dir, step) / "backbone.json").is_file():
            found[step] = snapshot_dir(run_dir, step)
    for path in _candidates(run_dir):
        if not wanted - set(found):
            break
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        step = int(ckpt.get("global_step", -1))
        if step not in wanted or step in found:
            continue
        state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
        out = snapshot_dir(run_dir, step)
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(out / "backbone.pt", buf.getvalue())
        total = max(int(final_meta.get("steps") or step), 1)
        meta = {
            **final_meta,
            "steps": step,
            "epochs": round(float(final_meta.get("epochs") or 0) * step / total, 3),
            "epoch": ckpt.get("epoch"),
            "snapshot_of": str(run_dir.resolve()),
        }
        write_json(out / "backbone.json", meta)  # written last: marks a complete snapshot
        found[step] = out
    shutil.rmtree(run_dir / "snapshots" / RAW, ignore_errors=True)
    return found
