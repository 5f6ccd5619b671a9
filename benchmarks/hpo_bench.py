"""Default vs tuned fine-tuning on the shared data: does tuning change which init wins, and what does it cost?

    .venv/bin/python benchmarks/hpo_bench.py [--out /tmp/rsbench-hpo] [--trials 8] [--per-class 20] [--epochs 3]

Two benchmark experiments over one results store: the same matrix without and with `hpo`. Tasks: EuroSAT RGB
(a per-class excerpt, `finetune`) and Dubai segmentation (4 tile_1 images, `frozen` decoder). Inits: a random
ResNet-18 and one SimCLR run pretrained on the same EuroSAT images. Records per init and task the test score
at the default and at the tuned setting, the validation scores of trial 0 (default) and of the best trial, the
Kendall tau between the default and the tuned ranking of inits (test and validation), the chosen settings, and
the cost in CPU-hours (cell wall time x threads), with the machine's load average, into
benchmarks/results/hpo_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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


def excerpt(root: Path, per_class: int) -> tuple[Path, Path]:
    euro = root / "eurosat"
    src = SHARED / "classification" / "eurosat_rgb"
    for cls in sorted(p for p in src.iterdir() if p.is_dir()):
        (euro / cls.name).mkdir(parents=True, exist_ok=True)
        for f in sorted(cls.iterdir())[:per_class]:
            if not (euro / cls.name / f.name).exists():
                (euro / cls.name / f.name).symlink_to(f)
    dubai = root / "dubai" / "tile_1"
    for sub in ("images", "masks"):
        (dubai / sub).mkdir(parents=True, exist_ok=True)
        for f in sorted((SHARED / "segmentation" / "dubai_aerial" / "tile_1" / sub).iterdir())[:4]:
            if not (dubai / sub / f.name).exists():
                (dubai / sub / f.name).symlink_to(f)
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
        "evaluate": {"epochs": args.epochs, "batch_size": 32},
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
                    "image_size": 128,
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
            "space": {"lr": [1e-5, 1e-2, "log"], "batch_size": [8, 16, 32]},
            "seed": 0,
            "patience": 2,
        }
    return doc


def kendall(a: list[float], b: list[float]) -> float | None:
    from scipy.stats import kendalltau

    return None if len(a) < 2 else float(kendalltau(a, b).statistic)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/rsbench-hpo"))
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--per-class", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--pretrain-steps", type=int, default=60)
    ap.add_argument("--tasks", default="eurosat,dubai", help="eurosat always; dubai when listed")
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "hpo_bench.json")
    args = ap.parse_args()
    if args.fresh and args.out.exists():
        shutil.rmtree(args.out)
    euro, dubai = excerpt(args.out / "data", args.per_class)
    bench = args.out / "bench"
    load = [os.getloadavg()]
    wall = {}
    for tuned in (False, True):
        path = args.out / f"{'tuned' if tuned else 'default'}.yaml"
        path.write_text(yaml.safe_dump(experiment(bench, euro, dubai, args, tuned), sort_keys=False))
        start = time.perf_counter()
        res = subprocess.run([*RSBENCH, "benchmark", "run", str(path)], capture_output=True, text=True)
        wall["tuned" if tuned else "default"] = round(time.perf_counter() - start, 1)
        print(res.stdout.strip())
        if res.returncode != 0:
            sys.exit(res.stderr[-3000:])
        load.append(os.getloadavg())

    sys.path.insert(0, str(REPO / "src"))
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
    seconds = {k: sum(c["duration_s"] or 0 for c in cells if c["kind"] == k) for k in ("pretrain", "hpo", "eval")}
    tuned_eval = sum(c["duration_s"] or 0 for c in cells if c["kind"] == "eval" and c["config"].get("tuned_by"))
    result = {
        "what": "default vs tuned fine-tuning (Optuna TPE) on shared EuroSAT and Dubai excerpts",
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "threads_per_cell": THREADS,
        "per_init": per_init,
        "ranking": ranking,
        "cpu_hours": {
            "pretrain": round(seconds["pretrain"] * THREADS / 3600, 4),
            "default_evals": round((seconds["eval"] - tuned_eval) * THREADS / 3600, 4),
            "tuning_studies": round(seconds["hpo"] * THREADS / 3600, 4),
            "tuned_evals": round(tuned_eval * THREADS / 3600, 4),
        },
        "wall_s": wall,
        "loadavg": [list(x) for x in load],
        "cpu_count": os.cpu_count(),
        "machine": platform.platform(),
        "note": "CPU-hours = cell wall time x threads per cell on a machine shared with other jobs (see loadavg).",
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result["ranking"], indent=2), json.dumps(result["cpu_hours"]))


if __name__ == "__main__":
    main()
