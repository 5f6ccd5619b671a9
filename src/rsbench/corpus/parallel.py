"""Where the per-raster, per-part and per-shard tasks run: in-process, local Dask, a scheduler, SLURM.

Tasks are pure functions whose results are consumed in completion order but applied by index, so
the output never depends on which backend ran them. With --scheduler or --slurm, workers write
into the output folder directly: it must be on a filesystem they share.

Without an explicit --workers, small builds run in-process: starting a local cluster costs
seconds (worker processes are spawned and import rasterio, pyarrow...), more than a build of a few
thousand windows takes. The cluster starts lazily, at the first map whose work is large enough,
and every later map uses it.

Worker layout (measured in benchmarks/corpus_bench.py, scaling case): one worker process per core,
one thread each. The per-tile work holds the GIL (numpy on small arrays, PIL quicklooks, rasterio
calls), so threads in one process would serialize; the workers rsbench starts get WORKER_ENVIRON:
OMP_NUM_THREADS / MKL_NUM_THREADS / OPENBLAS_NUM_THREADS = 1, so numpy does not oversubscribe the cores,
and glibc malloc settings that keep numpy's temporaries off mmap (see WORKER_ENVIRON); GDAL decodes with
one thread (GDAL_NUM_THREADS unset). The driver only submits tasks and merges their small records while
the workers tile. Workers of a cluster given with --scheduler are the user's: the README says how to start
them with the same environment.

On SLURM, nothing is left behind: the request is checked with `sbatch --test-only` before any job is
submitted, a job SLURM will never start (pending reason PartitionConfig, ...) or that waits longer than
`slurm.start_timeout_s` fails the build with SLURM's reason, and the jobs are cancelled on every way out
(the build's end, an error, Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from typing import Any

from rsbench import engines
from rsbench.corpus.build_config import CorpusBuildConfig, CorpusSlurm
from rsbench.errors import EngineError

Log = Callable[[str], None]
AUTO_CLUSTER_WORK = 20_000  # windows (or window equivalents) below which --workers unset stays in-process
IN_FLIGHT_PER_THREAD = 4  # tasks submitted ahead per worker thread: enough to keep workers busy
MIN_IN_FLIGHT = 64  # ... and at least this many, for clusters whose workers are still joining


# The environment Dask's nanny gives each worker process it starts, for the workers rsbench starts (local and
# SLURM). Dask's default sets MALLOC_TRIM_THRESHOLD_=65536 (to hand freed memory back to the OS), and setting it
# freezes glibc's mmap threshold at 128 KiB: every numpy temporary of a batch of windows (MiBs) is then mapped
# and page-faulted afresh, which doubled the CPU time of tiling in a worker (scaling case of corpus_bench.py:
# 43 s in a 1-worker cluster vs 22 s in-process). Large allocations from the heap (mmap threshold 32 MiB,
# glibc's maximum) and trimming above 128 MiB give a worker the in-process speed back.
WORKER_ENVIRON: dict[str, int] = {
    "OMP_NUM_THREADS": 1,
    "MKL_NUM_THREADS": 1,
    "OPENBLAS_NUM_THREADS": 1,
    "MALLOC_MMAP_THRESHOLD_": 32 * 2**20,
    "MALLOC_TRIM_THRESHOLD_": 128 * 2**20,
}
NANNY_ENVIRON = "distributed.nanny.pre-spawn-environ"


def slurm_options(cfg: CorpusBuildConfig) -> dict[str, Any]:
    """dask-jobqueue SLURMCluster arguments: each job runs one single-threaded worker process per CPU
    (the tiling is GIL-bound, so threads would not add throughput), its nanny given WORKER_ENVIRON through
    Dask's configuration in the job's environment (before the job's own set-up lines)."""
    resources = cfg.slurm or CorpusSlurm()
    kwargs = resources.jobqueue_kwargs()
    kwargs["processes"] = resources.cpus_per_task
    if resources.interface:
        kwargs["interface"] = resources.interface
    variable = "DASK_" + NANNY_ENVIRON.upper().replace(".", "__").replace("-", "_")
    kwargs["job_script_prologue"] = [
        f"export {variable}={shlex.quote(json.dumps(WORKER_ENVIRON))}",
        *kwargs.get("job_script_prologue", []),
    ]
    return kwargs


def local_cluster(workers: int):
    """The local Dask cluster of a build: `workers` single-threaded worker processes (the work is GIL-bound
    numpy/PIL/GDAL calls) started with WORKER_ENVIRON."""
    import dask
    from dask.distributed import LocalCluster

    with dask.config.set({NANNY_ENVIRON: WORKER_ENVIRON}):  # read when the nannies are made
        return LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.ERROR
        )


WORKERS = "the corpus build's Dask workers"
WAIT_POLL_S = 5.0


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While open, SIGTERM (a supervisor, `kill`) unwinds like Ctrl-C, so the cluster's jobs get cancelled."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _job_ids(cluster) -> list[str]:
    return [str(w.job_id) for w in list(cluster.workers.values()) if getattr(w, "job_id", None)]


def _close_cluster(cluster) -> None:
    """Close the SLURMCluster (it scancels its jobs); scancel them again in case closing failed half-way."""
    ids = _job_ids(cluster)
    try:
        cluster.close()
    except Exception:  # e.g. a worker whose job was never submitted: dask asserts on its state
        pass
    with suppress(EngineError):
        engines.cancel(ids)


def wait_for_workers(cluster, client, resources: CorpusSlurm, log: Log, poll_s: float = WAIT_POLL_S) -> None:
    """Until the first worker joins: fail at once on a pending reason that never resolves, after
    `start_timeout_s` on any other; say every minute what the jobs wait for."""
    start = last_said = time.monotonic()
    while True:
        try:
            client.wait_for_workers(1, timeout=poll_s)
            return
        except TimeoutError:
            pass
        waited = time.monotonic() - start
        ids = _job_ids(cluster)
        if not ids:
            if waited > 60:
                raise EngineError(f"sbatch submitted none of {WORKERS} within {waited:.0f} s")
            continue
        reasons = engines.pending_reasons(ids)
        why = ", ".join(sorted(set(reasons.values()))) or "starting"
        never = [r for r in reasons.values() if r.startswith(engines.NEVER_STARTS)]
        if never:
            raise EngineError(
                f"SLURM will never start {WORKERS} ({resources.describe()}): job(s) {', '.join(ids)} pending "
                f"with reason {never[0]}; ask for less (--slurm-cpus-per-task, --slurm-mem) or another partition"
            )
        if resources.start_timeout_s and waited > resources.start_timeout_s:
            raise EngineError(
                f"no Dask worker started within {resources.start_timeout_s} s (--slurm-start-timeout-s): "
                f"job(s) {', '.join(ids)} still pending ({why}); their jobs were cancelled"
            )
        if time.monotonic() - last_said >= 60:
            last_said = time.monotonic()
            log(f"waiting {waited:.0f} s for SLURM job(s) {', '.join(ids)} ({why})")


class Runner:
    """`map_unordered(fn, tasks, work)` yields (task index, result) as tasks finish."""

    def __init__(self, cfg: CorpusBuildConfig, client=None, log: Log | None = None) -> None:
        self.cfg = cfg
        self.client = client
        self.log = log or (lambda msg: None)
        self._stack = ExitStack()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    @property
    def workers(self) -> int:
        return self.cfg.workers or os.cpu_count() or 1

    def _ensure_client(self) -> Any:
        if self.client is not None:
            return self.client
        from dask.distributed import Client

        cfg = self.cfg
        if cfg.scheduler:
            client = engines.connect_scheduler(cfg.scheduler, cfg.scheduler_timeout_s)
            self.client = self._stack.enter_context(client)
            self.log(f"dask scheduler: {cfg.scheduler}")
        elif cfg.slurm is not None:
            from dask_jobqueue import SLURMCluster

            resources = cfg.slurm
            engines.check_request(resources, WORKERS, ["--ntasks=1"])
            with engines.sbatch_refusals(WORKERS, resources):
                cluster = SLURMCluster(**slurm_options(cfg))
            self._stack.callback(_close_cluster, cluster)
            self._stack.enter_context(sigterm_as_interrupt())
            cluster.scale(jobs=resources.jobs)
            self.client = self._stack.enter_context(Client(cluster))
            self.log(f"dask SLURM cluster: {resources.jobs} job(s), scheduler {cluster.scheduler_address}")
            wait_for_workers(cluster, self.client, resources, self.log)
        else:
            cluster = self._stack.enter_context(local_cluster(self.workers))
            self.client = self._stack.enter_context(Client(cluster))
        return self.client

    def _in_process(self, n_tasks: int, work: int) -> bool:
        if self.client is not None or self.cfg.scheduler or self.cfg.slurm is not None:
            return False
        if self.workers <= 1 or n_tasks <= 1:
            return True
        return self.cfg.workers is None and work < AUTO_CLUSTER_WORK

    def map_unordered(
        self, fn: Callable[[Any], Any], tasks: Iterable[Any], work: int | None = None, count: int | None = None
    ) -> Iterator[tuple[int, Any]]:
        """`work`: size of the job in windows, for the in-process/cluster choice (default: task count).

        `tasks` may be a generator (give `count`): it is drawn only as fast as tasks are submitted, at
        most IN_FLIGHT_PER_THREAD per worker thread (at least MIN_IN_FLIGHT) ahead, so a build of
        100,000 rasters never holds every task (each carries raster descriptions) in memory at once.
        """
        n = len(tasks) if count is None else count
        if not n:
            return
        tasks = iter(tasks)
        if self._in_process(n, n if work is None else work):
            for i, task in enumerate(tasks):
                yield i, fn(task)
            return
        from dask.distributed import as_completed

        client = self._ensure_client()
        running: dict[str, tuple[int, Any]] = {}
        queue = as_completed()
        submitted, limit, checked = 0, MIN_IN_FLIGHT, 0.0

        def top_up() -> None:
            nonlocal submitted, limit, checked
            if time.monotonic() - checked > 5:  # workers join late on SLURM: re-read the cluster's size
                limit = max(MIN_IN_FLIGHT, IN_FLIGHT_PER_THREAD * sum(client.nthreads().values()))
                checked = time.monotonic()
            while submitted < n and len(running) < limit:
                task = next(tasks, None)
                if task is None:
                    submitted = n
                    return
                future = client.submit(fn, task, pure=False)
                running[future.key] = (submitted, future)
                queue.add(future)
                submitted += 1

        top_up()
        try:
            for future in queue:
                i, _ = running.pop(future.key)
                result = future.result()
                future.release()  # the cluster can drop the result now
                top_up()
                yield i, result
        finally:
            client.cancel([f for _, f in running.values()])
