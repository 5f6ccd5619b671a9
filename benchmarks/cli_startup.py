"""Start-up time of the read-only CLI commands, against the cost of importing the training stack.

Each command runs as a fresh process (the installed `rsbench` entry point, as a user types it), `--repeats`
times; the median wall time is kept. The baseline, measured the same way in the same run, is
`python -c "import torch, lightning, lightly"`: what any command paid when it loaded the training
stack. Goal: every read-only command under 2 s on a 2-core machine.

    python benchmarks/cli_startup.py --out benchmarks/results/cli_startup.json

`--before-src DIR` also times the same commands on another checkout's sources (e.g. a `git worktree`
of the previous commit: DIR is its `src`), put first on PYTHONPATH, and stores them under "before".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_S = 2.0


def wall_times(cmd: list[str], repeats: int, env: dict[str, str] | None = None) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        times.append(time.perf_counter() - start)
    return times


def measure(commands: dict[str, list[str]], repeats: int, env: dict[str, str] | None = None) -> dict:
    results = {}
    for name, cmd in commands.items():
        wall_times(cmd, 1, env)  # warm the file cache: every measured run starts from the same state
        times = wall_times(cmd, repeats, env)
        results[name] = {
            "median_s": round(statistics.median(times), 3),
            "min_s": round(min(times), 3),
            "max_s": round(max(times), 3),
            "runs_s": [round(t, 3) for t in times],
        }
        print(f"{name:45s} median {results[name]['median_s']:.2f} s", flush=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/cli_startup.json"))
    ap.add_argument("--before-src", type=Path, help="Sources of the version to compare with (its src dir).")
    args = ap.parse_args()

    rsbench = shutil.which("rsbench", path=str(Path(sys.executable).parent)) or "rsbench"
    empty = Path(tempfile.mkdtemp(prefix="rsbench-cli-startup-"))
    commands = {
        "rsbench --help": [rsbench, "--help"],
        "rsbench methods": [rsbench, "methods"],
        "rsbench runs <empty dir>": [rsbench, "runs", str(empty)],
        "baseline: import torch, lightning, lightly": [sys.executable, "-c", "import torch, lightning, lightly"],
    }
    load_start = os.getloadavg()
    results = measure(commands, args.repeats)
    before = None
    if args.before_src:
        print(f"before: {args.before_src}", flush=True)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(args.before_src.resolve()), os.environ.get("PYTHONPATH", "")]),
        }
        before = measure({k: v for k, v in commands.items() if not k.startswith("baseline")}, args.repeats, env)
    empty.rmdir()
    baseline = results["baseline: import torch, lightning, lightly"]["median_s"]
    commands_only = {k: v for k, v in results.items() if not k.startswith("baseline")}
    doc = {
        "benchmark": "cli_startup",
        "goal": f"read-only commands start in under {GOAL_S:g} s on a 2-core machine (no torch/lightning/lightly)",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_avg_start": list(load_start),
            "load_avg_end": list(os.getloadavg()),
        },
        "repeats": args.repeats,
        "results": results,
        **({"before": {"src": str(args.before_src), "results": before}} if before else {}),
        "summary": {
            "slowest_command_median_s": max(v["median_s"] for v in commands_only.values()),
            "baseline_training_stack_import_median_s": baseline,
            "all_under_goal": all(v["median_s"] < GOAL_S for v in commands_only.values()),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc["summary"]))


if __name__ == "__main__":
    main()
