"""`rsbench pretrain`: its options are generated from `PretrainConfig` and `SlurmOptions` (cli/model_options.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from rsbench.cli.common import ConfigOption, handle_errors
from rsbench.cli.model_options import GIVEN, SLURM_RESOURCE_OPTIONS, Opt, model_options, with_section
from rsbench.contracts.pretrain_config import PretrainConfig, SlurmOptions
from rsbench.errors import ConfigError
from rsbench.settings import resolve_config

SLURM = "SLURM (with --slurm)"

# Not flags: `recipe` (a mapping: config file only), `slurm` (its fields are the SLURM options below).
PRETRAIN_EXCLUDE = frozenset({"recipe", "slurm"})
# `extra` (more sbatch options, a mapping): config file only, under `slurm:`.
SLURM_EXCLUDE = frozenset({"extra"})


@handle_errors
@model_options(SlurmOptions, into="slurm_given", exclude=SLURM_EXCLUDE, options=SLURM_RESOURCE_OPTIONS, panel=SLURM)
@model_options(
    PretrainConfig, exclude=PRETRAIN_EXCLUDE, options={"recipe_preset": Opt(decls=("--recipe",), metavar="PRESET")}
)
def pretrain_command(
    given: dict[str, Any] = GIVEN,
    slurm: bool = typer.Option(
        False, "--slurm", help="Submit to SLURM through submitit instead of running here.", rich_help_panel=SLURM
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="With --slurm: print the sbatch script, submit nothing.", rich_help_panel=SLURM
    ),
    slurm_given: dict[str, Any] = GIVEN,
    config: Path = ConfigOption,
) -> None:
    """Pretrain a backbone with a self-supervised method and export it to RUN_DIR/backbone.pt.

    Scales from one CPU to many GPUs without code changes (--devices, --nodes, --slurm); resumes
    from RUN_DIR/checkpoints/last.ckpt; records its cost in RUN_DIR/run.json.
    """
    if (slurm_given or dry_run) and not slurm:
        raise ConfigError(
            f"--{(next(iter(slurm_given)) if slurm_given else 'dry_run').replace('_', '-')} only applies with --slurm"
        )
    slurm_opts = with_section(config, "slurm", slurm_given) if slurm else None
    cfg = resolve_config(PretrainConfig, config, **given, slurm=slurm_opts)
    if slurm:
        from rsbench.train.slurm import sbatch_script, submit

        if dry_run:
            typer.echo(sbatch_script(cfg))
            return
        job = submit(cfg)
        typer.echo(
            f"submitted SLURM job {job.job_id}; logs in {cfg.out / 'slurm' / str(job.job_id)}; "
            f"`rsbench runs {cfg.out.parent}` shows its progress"
        )
        return
    from rsbench.train import pretrain

    pretrain(cfg)  # prints its own start and end lines (rank 0), or only "nothing to do" on a finished run
