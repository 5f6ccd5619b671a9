"""`rsbench pretrain`: train one SSL method with Lightning and export the backbone for evaluation.

RUN_DIR layout (file names and how to read them: rsbench.contracts.run_dir):
  config.yaml        resolved configuration
  checkpoints/       last.ckpt (atomic; every --checkpoint-every steps, on SIGTERM/SIGUSR1/SIGUSR2, at the end)
  metrics.csv        per-step loss, LR, collapse signal, throughput (Lightning CSVLogger; whole curve across resumes)
  backbone.pt/.json  exported feature extractor (see rsbench.contracts.backbone_export)
  run.json           status and cost: wall time, device-hours, images/s, data wait, memory, FLOPs/MFU, GPU telemetry

One process per device: `--devices N` on one machine re-launches the `rsbench` command N times
(Lightning's DDP launcher); under SLURM each srun task is one rank (Lightning's SLURMEnvironment).
Side effects on RUN_DIR happen on global rank 0 only.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

from rsbench.contracts.pretrain_config import PretrainConfig, identity_of
from rsbench.contracts.run_dir import RunDir
from rsbench.errors import ConfigError, DataError
from rsbench.io import check_output_dir
from rsbench.quiet import quiet
from rsbench.settings import load_yaml_mapping, save_config
from rsbench.ssl import CATALOG, get_method
from rsbench.ssl.recipe import fit_to_data, given_keys
from rsbench.train.accounting import RunAccounting
from rsbench.train.checkpoint import RunInterrupted, RunPreempted, check_resumable
from rsbench.train.data import seeded_rngs
from rsbench.train.data_summary import describe_data
from rsbench.train.export import export_backbone, merge_metrics, set_aside_metrics
from rsbench.train.hardware import count_step_flops, count_teacher_flops
from rsbench.train.setup import (
    build_loader,
    build_trainer,
    check_layout,
    check_teacher,
    global_rank,
    teacher_spec_for,
    training_source,
)


def _check_run_dir(cfg: PretrainConfig) -> tuple[str, Path | None]:
    """('new' | 'resume' | 'finished', checkpoint); another run's directory is an error."""
    run = RunDir(cfg.out)
    saved, ckpt = run.config, run.last_ckpt
    if saved.exists():
        old = load_yaml_mapping(saved)
        try:
            old_identity = PretrainConfig.model_validate(old).identity()
        except ValueError:
            old_identity = identity_of(old)
        new_identity = cfg.identity()
        if old_identity != new_identity:
            diff = sorted(
                k for k in old_identity.keys() | new_identity.keys() if old_identity.get(k) != new_identity.get(k)
            )
            raise ConfigError(
                f"run directory {cfg.out} holds a run with a different config ({', '.join(diff)}); choose another --out"
            )
        if run.backbone_meta.exists():
            return "finished", None
    if ckpt.exists():
        if cfg.resume is False:
            raise ConfigError(
                f"{cfg.out} has a checkpoint ({ckpt}) and --no-resume refuses to resume it; choose another --out"
            )
        return "resume", ckpt
    if cfg.resume:
        raise ConfigError(f"--resume: no checkpoint to resume in {cfg.out} (expected {ckpt})")
    return "new", None


def _check_logger(cfg: PretrainConfig) -> None:
    import importlib.util

    need = {"tensorboard": ("tensorboard", "tensorboardX"), "mlflow": ("mlflow",)}.get(cfg.logger, ())
    if need and not any(importlib.util.find_spec(m) for m in need):
        raise ConfigError(
            f"--logger {cfg.logger} needs the '{need[0]}' package, which is not installed "
            f"(pip install {need[0]}); metrics.csv is always written"
        )


def pretrain(cfg: PretrainConfig, *, submitit_job: bool = False) -> Path:
    """Train, export and account; returns the run directory. Re-running a finished run is a no-op,
    re-running an unfinished one resumes from its last checkpoint."""
    check_output_dir(cfg.out)
    state, ckpt = _check_run_dir(cfg)
    if state == "finished":
        print(f"run {cfg.out} already finished; nothing to do")  # the only line of a no-op re-run
        return cfg.out
    _check_logger(cfg)
    check_layout(cfg)
    method_cls = get_method(cfg.method)  # a method registered by hand (no catalog card) needs no teacher
    check_teacher(cfg, CATALOG[cfg.method].needs_teacher if cfg.method in CATALOG else False)
    arch = cfg.backbone or method_cls.default_backbone

    L.seed_everything(cfg.seed, workers=False, verbose=False)
    with seeded_rngs(cfg.seed):  # probing the data must not shift the model's initialisation
        data = training_source(cfg, method_cls)
    steps_per_epoch = cfg.steps_per_epoch(data.n_samples)
    if steps_per_epoch == 0:
        raise DataError(f"only {data.n_samples} training images, fewer than --batch-size {cfg.batch_size}")
    max_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    micro_batches = steps_per_epoch * cfg.accumulate  # per rank per epoch, whatever the number of ranks
    fit = fit_to_data(
        method_cls.base_recipe(cfg.recipe_preset, cfg.recipe),
        method=cfg.method,
        preset=cfg.recipe_preset,
        sample_store_keys=method_cls.sample_store_keys,
        paper_batch_size=method_cls.paper_batch_size,
        n_samples=data.n_samples,
        batch_size=cfg.batch_size,
        given=given_keys(cfg.recipe),
    )

    model_kwargs = dict(
        arch=arch,
        in_chans=data.norm.bands,
        image_size=cfg.image_size,
        batch_size=cfg.batch_size,
        max_steps=max_steps,
        recipe={**cfg.recipe, **fit.overrides},
        recipe_preset=cfg.recipe_preset,
    )
    if cfg.patch_size is not None:
        model_kwargs["patch_size"] = cfg.patch_size
    teacher = teacher_spec_for(cfg, data)
    if teacher is not None:
        model_kwargs["teacher"] = teacher
    model = method_cls(**model_kwargs)
    start_step = check_resumable(ckpt, model) if ckpt else 0  # before anything in RUN_DIR changes
    shapes = [(cfg.per_device_batch, *s) for s in data.view_shapes]
    flops, flops_note = count_step_flops(lambda: method_cls(**model_kwargs), shapes)
    # The teacher's forward is part of `flops`; counted alone too, as distillation is only cheaper with it.
    teacher_flops = count_teacher_flops(model.teacher, shapes[0]) if teacher else None
    if cfg.compile:
        model.backbone.compile()  # in place: state_dict keys (checkpoints, export) stay those of timm

    loader, source = build_loader(cfg, data, micro_batches)
    accounting = RunAccounting(
        cfg.out,
        {
            "method": cfg.method,
            "backbone": arch,
            "max_steps": max_steps,
            "batch_size": cfg.batch_size,
            "per_device_batch": cfg.per_device_batch,
            "accumulate": cfg.accumulate,
            "devices": cfg.devices,
            "nodes": cfg.nodes,
            "world_size": cfg.world_size,
            "precision": None,
            "data": data.description,
            **({"teacher": teacher} if teacher else {}),
        },
        cfg.batch_size,
        cfg.accumulate,
        flops,
        flops_note,
        cfg.log_interval(max_steps),
        teacher_flops,
    )
    with quiet():
        trainer, signals = build_trainer(cfg, model, source, accounting, max_steps, micro_batches, submitit_job)
    accounting.info["precision"] = accounting.precision = str(trainer.precision)
    rank0 = global_rank(trainer) == 0
    if rank0:
        print(start_line(cfg, arch, data, max_steps, steps_per_epoch, trainer))
        for change in fit.adaptations:
            key, preset, used, reason = (change[k] for k in ("key", "preset", "used", "reason"))
            print(f"recipe fitted to the data: {key} {preset} -> {used} ({reason})")
        for note in fit.warnings:
            warnings.warn(note, stacklevel=2)

    earlier_metrics = None
    if rank0:
        cfg.out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, RunDir(cfg.out).config)
        earlier_metrics = set_aside_metrics(cfg.out) if ckpt else None
        line = describe_data(data.description, data.n_samples)
        if line is not None:
            print(line)
        if ckpt:
            print(f"resuming {cfg.out} from {ckpt} (step {start_step})")
    accounting.begin(start_step, rank0)
    last = RunDir(cfg.out).last_ckpt
    stopped_by = None
    try:
        with quiet():
            trainer.fit(model, loader, ckpt_path=ckpt, weights_only=True if ckpt else None)
    except SIGTERMException:
        stopped_by = "SIGTERM"
        if signals.saved_step != trainer.global_step and trainer.world_size == 1:
            # SIGTERM landed after this step's SignalCheckpoint hook and before Lightning's own check at the end of
            # the step, which raised here: the step's checkpoint is still owed (under DDP the hook's agreement at
            # step boundaries decides, and a save here would be a collective only one rank reaches).
            trainer.save_checkpoint(last, weights_only=False)
            signals.saved_step = trainer.global_step
    except BaseException as e:
        if rank0:
            _merge(earlier_metrics, cfg.out)
            accounting.finish("failed", accounting.error or f"{type(e).__name__} (interrupted)")
        raise
    finally:
        signals.restore_handlers()
    finished = trainer.global_step >= max_steps
    stopped_by = None if finished else (signals.stopped_by or stopped_by)
    if stopped_by == "SIGINT":
        if rank0:
            _merge(earlier_metrics, cfg.out)
            accounting.finish("interrupted", "interrupted (Ctrl-C)")
        raise RunInterrupted(
            f"interrupted at step {trainer.global_step}/{max_steps}; checkpoint {last} (step {signals.saved_step}) "
            "saved; run the same command again to resume"
        )
    if stopped_by:
        if rank0:
            _merge(earlier_metrics, cfg.out)
            accounting.finish("preempted", f"stopped by {stopped_by}")
        requeued = _requeue_if_slurm(stopped_by, submitit_job, rank0)
        raise RunPreempted(
            f"run {cfg.out} stopped by {stopped_by} at step {trainer.global_step}/{max_steps}; checkpoint "
            f"{last} (step {signals.saved_step}) saved; "
            + ("job requeued" if requeued else "run the same command again to resume")
        )
    if not finished:
        if rank0:
            _merge(earlier_metrics, cfg.out)
            accounting.finish("failed", f"training stopped at step {trainer.global_step} of {max_steps}")
        raise RuntimeError(f"training stopped at step {trainer.global_step} of {max_steps}")
    trainer.save_checkpoint(last, weights_only=False)  # a collective under DDP: every rank calls it
    if rank0:
        _merge(earlier_metrics, cfg.out)
        export_backbone(
            model,
            cfg,
            arch,
            data.norm.to_dict(),
            data.description,
            trainer.global_step,
            data.n_samples,
            fit.adaptations,
        )
        accounting.finish("finished")
        print(f"backbone exported to {RunDir(cfg.out).backbone_weights}")
    return cfg.out


def start_line(cfg: PretrainConfig, arch: str, data, max_steps: int, steps_per_epoch: int, trainer) -> str:
    """The one line a run prints before training: what is trained, on what, for how long, where."""
    epochs = max_steps / steps_per_epoch
    device = trainer.strategy.root_device.type
    return (
        f"pretraining {cfg.method}/{arch} ({cfg.recipe_preset} recipe) on {data.n_samples} samples of "
        f"{data.description['path']}: batch {cfg.batch_size}, {max_steps} steps = {epochs:.3g} epochs of "
        f"{steps_per_epoch} steps, {trainer.world_size} x {device}, {trainer.precision}"
    )


def _merge(earlier: Path | None, run_dir: Path) -> None:
    if earlier is not None and earlier.exists():
        merge_metrics(earlier, run_dir)


def _requeue_if_slurm(stopped_by: str, submitit_job: bool, rank0: bool) -> bool:
    """A SIGUSR1 under a hand-started SLURM job means 'time is up': requeue it (submitit jobs requeue
    through submitit's own handler, see slurm.py)."""
    if submitit_job or stopped_by != "SIGUSR1" or not rank0:
        return False
    from rsbench.train.slurm import requeue_current_job

    return requeue_current_job()
