"""Dense-task quality table on the shared data: random init vs an rsbench SSL run (e.g. SimCLR).

Segmentation: Dubai aerial (tiles given by --dubai-tiles), seeded split by image, FPN decoder.
Detection: NEON tree crowns, class-agnostic, trained on OSBS_029 + SOAP_061 (98 crowns, chipped) and
tested on the whole 2299x2472 YELL crop (574 crowns; tiled inference merged by NMS) via --test-data.
Everything runs through `rsbench.evaluate.evaluate`, a few epochs on CPU.

    .venv/bin/python benchmarks/eval_dense_bench.py [--run runs/simclr] [--epochs 3] [--protocols frozen]
        [--tasks segmentation,detection] [--json benchmarks/results/eval_dense_bench.json]

On a 2-core CPU the defaults take ~10 min per (task, init) when the machine is otherwise idle.

Prints a table and saves JSON (default benchmarks/results/eval_dense_bench.json).
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
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "eval_dense_bench.json")
    args = ap.parse_args()

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
    results, console = [], Console(stderr=True)
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
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "load_avg_at_end": os.getloadavg(),
        },
        "results": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"saved {args.json}")


if __name__ == "__main__":
    main()
