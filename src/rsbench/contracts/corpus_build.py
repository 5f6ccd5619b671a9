"""`CorpusBuildConfig`: every option of `rsbench corpus build`, validated before any work starts.

It lives in `rsbench.contracts` (imports no stage) so that the command line can build its options and the
benchmark planner read its execution keys without loading the corpus stage (rasterio, pyarrow).

Options split in two kinds. Output options decide which tiles, bytes and statistics the corpus holds;
they are compared with an existing build (same -> no-op / resume, different -> --overwrite needed).
Execution options (workers, cluster, task size), marked `json_schema_extra=EXECUTION` where they are
declared, only decide *how* the work is spread: the corpus is byte-identical for any of their values,
so changing them never invalidates a build.

SLURM resources use the shared vocabulary of `rsbench.contracts.slurm.SlurmResources`: `slurm: true` or
`slurm: {partition: cpu, time: 120, cpus_per_task: 8, mem: 32GB, jobs: 4}` (`CorpusSlurm`). The flat keys of
older configs (`slurm_queue`, `slurm_account`, `slurm_walltime`, `slurm_cores`, `slurm_memory`, `slurm_jobs`)
still load into it (`LEGACY_SLURM_KEYS`); all of them are execution keys, so corpus.json's output settings,
and so a build's identity, do not depend on them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from rsbench.contracts.identity import EXECUTION, execution_keys
from rsbench.contracts.slurm import SlurmResources
from rsbench.settings import StrictModel

# The flat keys of older configs and corpus.json files -> fields of `slurm` (CorpusSlurm).
LEGACY_SLURM_KEYS = {
    "slurm_queue": "partition",
    "slurm_account": "account",
    "slurm_walltime": "time",
    "slurm_cores": "cpus_per_task",
    "slurm_memory": "mem",
    "slurm_jobs": "jobs",
}


class CorpusSlurm(SlurmResources):
    """dask-jobqueue SLURM jobs of a corpus build: `jobs` jobs, each running one single-threaded Dask worker
    process per CPU (`cpus_per_task`). The shared `SlurmResources` fields with the corpus build's defaults."""

    time: int = Field(60, ge=1, description="Wall-clock limit of each job: minutes, 'HH:MM:SS' or 'D-HH:MM:SS'.")
    cpus_per_task: int = Field(4, ge=1, description="CPUs per SLURM job (= its Dask worker processes).")
    mem: str = Field("16GB", description="Memory per SLURM job, e.g. 16GB.")
    job_name: str | None = Field("rsbench-corpus", description="Job name.")
    jobs: int = Field(1, gt=0, description="SLURM jobs, each with one worker process per CPU.")
    interface: str | None = Field(
        None, description="Network interface of the scheduler and workers, e.g. ib0 (unset: Dask's choice)."
    )
    start_timeout_s: int | None = Field(
        3600,
        ge=1,
        description="Fail when no worker has started this long after submission (the error gives SLURM's "
        "pending reason; unset: wait forever). A request the partition can never run fails at once.",
    )


# The per-tile filter settings (rsbench.corpus.filters.reject_reason reads exactly these).
FILTER_KEYS = (
    "max_nodata_fraction",
    "blank_filter",
    "min_std",
    "min_entropy",
    "cloud_filter",
    "cloud_brightness",
    "max_cloud_fraction",
    "saturation_filter",
    "max_saturated_fraction",
)


class CorpusBuildConfig(StrictModel):
    # --- inputs
    inputs: list[str] = Field(
        default_factory=list,
        description="Raster files, folders (searched recursively for *.tif), quoted globs ('data/**/*.tif') "
        "or GDAL paths (/vsis3/...).",
    )
    input_lists: list[str] = Field(
        default_factory=list, description="Text files listing one input per line ('#' comments)."
    )
    out: str = Field(description="Output corpus directory.", json_schema_extra=EXECUTION)
    bands: list[int | str] | None = Field(
        None,
        description="Band selection and order: 1-based indexes and/or band names, e.g. '4,3,2' or 'red,green,blue'. "
        "Names match each raster's band names (input-list bands=, a .bands sidecar, or its band descriptions) in "
        "any spelling ('B4_red', 'R', 'red'); rasters without them are skipped (unset: every band).",
    )
    # --- windows
    tile_size: int = Field(gt=0, description="Tile width and height in pixels (after --gsd resampling).")
    stride: int | None = Field(None, gt=0, description="Grid step in pixels (unset: the tile size, no overlap).")
    tiles_per_raster: int | None = Field(
        None, gt=0, description="N random (seeded) windows per raster instead of the grid."
    )
    max_tiles: int | None = Field(
        None, gt=0, description="Cap on kept tiles for the whole corpus, balanced across rasters (or clusters)."
    )
    seed: int = Field(0, description="Seed of random windows, balancing and diversity sampling.")
    gsd: float | None = Field(
        None, gt=0, description="Resample every raster to this ground sampling distance in metres."
    )
    resampling: Literal["bilinear", "nearest", "cubic", "average"] = Field(
        "bilinear", description="--gsd resampling kernel."
    )
    # --- filters (each one on/off; thresholds apply when on)
    max_nodata_fraction: float = Field(
        0.5, ge=0.0, le=1.0, description="Reject tiles with more invalid pixels (1: off)."
    )
    implicit_nodata: bool = Field(
        True, description="In rasters that declare no nodata or mask, pixels 0 in every band are fill."
    )
    blank_filter: bool = Field(True, description="Reject low-information tiles (low std or low entropy).")
    min_std: float = Field(
        0.04, ge=0.0, description="Blank if every band's std is below this fraction of its p2-p98 range."
    )
    min_entropy: float = Field(
        3.0, ge=0.0, le=8.0, description="Blank if the 8-bit quicklook entropy is below this many bits."
    )
    cloud_filter: bool = Field(True, description="Reject cloudy tiles (dominated by pixels bright in every band).")
    cloud_brightness: float = Field(
        0.7, gt=0.0, le=1.0, description="Cloud pixel: every band above this fraction of its p2-p98 range."
    )
    max_cloud_fraction: float = Field(0.2, ge=0.0, le=1.0, description="Reject tiles with a larger cloud fraction.")
    saturation_filter: bool = Field(
        True, description="Reject tiles with many pixels at the dtype maximum (integer rasters)."
    )
    max_saturated_fraction: float = Field(
        0.2, ge=0.0, le=1.0, description="Reject tiles with a larger saturated fraction."
    )
    dedup: bool = Field(True, description="Reject near-duplicate tiles by perceptual hash, within and across rasters.")
    dedup_distance: int = Field(
        4, ge=0, le=32, description="Max Hamming distance (of 64 bits) between duplicate hashes."
    )
    exclude: list[str] = Field(
        default_factory=list,
        description="Vector files or rasters of evaluation areas; overlapping tiles are rejected.",
    )
    # --- sampling
    diversity: bool = Field(
        False, description="Reach --max-tiles by sampling evenly across k-means clusters of tile features."
    )
    clusters: int = Field(16, gt=1, description="k of the diversity k-means.")
    # --- output
    shard_size: int = Field(1000, gt=0, description="Samples per shard.")
    # --- execution (never changes the output)
    workers: int | None = Field(
        None,
        gt=0,
        description="Local Dask worker processes (unset: all cores, but in-process for builds under 20k windows; "
        "1: in-process).",
        json_schema_extra=EXECUTION,
    )
    scheduler: str | None = Field(
        None, description="Address of a running Dask scheduler (tcp://host:8786).", json_schema_extra=EXECUTION
    )
    scheduler_timeout_s: float = Field(
        10, gt=0, description="Seconds to wait for the --scheduler to answer.", json_schema_extra=EXECUTION
    )
    slurm: CorpusSlurm | None = Field(
        None,
        description="Run on SLURM through a dask-jobqueue SLURMCluster: true, or the jobs' resources "
        "(CorpusSlurm: partition, account, time, cpus_per_task, mem, jobs, ...).",
        json_schema_extra=EXECUTION,
    )
    task_tiles: int = Field(
        2048,
        gt=0,
        description="Most windows per parallel task (large rasters are split into parts of this size).",
        json_schema_extra=EXECUTION,
    )
    task_mib: int = Field(
        32,
        gt=0,
        description="Most pixel MiB per parallel task (each raster opened counts 0.25 MiB): small rasters are "
        "grouped into one task and one commit up to this size.",
        json_schema_extra=EXECUTION,
    )
    group_rasters: bool = Field(
        True,
        description="Group small rasters into one task (off: a task never mixes rasters).",
        json_schema_extra=EXECUTION,
    )

    @model_validator(mode="before")
    @classmethod
    def _slurm(cls, values: Any) -> Any:
        """`slurm: true|false|{resources}`; the flat `slurm_queue`, ... keys of older configs go into it
        when SLURM is on (under the nested keys) and are dropped when it is off (they did nothing)."""
        if not isinstance(values, dict):
            return values
        values = dict(values)
        flat = {LEGACY_SLURM_KEYS[k]: values.pop(k) for k in list(values) if k in LEGACY_SLURM_KEYS}
        flat = {k: v for k, v in flat.items() if v is not None}
        slurm = values.get("slurm")
        if slurm is True:
            slurm = {}
        if slurm is None or slurm is False:
            values["slurm"] = None
        elif isinstance(slurm, dict):
            values["slurm"] = {**flat, **slurm}
        elif isinstance(slurm, CorpusSlurm) and flat:
            values["slurm"] = {**flat, **slurm.model_dump(exclude_unset=True)}
        return values

    @field_validator("bands", mode="before")
    @classmethod
    def _bands(cls, value):
        # "3" from the command line means band index 3, like 3 in YAML.
        if value is None:
            return None
        if isinstance(value, (str, int)):
            value = [value]
        out = [int(v) if isinstance(v, str) and v.strip().isdigit() else v for v in value]
        if not out or any(isinstance(v, int) and v < 1 for v in out):
            raise ValueError("band indexes are 1-based and the selection must not be empty")
        if len(set(out)) != len(out):
            raise ValueError("a band is selected twice")
        return out

    @model_validator(mode="after")
    def _consistent(self):
        if not self.inputs and not self.input_lists:
            raise ValueError("give at least one input (INPUT or --input-list)")
        if self.diversity and self.max_tiles is None:
            raise ValueError("diversity sampling needs max_tiles (it picks max_tiles tiles evenly across clusters)")
        if self.tiles_per_raster is not None and self.stride is not None:
            raise ValueError("give stride (grid) or tiles_per_raster (random windows), not both")
        if self.scheduler and self.slurm is not None:
            raise ValueError("give scheduler or slurm, not both")
        return self

    def output_settings(self) -> dict:
        """The settings that decide the output (compared with an existing build). The output folder is not
        one of them: a corpus moved to another folder is the same corpus."""
        return output_identity(self.model_dump(mode="json"))


def output_identity(settings: dict) -> dict:
    """`settings` without execution keys; also reads the saved settings of builds made before `out` was marked
    an execution key (they recorded it)."""
    return {k: v for k, v in settings.items() if k not in EXECUTION_KEYS}


EXECUTION_KEYS = execution_keys(CorpusBuildConfig)
