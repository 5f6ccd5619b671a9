"""Dense-task quality table on the shared data: random init vs an rsbench SSL run (e.g. SimCLR).

Segmentation: Dubai aerial (tiles given by --dubai-tiles), seeded split by image, FPN decoder.
Detection: NEON tree crowns, class-agnostic, trained on OSBS_029 + SOAP_061 (98 crowns, chipped) and
tested on the whole 2299x2472 YELL crop (574 crowns; tiled inference merged by NMS) via --test-data.
Everything runs through `rsbench.evaluate.evaluate`, a few epochs on CPU.

    .venv/bin/python benchmarks/eval_dense_bench.py [--run runs/simclr] [--epochs 3] [--protocols frozen]
        [--tasks segmentation,detection] [--json benchmarks/results/eval_dense_bench.json]

On a 2-core CPU the defaults take ~10 min per (task, init) when the machine is otherwise idle.

Prints a table and saves JSON (default benchmarks/results/eval_dense_bench.json).

`--compare-cache` measures the frozen-head cache (rsbench.evaluate.dense_cache) instead, random init only:
per task, the frozen protocol uncached (`frozen_cache: false`, the encoder at every step: before), cached
with an empty cache (extraction + head training: after) and cached again (cache hit: what a further seed
of a fixed test set or an HPO trial on the same crops costs), side by side in one run, as ratios of wall
time; saved to benchmarks/results/eval_dense_cache_bench.json with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RSBENCH_SHARED_DATA", REPO.parent / "shared" / "data"))
DUBAI_COLORS = ["#3C1098", "#8429F6", "#6EC1E4", "#FEDD3A", "#E2A929", "#9B9B9B"]
DUBAI_CLASSES = ["Building", "Land (unpaved area)", "Road", "Vegetation", "Water", "Unlabeled"]
NEON_TRAIN = {"OSBS_029": "OSBS_029.tif", "SOAP_061": "SOAP_061.png"}
NEON_TEST = {"2019_YELL_2_528000_4978000_image_crop2": "2019_YELL_2_528000_4978000_image_crop2.png"}


def _link_dubai(out: Path, tiles: list[str]) -> Path:
    root = out / "data" / "dubai"
    for t in tiles:
        dst = root / f"tile_{t}"
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(SHARED / "segmentation" / "dubai_aerial" / f"tile_{t}")
    return root


def _link_neon(out: Path, name: str, files: dict[str, str]) -> Path:
    src = SHARED / "detection" / "neon_tree_crowns"
    root = out / "data" / name
    for sub in ("images", "annotations"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for stem, image in files.items():
        for link, target in (
            (root / "images" / image, src / "images" / image),
            (root / "annotations" / f"{stem}.xml", src / "annotations" / f"{stem}.xml"),
        ):
            if not link.exists():
                link.symlink_to(target)
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, help="rsbench run directory (backbone.json + backbone.pt) to compare")
    ap.add_argument("--out", type=Path, default=Path("/tmp/rsbench-dense-bench"))
    ap.add_argument("--epochs", type=int, default=3, help="segmentation epochs")
    ap.add_argument("--det-epochs", type=int, default=15, help="detection epochs (98 training crowns, 32 chips)")
    ap.add_argument("--det-batch-size", type=int, default=8)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--protocols", default="frozen")
    ap.add_argument("--dubai-tiles", default="1,4", help="Dubai tiles to use (1,4,5,6,7,8; 1,4 = 18 pairs)")
    ap.add_argument("--seg-lr", type=float, default=1e-3)
    ap.add_argument("--det-lr", type=float, default=1e-3)
    ap.add_argument("--tasks", default="segmentation,detection")
    ap.add_argument("--json", type=Path, help="output (default: results/eval_dense_bench.json or _cache_bench.json)")
    ap.add_argument("--compare-cache", action="store_true", help="uncached vs cached frozen heads (ratios)")
    args = ap.parse_args()
    default_json = "eval_dense_cache_bench.json" if args.compare_cache else "eval_dense_bench.json"
    args.json = args.json or REPO / "benchmarks" / "results" / default_json

    from rich.console import Console

    from rsbench.evaluate import EvaluateConfig, evaluate

    inits = ["random"] + ([str(args.run)] if args.run else [])
    common = {
        "out": args.out / "results",
        "seeds": args.seeds,
        "protocol": args.protocols,
        "backbone": "resnet18",
        "image_size": args.image_size,
    }
    jobs = []
    if "segmentation" in args.tasks:
        jobs.append(
            (
                "segmentation",
                {
                    "task": "segmentation",
                    "data": _link_dubai(args.out, args.dubai_tiles.split(",")),
                    "dataset_name": f"dubai_tiles_{args.dubai_tiles.replace(',', '_')}",
                    "classes": DUBAI_CLASSES,
                    "options": {"colors": DUBAI_COLORS, "ignore_colors": ["#000000"]},
                    "epochs": args.epochs,
                    "lr": args.seg_lr,
                    "decoder": "fpn",
                    "batch_size": args.batch_size,
                },
            )
        )
    if "detection" in args.tasks:
        jobs.append(
            (
                "detection",
                {
                    "task": "detection",
                    "data": _link_neon(args.out, "neon_train", NEON_TRAIN),
                    "test_data": _link_neon(args.out, "neon_test", NEON_TEST),
                    "dataset_name": "neon_tree_crowns",
                    "options": {"single_class": "Tree"},
                    "epochs": args.det_epochs,
                    "lr": args.det_lr,
                    "batch_size": args.det_batch_size,
                },
            )
        )
    console = Console(stderr=True)
    if args.compare_cache:
        compare_cache(args, common, jobs, console)
        return
    results = []
    for task, opts in jobs:
        for init in inits:
            start = time.perf_counter()
            cfg = EvaluateConfig(**common, **opts, init=init)
            rows = evaluate(cfg, console=console)
            wall = time.perf_counter() - start
            for protocol in dict.fromkeys(r["protocol"] for r in rows):
                prow = [r for r in rows if r["protocol"] == protocol]
                metrics = {}
                for m in dict.fromkeys(r["metric"] for r in prow):
                    vals = [r["value"] for r in prow if r["metric"] == m]
                    metrics[m] = round(statistics.fmean(vals), 4)
                results.append(
                    {
                        "task": task,
                        "dataset": prow[0]["dataset"],
                        "init": prow[0]["init"],
                        "protocol": protocol,
                        "metrics": metrics,
                        "seeds": sorted({r["seed"] for r in prow}),
                        "n_train": prow[0]["n_train"],
                        "n_test": prow[0]["n_test"],
                        "split": prow[0]["split"],
                        "fit_time_s": round(statistics.fmean(r["fit_time_s"] for r in prow), 1),
                        "eval_time_s": round(statistics.fmean(r["eval_time_s"] for r in prow), 1),
                        "hparams": prow[0]["hparams"],
                        "wall_s_all_protocols": round(wall, 1),
                    }
                )
    headline = {"segmentation": ["miou", "pixel_accuracy"], "detection": ["map_50_95", "ap50"]}
    print(f"{'task':13} {'init':40} {'protocol':9} {'metrics':38} {'fit s':>7} {'eval s':>7}")
    for r in results:
        m = "  ".join(f"{k}={r['metrics'][k]:.3f}" for k in headline[r["task"]])
        print(
            f"{r['task']:13} {r['init'][:40]:40} {r['protocol']:9} {m:38} "
            f"{r['fit_time_s']:7.1f} {r['eval_time_s']:7.1f}"
        )
    summary = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "machine": _machine(),
        "results": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"saved {args.json}")


def _machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "load_avg_at_end": os.getloadavg(),
    }


def compare_cache(args, common: dict, jobs: list, console) -> None:
    import shutil

    from rsbench.evaluate import EvaluateConfig, evaluate

    variants = (("uncached", False), ("cached_cold", True), ("cached_warm", True))
    out = []
    for task, opts in jobs:
        results_dir = args.out / f"cache-{task}"
        shutil.rmtree(results_dir, ignore_errors=True)  # the cold run must extract
        runs = {}
        for name, cached in variants:
            load_before = os.getloadavg()
            start = time.perf_counter()
            cfg = EvaluateConfig(
                **{**common, "protocol": "frozen", "out": results_dir / ("uncached" if not cached else "cached")},
                **opts,
                init="random",
                frozen_cache=cached,
            )
            rows = [r for r in evaluate(cfg, console=console) if r["headline"]]
            runs[name] = {
                "wall_s": round(time.perf_counter() - start, 1),
                "fit_time_s": round(sum(r["fit_time_s"] for r in rows), 1),
                "eval_time_s": round(sum(r["eval_time_s"] for r in rows), 1),
                "extract_time_s": rows[0]["extract_time_s"],
                "features_cached": rows[0]["features_cached"],
                "headline": {r["metric"]: round(r["value"], 4) for r in rows[:1]},
                "steps": rows[0]["hparams"]["steps"],
                "samples_per_epoch": rows[0]["hparams"].get("crops_per_epoch", rows[0]["hparams"].get("chips")),
                "augment": rows[0]["hparams"]["augment"],
                "load_avg_before": load_before,
            }
            console.print(f"{task} {name}: {runs[name]}", markup=False, highlight=False)
        before = runs["uncached"]["wall_s"]
        out.append(
            {
                "task": task,
                "dataset": opts["dataset_name"],
                "epochs": opts["epochs"],
                "runs": runs,
                "speedup_cold": round(before / runs["cached_cold"]["wall_s"], 2),
                "speedup_warm": round(before / runs["cached_warm"]["wall_s"], 2),
            }
        )
        # Saved after each task, so a long run that is stopped keeps what it measured.
        summary = {"args": {k: str(v) for k, v in vars(args).items()}, "machine": _machine(), "results": out}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    for r in out:
        print(f"{r['task']:13} x{r['speedup_cold']:.2f} (empty cache)  x{r['speedup_warm']:.2f} (cache hit)")
    print(f"saved {args.json}")


if __name__ == "__main__":
    main()
