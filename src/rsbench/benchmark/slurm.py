"""The SLURM executor: one submitit job per open cell, evaluation jobs held by `afterok` dependencies.

Each job claims its cell in the store like a local worker, so jobs of a re-submission never duplicate
work that is done or running. submitit's `local` and `debug` clusters stand in for SLURM (to try a file
or to test): they have no job dependencies, so there the pretraining jobs are waited for first.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rsbench.benchmark.experiment import SlurmSpec
from rsbench.benchmark.plan import Plan, sync
from rsbench.errors import ConfigError
from rsbench.results_store.store import DONE, FAILED, PENDING, RUNNING, Store, worker_identity


def run_cell_job(url: str, cell_id: str, stale_after_s: float, max_attempts: int) -> str:
    """Body of one SLURM job. Raises when the cell fails, so `afterok` dependents never start."""
    from rsbench.benchmark.execute import run_claimed

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
    todo = [c for c in cells if c["status"] == PENDING and status.get(c["depends_on"]) != FAILED]
    # A job of an earlier submission still runs this pretraining: its evaluations go in a later submission.
    held = [c for c in todo if status.get(c["depends_on"]) == RUNNING]
    if held:
        log(f"{len(held)} evaluation cell(s) wait for pretraining still running elsewhere; submit again later")
        todo = [c for c in todo if c not in held]
    if not todo:
        log(
            f"nothing to submit: {sum(s == DONE for s in status.values())} of {len(cells)} cells done, "
            f"the others running or blocked"
        )
        return {}
    folder = Path(spec.folder) if spec.folder else plan.out / "slurm"
    make = executor_factory or (lambda f, cluster: submitit.AutoExecutor(folder=f, cluster=cluster))
    has_deps = spec.cluster == "slurm"
    args = (plan.url, exec_spec.stale_after_s, exec_spec.max_attempts)
    jobs: dict[str, Any] = {}

    def launch(cell: dict) -> None:
        params = job_parameters(spec, cell["kind"], cell)
        dep = jobs.get(cell["depends_on"])
        if has_deps:
            extra = dict(params.pop("slurm_additional_parameters", None) or {})
            # A failed pretraining job cancels its evaluations instead of leaving them queued forever.
            extra.setdefault("kill-on-invalid-dep", "yes")
            params["slurm_additional_parameters"] = extra
            if dep is not None:
                params["slurm_dependency"] = f"afterok:{dep.job_id}"
        # A fresh executor per job: submitit keeps parameters, and one job's dependency must not leak to the next.
        executor = make(folder, spec.cluster)
        executor.update_parameters(**params)
        job = executor.submit(run_cell_job, args[0], cell["id"], args[1], args[2])
        jobs[cell["id"]] = job
        after = f" after job {dep.job_id}" if dep is not None and has_deps else ""
        log(f"submitted job {job.job_id}{after}: {cell['label']}")

    for cell in (c for c in todo if c["kind"] == "pretrain"):
        launch(cell)
    if not has_deps:
        _wait(jobs.values(), log)
    # Tuning cells before the cells that repeat their best setting, so those can depend on their job.
    evals = sorted((c for c in todo if c["kind"] != "pretrain"), key=lambda c: c["kind"] != "hpo")
    for cell in evals:
        launch(cell)
    if not has_deps:
        _wait([jobs[c["id"]] for c in evals], log)
    return {cid: str(job.job_id) for cid, job in jobs.items()}


def _wait(jobs, log: Callable[[str], None]) -> None:
    for job in jobs:
        try:
            job.result()
        except Exception as e:  # the cell's failure is in the store; the job error is only a summary
            log(f"job {job.job_id} failed: {str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__}")


__all__ = ["check_parameters", "run_cell_job", "submit"]
