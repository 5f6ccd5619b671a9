"""The external engines' side of rsbench: SLURM's commands (sbatch, squeue, scancel) and Dask schedulers.

Three stages submit SLURM jobs through their own engine (submitit for `pretrain --slurm` and `benchmark run`,
dask-jobqueue for `corpus build --slurm`). What they share lives here, so a refusal reads the same in all
of them: one `error:` line naming what was asked for and SLURM's own reason, never the engine's traceback.

- `check_request` asks `sbatch --test-only` whether the partition can ever run the request, before anything
  is submitted: a job SLURM accepts but can never start (4 CPUs on a 2-CPU node) would otherwise wait in
  `PD (PartitionConfig)` forever.
- `sbatch_refusals` turns a refused submission (submitit's FailedJobError, dask-jobqueue's RuntimeError, a
  missing `sbatch`) into an `EngineError`, and keeps the engines' own stderr print of it off the terminal.
- `connect_scheduler` reaches a Dask scheduler within a short timeout, or names its address.

Torch-free; imports no stage.
"""

from __future__ import annotations

import getpass
import io
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, redirect_stderr
from typing import Any

from rsbench.contracts.slurm import SlurmResources
from rsbench.errors import EngineError

COMMAND_TIMEOUT_S = 60
# squeue reasons of a pending job that no amount of waiting resolves: the request exceeds the partition's
# nodes or limits, or the account / QOS does not allow it.
NEVER_STARTS = (
    "PartitionConfig",
    "PartitionNodeLimit",
    "PartitionTimeLimit",
    "BadConstraints",
    "InvalidAccount",
    "InvalidQOS",
    "DependencyNeverSatisfied",
)


def _run(args: Sequence[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            list(args), input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
        )
    except FileNotFoundError:
        raise EngineError(f"'{args[0]}' not found: SLURM commands are needed here (a SLURM login node)") from None
    except subprocess.TimeoutExpired:
        raise EngineError(f"'{args[0]}' did not answer within {COMMAND_TIMEOUT_S} s: is slurmctld up?") from None


def sbatch_reason(text: str) -> str:
    """SLURM's reason in sbatch's (or an engine's) error text: its 'error:' lines, without the prefixes."""
    reasons: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        for prefix in ("sbatch: error: ", "allocation failure: ", "Batch job submission failed: "):
            if line.startswith(prefix):
                line = line.removeprefix(prefix)
                line = line.removeprefix("Batch job submission failed: ")
                if line not in reasons:
                    reasons.append(line)
                break
    if reasons:
        return "; ".join(reasons)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else "no reason given"


def partition_nodes(partition: str | None) -> list[tuple[int, int]]:
    """(CPUs, memory in MB) of each node configuration of `partition` (None: the default one), from sinfo."""
    args = ["sinfo", "-h", "-o", "%c %m"] + (["-p", partition] if partition else [])
    done = _run(args)
    sizes = []
    for line in done.stdout.splitlines():
        cpus, mem = (line.split() + ["", ""])[:2]
        if cpus.isdigit() and mem.rstrip("+").isdigit():
            sizes.append((int(cpus), int(mem.rstrip("+"))))
    return sizes


def check_request(resources: SlurmResources, what: str, options: Iterable[str] = ()) -> None:
    """EngineError unless SLURM could ever run this request (`sbatch --test-only`: nothing is submitted).

    `options`: sbatch options beyond `resources` (e.g. --nodes, --ntasks-per-node of the job)."""
    args = ["sbatch", "--test-only", *resources.sbatch_options(), *options, "--wrap", "true"]
    done = _run(args)
    if done.returncode == 0:
        return
    reason = sbatch_reason(done.stderr + done.stdout)
    nodes = partition_nodes(resources.partition) if "partition" not in reason.lower() else []
    where = f"partition {resources.partition}" if resources.partition else "the default partition"
    sizes = ""
    if nodes:
        sizes = f"; {where} has nodes of at most {max(c for c, _ in nodes)} CPUs and {max(m for _, m in nodes)} MB"
    raise EngineError(f"SLURM cannot run {what} ({resources.describe()}): {reason}{sizes}")


@contextmanager
def sbatch_refusals(what: str, resources: SlurmResources) -> Iterator[None]:
    """Around a submission: a refusal by sbatch becomes an EngineError naming the request and SLURM's reason."""
    captured = io.StringIO()
    try:
        with redirect_stderr(captured):  # submitit prints sbatch's stderr itself before raising
            yield
    except FileNotFoundError as e:
        missing = e.filename or "sbatch"
        raise EngineError(f"cannot submit {what}: '{missing}' not found (not a SLURM login node?)") from None
    except RuntimeError as e:  # submitit's FailedJobError / FailedSubmissionError, dask-jobqueue's _call
        text = f"{e}\n{captured.getvalue()}"
        if "sbatch" not in text and not type(e).__module__.startswith("submitit"):
            raise
        raise EngineError(f"sbatch refused {what} ({resources.describe()}): {sbatch_reason(text)}") from None


def queued_jobs() -> list[dict[str, str]]:
    """This user's jobs that SLURM still knows: id, name, state and reason (squeue)."""
    done = _run(["squeue", "-h", "-u", getpass.getuser(), "-o", "%i|%j|%T|%r"])
    jobs = []
    for line in done.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 4:
            jobs.append(dict(zip(("id", "name", "state", "reason"), parts)))
    return jobs


def pending_reasons(job_ids: Iterable[str]) -> dict[str, str]:
    """{job id: squeue reason} of those jobs that are still pending."""
    wanted = set(job_ids)
    return {j["id"]: j["reason"] for j in queued_jobs() if j["id"] in wanted and j["state"] == "PENDING"}


def cancel(job_ids: Iterable[str]) -> None:
    """scancel these jobs (those already gone are ignored)."""
    ids = [str(j) for j in job_ids if j]
    if ids:
        _run(["scancel", *ids])


def connect_scheduler(address: str, timeout_s: float) -> Any:
    """A dask.distributed Client of the scheduler at `address`, or an EngineError naming it."""
    from dask.distributed import Client

    try:
        return Client(address, timeout=timeout_s)
    except (OSError, TimeoutError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise EngineError(
            f"cannot reach the Dask scheduler at {address}: {first} (is it running? a slow network: "
            f"raise --scheduler-timeout-s, now {timeout_s:g})"
        ) from None


__all__ = [
    "NEVER_STARTS",
    "cancel",
    "check_request",
    "connect_scheduler",
    "partition_nodes",
    "pending_reasons",
    "queued_jobs",
    "sbatch_reason",
    "sbatch_refusals",
]
