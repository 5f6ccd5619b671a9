"""Where the per-raster, per-part and per-shard tasks run: in-process, local Dask, a scheduler, SLURM.

Tasks are pure functions whose results are consumed in completion order but applied by index, so
the output never depends on which backend ran them. With --scheduler or --slurm, workers write
into the output folder directly: it must be on a filesystem they share.

Without an explicit --workers, small builds run in-process: starting a local cluster costs
seconds (worker processes are spawned and import rasterio, pyarrow...), more than a build of a few
thousand windows takes. The cluster starts lazily, at the first map whose work is large enough,
and every later map uses it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

from rsbench.corpus.build_config import CorpusBuildConfig, CorpusSlurm

Log = Callable[[str], None]
AUTO_CLUSTER_WORK = 20_000  # windows (or window equivalents) below which --workers unset stays in-process


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
        self, fn: Callable[[Any], Any], tasks: list[Any], work: int | None = None
    ) -> Iterator[tuple[int, Any]]:
        """`work`: size of the job in windows, for the in-process/cluster choice (default: task count)."""
        if not tasks:
            return
        if self._in_process(len(tasks), len(tasks) if work is None else work):
            for i, task in enumerate(tasks):
                yield i, fn(task)
            return
        from dask.distributed import as_completed

        client = self._ensure_client()
        futures = client.map(fn, tasks, pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        try:
            for future in as_completed(futures):
                result = future.result()
                i = index[future.key]
                futures[i] = None  # drop the reference so the cluster can release the result
                future.release()
                yield i, result
        finally:
            client.cancel([f for f in futures if f is not None])
