"""What the hardware did: model FLOPs, device peak FLOP/s, GPU telemetry (NVML), memory.

NVML (nvidia-ml-py) is optional: without it, or without a GPU, the monitor reports nothing and
CPU runs never fail on an import.
"""

from __future__ import annotations

import logging
import resource
import warnings
from collections.abc import Callable

import torch

_log = logging.getLogger(__name__)

# Dense peak FLOP/s per device from the vendors' data sheets (no 2:4 sparsity).
# keys: bf16/fp16 tensor cores, tf32 tensor cores, plain fp32.
PEAK_FLOPS: dict[str, dict[str, float]] = {
    "H200": {"bf16": 989.4e12, "fp16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12},
    "H100 PCIe": {"bf16": 756.5e12, "fp16": 756.5e12, "tf32": 378.0e12, "fp32": 51.2e12},
    "H100": {"bf16": 989.4e12, "fp16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12},  # SXM
    "A100": {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "fp32": 19.5e12},
    "V100": {"fp16": 125e12, "fp32": 15.7e12},  # no bf16 tensor cores
}


def peak_flops(device_name: str, precision: str) -> float | None:
    """Peak FLOP/s of one device at the training precision, or None for unknown devices/CPUs."""
    for model in PEAK_FLOPS:  # most specific names first
        if all(part in device_name for part in model.split()):
            table = PEAK_FLOPS[model]
            break
    else:
        return None
    if precision.startswith("bf16"):
        kind = "bf16"
    elif precision.startswith("16"):
        kind = "fp16"
    else:
        kind = "tf32" if torch.get_float32_matmul_precision() != "highest" else "fp32"
    return table.get(kind)


def count_step_flops(
    build_model: Callable[[], torch.nn.Module], view_shapes: list[tuple[int, ...]]
) -> tuple[float | None, str | None]:
    """FLOPs of forward + backward of one micro-batch on one device (view_shapes include the batch),
    counted by torch.utils.flop_counter on a fresh copy of the model, never the one being trained.

    On the meta device first (no memory, no compute). Losses with data-dependent shapes (boolean
    masks) cannot run there; they are counted on CPU with 2 images per view and scaled linearly to
    the batch, which neglects the batch-quadratic terms of contrastive losses (a B x B similarity
    matrix is < 0.1% of a ResNet-50's FLOPs). Returns (flops, note) or (None, reason): the note is one
    short sentence for run.json (the exception's text goes to this module's DEBUG log only).
    """
    try:
        return _count(build_model, view_shapes, "meta"), None
    except Exception as e:  # fall back to a small real batch
        _log.debug("FLOPs on meta tensors failed: %s", _why(e))
    batch = view_shapes[0][0]
    small = [(min(2, s[0]), *s[1:]) for s in view_shapes]
    try:
        flops = _count(build_model, small, "cpu") * batch / small[0][0]
    except Exception as e:  # accounting must never break training
        _log.debug("FLOPs on CPU failed: %s", _why(e))
        return None, f"not counted ({type(e).__name__})"
    # A short, stable note for run.json; the meta-tensor error itself is only logged (DEBUG).
    return (
        flops,
        f"counted on CPU with {small[0][0]} images per view and scaled to {batch} (loss not traceable on meta)",
    )


def count_teacher_flops(teacher: torch.nn.Module, view_shape: tuple[int, ...]) -> float | None:
    """FLOPs of a frozen teacher's forward on one micro-batch of `view_shape` (batch first): a part of
    count_step_flops's total, reported on its own. Counted on one CPU image (the frozen teacher is
    unchanged by a forward) and scaled to the batch; None when it cannot be counted."""
    from torch.utils.flop_counter import FlopCounterMode

    seconds = getattr(teacher, "forward_seconds", None)
    try:
        with FlopCounterMode(display=False) as counter:
            teacher(torch.zeros((1, *view_shape[1:])))
        return float(counter.get_total_flops()) * view_shape[0]
    except Exception:  # accounting must never break training
        return None
    finally:
        if seconds is not None:
            teacher.forward_seconds = seconds  # the count is not training time


def _count(build_model, view_shapes, device: str) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device(device), warnings.catch_warnings():
        # A teacher loads its weights file into meta tensors: a no-op torch warns about.
        warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter.*")
        model = build_model()
    model.train()
    views = [torch.randn(shape, device=device) for shape in view_shapes]
    with FlopCounterMode(display=False) as counter:
        loss, _ = model.training_loss(views)
        loss.backward()
    return float(counter.get_total_flops())


def _why(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"


def cpu_peak_rss_bytes() -> int:
    """Peak resident memory of this process (Linux reports ru_maxrss in KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def children_rss_bytes() -> int:
    """Current resident memory of the DataLoader workers (and any other children)."""
    import psutil

    total = 0
    for child in psutil.Process().children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            pass
    return total


class GpuMonitor:
    """NVML telemetry of one CUDA device: utilisation, memory, power, energy counter."""

    def __init__(self, device: torch.device):
        self.handle = None
        self.nvml = None
        self.samples = 0
        self.util_sum = self.power_sum = 0.0
        self.mem_max = 0
        self.energy_start_mj: int | None = None
        if device.type != "cuda":
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            uuid = str(torch.cuda.get_device_properties(device).uuid)
            try:
                self.handle = pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
            except pynvml.NVMLError:
                self.handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
            self.nvml = pynvml
            self.energy_start_mj = self._energy()
        except Exception:  # no NVML, no telemetry
            self.handle = None

    def _energy(self) -> int | None:
        try:
            return int(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))  # mJ since driver load
        except Exception:  # pre-Volta GPUs have no energy counter
            return None

    def sample(self) -> dict[str, float]:
        if self.handle is None:
            return {}
        try:
            util = self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu
            mem = self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used
            power = self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1000.0
        except Exception:
            return {}
        self.samples += 1
        self.util_sum += util
        self.power_sum += power
        self.mem_max = max(self.mem_max, int(mem))
        return {"gpu_util_pct": float(util), "gpu_power_w": power, "gpu_mem_used_gb": mem / 1e9}

    def summary(self) -> dict[str, float | int | None]:
        if self.handle is None:
            return {}
        end = self._energy()
        energy = (end - self.energy_start_mj) / 1000.0 if end is not None and self.energy_start_mj is not None else None
        return {
            "utilization_mean_pct": round(self.util_sum / self.samples, 1) if self.samples else None,
            "power_mean_w": round(self.power_sum / self.samples, 1) if self.samples else None,
            "memory_used_max_bytes": self.mem_max or None,
            "energy_j": round(energy, 1) if energy is not None else None,
        }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({torch.get_num_threads()} threads)"
