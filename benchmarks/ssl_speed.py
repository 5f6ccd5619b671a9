"""SSL training throughput: each method through Lightning (as `rsbench pretrain` runs it) vs a bare
PyTorch loop over the same model, loss, optimizer and augmentation; and MAE vs MoCo v3 on one ViT.

    .venv/bin/python benchmarks/ssl_speed.py [--methods simclr,mae] [--steps 12] [--threads 2]

Both loops read the same in-memory EuroSAT images through the method's view transform in a
DataLoader, run `training_loss`, backward, the optimizer and LR schedule, and (for EMA methods) the
teacher update; Lightning adds its hooks, logging every 10 steps and the collapse monitor. Timing
covers `--steps` steps after 3 warmup steps (data loading included); the two loops alternate
`--repeats` times and the best time of each counts (the machine may be shared). Overhead =
1 - lightning_img_s / bare_img_s. Saves benchmarks/results/ssl_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, Dataset

from rsbench.data import list_images, read_image
from rsbench.ssl import get_method
from rsbench.ssl.momentum import ema_update
from rsbench.train.data import collate_views

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RSBENCH_SHARED_DATA", REPO.parent / "shared" / "data"))
WARMUP = 3
# Small-batch CPU settings: heads sized for a ResNet-18 / ViT-Tiny, as in ssl_quality.py.
CPU = {
    "mocov2": {"queue_size": 1024},
    "dino": {"out_dim": 4096, "hidden_dim": 1024},
    "barlowtwins": {"proj_dim": 2048},
    "vicreg": {"proj_dim": 2048},
}


class Images(Dataset):
    def __init__(self, tiles, transform):
        self.tiles, self.transform = tiles, transform

    def __len__(self):
        return len(self.tiles)

    def __getitem__(self, i):
        return self.transform(self.tiles[i])


def load_tiles(n: int) -> list[torch.Tensor]:
    paths = list_images(SHARED / "classification" / "eurosat_rgb")
    paths = paths[:: max(1, len(paths) // n)][:n]
    arr = np.stack([read_image(p) for p in paths]).astype(np.float32)
    mean, std = arr.mean((0, 2, 3), keepdims=True), arr.std((0, 2, 3), keepdims=True)
    return list(torch.from_numpy((arr - mean) / std))


def make(name, arch, image_size, batch, steps, recipe, patch_size=None):
    cls = get_method(name)
    model = cls(
        arch=arch,
        in_chans=3,
        image_size=image_size,
        batch_size=batch,
        max_steps=steps,
        recipe=recipe,
        patch_size=patch_size,
    )
    return cls, model


class StepClock(L.Callback):
    def __init__(self):
        self.times: list[float] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.times.append(time.perf_counter())

    def on_train_end(self, trainer, module):
        self.times.append(time.perf_counter())


def run_lightning(model, loader, steps: int) -> float:
    clock = StepClock()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = L.Trainer(
            max_steps=steps,
            max_epochs=-1,
            accelerator="cpu",
            devices=1,
            logger=CSVLogger(tmp),
            log_every_n_steps=10,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[clock],
        )
        trainer.fit(model, loader)
    return clock.times[-1] - clock.times[WARMUP]


def run_bare(model, loader, steps: int) -> float:
    conf = model.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    model.train()
    start, step = None, 0
    while step < steps:
        for views in loader:
            if step == WARMUP:
                start = time.perf_counter()
            pairs = model.ema_pairs()
            if pairs:
                ema_update(pairs, model.ema_momentum)
            loss, _ = model.training_loss(views)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step == steps:
                break
    return time.perf_counter() - start


def measure(name, arch, tiles, args, recipe, patch_size=None) -> dict:
    steps = WARMUP + args.steps
    best = {"bare": float("inf"), "lightning": float("inf")}
    for _ in range(args.repeats):
        for kind in ("bare", "lightning"):
            torch.manual_seed(0)
            cls, model = make(name, arch, args.image_size, args.batch_size, steps, recipe, patch_size)
            loader = DataLoader(
                Images(tiles, cls.view_transform(args.image_size, 3, None)),
                batch_size=args.batch_size,
                shuffle=True,
                drop_last=True,
                num_workers=args.num_workers,
                collate_fn=collate_views,
            )
            seconds = (run_bare if kind == "bare" else run_lightning)(model, loader, steps)
            best[kind] = min(best[kind], seconds)
    images = args.steps * args.batch_size
    bare, lit = images / best["bare"], images / best["lightning"]
    row = {
        "method": name,
        "arch": arch,
        "patch_size": patch_size,
        "recipe": recipe,
        "bare_img_s": round(bare, 2),
        "lightning_img_s": round(lit, 2),
        "overhead": round(1 - lit / bare, 4),
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="simclr,mocov2,mocov3,byol,dino,mae,barlowtwins,vicreg")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--num-workers", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument(
        "--vit", default="vit_tiny_patch16_224,vit_small_patch16_224", help="ViTs for the MAE vs MoCo v3 comparison"
    )
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "ssl_speed.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tiles = load_tiles(512)

    rows = []
    for name in args.methods.split(","):
        arch = get_method(name).default_backbone
        arch = "vit_tiny_patch16_224" if arch.startswith("vit") else "resnet18"
        rows.append(measure(name, arch, tiles, args, CPU.get(name, {})))

    # MAE vs MoCo v3 on one ViT (64 px, patch 16: 16 tokens): paper decoder (8 x 512) and 1-block decoder.
    mae_vs_mocov3 = []
    for vit in args.vit.split(","):
        moco = measure("mocov3", vit, tiles, args, {})
        for decoder in ({}, {"decoder_depth": 1}):
            mae = measure("mae", vit, tiles, args, decoder)
            mae_vs_mocov3.append(
                {
                    "arch": vit,
                    "mae_recipe": decoder,
                    "mae_img_s": mae["lightning_img_s"],
                    "mocov3_img_s": moco["lightning_img_s"],
                    "speedup": round(mae["lightning_img_s"] / moco["lightning_img_s"], 2),
                }
            )
    summary = {
        "methods": rows,
        "mae_vs_mocov3": mae_vs_mocov3,
        "settings": {
            "batch_size": args.batch_size,
            "image_size": args.image_size,
            "steps": args.steps,
            "warmup_steps": WARMUP,
            "repeats": args.repeats,
            "num_workers": args.num_workers,
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "load_average": os.getloadavg(),
            "machine": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "lightning": L.__version__,
        },
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({"mae_vs_mocov3": mae_vs_mocov3}, indent=2))


if __name__ == "__main__":
    main()
