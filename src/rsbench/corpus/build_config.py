"""`CorpusBuildConfig`: every option of `rsbench corpus build`, validated before any work starts.

Options split in two kinds. Output options decide which tiles, bytes and statistics the corpus holds;
they are compared with an existing build (same -> no-op / resume, different -> --overwrite needed).
Execution options (workers, cluster, task size), marked `json_schema_extra=EXECUTION` where they are
declared, only decide *how* the work is spread: the corpus is byte-identical for any of their values,
so changing them never invalidates a build.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from rsbench.contracts.identity import EXECUTION, execution_keys
from rsbench.settings import StrictModel


class CorpusBuildConfig(StrictModel):
    # --- inputs
    inputs: list[str] = Field(
        default_factory=list, description="raster files, folders (recursive), globs or GDAL paths (/vsis3/...)"
    )
    input_lists: list[str] = Field(
        default_factory=list, description="text files listing one input per line ('#' comments)"
    )
    out: str = Field(description="output corpus directory")
    bands: list[int | str] | None = Field(
        None, description="band selection and order: 1-based indexes and/or band descriptions (case-insensitive)"
    )
    # --- windows
    tile_size: int = Field(gt=0, description="tile width and height in pixels (after --gsd resampling)")
    stride: int | None = Field(None, gt=0, description="grid step in pixels (None: tile_size, no overlap)")
    tiles_per_raster: int | None = Field(
        None, gt=0, description="N random (seeded) windows per raster instead of the grid"
    )
    max_tiles: int | None = Field(
        None, gt=0, description="cap on kept tiles for the whole corpus, balanced across rasters"
    )
    seed: int = Field(0, description="seed of random windows, balancing and diversity sampling")
    gsd: float | None = Field(None, gt=0, description="resample every raster to this ground sampling distance (metres)")
    resampling: Literal["bilinear", "nearest", "cubic", "average"] = Field(
        "bilinear", description="--gsd resampling kernel"
    )
    # --- filters (each one on/off; thresholds apply when on)
    max_nodata_fraction: float = Field(
        0.5, ge=0.0, le=1.0, description="reject tiles with more invalid pixels (1.0: off)"
    )
    implicit_nodata: bool = Field(
        True, description="rasters that declare no nodata/mask: pixels 0 in every band are fill"
    )
    blank_filter: bool = Field(True, description="reject low-information tiles (low std or low entropy)")
    min_std: float = Field(
        0.04, ge=0.0, description="blank if every band's std is below this (fraction of the raster's p2-p98 range)"
    )
    min_entropy: float = Field(
        3.0, ge=0.0, le=8.0, description="blank if the 8-bit quicklook entropy (bits) is below this"
    )
    cloud_filter: bool = Field(True, description="reject tiles dominated by bright-in-every-band pixels (clouds)")
    cloud_brightness: float = Field(
        0.7, gt=0.0, le=1.0, description="pixel is cloud if every band is above this (fraction of p2-p98 range)"
    )
    max_cloud_fraction: float = Field(0.2, ge=0.0, le=1.0, description="reject tiles with a larger cloud fraction")
    saturation_filter: bool = Field(
        True, description="reject tiles with many pixels at the dtype maximum (integer rasters)"
    )
    max_saturated_fraction: float = Field(
        0.2, ge=0.0, le=1.0, description="reject tiles with a larger saturated fraction"
    )
    dedup: bool = Field(True, description="reject near-duplicate tiles (perceptual hash), within and across rasters")
    dedup_distance: int = Field(
        4, ge=0, le=32, description="max Hamming distance (of 64 bits) between duplicate hashes"
    )
    exclude: list[str] = Field(
        default_factory=list, description="vector files or rasters of evaluation areas; overlapping tiles are rejected"
    )
    # --- sampling
    diversity: bool = Field(
        False, description="reach --max-tiles by sampling evenly across k-means clusters of tile features"
    )
    clusters: int = Field(16, gt=1, description="k of the diversity k-means")
    # --- output
    shard_size: int = Field(1000, gt=0, description="samples per shard")
    # --- execution (never changes the output)
    workers: int | None = Field(
        None,
        gt=0,
        description="local Dask worker processes (default: all cores, small builds in-process; 1: in-process)",
        json_schema_extra=EXECUTION,
    )
    scheduler: str | None = Field(
        None, description="address of a running Dask scheduler to use instead", json_schema_extra=EXECUTION
    )
    slurm: bool = Field(False, description="start a dask-jobqueue SLURMCluster", json_schema_extra=EXECUTION)
    slurm_queue: str | None = Field(None, description="SLURM partition", json_schema_extra=EXECUTION)
    slurm_account: str | None = Field(None, description="SLURM account", json_schema_extra=EXECUTION)
    slurm_walltime: str = Field("01:00:00", description="SLURM job walltime", json_schema_extra=EXECUTION)
    slurm_jobs: int = Field(
        1, gt=0, description="SLURM jobs (each runs slurm_cores worker processes)", json_schema_extra=EXECUTION
    )
    slurm_cores: int = Field(4, gt=0, description="cores per SLURM job", json_schema_extra=EXECUTION)
    slurm_memory: str = Field("16GB", description="memory per SLURM job", json_schema_extra=EXECUTION)
    task_tiles: int = Field(
        2048,
        gt=0,
        description="windows per parallel task (rasters are split into parts of this size)",
        json_schema_extra=EXECUTION,
    )

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
        if self.scheduler and self.slurm:
            raise ValueError("give scheduler or slurm, not both")
        return self

    def output_settings(self) -> dict:
        """The settings that decide the output (compared with an existing build)."""
        return {k: v for k, v in self.model_dump(mode="json").items() if k not in EXECUTION_KEYS}


EXECUTION_KEYS = execution_keys(CorpusBuildConfig)
