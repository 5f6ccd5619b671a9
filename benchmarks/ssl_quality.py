"""SSL quality on real data: every method pretrained on EuroSAT images (labels unused) within a CPU
time budget, then kNN accuracy on a held-out split, next to random init and raw pixels.

    .venv/bin/python benchmarks/ssl_quality.py [--methods simclr,byol] [--budget-minutes 10] [--threads 2]

Protocol. A stratified 20 % of EuroSAT (seed 0) is held out before anything else; pretraining sees
only the other 80 % (no test image, not even unlabelled), and the kNN probe (`rsbench evaluate
--protocol knn`, k=20, cosine, T=0.07) is fitted on the 80 % and scored on the held-out 20 %. Nothing
is tuned here: every method runs rsbench's small-batch recipe preset (`--recipe small-batch`; AdamW,
with the paper's method-specific values except where they cannot fit a few-minute run: smaller heads,
EMA momentum 0.99 for a short schedule; `rsbench methods --method M` shows it), and MoCo's queue is
fitted to the 1,840 training images at pretrain start (recorded in backbone.json). Each
method gets `--budget-minutes` of training: its throughput is probed for a few steps and max_steps
set to fit the budget (data loading in 2 workers usually makes the real run a bit faster).
Baselines: random init of the same backbone (same seed as `rsbench evaluate`) and the pixels
baseline (8x8 block averages of the normalized image). Saves benchmarks/results/ssl_quality.json.

Distillation (distill, mae_distill) needs a teacher: rsbench first pretrains `--teacher-method` (MoCo v2,
ResNet-18) on the same training images for `--teacher-epochs` (or `--teacher-budget-minutes`), scores it
with the same kNN probe, and each distilled row reports `teacher_gain_closed`: (student kNN - random init
of the student's backbone) / (teacher kNN - random init of the teacher's backbone), next to the time
the student took and the teacher's share of it. dinov2 trains from scratch like the others.

`--backbone resnet18` runs the ViT-first methods (DINO, MoCo v3) on the ResNet-18 of the others, with
the papers' ResNet values (RESNET_RECIPES / RESNET_MIN_SCALE). Choosing a setting (e.g. DINO's
`--recipe '{"n_local": 2}' --tag local2`) is done with `--validation`: a stratified 20 % of the
training images becomes the scoring split, the test split is not read, and results go to
ssl_quality_validation.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

import timm
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rsbench.data import list_images, read_image
from rsbench.evaluate import EvaluateConfig, evaluate
from rsbench.io import atomic_write_text
from rsbench.ssl import CATALOG, get_card, get_method
from rsbench.ssl.teacher import teacher_spec
from rsbench.train import PretrainConfig, pretrain
from rsbench.train.data import collate_views
from ssl_speed import Images, run_bare

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RSBENCH_SHARED_DATA", REPO.parent / "shared" / "data"))
DEFAULT_JSON = REPO / "benchmarks" / "results" / "ssl_quality.json"
VIT = "vit_tiny_patch16_224"  # built with --vit-patch-size (default 8: 64 tokens for a 64 px tile)
PRESET = "small-batch"  # rsbench.ssl.recipe: AdamW, peak LR 1e-3 at batch 64, each method's small heads
# The papers' crop scales; 0.25 for the two-view methods.
MIN_SCALE = {"dino": 0.4, "mae": 0.2, "dinov2": 0.32, "mae_distill": 0.2, "distill": 0.14}
# The papers' ResNet settings where they differ from their ViT ones (DINO README's ResNet-50 command:
# global crops 0.14-1, local 0.05-0.14; MoCo v3's ResNet-50 recipe: temperature 1.0).
RESNET_RECIPES = {"mocov3": {"temperature": 1.0}}
RESNET_MIN_SCALE = {"dino": 0.14}


def min_scale_of(name: str, arch: str, args) -> float:
    if args.min_scale is not None:
        return args.min_scale
    if arch != VIT and name in RESNET_MIN_SCALE:
        return RESNET_MIN_SCALE[name]
    return MIN_SCALE.get(name, 0.25)


def holdout_split(src: Path, out: Path, fraction: float = 0.2, seed: int = 0) -> tuple[Path, Path]:
    """Symlinked ImageFolders train/ and test/, stratified per class."""
    train, test = out / "train", out / "test"
    if (out / ".done").exists():
        return train, test
    shutil.rmtree(out, ignore_errors=True)
    rng = random.Random(seed)
    for cls in sorted(p for p in src.iterdir() if p.is_dir()):
        files = sorted(cls.iterdir())
        rng.shuffle(files)
        n_test = round(len(files) * fraction)
        for split, chunk in ((test, files[:n_test]), (train, files[n_test:])):
            (split / cls.name).mkdir(parents=True)
            for f in chunk:
                (split / cls.name / f.name).symlink_to(f)
    (out / ".done").touch()
    return train, test


def probe_steps(name: str, arch: str, recipe: dict, tiles, args, teacher: dict | None = None) -> float:
    """Seconds per training step (compute + augmentation), measured on a few steps."""
    cls = get_method(name)
    patch = args.vit_patch_size if arch == VIT else None
    model = cls(
        arch=arch,
        in_chans=3,
        image_size=args.image_size,
        batch_size=args.batch_size,
        max_steps=8,
        recipe=recipe,
        patch_size=patch,
        recipe_preset=PRESET,
        **({"teacher": teacher} if teacher else {}),
    )
    views = cls.view_transform(
        args.image_size, 3, min_scale_of(name, arch, args), patch_size=patch, **cls.view_recipe(recipe, PRESET)
    )
    loader = DataLoader(
        Images(tiles, views), batch_size=args.batch_size, shuffle=True, drop_last=True, collate_fn=collate_views
    )
    return run_bare(model, loader, 8) / 5  # run_bare times the steps after 3 warmup steps


def pretrain_images(name, arch, recipe, min_scale, max_steps, run_dir, data, args, teacher=None) -> None:
    """`rsbench pretrain` on the training images (a finished run directory is kept as it is)."""
    pretrain(
        PretrainConfig(
            method=name,
            images=data[0],
            backbone=arch,
            patch_size=args.vit_patch_size if arch == VIT else None,
            out=run_dir,
            max_steps=max_steps,
            batch_size=args.batch_size,
            image_size=args.image_size,
            min_scale=min_scale,
            num_workers=args.num_workers,
            checkpoint_every=10_000,
            log_every=20,
            recipe_preset=PRESET,
            recipe=recipe,
            teacher=teacher,
        )
    )


def train_teacher(data, tiles, mean, std, n_images: int, args, summary: dict) -> dict:
    """Pretrain the distillation teacher on the training images (or reuse the finished run) and score it."""
    name, arch = args.teacher_method, "resnet18"
    recipe: dict = {}  # the small-batch preset (PRESET) as it is
    sec_per_step = probe_steps(name, arch, recipe, tiles, args)
    if args.teacher_budget_minutes is not None:
        max_steps = max(10, int(args.teacher_budget_minutes * 60 / sec_per_step))
    else:
        max_steps = max(10, round(args.teacher_epochs * n_images / args.batch_size))
    key = f"{name}-{arch}-{max_steps}"
    run_dir = args.out / "teachers" / key
    pretrain_images(name, arch, recipe, min_scale_of(name, arch, args), max_steps, run_dir, data, args)
    run = json.loads((run_dir / "run.json").read_text())
    acc = knn(data, str(run_dir), None, args.out / "results", args.image_size)
    summary["teachers"][key] = {
        "method": name,
        "arch": arch,
        "recipe": recipe,
        "steps": run["steps"],
        "epochs": round(run["steps"] * args.batch_size / n_images, 2),
        "train_wall_s": run["wall_time_s"],
        "probe_sec_per_step": round(sec_per_step, 4),
        "knn_accuracy": round(acc, 4),
        "gain_vs_random_points": round(100 * (acc - summary["baselines"]["random-resnet18"]), 2),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps({"teacher": summary["teachers"][key]}), flush=True)
    norm = {"mean": [float(m) for m in mean], "std": [float(s) for s in std]}
    spec = teacher_spec(str(run_dir), None, None, ["red", "green", "blue"], norm)
    return {"key": key, "run_dir": run_dir, "spec": spec}


def knn(
    data: tuple[Path, Path], init: str, arch: str | None, out: Path, image_size: int, patch_size: int | None = None
) -> float:
    cfg = EvaluateConfig(
        data=data[0],
        test_data=data[1],
        init=init,
        backbone=arch,
        image_size=image_size,
        patch_size=patch_size,
        protocol=["knn"],
        seeds=[0],
        out=out,
    )
    rows = evaluate(cfg)
    return next(r["value"] for r in rows if r["metric"] == "accuracy")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default=",".join(CATALOG))
    ap.add_argument("--budget-minutes", type=float, default=10.0, help="training time per method")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--vit-patch-size", type=int, default=8, help="patch size of the ViT methods")
    ap.add_argument(
        "--backbone",
        default=None,
        help="resnet18 or the ViT for every method given (results keyed METHOD-BACKBONE); "
        "default: the ViT for ViT-first methods (mocov3, dino, mae), else resnet18",
    )
    ap.add_argument(
        "--recipe",
        type=json.loads,
        default={},
        help="JSON recipe overrides on top of the small-batch preset, e.g. '{\"n_local\": 2}' "
        "(name the variant with --tag)",
    )
    ap.add_argument("--min-scale", type=float, default=None, help="crop scale for every method given")
    ap.add_argument("--tag", default="", help="variant name: results keyed METHOD[-BACKBONE]-TAG")
    ap.add_argument(
        "--validation",
        action="store_true",
        help="carve a stratified 20 %% validation split out of the training images and score on it "
        "(for choosing settings; the test split is never read); saves ssl_quality_validation.json",
    )
    ap.add_argument("--teacher-method", default="mocov2", help="what rsbench pretrains as the distillation teacher")
    ap.add_argument("--teacher-epochs", type=float, default=40, help="the teacher's schedule, in epochs")
    ap.add_argument(
        "--teacher-budget-minutes", type=float, default=None, help="the teacher's schedule as a time budget instead"
    )
    ap.add_argument("--num-workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/rsbench-ssl-quality"))
    ap.add_argument("--fresh", action="store_true", help="delete --out first")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.fresh:
        shutil.rmtree(args.out, ignore_errors=True)
    data = holdout_split(SHARED / "classification" / "eurosat_rgb", args.out / "data")
    if args.validation:
        data = holdout_split(data[0], args.out / "validation-data")
        if args.json == DEFAULT_JSON:
            args.json = DEFAULT_JSON.with_name("ssl_quality_validation.json")
    results = args.out / "results"
    previous = json.loads(args.json.read_text()) if args.json.exists() else {}
    # Earlier methods' rows and the hand-written notes survive a run of a few methods.
    summary = {
        "methods": dict(previous.get("methods", {})),
        "baselines": {},
        "teachers": dict(previous.get("teachers", {})),
        "notes": previous.get("notes", []),
    }

    paths = list_images(data[0])
    tiles_np = [read_image(p).astype("float32") for p in paths[:: max(1, len(paths) // 256)]]
    mean = sum(t.mean((1, 2)) for t in tiles_np) / len(tiles_np)
    std = sum(t.std((1, 2)) for t in tiles_np) / len(tiles_np)
    tiles = [torch.from_numpy((t - mean[:, None, None]) / std[:, None, None]) for t in tiles_np]

    summary["settings"] = {
        "budget_minutes_per_method": args.budget_minutes,
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "vit_patch_size": args.vit_patch_size,
        "num_workers": args.num_workers,
        "torch_threads": torch.get_num_threads(),
        "train_images": len(paths),
        "test_images": len(list_images(data[1])),
        "holdout": "validation: stratified 20 % of the training split, seed 0"
        if args.validation
        else "stratified 20 %, seed 0",
        "knn": {"k": 20, "temperature": 0.07},
        "cpu_count": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    summary["baselines"]["random-resnet18"] = round(knn(data, "random", "resnet18", results, args.image_size), 4)
    summary["baselines"][f"random-{VIT}"] = round(
        knn(data, "random", VIT, results, args.image_size, args.vit_patch_size), 4
    )
    summary["baselines"]["pixels"] = round(knn(data, "pixels", None, results, args.image_size), 4)
    print(json.dumps(summary["baselines"]), flush=True)

    methods = args.methods.split(",")
    needs_teacher = any(get_card(name).needs_teacher for name in methods)
    # Every step-time probe runs first, before any long training, so that the step budgets are measured
    # on the same (ideally quiet) machine; distillation students are probed with a stand-in teacher of
    # the real teacher's architecture (same forward cost; its weights do not matter for timing).
    norm = {"mean": [float(m) for m in mean], "std": [float(s) for s in std]}
    stand_in = None
    if needs_teacher:
        stand_in_file = args.out / "stand-in-teacher.pt"
        torch.save(timm.create_model("resnet18", num_classes=0).state_dict(), stand_in_file)
        stand_in = teacher_spec(
            str(stand_in_file), "resnet18", ["red", "green", "blue"], ["red", "green", "blue"], norm
        )
    plans = []
    for name in methods:
        default_arch = VIT if get_method(name).default_backbone.startswith("vit") else "resnet18"
        arch = args.backbone or default_arch
        key = (name if arch == default_arch else f"{name}-{arch}") + (f"-{args.tag}" if args.tag else "")
        recipe = {**(RESNET_RECIPES.get(name, {}) if arch != VIT else {}), **args.recipe}  # on top of PRESET
        uses_teacher = get_card(name).needs_teacher
        sec_per_step = probe_steps(name, arch, recipe, tiles, args, stand_in if uses_teacher else None)
        max_steps = max(10, int(args.budget_minutes * 60 / sec_per_step))
        plans.append((name, arch, key, recipe, uses_teacher, sec_per_step, max_steps))
        print(json.dumps({"probe": key, "sec_per_step": round(sec_per_step, 3), "max_steps": max_steps}), flush=True)
    teacher = train_teacher(data, tiles, mean, std, len(paths), args, summary) if needs_teacher else None

    for name, arch, key, recipe, uses_teacher, sec_per_step, max_steps in plans:
        min_scale = min_scale_of(name, arch, args)
        spec = teacher["spec"] if uses_teacher else None
        run_dir = args.out / ("validation-runs" if args.validation else "runs") / f"{key}-{max_steps}"
        start = time.perf_counter()
        patch = args.vit_patch_size if arch == VIT else None
        teacher_dir = str(teacher["run_dir"]) if spec else None
        pretrain_images(name, arch, recipe, min_scale, max_steps, run_dir, data, args, teacher_dir)
        wall = time.perf_counter() - start
        run = json.loads((run_dir / "run.json").read_text())
        meta = json.loads((run_dir / "backbone.json").read_text())
        acc = knn(data, str(run_dir), None, results, args.image_size)
        summary["methods"][key] = {
            "arch": arch,
            "patch_size": patch,
            "recipe_preset": PRESET,
            "recipe_overrides": recipe,
            "recipe": meta["recipe"],  # what it trained with (preset + overrides + data fitting)
            "recipe_adaptations": meta["recipe_adaptations"],
            "min_scale": min_scale,
            "budget_minutes": args.budget_minutes,
            "steps": run["steps"],
            "epochs": meta["epochs"],
            "train_wall_s": run["wall_time_s"],
            "pretrain_total_s": round(wall, 1),
            "images_per_s": run["images_per_s"],
            "probe_sec_per_step": round(sec_per_step, 4),
            "knn_accuracy": round(acc, 4),
        }
        row = summary["methods"][key]
        row["gain_vs_random_points"] = round(100 * (row["knn_accuracy"] - summary["baselines"][f"random-{arch}"]), 2)
        row["gain_vs_pixels_points"] = round(100 * (row["knn_accuracy"] - summary["baselines"]["pixels"]), 2)
        if spec:
            t = summary["teachers"][teacher["key"]]
            student_gain = row["knn_accuracy"] - summary["baselines"][f"random-{arch}"]
            teacher_gain = t["knn_accuracy"] - summary["baselines"]["random-resnet18"]
            row["teacher"] = teacher["key"]
            row["teacher_knn_accuracy"] = t["knn_accuracy"]
            row["teacher_gain_closed"] = round(student_gain / teacher_gain, 4) if teacher_gain > 0 else None
            row["student_time_over_teacher_time"] = round(run["wall_time_s"] / t["train_wall_s"], 4)
            if t.get("probe_sec_per_step"):  # the same ratio from quiet-machine step times (load-independent)
                row["student_time_over_teacher_time_probed"] = round(
                    row["steps"] * sec_per_step / (t["steps"] * t["probe_sec_per_step"]), 4
                )
            row["teacher_cost"] = run.get("teacher_cost")
        row["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        print(json.dumps({key: row}), flush=True)
        # Saved after every method: a long run stopped part-way keeps what it measured.
        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.json, json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
