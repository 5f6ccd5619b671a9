"""Expand an experiment into cells with content-addressed ids.

A cell's id hashes what decides its result: the stage options, the protocol/seed/fraction, the id of
the pretraining cell it evaluates, and the code version. Display names (run, task and baseline names)
are left out, so renaming something in the file never re-runs finished work.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rsbench import __version__
from rsbench.benchmark.experiment import (
    Baseline,
    CheckpointSpec,
    Experiment,
    TaskEntry,
    load_task,
    task_entries,
    validate,
)
from rsbench.benchmark.shapes import (
    DEFAULT_BACKBONE,
    SHAPE_KEYS,
    Entry,
    TaskView,
    baseline_kind,
    baseline_shape,
    check_parity,
    inherit,
    run_arch,
    run_shape,
    task_view,
)
from rsbench.contracts.evaluate_config import EXECUTION_KEYS as evaluate_execution_keys
from rsbench.contracts.evaluate_config import EvaluateConfig
from rsbench.contracts.hpo import TUNABLE_PROTOCOLS, HpoSpec
from rsbench.contracts.pretrain_config import EXECUTION_KEYS as pretrain_execution_keys
from rsbench.errors import ConfigError
from rsbench.io import stable_hash

PRETRAIN, EVAL, HPO = "pretrain", "eval", "hpo"
# How and where a stage runs, not what it computes: left out of cell ids, so a matrix can move from one GPU
# to many, or change its worker count, without re-running finished cells. Both sets are the fields the
# stage's config marks as execution (rsbench.contracts.identity); no torch is imported.
PRETRAIN_EXECUTION = pretrain_execution_keys
EVAL_EXECUTION = evaluate_execution_keys


def cell_id(config: dict[str, Any]) -> str:
    skip = PRETRAIN_EXECUTION if config["kind"] == PRETRAIN else EVAL_EXECUTION
    return stable_hash({**config, "options": {k: v for k, v in config["options"].items() if k not in skip}})


_RESERVED_RUN_KEYS = ("name", "checkpoints")


@dataclass(frozen=True)
class Cell:
    id: str
    kind: str  # pretrain | eval
    label: str  # one line for humans, e.g. "simclr · eurosat_rgb · knn · seed 0"
    init_label: str  # the name results are reported under ("simclr", "random-resnet18", "simclr@step50")
    config: dict[str, Any]  # exactly what was hashed, plus nothing: the worker runs from this alone
    depends_on: str | None
    priority: int
    where: str = field(default="", compare=False)  # experiment-file key it came from, for error messages
    task: str | None = None


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """rsbench version plus the git commit of the source tree when there is one."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return __version__
    sha = out.stdout.strip()
    return f"{__version__}+g{sha}" if out.returncode == 0 and sha else __version__


@dataclass(frozen=True)
class PretrainRun:
    name: str
    options: dict[str, Any]
    checkpoints: CheckpointSpec | None
    where: str


def pretrain_runs(exp: Experiment) -> list[PretrainRun]:
    sec = exp.pretrain
    entries: list[tuple[dict, str, list[str]]] = [(dict(r), f"pretrain.runs.{i}", []) for i, r in enumerate(sec.runs)]
    if sec.grid:
        keys = list(sec.grid)
        varying = [k for k in keys if len(sec.grid[k]) > 1]
        for combo in itertools.product(*(sec.grid[k] for k in keys)):
            values = dict(zip(keys, combo))
            where = "pretrain.grid[" + ",".join(f"{k}={values[k]}" for k in keys) + "]"
            entries.append((values, where, varying))
    if not entries and sec.defaults:
        entries.append(({}, "pretrain.defaults", []))
    runs, names = [], {}
    for entry, where, varying in entries:
        options = {**sec.defaults, **entry}
        name = options.pop("name", None)
        ckpt_raw = options.pop("checkpoints", None)
        ckpt = (
            validate(CheckpointSpec, ckpt_raw, "experiment file", f"{where}.checkpoints")
            if ckpt_raw
            else exp.checkpoints
        )
        if name is None:
            parts = [str(options.get("method", "simclr"))]
            parts += [str(options["backbone"])] if "backbone" in options else []
            parts += [_name_part(k, options[k]) for k in varying if k not in ("method", "backbone")]
            name = "-".join(parts)
        if name in names:
            raise ConfigError(f"pretraining runs '{names[name]}' and '{where}' are both named '{name}'; set 'name'")
        names[name] = where
        if ckpt is not None:
            options = _with_checkpointing(options, ckpt, where)
        runs.append(PretrainRun(str(name), options, ckpt, where))
    return runs


def _name_part(key: str, value) -> str:
    text = str(value)
    if key == "teacher":  # a path or torchgeo:<WeightsEnum>: its last part names it, without separators
        text = Path(text).name.replace(":", "-")
    return f"{key}{text}"


def _with_checkpointing(options: dict, ckpt: CheckpointSpec, where: str) -> dict:
    if "max_steps" not in options:
        raise ConfigError(
            f"key '{where}.max_steps' is required when checkpoints are evaluated (their steps must be known)"
        )
    every = options.get("checkpoint_every")
    if every is not None and ckpt.every_steps % int(every):
        raise ConfigError(
            f"key '{where}.checkpoint_every' ({every}) must divide checkpoints.every_steps ({ckpt.every_steps})"
        )
    return {**options, "checkpoint_every": every or ckpt.every_steps}


@dataclass(frozen=True)
class BaselineInit:
    """One baseline of the matrix; its init entry is completed per task by `spec_for` (see `baseline_inits`)."""

    label: str
    baseline: Baseline
    spec: dict  # the init entry before inheritance
    explicit: frozenset[str]  # shape keys the baseline sets itself
    arch_from: dict | None  # options of the run whose backbone it takes (None: it names its own)
    shape_from: list[dict]  # options of the runs it is compared with
    where: str

    def spec_for(self, view: TaskView) -> dict:
        return inherit(
            self.spec, {**view.options, **self.baseline.options}, view, self.explicit, self.arch_from, self.shape_from
        )


def baseline_inits(exp: Experiment, runs: list[PretrainRun]) -> list[BaselineInit]:
    """The baselines, each compared with some of the pretraining runs, whose shape it inherits.

    A baseline that names its `backbone` is one init, compared with the runs of that backbone (all runs
    when none has it). One that does not (a bare 'random') is one init per pretraining backbone, compared
    with the runs of that backbone. On every task it takes what it does not set itself (`backbone`,
    `image_size`, `patch_size`, in the entry or its `options`) from the first of those runs, as that run
    is evaluated there; `bands` are the task's for every init. See rsbench.benchmark.shapes.
    """
    out: list[BaselineInit] = []
    for i, b in enumerate(exp.baselines):
        assert isinstance(b, Baseline)
        explicit = frozenset(
            {k for k in SHAPE_KEYS if k in b.options}
            | ({"backbone"} if b.backbone is not None else set())
            | ({"image_size"} if b.image_size is not None else set())
        )
        kind = baseline_kind(b.init)
        spec = {
            "kind": "baseline",
            "init": b.init,
            "backbone": b.backbone,
            "image_size": b.image_size,
            "weights": b.weights,
        }
        targets: list[tuple[dict, dict | None, list[dict]]]
        if b.backbone is not None or not runs or (kind != "network" and b.image_size is not None):
            same = [r.options for r in runs if run_arch(r.options) == b.backbone]
            targets = [(spec, None, same or [r.options for r in runs])]
        else:
            groups: dict[str | None, list[dict]] = {}
            for r in runs:
                key = run_arch(r.options) if kind == "network" else r.options.get("backbone")
                groups.setdefault(key, []).append(r.options)
            targets = []
            for group in groups.values():
                first = group[0]
                legacy = dict(spec)
                if b.image_size is None:  # a bare baseline starts from its run's own options (ids as before)
                    legacy.update({k: None if k in explicit else first.get(k) for k in ("backbone", "image_size")})
                targets.append((legacy, first, group))
        for legacy, arch_from, shape_from in targets:
            backbone = legacy["backbone"]
            if backbone is None and kind == "network" and arch_from is not None and "backbone" not in explicit:
                arch = run_arch(arch_from)
                backbone = arch if arch != DEFAULT_BACKBONE else None
            label = b.name or "-".join([b.init, *([str(backbone)] if backbone else [])])
            out.append(BaselineInit(label, b, legacy, explicit, arch_from, shape_from, f"baselines.{i}"))
    labels = [o.label for o in out]
    dup = next((x for x in labels if labels.count(x) > 1), None)
    if dup:
        raise ConfigError(f"two baselines are both named '{dup}'; set 'name' in 'baselines'")
    return out


def load_tasks(exp: Experiment, source: str, base_dir: Path | None = None) -> list[TaskEntry]:
    """The tasks with their names and protocols resolved: the task's own `protocols`, else the
    experiment's, else what `rsbench evaluate` runs for that task kind (knn+linear or frozen)."""
    entries = task_entries(exp.tasks, source, base_dir)
    tasks = [load_task(t, source, f"tasks.{i}", base_dir) for i, t in enumerate(entries)]
    for i, t in enumerate(tasks):
        if not t.protocols:
            t.protocols = (
                exp.protocols
                or validate(
                    EvaluateConfig, {"init": "random", **exp.evaluate, **t.options}, source, f"tasks.{i}"
                ).protocol
            )
        if t.name is None:
            data = t.options.get("data")
            t.name = Path(str(data)).name if data else t.options.get("task", "task")
    names = [t.name for t in tasks]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise ConfigError(f"two tasks are both named '{dup}'; set 'name' in 'tasks'")
    return tasks


def _file_hash(path: str | None) -> str | None:
    # A task spec file's content decides the results as much as inline options do.
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16] if path else None
    except OSError:
        return None


def expand(exp: Experiment, source: str = "experiment file", base_dir: Path | None = None) -> list[Cell]:
    """Every cell of the matrix, pretraining first, in the order workers should claim them."""
    version = exp.code_version or code_version()
    runs = pretrain_runs(exp)
    tasks = load_tasks(exp, source, base_dir)
    cells: list[Cell] = []
    run_ids: dict[str, str] = {}
    for run in runs:
        config = {"kind": PRETRAIN, "options": run.options, "code_version": version}
        cid = cell_id(config)
        run_ids[run.name] = cid
        cells.append(Cell(cid, PRETRAIN, f"pretrain {run.name}", run.name, config, None, len(cells), run.where))

    # label, init entry (or the baseline that makes one per task), options, dependency, where, step, run options
    inits: list[tuple[str, dict | BaselineInit, dict, str | None, str, int | None, dict | None]] = []
    for run in runs:
        rid = run_ids[run.name]
        inits.append((run.name, {"kind": "run", "cell": rid, "step": None}, {}, rid, run.where, None, run.options))
    for b in baseline_inits(exp, runs):
        inits.append((b.label, b, dict(b.baseline.options), None, b.where, None, None))
    for run in runs:
        if run.checkpoints is not None:
            every, total = run.checkpoints.every_steps, int(run.options["max_steps"])
            for step in range(every, total, every):
                init = {"kind": "run", "cell": run_ids[run.name], "step": step}
                inits.append((f"{run.name}@step{step}", init, {}, run_ids[run.name], run.where, step, run.options))

    views = [task_view(exp.evaluate, t.options) for t in tasks]
    boards: dict[tuple[str, str, float | None], dict[str, Entry]] = {}
    tuning: dict[tuple[str, str, float | None], dict[str, tuple[HpoSpec | None, str]]] = {}
    evals, tunes = [], []
    for (label, init, init_opts, dep, _where, step, run_opts), (ti, task) in itertools.product(inits, enumerate(tasks)):
        ckpt = next((r.checkpoints for r in runs if step is not None and run_ids[r.name] == dep), None)
        if ckpt is not None and ckpt.tasks is not None and task.name not in ckpt.tasks:
            continue
        protocols = (ckpt.protocols if ckpt and ckpt.protocols else None) or task.protocols
        seeds = (ckpt.seeds if ckpt and ckpt.seeds else None) or exp.seeds
        fractions = task.fractions or exp.fractions or [None]
        if ckpt is not None and fractions != [None]:
            fractions = [max(fractions)]  # progress curves use each task at its full label budget
        options = {**exp.evaluate, **task.options, **init_opts}
        view = views[ti]
        own_hpo = init.baseline.hpo if isinstance(init, BaselineInit) else None
        if isinstance(init, BaselineInit):
            init = init.spec_for(view)
            entry = Entry(label, True, baseline_shape(init, {**view.options, **init_opts}, view))
        else:
            entry = Entry(label, False, run_shape(run_opts or {}, view))
        spec_hash = _file_hash(options.get("task_spec"))
        hpo, hpo_where = _hpo_for(exp, task, ti, own_hpo, _where)
        tuned_by: dict[tuple[str, float | None], str] = {}
        for protocol, fraction in itertools.product(protocols, fractions):
            board = (str(task.name), protocol, fraction)
            tuning.setdefault(board, {})[label] = (hpo if protocol in TUNABLE_PROTOCOLS else None, hpo_where)
            if hpo is None or protocol not in TUNABLE_PROTOCOLS or step is not None:
                continue
            config = {
                "kind": HPO,
                "options": options,
                "init": init,
                "protocol": protocol,
                "fraction": fraction,
                "hpo": hpo.model_dump(),
                "code_version": version,
                **({"task_spec_sha": spec_hash} if spec_hash else {}),
            }
            frac = "" if fraction is None else f" · {fraction:g} labels"
            text = f"tune {label} · {task.name} · {protocol}{frac} · {hpo.trials} trials"
            tid = cell_id(config)
            tuned_by[(protocol, fraction)] = tid
            tunes.append(Cell(tid, HPO, text, label, config, dep, 0, hpo_where, task.name))
        for protocol, fraction, seed in itertools.product(protocols, fractions, seeds):
            boards.setdefault((str(task.name), protocol, fraction), {}).setdefault(label, entry)
            config = {
                "kind": EVAL,
                "options": options,
                "init": init,
                "protocol": protocol,
                "seed": seed,
                "fraction": fraction,
                "code_version": version,
            }
            if spec_hash:
                config["task_spec_sha"] = spec_hash
            tuner = tuned_by.get((protocol, fraction))
            if tuner is not None:
                config["tuned_by"] = tuner  # the tuning cell whose best setting this cell repeats
            frac = "" if fraction is None else f" · {fraction:g} labels"
            text = f"{label} · {task.name} · {protocol}{frac} · seed {seed}"
            order = (step is not None, seed, protocol, fraction or 0.0, len(evals))
            needs = tuner or dep
            evals.append((order, Cell(cell_id(config), EVAL, text, label, config, needs, 0, f"tasks.{ti}", task.name)))
    check_parity({key: list(entries.values()) for key, entries in boards.items()})
    check_same_tuning(tuning, source)
    for cell in tunes:  # studies first: their seeds' cells wait for them
        cells.append(replace(cell, priority=len(cells)))
    for n, (_, cell) in enumerate(sorted(evals, key=lambda e: e[0]), start=len(tunes)):
        cells.append(
            Cell(
                cell.id,
                cell.kind,
                cell.label,
                cell.init_label,
                cell.config,
                cell.depends_on,
                len(runs) + n,
                cell.where,
                cell.task,
            )
        )
    if not evals:
        raise ConfigError(f"{source} gives no cells to run: add pretraining runs ('pretrain') or 'baselines'")
    ids = [c.id for c in cells]
    if len(set(ids)) != len(ids):
        dup = next(c for c in cells if ids.count(c.id) > 1)
        raise ConfigError(f"the matrix holds the same cell twice ({dup.label}); remove the duplicate entry")
    return cells


def _hpo_for(
    exp: Experiment, task: TaskEntry, ti: int, own: HpoSpec | None, init_where: str
) -> tuple[HpoSpec | None, str]:
    """The tuning of one init on one task: the task's `hpo`, else the experiment's. A baseline's own `hpo` is
    taken as given, so that check_same_tuning refuses it when it differs from the others'."""
    if own is not None:
        return own, f"{init_where}.hpo"
    if task.hpo is not None:
        return task.hpo, f"tasks.{ti}.hpo"
    return exp.hpo, "hpo"


def check_same_tuning(
    tuning: dict[tuple[str, str, float | None], dict[str, tuple[HpoSpec | None, str]]], source: str
) -> None:
    """The fairness rule of tuned fine-tuning: on every leaderboard (task, protocol, label fraction) each init
    gets the same search (trials, space, metric, sampler, seed), or none at all. Anything else is refused."""
    for (task, protocol, fraction), specs in tuning.items():
        (first_label, (first, first_where)), *rest = specs.items()
        for label, (spec, where) in rest:
            if spec != first:

                def says(s: HpoSpec | None) -> str:
                    return "no tuning" if s is None else f"{s.trials} trials over {sorted(s.space)}"

                frac = "" if fraction is None else f" at {fraction:g} labels"
                raise ConfigError(
                    f"unfair tuning in {source}: on {task} · {protocol}{frac}, '{first_label}' gets "
                    f"{says(first)} ({first_where}) but '{label}' gets {says(spec)} ({where}); every init must get "
                    "the same hpo"
                )
