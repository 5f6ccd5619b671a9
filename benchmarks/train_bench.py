"""Training throughput: rsbench pretrain vs a bare PyTorch loop, DDP scaling, and (on GPUs) MFU and
the effect of --compile.

CPU (default; ~5-10 min on 2 cores):
  1. overhead: `rsbench pretrain` (Lightning, callbacks, accounting, logging at its default cadence)
     vs a bare loop of the same model, the same seeded augmentation, the same loss and optimizer;
  2. scaling: 1 process vs 2 DDP processes (gloo) with the same global batch, and 1 process with
     2 threads.
GPU (`--device cuda`): each `--case METHOD:BACKBONE:IMAGE_SIZE:BATCH` is run by `rsbench pretrain`
with and without `--compile` at `--precision` (bf16-mixed); img/s, MFU, peak memory, data wait
come from run.json. Default cases: ResNet-50 MoCo v2 at 224 px and ViT-B/16 MAE at 224 px.

Throughput is the median over logged windows after a warm-up (start-up, worker spawn and
compilation excluded). Results: benchmarks/results/train_bench.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
RSBENCH = str(Path(sys.executable).with_name("rsbench"))
DATA = Path(os.environ.get("RSBENCH_SHARED_DATA", REPO.parent / "shared" / "data")) / "classification" / "eurosat_rgb"


def steady_step_s(run_dir: Path, warmup_steps: int) -> float:
    """Median of the logged per-step times (perf/step_s, averaged over each log window) after warm-up."""
    rows = [r for r in csv.DictReader((run_dir / "metrics.csv").open()) if r.get("perf/step_s")]
    times = [float(r["perf/step_s"]) for r in rows if int(r["step"]) >= warmup_steps]
    return statistics.median(times)


def run_rsbench(args: list[str], out: Path, threads: int | None) -> dict:
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    start = time.perf_counter()
    proc = subprocess.run([RSBENCH, "pretrain", *args, "--out", str(out)], env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    run = json.loads((out / "run.json").read_text())
    run["process_wall_s"] = time.perf_counter() - start
    return run


def bare_loop(
    images: Path, method: str, backbone: str, image_size: int, batch: int, steps: int, workers: int, warmup: int
) -> dict:
    """The same work without Lightning: DataLoader -> training_loss -> backward -> optimizer/scheduler."""
    from torch.utils.data import DataLoader, RandomSampler

    from rsbench.ssl import get_method
    from rsbench.train.data import ImageFilesDataset, collate_views, image_folder_source

    torch.manual_seed(0)
    cls = get_method(method)
    paths, norm = image_folder_source(images)
    dataset = ImageFilesDataset(paths, norm, cls.view_transform(image_size, norm.bands, None), seed=0)
    loader = DataLoader(
        dataset,
        batch_size=batch,
        sampler=RandomSampler(dataset, replacement=True, num_samples=batch * steps),
        num_workers=workers,
        collate_fn=collate_views,
        persistent_workers=workers > 0,
        drop_last=True,
    )
    model = cls(arch=backbone, in_chans=norm.bands, image_size=image_size, batch_size=batch, max_steps=steps)
    model.train()
    conf = model.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    times, t = [], time.perf_counter()
    for views in loader:
        loss, _ = model.training_loss(views)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        loss.item()  # Lightning's logging syncs on the loss too
        now = time.perf_counter()
        times.append(now - t)
        t = now
    step_s = statistics.median(times[warmup:])
    return {"step_s": step_s, "images_per_s": batch / step_s, "steps": len(times)}


def cpu_benchmark(a) -> dict:
    torch.set_num_threads(a.threads)
    tmp = Path(tempfile.mkdtemp(prefix="train_bench_"))
    common = [
        "--images",
        str(a.images),
        "--method",
        a.method,
        "--backbone",
        a.backbone,
        "--image-size",
        str(a.image_size),
        "--batch-size",
        str(a.batch_size),
        "--max-steps",
        str(a.steps),
        "--num-workers",
        str(a.workers),
        "--accelerator",
        "cpu",
        "--log-every",
        "5",
    ]
    results: dict = {}
    lit = run_rsbench(common, tmp / "rsbench", a.threads)
    lit_step = steady_step_s(tmp / "rsbench", a.warmup)
    bare = bare_loop(a.images, a.method, a.backbone, a.image_size, a.batch_size, a.steps, a.workers, a.warmup)
    results["overhead"] = {
        "rsbench_images_per_s": round(a.batch_size / lit_step, 2),
        "bare_loop_images_per_s": round(bare["images_per_s"], 2),
        "overhead_pct": round(100 * (lit_step / bare["step_s"] - 1), 1),
        "goal_pct": 10,
        "rsbench_run_json_images_per_s": lit["images_per_s"],
        "rsbench_data_wait_fraction": lit["data_wait_fraction"],
        "rsbench_flops_per_image": lit["flops"]["per_image"],
        "process_wall_s": round(lit["process_wall_s"], 1),
    }
    print(json.dumps(results["overhead"]), flush=True)
    scaling = {}
    for name, extra, threads in (
        ("1 process x 1 thread", [], 1),
        ("2 DDP processes x 1 thread", ["--devices", "2"], 1),
        ("1 process x 2 threads", [], 2),
    ):
        out = tmp / name.replace(" ", "_")
        run = run_rsbench(common + extra, out, threads)
        step = steady_step_s(out, a.warmup)
        scaling[name] = {
            "images_per_s": round(a.batch_size / step, 2),
            "step_s": round(step, 4),
            "data_wait_fraction": run["data_wait_fraction"],
            "device_hours": run["device_hours"],
        }
        print(name, json.dumps(scaling[name]), flush=True)
    base = scaling["1 process x 1 thread"]["images_per_s"]
    scaling["ddp_speedup_vs_1_process"] = round(scaling["2 DDP processes x 1 thread"]["images_per_s"] / base, 3)
    results["ddp_scaling"] = scaling
    return results


def gpu_benchmark(a) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="train_bench_gpu_"))
    results = {}
    for case in a.case:
        method, backbone, size, batch = case.split(":")
        for compiled in (False, True):
            name = f"{method} {backbone} {size}px batch {batch} {a.precision}{' compile' if compiled else ''}"
            out = tmp / name.replace(" ", "_")
            args = [
                "--images",
                str(a.images),
                "--method",
                method,
                "--backbone",
                backbone,
                "--image-size",
                size,
                "--batch-size",
                batch,
                "--max-steps",
                str(a.steps),
                "--num-workers",
                str(a.workers),
                "--accelerator",
                "gpu",
                "--precision",
                a.precision,
                "--log-every",
                "10",
                "--checkpoint-every",
                str(10 * a.steps),
                *(["--compile"] if compiled else []),
            ]
            try:
                run = run_rsbench(args, out, None)
            except RuntimeError as e:
                results[name] = {"error": str(e).splitlines()[-1]}
                print(name, results[name], flush=True)
                continue
            step = steady_step_s(out, a.warmup)
            flops = run["flops"]
            results[name] = {
                "images_per_s": round(int(batch) / step, 1),
                "step_s": round(step, 4),
                "mfu": round(flops["per_step"] / step / flops["peak_per_device"], 4)
                if flops.get("per_step") and flops.get("peak_per_device")
                else None,
                "flops_per_image": flops.get("per_image"),
                "peak_memory": run["peak_memory"],
                "data_wait_fraction": run["data_wait_fraction"],
                "gpu": run.get("gpu"),
                "device_name": run["device_name"],
                "process_wall_s": round(run["process_wall_s"], 1),
            }
            print(name, json.dumps(results[name]), flush=True)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--images", type=Path, default=DATA, help="image folder (default: the shared EuroSAT RGB)")
    p.add_argument("--method", default="simclr")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=10, help="steps excluded from the throughput")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="CPU: intra-op threads per process")
    p.add_argument("--precision", default="bf16-mixed", help="GPU runs")
    p.add_argument("--case", action="append", help="GPU: METHOD:BACKBONE:IMAGE_SIZE:BATCH (repeatable)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "train_bench.json")
    a = p.parse_args()
    if a.device == "cuda":
        a.case = a.case or ["mocov2:resnet50:224:256", "mae:vit_base_patch16_224:224:256"]
        if a.steps == 40:
            a.steps = 100
        results = gpu_benchmark(a)
    else:
        results = cpu_benchmark(a)
    record = {
        "benchmark": "train_bench",
        "device": a.device,
        "settings": {k: str(v) for k, v in vars(a).items()},
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "load_average_1m_at_end": os.getloadavg()[0],
        },
        "results": results,
    }
    existing = json.loads(a.out.read_text()) if a.out.exists() else {}
    existing[a.device] = record  # CPU and GPU results live side by side
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(existing, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
