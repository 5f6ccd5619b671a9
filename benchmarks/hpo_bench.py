"""Default vs tuned fine-tuning on the shared data: does tuning change which init wins, and what does it cost?

    .venv/bin/python benchmarks/hpo_bench.py [--out /tmp/rsbench-hpo] [--trials 8] [--per-class 10] [--epochs 4]

Two benchmark experiments over one results store: the same matrix without and with `hpo` (lr, weight_decay,
batch_size; early stopping on the validation loss). Tasks: EuroSAT RGB (a per-class excerpt, `finetune`) and
the shared Dubai segmentation (the first tile_1 images cut to squares, `frozen` FPN decoder on cached backbone
maps). Inits: a random ResNet-18 and one SimCLR run pretrained on the same EuroSAT images. Records per init
and task the test score at the default and at the tuned setting, the validation scores of trial 0 (default)
and of the best trial, the Kendall tau between the default and the tuned ranking of inits (test and
validation), the chosen settings, and the cost in CPU-hours per phase, measured as process CPU time (each
cell's own, from its log; each `benchmark run` as a whole with getrusage of its process tree), not wall time:
the machine is shared (its load average is recorded). Written to benchmarks/results/hpo_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RSBENCH_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()
RSBENCH = [sys.executable, "-m", "rsbench"]
THREADS = 2
SPACE = {"lr": [1e-5, 1e-2, "log"], "weight_decay": [1e-6, 1e-1, "log"], "batch_size": [8, 16, 32]}


def excerpt(root: Path, per_class: int, dubai_images: int, dubai_px: int) -> tuple[Path, Path]:
    """EuroSAT: the first `per_class` images of each class (links). Dubai: the first tile_1 pairs, each cut to
    its top-left dubai_px square (lossless PNG, so the masks' colours stay exact)."""
    from PIL import Image

    euro = root / "eurosat"
    src = SHARED / "classification" / "eurosat_rgb"
    for cls in sorted(p for p in src.iterdir() if p.is_dir()):
        (euro / cls.name).mkdir(parents=True, exist_ok=True)
        for f in sorted(cls.iterdir())[:per_class]:
            if not (euro / cls.name / f.name).exists():
                (euro / cls.name / f.name).symlink_to(f)
    dubai = root / "dubai" / "tile_1"
    tile = SHARED / "segmentation" / "dubai_aerial" / "tile_1"
    for sub in ("images", "masks"):
        (dubai / sub).mkdir(parents=True, exist_ok=True)
        for f in sorted((tile / sub).iterdir())[:dubai_images]:
            out = dubai / sub / f"{f.stem}.png"
            if not out.exists():
                Image.open(f).crop((0, 0, dubai_px, dubai_px)).save(out)
    return euro, root / "dubai"


def experiment(out: Path, euro: Path, dubai: Path, args, tuned: bool) -> dict:
    seg = yaml.safe_load((REPO / "src" / "rsbench" / "suite_files" / "rsbench-mini.yaml").read_text())["tasks"][1]
    doc = {
        "name": "hpo-tuned" if tuned else "hpo-default",
        "out": str(out),
        "code_version": "hpo-bench",
        "pretrain": {
            "runs": [
                {
                    "name": "simclr",
                    "method": "simclr",
                    "images": str(euro),
                    "backbone": "resnet18",
                    "image_size": args.image_size,
                    "batch_size": 16,
                    "max_steps": args.pretrain_steps,
                    "num_workers": 0,
                }
            ]
        },
        "baselines": [{"init": "random", "backbone": "resnet18"}],
        "evaluate": {"epochs": args.epochs, "batch_size": 16},
        "tasks": [
            {"name": "eurosat", "data": str(euro), "image_size": args.image_size, "protocols": ["finetune"]},
            *[
                {
                    "name": "dubai",
                    "task": "segmentation",
                    "adapter": "masks",
                    "data": str(dubai),
                    "classes": seg["classes"],
                    "options": seg["options"],
                    "image_size": args.dubai_size,
                    "protocols": ["frozen"],
                }
            ][: int("dubai" in args.tasks)],
        ],
        "seeds": list(range(args.seeds)),
        "executor": {"max_parallel": 1, "threads_per_cell": THREADS},
    }
    if tuned:
        doc["hpo"] = {
            "trials": args.trials,
            "space": SPACE,
            "seed": 0,
            "patience": args.patience,
            "startup_trials": args.startup_trials,
        }
    return doc


def children_cpu_s() -> float:
    """CPU seconds (user + system) of this process's finished children (and theirs, once waited for)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def kendall(a: list[float], b: list[float]) -> float | None:
    from scipy.stats import kendalltau

    return None if len(a) < 2 else float(kendalltau(a, b).statistic)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/rsbench-hpo"))
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument(
        "--startup-trials", type=int, default=4, help="TPE's random draws before it models (Optuna's default is 10)"
    )
    ap.add_argument("--per-class", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--patience", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--image-size", type=int, default=32, help="EuroSAT input size")
    ap.add_argument("--dubai-images", type=int, default=6)
    ap.add_argument("--dubai-px", type=int, default=256, help="side of the square cut from each Dubai image")
    ap.add_argument("--dubai-size", type=int, default=64, help="Dubai crop (input) size")
    ap.add_argument("--pretrain-steps", type=int, default=60)
    ap.add_argument("--tasks", default="eurosat,dubai", help="eurosat always; dubai when listed")
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "hpo_bench.json")
    args = ap.parse_args()
    if args.fresh and args.out.exists():
        shutil.rmtree(args.out)
    euro, dubai = excerpt(args.out / "data", args.per_class, args.dubai_images, args.dubai_px)
    bench = args.out / "bench"
    load = [os.getloadavg()]
    wall, process_cpu = {}, {}
    for tuned in (False, True):
        which = "tuned" if tuned else "default"
        path = args.out / f"{which}.yaml"
        path.write_text(yaml.safe_dump(experiment(bench, euro, dubai, args, tuned), sort_keys=False))
        start, cpu = time.perf_counter(), children_cpu_s()
        res = subprocess.run([*RSBENCH, "benchmark", "run", str(path)], capture_output=True, text=True)
        wall[which] = round(time.perf_counter() - start, 1)
        process_cpu[which] = round(children_cpu_s() - cpu, 1)
        print(res.stdout.strip())
        if res.returncode != 0:
            sys.exit(res.stderr[-3000:])
        load.append(os.getloadavg())

    sys.path.insert(0, str(REPO / "src"))
    from rsbench.benchmark.execute import logged_cpu_s
    from rsbench.results_store import Store
    from rsbench.results_store.db import db_url
    from rsbench.results_store.studies import study_records

    url = db_url(None, bench)
    store = Store(url)
    cells = store.all_cells()
    by_id = {c["id"]: c for c in cells}
    tests: dict[tuple, dict[str, list[float]]] = {}
    for r in store.result_rows():
        if not r["headline"]:
            continue
        cell = by_id[r["_cell"]]
        which = "tuned" if cell["config"].get("tuned_by") else "default"
        tests.setdefault((r["dataset"], r["protocol"], cell["init_label"]), {}).setdefault(which, []).append(r["value"])
    studies = study_records(url)
    per_init = []
    for (dataset, protocol, init), scores in sorted(tests.items()):
        study = next((s for s in studies if s["init"] == init and s["task"] == dataset), None)
        done = [t for t in (study or {}).get("trials", []) if t["state"] == "complete"]
        best = max(done, key=lambda t: (t["value"], -t["number"])) if done else None
        per_init.append(
            {
                "dataset": dataset,
                "protocol": protocol,
                "init": init,
                "test_default": sum(scores.get("default", [])) / max(1, len(scores.get("default", []))),
                "test_tuned": sum(scores.get("tuned", [])) / max(1, len(scores.get("tuned", [])))
                if "tuned" in scores
                else None,
                "val_default": done[0]["value"] if done else None,
                "val_tuned": best["value"] if best else None,
                "best_trial": best["number"] if best else None,
                "chosen": best["setting"] if best else None,
                "trial_values": [t["value"] for t in done],
            }
        )
    ranking = {}
    for dataset in sorted({p["dataset"] for p in per_init}):
        rows = [p for p in per_init if p["dataset"] == dataset]
        ranking[dataset] = {
            "inits": [p["init"] for p in rows],
            "kendall_tau_test": kendall([p["test_default"] for p in rows], [p["test_tuned"] for p in rows]),
            "kendall_tau_val": kendall([p["val_default"] for p in rows], [p["val_tuned"] for p in rows])
            if all(p["val_default"] is not None for p in rows)
            else None,
            "winner_default": max(rows, key=lambda p: p["test_default"])["init"],
            "winner_tuned": max(rows, key=lambda p: p["test_tuned"] or 0)["init"],
        }

    def cpu_s(cell: dict) -> float:
        log = Path(cell["log_path"]) if cell.get("log_path") else None
        found = logged_cpu_s(log.read_text(errors="replace")) if log and log.exists() else None
        if found is None:
            sys.exit(f"no CPU time in the log of cell {cell['label']} ({log})")
        return found

    def phase(kind: str, tuned: bool | None = None) -> float:
        picked = [
            c for c in cells if c["kind"] == kind and (tuned is None or bool(c["config"].get("tuned_by")) == tuned)
        ]
        return round(sum(cpu_s(c) for c in picked) / 3600, 4)

    cpu_hours = {
        "pretrain": phase("pretrain"),
        "default_evals": phase("eval", tuned=False),
        "tuning_studies": phase("hpo"),
        "tuned_evals": phase("eval", tuned=True),
    }
    per_task = {
        task: round(sum(cpu_s(c) for c in cells if c["kind"] == "hpo" and c.get("task") == task) / 3600, 4)
        for task in sorted({c.get("task") for c in cells if c["kind"] == "hpo"})
    }
    result = {
        "what": "default vs tuned fine-tuning (Optuna TPE) on shared EuroSAT and Dubai excerpts",
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "sizes": {
            "eurosat": f"{args.per_class} images per class x 10 classes, {args.image_size} px, finetune",
            "dubai": f"{args.dubai_images} tile_1 images cut to {args.dubai_px} px, {args.dubai_size} px crops, "
            "frozen FPN decoder on cached backbone maps",
            "hpo": {
                "trials": args.trials,
                "space": SPACE,
                "patience": args.patience,
                "sampler": "tpe",
                "startup_trials": args.startup_trials,
            },
            "epochs": args.epochs,
            "seeds": args.seeds,
            "pretrain": f"SimCLR ResNet-18, {args.pretrain_steps} steps of 16 images at {args.image_size} px",
        },
        "threads_per_cell": THREADS,
        "per_init": per_init,
        "ranking": ranking,
        "cpu_hours": cpu_hours,
        "tuning_cpu_hours_per_task": per_task,
        "process_cpu_hours": {k: round(v / 3600, 4) for k, v in process_cpu.items()},
        "wall_s": wall,
        "loadavg": [list(x) for x in load],
        "cpu_count": os.cpu_count(),
        "machine": platform.platform(),
        "note": (
            "cpu_hours: each cell's own process CPU time (user + system, from its log); process_cpu_hours: each "
            "`benchmark run` with all its workers (getrusage of children), so it adds start-up and planning. "
            "The machine was shared with other jobs (loadavg), which stretches wall time but not CPU time."
        ),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result["ranking"], indent=2), json.dumps(result["cpu_hours"]))


if __name__ == "__main__":
    main()
