"""Run one claimed cell through the stages' public entry points and store what it produced.

Used by local workers and SLURM jobs alike: `run_claimed(store, cell, worker)` never raises for a
failing cell; it records `failed` with a one-line error (the traceback goes to the cell's log).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from rsbench.benchmark.snapshots import CheckpointWatcher, export_snapshots, snapshot_dir
from rsbench.contracts.backbone_export import BackboneExport
from rsbench.contracts.run_record import RunRecord, collect_run
from rsbench.errors import DataError, RsbenchError
from rsbench.results_store import Store

HEARTBEAT_S = 15.0
# The last line of a finished cell's log, with the cell's own CPU time (wall time on a shared machine says
# little about cost); `logged_cpu_s` reads it back.
DONE_LINE = "=== done ({status}; {cpu:.1f} s CPU)"
_DONE_CPU = re.compile(r"^=== done \(recorded; ([0-9.]+) s CPU\)$", re.MULTILINE)


@contextlib.contextmanager
def redirected_output(log_path: str | None) -> Iterator[None]:
    """Send this process's stdout/stderr (file descriptors too: Lightning, tqdm, C code) to the cell log."""
    if not log_path:
        yield
        return
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush(), sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "ab", buffering=0) as log, open(log_path, "a", buffering=1, encoding="utf-8") as text:
        os.dup2(log.fileno(), 1), os.dup2(log.fileno(), 2)
        # sys.stdout/stderr too: a host process (pytest, a notebook) may have replaced them with non-fd streams.
        try:
            with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
                yield
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            os.close(saved[0]), os.close(saved[1])


def _interrupt(signum, frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_releases() -> Iterator[None]:
    """SIGTERM (scancel, preemption, a supervisor) becomes KeyboardInterrupt, which `run_claimed` turns into a
    release of the cell. submitit ignores SIGTERM in its jobs, so without this a cell job cancelled before
    pretraining installs its own handlers would go on until SLURM's SIGKILL and might finish the cell it was
    told to stop. The previous handler comes back afterwards (submitit's debug cluster runs jobs in-process)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def heartbeat(store: Store, cell_id: str, worker: str, every_s: float = HEARTBEAT_S) -> Iterator[None]:
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every_s):
            try:
                store.heartbeat(cell_id, worker)
            except Exception:  # a missed beat only risks a late reclaim; never kill the cell for it
                pass

    thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    line = text[0] if text else ""
    return line if isinstance(err, RsbenchError) else f"{type(err).__name__}: {line}".rstrip(": ")


def process_cpu_s() -> float:
    """CPU seconds (user + system) this process and its waited-for children have used so far."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def logged_cpu_s(log_text: str) -> float | None:
    """CPU seconds of the last recorded attempt in a cell's log (None: no attempt finished)."""
    found = _DONE_CPU.findall(log_text)
    return float(found[-1]) if found else None


def run_claimed(store: Store, cell: dict, worker: str) -> bool:
    """Execute a cell this worker holds; True when it finished and was recorded."""
    cpu_start = process_cpu_s()
    with heartbeat(store, cell["id"], worker), redirected_output(cell.get("log_path")):
        print(
            f"=== {datetime.now().isoformat(timespec='seconds')} {cell['label']} "
            f"(cell {cell['id']}, attempt {cell['attempts']}, worker {worker})",
            flush=True,
        )
        try:
            if cell["kind"] == "pretrain":
                ok = store.complete(cell, worker, run=run_pretrain_cell(cell))
            elif cell["kind"] == "hpo":
                ok = store.complete(cell, worker, rows=run_tuning_cell(store, cell))
            else:
                ok = store.complete(cell, worker, rows=run_eval_cell(store, cell))
            status = "recorded" if ok else "claim lost: result not recorded"
            print(DONE_LINE.format(status=status, cpu=process_cpu_s() - cpu_start), flush=True)
            return ok
        except BaseException as e:  # any failure of a cell is that cell's result
            if isinstance(e, KeyboardInterrupt) or _preempted(e):
                # Stopped from outside (Ctrl-C, scancel, preemption; pretraining saved last.ckpt): the cell is
                # pending again and the next run resumes it.
                store.release(cell, worker)
                print(f"=== interrupted ({type(e).__name__}); cell released", flush=True)
                raise
            traceback.print_exc()
            store.fail(cell, worker, one_line(e))
            print(f"=== failed: {one_line(e)}", flush=True)
            if isinstance(e, SystemExit):
                raise
            return False


def _preempted(err: BaseException) -> bool:
    try:
        from rsbench.train.checkpoint import RunPreempted
    except ImportError:
        return False
    return isinstance(err, RunPreempted)


def run_pretrain_cell(cell: dict) -> RunRecord:
    from rsbench.train import PretrainConfig, pretrain

    run_dir = Path(cell["out_dir"])
    cfg = PretrainConfig.model_validate({**cell["config"]["options"], "out": run_dir})
    wants_snapshots = "checkpoint_every" in cell["config"]["options"]
    with CheckpointWatcher(run_dir) if wants_snapshots else contextlib.nullcontext():
        pretrain(cfg)
    if wants_snapshots:
        steps = range(cfg.checkpoint_every, (cfg.max_steps or 0), cfg.checkpoint_every)
        found = export_snapshots(run_dir, steps)
        missing = sorted(set(steps) - set(found))
        if missing:
            print(f"warning: no checkpoint captured for step(s) {missing}; their evaluations will fail", flush=True)
    return collect_run(run_dir, cell["init_label"], cell.get("code_version"))


def eval_values(cell: dict, init_value: str) -> dict[str, Any]:
    """EvaluateConfig values of an eval cell: shared options + this cell's protocol, seed, fraction, init."""
    config = cell["config"]
    init = config["init"]
    values = {
        **config["options"],
        "protocol": [config["protocol"]],
        "seeds": [config["seed"]],
        "out": cell["out_dir"],
        "init": init_value,
    }
    if config.get("fraction") is not None:
        values["fractions"] = [config["fraction"]]
    if init["kind"] == "baseline":
        # The shape keys a baseline inherits from its runs (rsbench.benchmark.shapes) win over task options.
        values.update(
            {k: init[k] for k in ("backbone", "image_size", "patch_size", "weights") if init.get(k) is not None}
        )
    return values


def init_value(store: Store, cell: dict) -> str:
    """The `init` evaluate gets: a pretraining cell's run folder (or a checkpoint of it), or the baseline's."""
    init = cell["config"]["init"]
    if init["kind"] != "run":
        return init["init"]
    [dep] = store.cells([init["cell"]])
    run_dir = Path(dep["out_dir"])
    value = run_dir if init.get("step") is None else snapshot_dir(run_dir, int(init["step"]))
    if not BackboneExport(value).exists():
        what = f"checkpoint of step {init['step']}" if init.get("step") else "pretraining run"
        raise DataError(f"{what} not found at {value} (was it captured? see the pretraining cell's log)")
    return str(value)


def run_evaluate(values: dict[str, Any]) -> list[dict]:
    """`rsbench evaluate` on EvaluateConfig values: the one way cells reach the evaluation stage."""
    from rich.console import Console

    from rsbench.evaluate import EvaluateConfig, evaluate

    cfg = EvaluateConfig.model_validate(values)
    start = time.perf_counter()
    rows = evaluate(cfg, console=Console(stderr=True, force_terminal=False, width=120))
    print(f"{len(rows)} rows in {time.perf_counter() - start:.1f}s", flush=True)
    return rows


def run_eval_cell(store: Store, cell: dict) -> list[dict]:
    values = eval_values(cell, init_value(store, cell))
    tuner = cell["config"].get("tuned_by")
    if tuner is not None:
        from rsbench.benchmark.tuning import best_trial, repeat_overrides, tuned_record

        [tuning] = store.cells([tuner])
        best = best_trial(store.url, tuner, trials=int(tuning["config"]["hpo"]["trials"]))
        overrides = repeat_overrides(best)
        print(f"tuned setting: trial {best['trial']} of {best['study']}: {overrides or 'default'}", flush=True)
        values.update(overrides)
        values["tuned"] = tuned_record(best)
    return run_evaluate(values)


def run_tuning_cell(store: Store, cell: dict) -> list[dict]:
    """Run (or resume) the cell's study; it stores no result rows, only its trials (in the study)."""
    from rsbench.benchmark.tuning import run_study

    config = cell["config"]
    base = eval_values({**cell, "config": {**config, "seed": 0}}, init_value(store, cell))
    best = run_study(store.url, cell, base, run_evaluate, log=lambda m: print(m, flush=True))
    print(f"best: trial {best['trial']}, val {best['val_metric']} {best['val_value']:.4f}: {best['overrides']}")
    return []
