"""Benchmark matrix and store, without training: expansion, content-addressed ids, validation errors,
atomic claims under concurrency, reclaiming dead workers, import/export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from rsbench.benchmark.experiment import load_experiment
from rsbench.benchmark.export import export
from rsbench.benchmark.matrix import expand
from rsbench.benchmark.plan import load_plan, sync
from rsbench.cli import app
from rsbench.errors import ConfigError
from rsbench.results_store.db import db_url
from rsbench.results_store.store import DONE, FAILED, PENDING, RUNNING, Store, worker_identity

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture(autouse=True)
def _shared_data_env(monkeypatch, shared_data):
    # Experiment files read ${RSBENCH_SHARED_DATA}; `make test` exports it, a bare pytest may not.
    monkeypatch.setenv("RSBENCH_SHARED_DATA", str(shared_data))


def write(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def experiment(tmp_path: Path, **over) -> dict:
    doc = {
        "name": "unit",
        "out": str(tmp_path / "bench"),
        "code_version": "pinned",
        "pretrain": {
            "defaults": {
                "images": "${RSBENCH_SHARED_DATA}/classification/eurosat_rgb",
                "image_size": 32,
                "max_steps": 4,
            },
            "grid": {"method": ["simclr", "mocov2"]},
        },
        "baselines": ["random"],
        "tasks": [{"name": "eurosat", "data": "${RSBENCH_SHARED_DATA}/classification/eurosat_rgb"}],
        "protocols": ["knn", "linear"],
        "seeds": [0, 1],
    }
    doc.update(over)
    return doc


def test_expansion_counts_dependencies_and_order(tmp_path, shared_data):
    exp = load_experiment(
        write(tmp_path / "e.yaml", experiment(tmp_path, checkpoints={"every_steps": 2, "seeds": [0]}))
    )
    cells = expand(exp)
    pre = [c for c in cells if c.kind == "pretrain"]
    evals = [c for c in cells if c.kind == "eval"]
    # 2 runs + (2 runs + 1 random) x 2 protocols x 2 seeds + 2 runs x 1 checkpoint (step 2) x 2 protocols x 1 seed
    assert len(pre) == 2 and len(evals) == 12 + 4
    assert [c.priority for c in cells] == list(range(len(cells))) and cells[:2] == pre
    assert {c.init_label for c in evals} == {"simclr", "mocov2", "random", "simclr@step2", "mocov2@step2"}
    run_ids = {c.init_label: c.id for c in pre}
    for c in evals:
        base = c.init_label.split("@")[0]
        assert c.depends_on == run_ids.get(base)
        assert c.config["options"]["data"] == str(shared_data / "classification" / "eurosat_rgb")  # ${VAR} expanded
    # Checkpoint cells come last; Lightning must keep a checkpoint every 2 steps for them.
    assert all(c.config["init"].get("step") for c in evals[-4:])
    assert all(c.config["options"]["checkpoint_every"] == 2 for c in pre)


def test_each_task_kind_gets_its_default_protocols(tmp_path, shared_data):
    """Without `protocols` anywhere, a task runs what `rsbench evaluate` runs for its kind; a task's own
    list wins over the experiment's, which wins over the default."""
    seg = {"name": "dubai", "task_spec": str(REPO / "examples" / "tasks" / "dubai.yaml")}  # the kind is in the spec
    doc = experiment(tmp_path, tasks=[experiment(tmp_path)["tasks"][0], seg], seeds=[0])
    del doc["protocols"]
    evals = [c for c in expand(load_experiment(write(tmp_path / "d.yaml", doc))) if c.kind == "eval"]
    protocols = {(c.task, c.config["protocol"]) for c in evals}
    assert protocols == {("eurosat", "knn"), ("eurosat", "linear"), ("dubai", "frozen")}
    doc.update(protocols=["knn"], tasks=[doc["tasks"][0], {**seg, "protocols": ["frozen"]}])
    evals = [c for c in expand(load_experiment(write(tmp_path / "o.yaml", doc))) if c.kind == "eval"]
    assert {(c.task, c.config["protocol"]) for c in evals} == {("eurosat", "knn"), ("dubai", "frozen")}


def test_ids_are_stable_across_processes_and_ignore_names(tmp_path, shared_data):
    path = write(tmp_path / "e.yaml", experiment(tmp_path))
    ids = [c.id for c in expand(load_experiment(path))]
    assert ids == [c.id for c in expand(load_experiment(path))]
    code = (
        "import sys; from rsbench.benchmark import expand, load_experiment; "
        f"print(' '.join(c.id for c in expand(load_experiment({str(path)!r}))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "RSBENCH_SHARED_DATA": str(shared_data), "PYTHONHASHSEED": "123"},
    )
    assert out.stdout.split() == ids
    # Display names do not change ids; an option, a seed or the code version does.
    renamed = experiment(
        tmp_path, tasks=[{"name": "other", "data": "${RSBENCH_SHARED_DATA}/classification/eurosat_rgb"}]
    )
    assert [c.id for c in expand(load_experiment(write(tmp_path / "r.yaml", renamed)))] == ids
    changed = experiment(tmp_path)
    changed["pretrain"]["defaults"]["max_steps"] = 5
    new = [c.id for c in expand(load_experiment(write(tmp_path / "c.yaml", changed)))]
    assert new != ids and set(new) & set(ids) == {
        c.id for c in expand(load_experiment(path)) if c.init_label == "random"
    }
    bumped = [c.id for c in expand(load_experiment(write(tmp_path / "v.yaml", experiment(tmp_path, code_version="2"))))]
    assert not set(bumped) & set(ids)


@pytest.mark.parametrize(
    "patch, key",
    [
        ({"seedz": [1]}, "'seedz'"),
        ({"pretrain": {"runs": [{"methd": "simclr", "images": "/x"}]}}, "'pretrain.runs.0.methd'"),
        ({"tasks": [{"data": "/x", "batch_sise": 2}]}, "'tasks.0.batch_sise'"),
        ({"evaluate": {"knn_k": "many"}}, "'evaluate.knn_k'"),
        ({"pretrain": {"runs": [{"method": "simclrr", "images": "/x"}]}}, "'pretrain.runs.0.method'"),
        ({"evaluate": {"seeds": [3]}}, "'evaluate.seeds'"),
        (
            {"executor": {"kind": "slurm", "slurm": {"parameters": {"slurm_partitio": "gpu"}}}},
            "'executor.slurm.parameters'",
        ),
    ],
)
def test_bad_experiment_key_is_one_line_naming_the_key(tmp_path, shared_data, patch, key):
    path = write(tmp_path / "bad.yaml", experiment(tmp_path, **patch))
    result = runner.invoke(app, ["benchmark", "run", str(path)])
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and key in lines[0], result.stderr
    assert not (tmp_path / "bench").exists(), "no work may start before the file is valid"


def test_unset_environment_variable_names_the_key(tmp_path, monkeypatch):
    monkeypatch.delenv("RSBENCH_NOT_SET", raising=False)
    doc = experiment(tmp_path, tasks=[{"data": "${RSBENCH_NOT_SET}/eurosat"}])
    with pytest.raises(ConfigError, match=r"RSBENCH_NOT_SET used in key 'tasks\.0\.data'"):
        load_experiment(write(tmp_path / "e.yaml", doc))


CLAIMER = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    from rsbench.results_store.store import Store, worker_identity
    store, ids, me, got = Store(sys.argv[1]), json.loads(sys.argv[2]), worker_identity(), []
    go = Path(sys.argv[3])
    (go.parent / f"ready-{os.getpid()}").touch()
    while not go.exists():  # start together, however long each interpreter took to start
        time.sleep(0.01)
    while (cell := store.claim_next(ids, me)) is not None:
        got.append(cell["id"])
        time.sleep(0.05)  # "work", so the others get their turn
        store.complete(cell, me, rows=[])
    print(json.dumps(got))
""")


def test_concurrent_claims_take_every_cell_exactly_once(tmp_path, shared_data):
    plan = load_plan(write(tmp_path / "e.yaml", experiment(tmp_path)))
    store = sync(plan)
    go = tmp_path / "sync" / "go"
    go.parent.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, plan.url, json.dumps(plan.ids), str(go)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    deadline = time.time() + 120
    while len(list(go.parent.glob("ready-*"))) < 4 and time.time() < deadline:
        time.sleep(0.05)
    go.touch()
    claimed = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    flat = [cid for got in claimed for cid in got]
    assert sorted(flat) == sorted(plan.ids), "every cell claimed once, none twice"
    assert sum(1 for got in claimed if got) >= 2, "the claimers really competed"
    cells = store.cells(plan.ids)
    assert all(c["status"] == DONE and c["attempts"] == 1 for c in cells)
    # Dependencies held under concurrency: no eval cell finished before its pretraining cell was claimed.
    when = {c["id"]: c["claimed_at"] for c in cells}
    assert all(when[c["id"]] >= when[c["depends_on"]] for c in cells if c["depends_on"])


def test_dead_worker_is_reclaimed_and_lost_claim_cannot_write(tmp_path, shared_data):
    plan = load_plan(write(tmp_path / "e.yaml", experiment(tmp_path)))
    store = sync(plan)
    ghost = "nohost-this-is-not-here:1:1"
    dead_local = f"{worker_identity().rsplit(':', 2)[0]}:999999999:1"
    a = store.claim_next(plan.ids, dead_local)
    b = store.claim_next(plan.ids, ghost)
    assert a and b and a["id"] != b["id"]
    # Same host, pid gone: reclaimed at once. Other host: only once its heartbeat is stale.
    assert store.reclaim_abandoned(plan.ids, stale_after_s=3600, max_attempts=3) == [a["id"]]
    assert store.reclaim_abandoned(plan.ids, stale_after_s=0.0, max_attempts=3) == [b["id"]]
    assert not store.complete(a, dead_local, rows=[]), "a worker that lost its claim must not record"
    me = worker_identity()
    again = store.claim_next(plan.ids, me)
    assert again["id"] == a["id"] and again["attempts"] == 2
    assert store.fail(again, me, "boom")
    assert store.cells([a["id"]])[0]["status"] == FAILED
    assert store.reset_failed(plan.ids) == 1 and store.cells([a["id"]])[0]["status"] == PENDING
    # A cell whose workers keep dying is given up after max_attempts.
    for _ in range(2):
        store.claim_next(plan.ids, dead_local)
        store.reclaim_abandoned(plan.ids, 3600, max_attempts=2)
    final = {c["status"] for c in store.cells(plan.ids)}
    assert FAILED in final and RUNNING not in final


def test_import_and_export_roundtrip(tmp_path):
    rows = [
        {
            "task": "classification",
            "dataset": "d",
            "protocol": "knn",
            "init": "random-resnet18",
            "init_kind": "random",
            "label_fraction": 1,
            "seed": s,
            "metric": "accuracy",
            "value": 0.5 + s / 10,
            "normalization": {"mean": [1.0], "std": [2.0]},
        }
        for s in range(3)
    ]
    src = tmp_path / "results.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    db = tmp_path / "r.db"
    result = runner.invoke(app, ["benchmark", "import", str(src), "--db", str(db)])
    assert result.exit_code == 0, result.output
    runner.invoke(app, ["benchmark", "import", str(src), "--db", str(db)])  # re-import replaces, never duplicates
    store = Store(db_url(str(db), None))
    assert len(store.result_rows()) == 3
    for suffix in (".csv", ".parquet", ".jsonl"):
        out = tmp_path / f"x{suffix}"
        assert export(store, out) == 3
    table = pq.read_table(tmp_path / "x.parquet").to_pylist()
    assert sorted(r["value"] for r in table) == pytest.approx([0.5, 0.6, 0.7])
    assert json.loads(table[0]["normalization"]) == {"mean": [1.0], "std": [2.0]}
    assert (tmp_path / "x.csv").read_text().count("\n") == 4
    missing = tmp_path / "missing.db"
    result = runner.invoke(app, ["benchmark", "export", "--db", str(missing), "--out", str(tmp_path / "y.csv")])
    assert result.exit_code == 1 and "no results store" in result.stderr


def test_execution_keys_are_read_from_the_field_markers():
    from pydantic import BaseModel, Field

    from rsbench.benchmark.matrix import PRETRAIN_EXECUTION
    from rsbench.contracts.identity import EXECUTION, execution_keys
    from rsbench.corpus.build_config import CorpusBuildConfig

    class Config(BaseModel):
        seed: int = 0
        note: str = Field("", json_schema_extra={"other": True})
        workers: int = Field(1, json_schema_extra=EXECUTION)

    assert execution_keys(Config) == {"workers"}
    assert {"devices", "num_workers", "out", "slurm"} <= PRETRAIN_EXECUTION
    assert not {"method", "batch_size", "seed", "recipe"} & PRETRAIN_EXECUTION
    # A corpus's folder is where it is, not what it holds: a moved corpus is the same corpus.
    assert {"workers", "task_tiles", "slurm", "out"} <= execution_keys(CorpusBuildConfig)
    assert not {"tile_size", "seed", "bands"} & execution_keys(CorpusBuildConfig)


def test_planner_does_not_import_torch():
    code = "import sys, rsbench.benchmark.matrix; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_execution_settings_do_not_change_ids(tmp_path):
    base = experiment(tmp_path)
    moved = experiment(tmp_path, evaluate={"device": "cpu"})
    moved["pretrain"]["defaults"].update(num_workers=7, devices=2, precision="bf16-mixed")
    ids = [c.id for c in expand(load_experiment(write(tmp_path / "a.yaml", base)))]
    assert [c.id for c in expand(load_experiment(write(tmp_path / "b.yaml", moved)))] == ids


@pytest.mark.parametrize("name, cells", [("benchmark-tiny.yaml", 2 + 3 * 2 * 2 + 2 * 3), ("benchmark-hpc.yaml", None)])
def test_shipped_examples_validate(name, cells, tmp_path):
    """Every cell of the examples passes the stages' own config models (and submitit's parameter check)."""
    from rsbench.benchmark.slurm import check_parameters

    plan = load_plan(REPO / "examples" / name, out=tmp_path, check=True)
    if cells is not None:
        assert len(plan.cells) == cells
    exp = plan.experiment
    if exp.executor.kind == "slurm":
        check_parameters(exp.executor.slurm, name)
        kinds = {c.kind for c in plan.cells}
        tasks = {c.task for c in plan.cells if c.kind == "eval"}
        assert kinds == {"pretrain", "eval"} and tasks == {"eurosat", "dubai", "neon"}
        assert sum(c.kind == "pretrain" for c in plan.cells) == 9
        # eurosat: 12 inits x 2 protocols x 3 fractions x 3 seeds; dubai, neon: 12 x 1 x 3; checkpoints: 4
        # steps x knn x seed 0 at the full label fraction only.
        assert sum(c.kind == "eval" for c in plan.cells) == 12 * 2 * 3 * 3 + 2 * 12 * 3 + 4


def test_evaluation_waits_for_its_pretraining_cell(tmp_path):
    plan = load_plan(write(tmp_path / "e.yaml", experiment(tmp_path)))
    store = sync(plan)
    me = worker_identity()
    pre = [store.claim_next(plan.ids, me) for _ in range(2)]
    assert [c["kind"] for c in pre] == ["pretrain", "pretrain"]
    others = []
    while (cell := store.claim_next(plan.ids, me)) is not None:
        others.append(cell)
    # While both runs are in flight, only the random-init cells (no dependency) can be taken.
    assert len(others) == 4 and all(c["depends_on"] is None for c in others)
    assert store.complete(pre[0], me, run=None)
    freed = []
    while (cell := store.claim_next(plan.ids, me)) is not None:
        freed.append(cell)
    assert len(freed) == 4 and {c["depends_on"] for c in freed} == {pre[0]["id"]}


@pytest.mark.parametrize(
    "cmd",
    [["benchmark"], ["benchmark", "run"], ["benchmark", "status"], ["benchmark", "export"], ["benchmark", "import"]],
)
def test_help_everywhere(cmd):
    result = runner.invoke(app, [*cmd, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_interrupted_cell_is_released_and_a_failure_is_recorded(tmp_path, monkeypatch):
    from rsbench.benchmark import execute

    plan = load_plan(write(tmp_path / "e.yaml", experiment(tmp_path)))
    store = sync(plan)
    me = worker_identity()
    cell = store.claim_next(plan.ids, me, kinds=("eval",))

    def interrupted(store, cell):
        raise KeyboardInterrupt

    monkeypatch.setattr(execute, "run_eval_cell", interrupted)
    with pytest.raises(KeyboardInterrupt):
        execute.run_claimed(store, cell, me)
    [after] = store.cells([cell["id"]])
    assert (after["status"], after["attempts"], after["worker"]) == (PENDING, 0, None)

    def broken(store, cell):
        raise ValueError("bad value\nsecond line")

    monkeypatch.setattr(execute, "run_eval_cell", broken)
    cell = store.claim_next(plan.ids, me, kinds=("eval",))
    assert execute.run_claimed(store, cell, me) is False
    [after] = store.cells([cell["id"]])
    assert (after["status"], after["error"]) == (FAILED, "ValueError: bad value")
    assert (
        "Traceback" in Path(after["log_path"]).read_text()
        and "=== failed: ValueError" in Path(after["log_path"]).read_text()
    )


def test_a_cancelled_slurm_cell_job_releases_its_cell_even_before_training(tmp_path, monkeypatch):
    """submitit ignores SIGTERM in its jobs; scancel during a cell's set-up must still release the cell at once,
    not let the job run on until SLURM's SIGKILL (and perhaps finish the cell it was told to stop)."""
    import signal

    from rsbench.benchmark import execute
    from rsbench.benchmark.slurm import run_cell_job

    plan = load_plan(write(tmp_path / "e.yaml", experiment(tmp_path)))
    store = sync(plan)
    cell = next(c for c in store.cells(plan.ids) if c["kind"] == "eval" and c["depends_on"] is None)
    finished = []

    def cancelled_while_setting_up(store, cell):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.5)  # the signal is handled here, in the main thread
        finished.append(cell["id"])
        return []

    monkeypatch.setattr(execute, "run_eval_cell", cancelled_while_setting_up)
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)  # what submitit's job environment installs
    try:
        with pytest.raises(KeyboardInterrupt):
            run_cell_job(plan.url, cell["id"], 600.0, 3)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN, "the job's handler is put back"
    finally:
        signal.signal(signal.SIGTERM, previous)
    [after] = store.cells([cell["id"]])
    assert finished == [] and (after["status"], after["attempts"], after["worker"]) == (PENDING, 0, None)
    assert "cell released" in Path(after["log_path"]).read_text()


def test_database_passwords_are_never_printed(tmp_path):
    from rsbench.results_store.db import display_url

    assert display_url("postgresql+psycopg://bob:s3cret@localhost:5432/rs") == (
        "postgresql+psycopg://bob:***@localhost:5432/rs"
    )
    assert display_url("sqlite:////tmp/results.db") == "sqlite:////tmp/results.db"
    for args in (
        ["report", "--db", "nosuchdialect://bob:s3cret@localhost/rs", "--out", str(tmp_path / "r.html")],
        ["benchmark", "export", "--db", "nosuchdialect://bob:s3cret@localhost/rs", "--out", str(tmp_path / "x.csv")],
        # An unreachable PostgreSQL server (nothing listens on port 1): one line, no password.
        ["report", "--db", "postgresql+psycopg://bob:s3cret@localhost:1/rs", "--out", str(tmp_path / "r.html")],
    ):
        res = runner.invoke(app, args)
        assert res.exit_code == 1 and "s3cret" not in res.output and "bob:***@localhost" in res.output, res.output


@pytest.mark.parametrize("content", [b"\x00garbage" * 100, b"SQLite format 3\x00" + b"\x01" * 200])
def test_corrupt_results_store_is_one_line_error(tmp_path, content):
    db = tmp_path / "results.db"
    db.write_bytes(content)
    for args in (
        ["report", "--db", str(db), "--out", str(tmp_path / "r.html")],
        ["benchmark", "export", "--db", str(db), "--out", str(tmp_path / "x.csv")],
    ):
        res = runner.invoke(app, args)
        lines = res.stderr.strip().splitlines()
        assert res.exit_code == 1 and len(lines) == 1, res.output[-2000:]
        assert lines[0] == f"error: cannot use results store {db}: file is not a database"
    assert db.read_bytes() == content  # nothing written over it
