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
calls), so threads in one process would serialize; Dask's nanny starts each worker with
OMP_NUM_THREADS / MKL_NUM_THREADS / OPENBLAS_NUM_THREADS = 1 (its `distributed.nanny.pre-spawn-environ`
default), so numpy does not oversubscribe the cores, and GDAL decodes with one thread (GDAL_NUM_THREADS
unset). The driver only submits tasks and merges their small records while the workers tile.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from typing import Any

from rsbench.corpus.build_config import CorpusBuildConfig, CorpusSlurm

Log = Callable[[str], None]
AUTO_CLUSTER_WORK = 20_000  # windows (or window equivalents) below which --workers unset stays in-process
IN_FLIGHT_PER_THREAD = 4  # tasks submitted ahead per worker thread: enough to keep workers busy
MIN_IN_FLIGHT = 64  # ... and at least this many, for clusters whose workers are still joining


def slurm_options(cfg: CorpusBuildConfig) -> dict[str, Any]:
    """dask-jobqueue SLURMCluster arguments: each job runs one single-threaded worker process per CPU
    (the tiling is GIL-bound, so threads would not add throughput)."""
    resources = cfg.slurm or CorpusSlurm()
    kwargs = resources.jobqueue_kwargs()
    kwargs["processes"] = resources.cpus_per_task
    return kwargs


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
            self.client = self._stack.enter_context(Client(cfg.scheduler))
            self.log(f"dask scheduler: {cfg.scheduler}")
        elif cfg.slurm is not None:
            from dask_jobqueue import SLURMCluster

            cluster = self._stack.enter_context(SLURMCluster(**slurm_options(cfg)))
            cluster.scale(jobs=cfg.slurm.jobs)
            self.client = self._stack.enter_context(Client(cluster))
            self.log(f"dask SLURM cluster: {cfg.slurm.jobs} job(s), scheduler {cluster.scheduler_address}")
        else:
            from dask.distributed import LocalCluster

            # One thread per worker process: the work is GIL-bound numpy/PIL/GDAL calls.
            cluster = self._stack.enter_context(
                LocalCluster(
                    n_workers=self.workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    silence_logs=logging.ERROR,
                )
            )
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
