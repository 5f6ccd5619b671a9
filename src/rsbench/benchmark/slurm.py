"""The SLURM executor: one submitit job per open cell, evaluation jobs held by `afterok` dependencies.

Each job claims its cell in the store like a local worker, so jobs of a re-submission never duplicate
work that is done or running. The job of each cell is recorded in FOLDER/jobs.json: a re-submission leaves
cells whose job SLURM still holds (squeue) alone, and an evaluation whose pretraining job of an earlier
submission still runs gets `afterok` on that job. Each stage's request is checked with `sbatch --test-only`
before anything is submitted; a refusal half-way cancels the jobs this submission made. submitit's `local`
and `debug` clusters stand in for SLURM (to try a file or to test): they have no job dependencies, so
there the pretraining jobs are waited for first.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rsbench import engines
from rsbench.benchmark.experiment import SlurmSpec
from rsbench.benchmark.plan import Plan, sync
from rsbench.errors import ConfigError, DataError, EngineError
from rsbench.io import read_json, write_json
from rsbench.results_store.store import DONE, FAILED, PENDING, RUNNING, Store, worker_identity


def run_cell_job(url: str, cell_id: str, stale_after_s: float, max_attempts: int) -> str:
    """Body of one SLURM job. Raises when the cell fails, so `afterok` dependents never start; a cancelled
    job (scancel, preemption) releases its cell at once, so a re-submission runs it again."""
    from rsbench.benchmark.execute import sigterm_releases

    with sigterm_releases():
        return _run_cell(url, cell_id, stale_after_s, max_attempts)


def _run_cell(url: str, cell_id: str, stale_after_s: float, max_attempts: int) -> str:
    from rsbench.benchmark.execute import run_claimed

    cpus = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if cpus.isdigit():  # torch would start a thread per core of the node, not per CPU of the job
        import torch

        torch.set_num_threads(int(cpus))
    store = Store(url)
    [cell] = store.cells([cell_id])
    store.reclaim_abandoned([cell_id], stale_after_s, max_attempts)  # a previous job for it was killed
    worker = worker_identity()
    claimed = store.claim(cell_id, worker)
    if claimed is None:
        state = store.cells([cell_id])[0]["status"]
        if state == FAILED:
            raise RuntimeError(f"cell {cell_id} ({cell['label']}) failed before; see its log")
        return f"skipped: cell is {state}"
    if not run_claimed(store, claimed, worker):
        [after] = store.cells([cell_id])
        raise RuntimeError(f"cell {cell_id} ({cell['label']}) failed: {after['error']}")
    return "done"


def job_parameters(spec: SlurmSpec, kind: str, cell: dict) -> dict[str, Any]:
    """submitit AutoExecutor parameters of the job of one cell (`SlurmResources.submitit_parameters`)."""
    return {"name": f"rsbench-{kind}-{cell['id'][:8]}", **spec.resources(kind).submitit_parameters()}


def check_parameters(spec: SlurmSpec, source: str) -> None:
    """Let submitit validate every translated parameter before anything is submitted."""
    import submitit

    with tempfile.TemporaryDirectory() as tmp:
        for key, kind in (("parameters", None), ("pretrain", "pretrain"), ("evaluate", "evaluate")):
            params = (spec.parameters if kind is None else spec.resources(kind)).submitit_parameters()
            try:
                submitit.AutoExecutor(folder=tmp, cluster="debug").update_parameters(**params)
            except (NameError, AssertionError, TypeError, ValueError) as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ConfigError(f"invalid key 'executor.slurm.{key}' in {source}: {first}") from None


def submit(
    plan: Plan,
    retry_failed: bool = False,
    log: Callable[[str], None] = print,
    executor_factory: Callable[[Path, str], Any] | None = None,
) -> dict[str, str]:
    """Submit a job per pending cell; returns {cell id: job id}. Waits only where dependencies are missing."""
    import submitit

    spec = plan.experiment.executor.slurm
    check_parameters(spec, f"experiment file {plan.path}")
    store = sync(plan)
    exec_spec = plan.experiment.executor
    # Cells whose job died (timeout, node failure) without a heartbeat for stale_after_s are pending again.
    for cid in store.reclaim_abandoned(plan.ids, exec_spec.stale_after_s, exec_spec.max_attempts):
        log(f"cell {cid} was abandoned by its job; submitting it again")
    if retry_failed:
        store.reset_failed(plan.ids)
    cells = store.cells(plan.ids)
    status = {c["id"]: c["status"] for c in cells}
    folder = Path(spec.folder) if spec.folder else plan.out / "slurm"
    has_deps = spec.cluster == "slurm"
    todo = [c for c in cells if c["status"] == PENDING and status.get(c["depends_on"]) != FAILED]
    # Jobs of earlier submissions that SLURM still holds: their cells are not submitted twice.
    live = live_jobs(folder) if has_deps else {}
    queued = [c for c in todo if c["id"] in live]
    if queued:
        jobs_text = _ids(queued, live)
        log(f"{len(queued)} cell(s) already queued by an earlier submission (jobs {jobs_text}): left as they are")
        todo = [c for c in todo if c["id"] not in live]
    # Pretraining running outside any job we know of (a local runner): its evaluations cannot wait on it.
    held = [c for c in todo if status.get(c["depends_on"]) == RUNNING and c["depends_on"] not in live]
    if held:
        log(
            f"{len(held)} evaluation cell(s) wait for pretraining that runs outside SLURM jobs of this experiment; "
            "submit again when it has finished"
        )
        todo = [c for c in todo if c not in held]
    if not todo:
        log(
            f"nothing to submit: {sum(s == DONE for s in status.values())} of {len(cells)} cells done, "
            f"{len(queued)} queued, the others running or blocked"
        )
        return {}
    make = executor_factory or (lambda f, cluster: submitit.AutoExecutor(folder=f, cluster=cluster))
    if has_deps:
        for kind in sorted({c["kind"] for c in todo}):
            engines.check_request(spec.resources(kind), f"the {kind} jobs")
    args = (plan.url, exec_spec.stale_after_s, exec_spec.max_attempts)
    jobs: dict[str, Any] = {}
    job_ids: dict[str, str] = dict(live)

    def launch(cell: dict) -> None:
        params = job_parameters(spec, cell["kind"], cell)
        dep = job_ids.get(cell["depends_on"]) if has_deps else None
        if has_deps:
            extra = dict(params.pop("slurm_additional_parameters", None) or {})
            # A failed pretraining job cancels its evaluations instead of leaving them queued forever.
            extra.setdefault("kill-on-invalid-dep", "yes")
            params["slurm_additional_parameters"] = extra
            if dep is not None:
                params["slurm_dependency"] = f"afterok:{dep}"
        # A fresh executor per job: submitit keeps parameters, and one job's dependency must not leak to the next.
        executor = make(folder, spec.cluster)
        executor.update_parameters(**params)
        with engines.sbatch_refusals(f"the {cell['kind']} job of {cell['label']}", spec.resources(cell["kind"])):
            job = executor.submit(run_cell_job, args[0], cell["id"], args[1], args[2])
        jobs[cell["id"]] = job
        job_ids[cell["id"]] = str(job.job_id)
        if has_deps:
            record_jobs(folder, {cell["id"]: str(job.job_id)})
        after = f" after job {dep}" if dep is not None else ""
        log(f"submitted job {job.job_id}{after}: {cell['label']}")

    try:
        for cell in (c for c in todo if c["kind"] == "pretrain"):
            launch(cell)
        if not has_deps:
            _wait(jobs.values(), log)
        # Tuning cells before the cells that repeat their best setting, so those can depend on their job.
        evals = sorted((c for c in todo if c["kind"] != "pretrain"), key=lambda c: c["kind"] != "hpo")
        for cell in evals:
            launch(cell)
    except EngineError as e:
        if has_deps and jobs:  # all or nothing: a half submission would leave evaluations without their jobs
            engines.cancel(str(j.job_id) for j in jobs.values())
            raise EngineError(f"{e}; cancelled the {len(jobs)} job(s) submitted before it") from None
        raise
    if not has_deps:
        _wait([jobs[c["id"]] for c in evals], log)
    return {cid: str(job.job_id) for cid, job in jobs.items()}


JOBS_FILE = "jobs.json"


def recorded_jobs(folder: Path) -> dict[str, str]:
    """FOLDER/jobs.json: {cell id: SLURM job id} of every job submitted for this experiment."""
    path = folder / JOBS_FILE
    if not path.is_file():
        return {}
    try:
        recorded = read_json(path)
    except ValueError:
        recorded = None
    if not isinstance(recorded, dict):
        raise DataError(f"{path} is not a JSON object of cell -> job ids; delete it (it only lists submitted jobs)")
    return recorded


def record_jobs(folder: Path, jobs: dict[str, str]) -> None:
    """Add {cell id: SLURM job id} to FOLDER/jobs.json (a later submission asks squeue about them)."""
    write_json(folder / JOBS_FILE, {**recorded_jobs(folder), **jobs})


def live_jobs(folder: Path) -> dict[str, str]:
    """{cell id: job id} of the recorded jobs that SLURM still holds (pending or running)."""
    recorded = recorded_jobs(folder)
    if not recorded:
        return {}
    # squeue lists active jobs only (pending, running, suspended, requeued, ...); a completing one is over.
    held = {j["id"] for j in engines.queued_jobs() if j["state"] != "COMPLETING"}
    return {cid: job for cid, job in recorded.items() if job in held}


def _ids(cells: list[dict], jobs: dict[str, str]) -> str:
    ids = [jobs[c["id"]] for c in cells]
    return ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")


def _wait(jobs, log: Callable[[str], None]) -> None:
    for job in jobs:
        try:
            job.result()
        except Exception as e:  # the cell's failure is in the store; the job error is only a summary
            log(f"job {job.job_id} failed: {str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__}")


__all__ = ["check_parameters", "run_cell_job", "submit"]
