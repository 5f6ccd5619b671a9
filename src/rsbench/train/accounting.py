"""What a run cost, written to RUN_DIR/run.json while it runs and when it ends.

A run is one or more *segments* (a first start, then every resume after a kill, preemption or
failure). Totals add up all segments, lost work included: device-hours measure what was spent, not
only what survived. run.json is rewritten atomically by global rank 0 at start (status "running"),
at every checkpoint, every few seconds at log steps, and at the end ("finished", "failed",
"preempted"). A segment found "running" by the next start died without a word (SIGKILL, node
failure) and is recorded as "killed".

Step time is split into data wait (the loop blocked on the DataLoader: the gap between the end of
one batch and the start of the next) and compute (batch start to batch end: forward, backward,
optimizer, callbacks).
"""

from __future__ import annotations

import os
import socket
import time
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback

from rsbench import __version__
from rsbench.contracts.run_dir import RunDir
from rsbench.io import read_json, write_json
from rsbench.train.hardware import GpuMonitor, children_rss_bytes, cpu_peak_rss_bytes, device_name, peak_flops

_HEARTBEAT_S = 5.0


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def previous_segments(run_dir: Path) -> list[dict[str, Any]]:
    """Segments recorded by earlier starts of this run; a 'running' one was killed."""
    path = RunDir(run_dir).run_json
    try:
        segments = list(read_json(path).get("segments", [])) if path.is_file() else []
    except (OSError, ValueError):
        return []
    for seg in segments:
        if seg.get("status") == "running":
            seg["status"] = "killed"
    return segments


class RunAccounting(Callback):
    def __init__(
        self,
        run_dir: Path,
        info: dict[str, Any],
        batch_size: int,
        accumulate: int,
        flops_per_micro_batch: float | None,
        flops_note: str | None,
        log_every: int,
        teacher_flops_per_micro_batch: float | None = None,
    ):
        self.path = RunDir(run_dir).run_json
        # Distillation: the frozen teacher's forward, inside the totals and also on its own.
        self.teacher_flops_micro = teacher_flops_per_micro_batch
        self.teacher_s = 0.0
        self.info, self.batch_size, self.accumulate = info, batch_size, accumulate
        self.flops_micro, self.flops_note = flops_per_micro_batch, flops_note
        self.log_every = log_every
        self.earlier = previous_segments(run_dir)
        self.process_start = time.time()
        self.is_zero = True
        self.world_size = info.get("world_size", 1)
        self.device: str | None = None
        self.device_label: str | None = None
        self.precision = str(info.get("precision"))
        self.start_step = self.step = 0
        self.train_start: float | None = None
        self.data_wait = self.compute = 0.0
        self._batch_start = self._last_end = None
        self._ends: deque[tuple[float, int]] = deque(maxlen=max(2, log_every + 1))
        self._last_write = 0.0
        self.last_checkpoint_step: int | None = None
        self.loss: float | None = None
        self.workers_rss_max = 0
        self.gpu: GpuMonitor | None = None
        self.status = "running"
        self.error: str | None = None

    # ---- lifecycle ---------------------------------------------------------------------------
    def begin(self, start_step: int, is_global_zero: bool) -> None:
        """Before fit: record that the run is running (rank 0 only)."""
        self.start_step = self.step = start_step
        self.is_zero = is_global_zero
        self.write()

    def finish(self, status: str, error: str | None = None) -> None:
        self.status, self.error = status, error
        self.write(force=True)

    # ---- hooks -------------------------------------------------------------------------------
    def setup(self, trainer, pl_module, stage: str) -> None:
        self.is_zero = trainer.is_global_zero
        self.world_size = trainer.world_size
        root = trainer.strategy.root_device
        self.device, self.device_label = str(root), device_name(root)
        self.gpu = GpuMonitor(root)

    def on_train_start(self, trainer, pl_module) -> None:
        self.start_step = self.step = trainer.global_step
        self.train_start = self._last_end = time.perf_counter()
        self._ends.append((self._last_end, self.step))
        if root_is_cuda(trainer):
            import torch

            torch.cuda.reset_peak_memory_stats(trainer.strategy.root_device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self._batch_start = time.perf_counter()
        if self._last_end is not None:
            self.data_wait += self._batch_start - self._last_end

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        now = time.perf_counter()
        if self._batch_start is not None:
            self.compute += now - self._batch_start
        self._last_end = now
        teacher = getattr(pl_module, "teacher", None)
        if teacher is not None:
            self.teacher_s = float(getattr(teacher, "forward_seconds", 0.0))
        if (batch_idx + 1) % self.accumulate:
            return
        self.step = trainer.global_step
        self._ends.append((now, self.step))
        (t0, s0), (t1, s1) = self._ends[0], self._ends[-1]
        window_ips = (s1 - s0) * self.batch_size / (t1 - t0) if t1 > t0 and s1 > s0 else None
        metrics: dict[str, float] = {}
        if window_ips:
            metrics["perf/images_per_s"] = window_ips
            metrics["perf/step_s"] = (t1 - t0) / (s1 - s0)
        busy = self.data_wait + self.compute
        if busy > 0:
            metrics["perf/data_wait_fraction"] = self.data_wait / busy
        if self.step % self.log_every == 0:
            if self.gpu is not None:
                metrics.update({f"perf/{k}": v for k, v in self.gpu.sample().items()})
            try:
                self.workers_rss_max = max(self.workers_rss_max, children_rss_bytes())
            except Exception:
                pass
            mfu = self._mfu(metrics.get("perf/step_s"))
            if mfu is not None:
                metrics["perf/mfu"] = mfu
        for name, value in metrics.items():
            pl_module.log(
                name,
                value,
                on_step=True,
                on_epoch=False,
                prog_bar=name == "perf/images_per_s",
                batch_size=self.batch_size,
            )
        loss = trainer.callback_metrics.get("train/loss")
        if loss is not None and self.step % self.log_every == 0:
            self.loss = float(loss)
            self.write()

    def checkpoint_saved(self, path, step: int) -> None:
        """Called by AtomicCheckpointIO (rank 0) once a checkpoint is complete on disk."""
        self.last_checkpoint_step = step
        self.step = max(self.step, step)
        self.write(force=True)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.status = "failed"
        self.error = f"{type(exception).__name__}: {str(exception).splitlines()[0][:300] if str(exception) else ''}"

    # ---- numbers -----------------------------------------------------------------------------
    def _mfu(self, step_s: float | None) -> float | None:
        peak = peak_flops(self.device_label or "", self.precision)
        if not step_s or self.flops_micro is None or peak is None:
            return None
        return self.flops_micro * self.accumulate / step_s / peak

    def segment(self) -> dict[str, Any]:
        now = time.time()
        train_s = time.perf_counter() - self.train_start if self.train_start is not None else 0.0
        steps = self.step - self.start_step
        images = steps * self.batch_size
        seg = {
            "status": self.status,
            "started_at": datetime.fromtimestamp(self.process_start, timezone.utc).isoformat(timespec="seconds"),
            "updated_at": _now(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "start_step": self.start_step,
            "end_step": self.step,
            "world_size": self.world_size,
            "device": self.device,
            "device_name": self.device_label,
            "wall_time_s": round(now - self.process_start, 3),
            "train_time_s": round(train_s, 3),
            "images": images,
            "images_per_s": round(images / train_s, 2) if train_s > 0 and images else None,
            "data_wait_s": round(self.data_wait, 3),
            "compute_s": round(self.compute, 3),
            **({"teacher_time_s": round(self.teacher_s, 3)} if "teacher" in self.info else {}),
            "cpu_rss_peak_bytes": cpu_peak_rss_bytes(),
            "workers_rss_peak_bytes": self.workers_rss_max or None,
        }
        if self.device and self.device.startswith("cuda"):
            import torch

            seg["gpu_memory_peak_allocated_bytes"] = int(torch.cuda.max_memory_allocated(self.device))
            seg["gpu_memory_peak_reserved_bytes"] = int(torch.cuda.max_memory_reserved(self.device))
            seg["gpu"] = self.gpu.summary() if self.gpu is not None else {}
        if self.error:
            seg["error"] = self.error
        return seg

    def report(self) -> dict[str, Any]:
        current = self.segment()
        segments = [*self.earlier, current]
        wall = sum(s.get("wall_time_s") or 0 for s in segments)
        train = sum(s.get("train_time_s") or 0 for s in segments)
        images = sum(s.get("images") or 0 for s in segments)
        device_hours = sum((s.get("wall_time_s") or 0) * (s.get("world_size") or 1) for s in segments) / 3600
        busy = current["data_wait_s"] + current["compute_s"]
        on_gpu = bool(self.device and self.device.startswith("cuda"))
        peak = peak_flops(self.device_label or "", self.precision)
        step_s = current["train_time_s"] / (self.step - self.start_step) if self.step > self.start_step else None
        flops_step = self.flops_micro * self.accumulate * self.world_size if self.flops_micro is not None else None
        achieved = flops_step / self.world_size / step_s if flops_step and step_s else None
        # Rank 0's GPU, scaled to all devices of its segment: ranks run the same work in lock-step.
        energy = [(s.get("gpu") or {}).get("energy_j") for s in segments if s.get("gpu") is not None]
        energy_all = sum(
            e * (s.get("world_size") or 1) for s in segments if (e := (s.get("gpu") or {}).get("energy_j")) is not None
        )
        teacher = None
        if "teacher" in self.info:
            t_step = self.teacher_flops_micro * self.accumulate * self.world_size if self.teacher_flops_micro else None
            t_time = sum(s.get("teacher_time_s") or 0 for s in segments)
            teacher = {
                "flops_per_step": t_step,
                "flops_fraction": round(t_step / flops_step, 4) if t_step and flops_step else None,
                "time_s": round(t_time, 3),
                "time_fraction": round(t_time / train, 4) if train > 0 else None,
                "timer": "wall time of the teacher's forward (synchronised on GPUs), rank 0",
            }
        out = {
            "status": self.status,
            **self.info,
            "step": self.step,
            "steps": self.step,
            "images_seen": self.step * self.batch_size,
            "images_processed": images,
            "wall_time_s": round(wall, 3),
            "train_time_s": round(train, 3),
            "images_per_s": round(images / train, 2) if train > 0 and images else None,
            "step_time_s": round(step_s, 5) if step_s else None,
            "data_wait_s": current["data_wait_s"],
            "compute_s": current["compute_s"],
            "data_wait_fraction": round(current["data_wait_s"] / busy, 4) if busy > 0 else None,
            "device": self.device,
            "device_name": self.device_label,
            "device_hours": round(device_hours, 6),
            "peak_memory": {
                k: current.get(k)
                for k in (
                    "cpu_rss_peak_bytes",
                    "workers_rss_peak_bytes",
                    "gpu_memory_peak_allocated_bytes",
                    "gpu_memory_peak_reserved_bytes",
                )
                if current.get(k) is not None
            },
            "flops": {
                "per_step": flops_step,
                "per_image": flops_step / self.batch_size if flops_step else None,
                "achieved_per_s_per_device": achieved,
                "peak_per_device": peak,
                "mfu": round(achieved / peak, 4) if achieved and peak else None,
                "counter": "torch.utils.flop_counter (forward + backward, one micro-batch on meta tensors)",
                **({"note": self.flops_note} if self.flops_note else {}),
            },
            **({"teacher_cost": teacher} if teacher is not None else {}),
            "loss": self.loss,
            "last_checkpoint_step": self.last_checkpoint_step,
            "resumed": self.start_step > 0 or bool(self.earlier),
            "updated_at": _now(),
            "segments": segments,
            "rsbench_version": __version__,
        }
        if on_gpu:
            out["gpu_hours"] = out["device_hours"]
            out["gpu"] = current.get("gpu", {})
            if energy and all(e is not None for e in energy):
                out["energy_kwh"] = round(energy_all / 3.6e6, 4)
        if self.error:
            out["error"] = self.error
        return out

    def write(self, force: bool = False) -> None:
        if not self.is_zero:
            return
        if not force and time.monotonic() - self._last_write < _HEARTBEAT_S and self._last_write:
            return
        self._last_write = time.monotonic()
        write_json(self.path, self.report())


def root_is_cuda(trainer) -> bool:
    return trainer.strategy.root_device.type == "cuda"
