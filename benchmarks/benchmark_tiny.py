"""End to end: `rsbench benchmark run examples/benchmark-tiny.yaml` + `rsbench report`, timed.

    .venv/bin/python benchmarks/benchmark_tiny.py [--out /tmp/rsbench-tiny] [--fresh]

Records the matrix size, wall time of the run, of a re-run (must execute zero cells) and of the report,
per-kind cell durations, pretraining throughput, the leaderboard, and the machine's load while it ran
(other processes share the CPU on a busy machine) into benchmarks/results/benchmark_tiny.json.
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

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RSBENCH_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()
RSBENCH = str(Path(sys.executable).parent / "rsbench")


def timed(*args: str) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    res = subprocess.run(
        [RSBENCH, *args], capture_output=True, text=True, env={**os.environ, "RSBENCH_SHARED_DATA": str(SHARED)}
    )
    return time.perf_counter() - start, res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/rsbench-tiny"))
    ap.add_argument("--experiment", type=Path, default=REPO / "examples" / "benchmark-tiny.yaml")
    ap.add_argument("--fresh", action="store_true", help="delete --out first")
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "benchmark_tiny.json")
    args = ap.parse_args()
    if args.fresh and args.out.exists():
        shutil.rmtree(args.out)
    load_before = os.getloadavg()
    run_s, res = timed("benchmark", "run", str(args.experiment), "--out", str(args.out))
    print(res.stdout.strip())
    if res.returncode != 0:
        sys.exit(res.stderr[-3000:])
    load_after = os.getloadavg()
    rerun_s, rerun = timed("benchmark", "run", str(args.experiment), "--out", str(args.out))
    report = args.out / "report.html"
    report_s, rep = timed("report", "--db", str(args.out), "--out", str(report), "--title", "rsbench tiny benchmark")
    if rep.returncode != 0:
        sys.exit(rep.stderr[-3000:])

    sys.path.insert(0, str(REPO / "src"))
    from rsbench.benchmark.plan import load_plan
    from rsbench.report.analysis import analyze
    from rsbench.report.sources import from_db

    plan = load_plan(args.experiment, args.out)
    store = plan.store()
    cells = store.cells(plan.ids)
    kinds: dict[str, list[float]] = {}
    for c in cells:
        kinds.setdefault("checkpoint eval" if c["config"].get("init", {}).get("step") else c["kind"], []).append(
            c["duration_s"] or 0.0
        )
    data = from_db(plan.url)
    analysis = analyze(data.rows, data.checkpoint_rows, data.runs)
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in load_after],
        },
        "experiment": str(args.experiment.relative_to(REPO)),
        "cells": len(cells),
        "cells_done": sum(c["status"] == "done" for c in cells),
        "run_wall_s": round(run_s, 1),
        "under_15_min": run_s < 900,
        "rerun_wall_s": round(rerun_s, 1),
        "rerun_summary": rerun.stdout.strip(),
        "report_wall_s": round(report_s, 1),
        "cell_seconds": {
            k: {"n": len(v), "total": round(sum(v), 1), "max": round(max(v), 1)} for k, v in kinds.items()
        },
        "pretraining": {
            r.name: {
                "steps": r.steps,
                "images_per_s": r.run.get("images_per_s"),
                "wall_time_s": r.run.get("wall_time_s"),
                "device_hours": r.device_hours,
            }
            for r in data.runs
        },
        "normalized_score": {
            e.init: {"mean": round(e.mean, 1), "ci95": [round(e.lo, 1), round(e.hi, 1)]} for e in analysis.aggregate
        },
        "accuracy": {
            f"{t.title}": {i: round(sum(v.values()) / len(v), 4) for i, v in t.per_seed.items()} for t in analysis.tasks
        },
        "progress": analysis.progress,
        "report": str(report),
        "report_bytes": report.stat().st_size,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
