"""Benchmark of `rsbench evaluate` classification on the 2,300 shared EuroSAT images.

1. Feature caching: a linear probe over 3 seeds x 3 label fractions re-uses ONE feature pass
   (time split: extraction vs the 9 probe fits), and a second run is served from the cache.
2. kNN + linear on all 2,300 images after extraction (target: under 30 s on 2 CPU cores).
3. A small quality table: random init vs the network-free baselines (bandstats, pixels) and, with
   --run DIR, a finished rsbench pretraining run; kNN and linear, 3 seeds, fractions 0.1 and 1.0
   (optionally fine-tuning with --finetune-epochs N).

    .venv/bin/python benchmarks/evaluate_bench.py [--run runs/simclr] [--out /tmp/rsbench-evaluate-bench]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import shutil
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch
from rich.console import Console

from rsbench.evaluate import EvaluateConfig, evaluate
from rsbench.io import write_json

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RSBENCH_SHARED_DATA", REPO.parent / "shared" / "data"))
EUROSAT = SHARED / "classification" / "eurosat_rgb"


def run(out: Path, **kw) -> tuple[list[dict], float]:
    cfg = EvaluateConfig(data=EUROSAT, out=out, image_size=64, **kw)
    start = time.perf_counter()
    rows = evaluate(cfg, console=Console(file=io.StringIO()))
    return rows, round(time.perf_counter() - start, 3)


def caching(out: Path) -> dict:
    kw = {
        "init": "random",
        "backbone": "resnet18",
        "protocol": ["linear"],
        "seeds": [0, 1, 2],
        "fractions": [0.01, 0.1, 1.0],
    }
    rows, wall = run(out, **kw)
    acc = [r for r in rows if r["metric"] == "accuracy"]
    fits = {f"seed{r['seed']}_fraction{r['label_fraction']}": r["fit_time_s"] for r in acc}
    again, wall2 = run(out, **kw)
    return {
        "what": "random resnet18, 64 px, linear probe (wd sweep on a val split) x 3 seeds x 3 fractions",
        "feature_passes": len({r["features_key"] for r in rows}),
        "extract_time_s": acc[0]["extract_time_s"],
        "probe_fit_time_s_total": round(sum(fits.values()), 3),
        "probe_fit_time_s": fits,
        "wall_time_s_first_run": wall,
        "wall_time_s_second_run_from_cache": wall2,
        "second_run_cached": all(r["features_cached"] for r in again),
        "n_train": {str(r["label_fraction"]): r["n_train"] for r in acc if r["seed"] == 0},
    }


def knn_linear_after_extraction(out: Path) -> dict:
    run(out, init="random", protocol=["knn"], seeds=[0])  # make sure the features are cached
    rows, wall = run(out, init="random", protocol=["knn", "linear"], seeds=[0])
    fit = {r["protocol"]: r["fit_time_s"] for r in rows if r["metric"] == "accuracy"}
    return {
        "what": "kNN + linear on 2,300 images (1,840 train / 460 test), features from the cache",
        "wall_time_s": wall,
        "fit_time_s": fit,
        "under_30s": wall < 30,
        "accuracy": {r["protocol"]: round(r["value"], 4) for r in rows if r["metric"] == "accuracy"},
    }


def quality(out: Path, run_dir: Path | None, finetune_epochs: int) -> dict:
    inits = ["random", "bandstats", "pixels"] + ([str(run_dir)] if run_dir else [])
    rows_all, times = [], {}
    for init in inits:
        rows, wall = run(out, init=init, protocol=["knn", "linear"], seeds=[0, 1, 2], fractions=[0.1, 1.0])
        rows_all += rows
        times[rows[0]["init"]] = wall
        if finetune_epochs and init not in ("bandstats", "pixels"):
            rows, wall = run(out, init=init, protocol=["finetune"], seeds=[0], fractions=[1.0], epochs=finetune_epochs)
            rows_all += rows
            times[rows[0]["init"] + " finetune"] = wall
    groups = defaultdict(list)
    for r in rows_all:
        groups[(r["init"], r["protocol"], r["label_fraction"], r["metric"])].append(r["value"])
    table = [
        {
            "init": i,
            "protocol": p,
            "label_fraction": f,
            "metric": m,
            "mean": round(statistics.fmean(v), 4),
            "std": round(statistics.stdev(v), 4) if len(v) > 1 else None,
            "seeds": len(v),
        }
        for (i, p, f, m), v in sorted(groups.items())
    ]
    return {"table": table, "wall_time_s": times}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/rsbench-evaluate-bench"))
    ap.add_argument("--run", type=Path, default=None, help="a finished rsbench pretraining run to add")
    ap.add_argument("--finetune-epochs", type=int, default=0, help="also fine-tune (CPU: slow); 0 = skip")
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "evaluate_bench.json")
    args = ap.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "platform": platform.platform(),
            "cuda": torch.cuda.is_available(),
        },
        "data": str(EUROSAT),
        "feature_caching": caching(args.out / "caching"),
        "knn_linear_after_extraction": knn_linear_after_extraction(args.out / "caching"),
        "quality": quality(args.out / "quality", args.run, args.finetune_epochs),
    }
    write_json(args.json, result)
    c, k = result["feature_caching"], result["knn_linear_after_extraction"]
    print(
        f"feature caching: {c['feature_passes']} pass, extraction {c['extract_time_s']}s, "
        f"9 linear probes {c['probe_fit_time_s_total']}s; re-run from cache {c['wall_time_s_second_run_from_cache']}s"
    )
    print(f"kNN + linear after extraction: {k['wall_time_s']}s (fits {k['fit_time_s']})")
    for row in result["quality"]["table"]:
        if row["metric"] == "accuracy":
            print(
                f"  {row['init']:<34} {row['protocol']:<8} fraction {row['label_fraction']:<4} "
                f"accuracy {row['mean']:.3f} ± {row['std']}"
            )
    print(f"saved {args.json}")


if __name__ == "__main__":
    main()
