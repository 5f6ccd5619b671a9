"""`contamination: fail|warn`: before any cell runs, every pretraining corpus is checked against the task data.

The check is the corpus stage's own command, `rsbench corpus check DIR --against DATA... --out FILE.json`, run
as a subprocess (its CLI and JSON file are the contract; the benchmark imports nothing of the corpus stage).
Results go to OUT/contamination/<corpus>-<hash>.json, where the report's data section finds them. `fail` stops
the benchmark with one line of counts; `warn` prints the same line and goes on.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from rsbench.benchmark.matrix import load_tasks, pretrain_runs
from rsbench.benchmark.plan import Plan
from rsbench.contracts.task_spec import load_task_spec
from rsbench.errors import DataError
from rsbench.io import stable_hash

FOLDER = "contamination"


def task_data(plan: Plan) -> list[Path]:
    """Every task's data and test data (train and test images are both checked), each once."""
    paths: list[Path] = []
    for task in load_tasks(plan.experiment, f"experiment file {plan.path}", plan.path.parent):
        options = {**plan.experiment.evaluate, **task.options}
        if options.get("task_spec"):
            spec = load_task_spec(options["task_spec"])
            options = {"data": spec.data, "test_data": spec.test_data, **options}
        paths += [Path(str(options[k])) for k in ("data", "test_data") if options.get(k)]
    return list(dict.fromkeys(p.resolve() for p in paths))


def corpora(plan: Plan) -> list[Path]:
    """Corpus folders the pretraining runs read (`images:` folders have no stored tile hashes to compare)."""
    return list(
        dict.fromkeys(
            Path(str(r.options["corpus"])).resolve() for r in pretrain_runs(plan.experiment) if r.options.get("corpus")
        )
    )


def check(plan: Plan, log: Callable[[str], None] = print) -> list[dict]:
    """Run the experiment's contamination check; returns the findings (one per corpus) or raises DataError."""
    mode = plan.experiment.contamination
    if mode is None:
        return []
    data = task_data(plan)
    findings = []
    for corpus in corpora(plan):
        out = plan.out / FOLDER / f"{corpus.name}-{stable_hash([str(corpus), [str(d) for d in data]])[:8]}.json"
        command = [sys.executable, "-m", "rsbench", "corpus", "check", str(corpus), "--out", str(out)]
        for d in data:
            command += ["--against", str(d)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            lines = [ln for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
            raise DataError(f"contamination check of {corpus} failed: {lines[-1] if lines else done.returncode}")
        found = json.loads(out.read_text(encoding="utf-8"))
        findings.append({"corpus": str(corpus), "file": str(out), **found})
    counts = [
        f"{Path(d['data']).name} {len(d['duplicates'])}/{d['images']}"
        for f in findings
        for d in f["datasets"]
        if d["duplicates"]
    ]
    if counts:
        line = f"contamination: near-duplicates of pretraining tiles in the task data: {', '.join(counts)}"
        if mode == "fail":
            raise DataError(f"{line} (contamination: fail; see {plan.out / FOLDER})")
        log(f"warning: {line}")
    elif not findings:
        log("warning: contamination check: no pretraining run reads a built corpus (`corpus:`), nothing to compare")
    return findings
