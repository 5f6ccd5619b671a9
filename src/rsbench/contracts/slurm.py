"""`SlurmResources`: the one vocabulary for what a SLURM job asks for, whichever engine submits it.

Three parts of rsbench submit SLURM jobs, each through its own engine:

- `rsbench pretrain --slurm`: submitit's `SlurmExecutor` (`PretrainSlurm`, in `rsbench.contracts.pretrain_config`,
  adds the requeue keys) -> `sbatch_parameters()`;
- `rsbench benchmark run` with `executor.kind: slurm`: submitit's `AutoExecutor` -> `submitit_parameters()`;
- `rsbench corpus build --slurm`: dask-jobqueue's `SLURMCluster` -> `jobqueue_kwargs()`.

The fields use sbatch's own names (partition, account, qos, time, mem, cpus_per_task, gpus_per_node,
constraint); each method translates them, as pure functions, to its engine's names. Older spellings still
load: submitit's keys (`slurm_partition`, `timeout_min`, `mem_gb`, ...; `from_submitit`) in benchmark
experiment files, and the flat `slurm_queue`, `slurm_walltime`, ... keys of corpus builds (see
`rsbench.corpus.build_config`). Imports no stage and no torch.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator

from rsbench.settings import StrictModel

_TIME = re.compile(r"(?:(\d+)-)?(\d+):(\d{2})(?::(\d{2}))?")
_DAYS_HOURS = re.compile(r"(\d+)-(\d+)")
_MEM = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT])?(i?B)?", re.IGNORECASE)


def parse_minutes(value: Any) -> Any:
    """90, '90', 'HH:MM[:SS]', 'D-HH' or 'D-HH:MM[:SS]' -> whole minutes (seconds round up)."""
    if not isinstance(value, str) or value.strip().isdigit():
        return value
    text = value.strip()
    if m := _DAYS_HOURS.fullmatch(text):
        return int(m.group(1)) * 1440 + int(m.group(2)) * 60
    m = _TIME.fullmatch(text)
    if not m:
        raise ValueError("expected minutes, 'HH:MM:SS' or 'D-HH:MM:SS'")
    days, hours, minutes, seconds = (int(g) if g else 0 for g in m.groups())
    return days * 1440 + hours * 60 + minutes + (1 if seconds else 0)


def format_walltime(minutes: int) -> str:
    """Minutes -> sbatch's 'HH:MM:SS', or 'D-HH:MM:SS' from one day on."""
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    return f"{days}-{hours:02d}:{mins:02d}:00" if days else f"{hours:02d}:{mins:02d}:00"


class SlurmResources(StrictModel):
    """What one SLURM job asks for (sbatch names). Unset keys are left to the cluster's defaults."""

    partition: str | None = Field(None, description="SLURM partition (queue).")
    account: str | None = Field(None, description="SLURM account to charge.")
    qos: str | None = Field(None, description="SLURM quality of service.")
    time: int | None = Field(
        None, ge=1, description="Wall-clock limit of the job: minutes, 'HH:MM:SS' or 'D-HH:MM:SS'."
    )
    mem: str | None = Field(None, description="Memory per node, e.g. 64G or 16GB (sbatch --mem).")
    cpus_per_task: int | None = Field(None, ge=1, description="CPUs per task.")
    gpus_per_node: int | None = Field(
        None, ge=0, le=64, description="GPUs per node (0: a CPU-only job, no GPU directive)."
    )
    constraint: str | None = Field(None, description="Node constraint (sbatch --constraint), e.g. a100.")
    job_name: str | None = Field(None, description="Job name.")
    setup: list[str] = Field(
        default_factory=list, description="Shell lines run in the job before the work starts (module load ...)."
    )
    signal_delay_s: int | None = Field(
        None, ge=10, description="Send the checkpoint signal (USR2) this many seconds before the time limit."
    )
    extra: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="More sbatch options without a field here, e.g. {mail-type: END} for #SBATCH --mail-type=END "
        "(true: a flag without value).",
    )

    @field_validator("time", mode="before")
    @classmethod
    def _minutes(cls, value: Any) -> Any:
        return parse_minutes(value)

    @field_validator("mem", mode="before")
    @classmethod
    def _mem(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)):
            raise ValueError(f"give a unit, e.g. '{value}G' (a bare number is ambiguous)")
        if isinstance(value, str) and not _MEM.fullmatch(value.strip()):
            raise ValueError("expected a size like 64G, 16GB or 512M")
        return value.strip() if isinstance(value, str) else value

    @field_validator("extra", mode="before")
    @classmethod
    def _extra(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k).lstrip("-"): v for k, v in value.items()}
        return value

    # ---- older spellings ----

    @classmethod
    def from_submitit(cls, params: dict[str, Any]) -> dict[str, Any]:
        """submitit AutoExecutor / SlurmExecutor keys -> field values (field names pass through).

        An unknown key is an error naming it; a key given in both spellings is an error too."""
        if not isinstance(params, dict):
            return params
        out: dict[str, Any] = {}
        for key, value in params.items():
            if key in cls.model_fields:
                field, converted = key, value
            elif key in _SUBMITIT_KEYS:
                field, convert = _SUBMITIT_KEYS[key]
                converted = convert(value)
            else:
                known = ", ".join(sorted({*cls.model_fields, *_SUBMITIT_KEYS}))
                raise ValueError(f"unknown SLURM key '{key}' (known: {known})")
            if field in out:
                raise ValueError(f"SLURM key '{key}' sets '{field}' a second time")
            out[field] = converted
        return out

    def describe(self) -> str:
        """The request in a few words for messages: 'partition debug, 4 CPUs, 16GB, 60 min'."""
        parts = [
            f"partition {self.partition}" if self.partition else "the default partition",
            f"{self.cpus_per_task} CPUs" if self.cpus_per_task else "",
            f"{self.mem}" if self.mem else "",
            f"{self.gpus_per_node} GPU(s) per node" if self.gpus_per_node else "",
            f"{self.time} min" if self.time else "",
            f"constraint {self.constraint}" if self.constraint else "",
        ]
        return ", ".join(p for p in parts if p)

    # ---- translations ----

    def merged(self, override: SlurmResources | None) -> SlurmResources:
        """These resources with the keys `override` sets replacing them (e.g. per-stage over shared ones)."""
        if override is None:
            return self
        values = {**self.model_dump(exclude_unset=True), **override.model_dump(exclude_unset=True)}
        return type(self).model_validate(values)

    def _directives(self) -> dict[str, Any]:
        """The set keys, in sbatch's names (hyphens become underscores, as submitit writes them)."""
        params: dict[str, Any] = {
            "partition": self.partition,
            "account": self.account,
            "qos": self.qos,
            "time": self.time,
            "mem": self.mem,
            "cpus_per_task": self.cpus_per_task,
            "gpus_per_node": self.gpus_per_node or None,  # 0: CPU-only, no directive
            "constraint": self.constraint,
            "job_name": self.job_name,
            "signal_delay_s": self.signal_delay_s,
        }
        return {k: v for k, v in params.items() if v is not None}

    def sbatch_parameters(self) -> dict[str, Any]:
        """Keyword arguments of submitit's `SlurmExecutor.update_parameters` (its names are sbatch's)."""
        params = self._directives()
        if self.setup:
            params["setup"] = list(self.setup)
        if self.extra:
            params["additional_parameters"] = dict(self.extra)
        return params

    def sbatch_options(self) -> list[str]:
        """Command-line options of sbatch itself (e.g. for `sbatch --test-only`); `setup` is not one."""
        params = self._directives()
        params.pop("signal_delay_s", None)
        if "time" in params:
            params["time"] = format_walltime(params["time"])
        options = [f"--{k.replace('_', '-')}={v}" for k, v in params.items()]
        return options + [f"--{k}" if v is True else f"--{k}={v}" for k, v in self.extra.items()]

    def submitit_parameters(self) -> dict[str, Any]:
        """Keyword arguments of submitit's `AutoExecutor.update_parameters` (generic or `slurm_` names)."""
        generic = {"time": "timeout_min", "cpus_per_task": "cpus_per_task", "gpus_per_node": "gpus_per_node"}
        generic["job_name"] = "name"
        return {generic.get(k, f"slurm_{k}"): v for k, v in self.sbatch_parameters().items()}

    def jobqueue_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of dask-jobqueue's `SLURMCluster` (one job = `cores` CPUs of one task)."""
        kwargs: dict[str, Any] = {
            "queue": self.partition,
            "account": self.account,
            "walltime": format_walltime(self.time) if self.time else None,
            "cores": self.cpus_per_task,
            "memory": _bytes_for_dask(self.mem) if self.mem else None,
            "job_name": self.job_name,
        }
        extra = [f"--qos={self.qos}"] if self.qos else []
        if self.constraint:
            extra.append(f"--constraint={self.constraint}")
        if self.gpus_per_node:
            extra.append(f"--gpus-per-node={self.gpus_per_node}")
        if self.signal_delay_s:
            extra.append(f"--signal=USR2@{self.signal_delay_s}")
        extra += [f"--{k}" if v is True else f"--{k}={v}" for k, v in self.extra.items()]
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        if extra:
            kwargs["job_extra_directives"] = extra
        if self.setup:
            kwargs["job_script_prologue"] = list(self.setup)
        return kwargs


def _bytes_for_dask(mem: str) -> str:
    """sbatch's '64G' (or '64GB', or '512', megabytes) -> '64GB' / '512MB' for dask's parse_bytes."""
    m = _MEM.fullmatch(mem.strip())
    if m is None:
        return mem
    number, unit = m.group(1), (m.group(2) or "M").upper()
    return f"{number}{unit}{'iB' if (m.group(3) or '').lower() == 'ib' else 'B'}"


def _mem_gb(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{int(value)}GB" if value == int(value) else f"{int(value * 1024)}MB"
    return value


def _same(value: Any) -> Any:
    return value


# submitit's names (AutoExecutor generic ones and SlurmExecutor's, with and without `slurm_`) -> field.
_SUBMITIT_KEYS: dict[str, tuple[str, Any]] = {
    "timeout_min": ("time", _same),
    "slurm_time": ("time", _same),
    "mem_gb": ("mem", _mem_gb),
    "slurm_mem": ("mem", _same),
    "name": ("job_name", _same),
    "slurm_job_name": ("job_name", _same),
    "slurm_partition": ("partition", _same),
    "slurm_account": ("account", _same),
    "slurm_qos": ("qos", _same),
    "slurm_constraint": ("constraint", _same),
    "slurm_cpus_per_task": ("cpus_per_task", _same),
    "slurm_gpus_per_node": ("gpus_per_node", _same),
    "slurm_setup": ("setup", _same),
    "slurm_signal_delay_s": ("signal_delay_s", _same),
    "slurm_additional_parameters": ("extra", _same),
    "additional_parameters": ("extra", _same),
}
