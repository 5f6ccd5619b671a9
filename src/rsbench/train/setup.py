"""Building the pieces of a run: data source, DataLoader, Lightning Trainer (devices, strategy,
precision, callbacks, loggers, checkpoint I/O, SLURM environment)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy
from torch.utils.data import DataLoader

from rsbench.contracts.pretrain_config import PretrainConfig
from rsbench.contracts.run_dir import MLFLOW_DIR, TENSORBOARD_DIR, RunDir
from rsbench.data import Normalization
from rsbench.data.images import photo_band_names
from rsbench.errors import ConfigError
from rsbench.train.accounting import RunAccounting
from rsbench.train.callbacks import DataPosition, SignalCheckpoint, StepProgressBar, StepSeeder
from rsbench.train.checkpoint import AtomicCheckpointIO
from rsbench.train.data import (
    CorpusStream,
    EpochSampler,
    ImageFilesDataset,
    collate_views,
    image_folder_source,
)
from rsbench.train.data_summary import corpus_description


@dataclass
class TrainingData:
    dataset: Any  # ImageFilesDataset or CorpusDataset (views made by `transform`)
    transform: Any
    norm: Normalization
    n_samples: int
    description: dict
    view_shapes: list[tuple[int, ...]]  # (C, H, W) of each view
    band_names: list[str] | None = None  # in input order, when the data names them (a corpus does)


def training_source(cfg: PretrainConfig, method_cls) -> TrainingData:
    """Open the data, build the method's view transform, and make the views of one sample (their
    shapes size the FLOP count)."""
    if cfg.images is not None:
        paths, norm = image_folder_source(cfg.images)
        dataset = ImageFilesDataset(paths, norm, None, seed=cfg.seed)
        first = dataset[0]
        desc = {"kind": "images", "path": str(cfg.images)}
        names = photo_band_names(paths, norm.bands)
        if names:
            desc["band_names"] = names
        n = len(paths)
    else:
        from rsbench.corpus import CorpusDataset  # the corpus stage is only needed for corpus runs

        dataset = CorpusDataset(cfg.corpus, bands=cfg.bands, shuffle=True, seed=cfg.seed)
        norm, n = dataset.normalization, dataset.num_samples
        first = next(iter(CorpusDataset(cfg.corpus, bands=cfg.bands, shuffle=False)))
        desc = corpus_description(dataset, str(cfg.corpus))
    options = {"color_jitter": True} if cfg.color_jitter else {}
    options.update(method_cls.view_recipe(cfg.recipe, cfg.recipe_preset))
    transform = method_cls.view_transform(
        cfg.image_size, norm.bands, cfg.min_scale, patch_size=cfg.patch_size, **options
    )
    shapes = [tuple(v.shape) for v in transform(first)]
    if cfg.images is not None:
        dataset.transform = transform
    return TrainingData(dataset, transform, norm, n, desc, shapes, desc.get("band_names"))


def check_teacher(cfg: PretrainConfig, needs_teacher: bool) -> None:
    """A distillation method without a teacher, or a teacher for a method without one: before any data is read."""
    if needs_teacher and cfg.teacher is None:
        raise ConfigError(
            f"{cfg.method} distils a frozen teacher: give --teacher (a run directory, a timm weights file with "
            f"--teacher-arch, or torchgeo:<WeightsEnum>)"
        )
    if cfg.teacher is not None and not needs_teacher:
        raise ConfigError(f"--teacher applies to the distillation methods (distill, mae_distill), not {cfg.method}")


def teacher_spec_for(cfg: PretrainConfig, data: TrainingData) -> dict | None:
    """The frozen teacher of the run and how it sees the data (rsbench.ssl.teacher), or None."""
    if cfg.teacher is None:
        return None
    from rsbench.ssl.teacher import teacher_spec

    return teacher_spec(cfg.teacher, cfg.teacher_arch, cfg.teacher_bands, data.band_names, data.norm.to_dict())


def build_loader(cfg: PretrainConfig, data: TrainingData, micro_batches: int) -> tuple[DataLoader, Any]:
    """(DataLoader of per-device micro-batches, the rank-aware resumable source inside it)."""
    per_device = cfg.per_device_batch
    if cfg.images is not None:
        sampler = EpochSampler(data.n_samples, per_device, micro_batches, seed=cfg.seed)
        loader = DataLoader(
            data.dataset,
            batch_size=per_device,
            sampler=sampler,
            num_workers=cfg.num_workers,
            collate_fn=collate_views,
            persistent_workers=cfg.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )
        return loader, sampler
    shards = len(data.dataset.urls)
    if shards < cfg.world_size:
        raise ConfigError(
            f"corpus {cfg.corpus} has {shards} shard(s) for {cfg.world_size} ranks; rebuild it with a "
            f"smaller --shard-size so that every rank reads at least one shard"
        )
    workers = min(cfg.num_workers, shards // cfg.world_size)
    if workers < cfg.num_workers:
        warnings.warn(
            f"corpus {cfg.corpus}: {shards} shard(s) feed {workers} DataLoader worker(s) per rank "
            f"instead of {cfg.num_workers}",
            stacklevel=2,
        )
    stream = CorpusStream(data.dataset, data.transform, cfg.seed, per_device, micro_batches)
    # Persistent workers keep their copy of the stream, whose iteration count is the epoch.
    loader = DataLoader(
        stream,
        batch_size=per_device,
        num_workers=workers,
        collate_fn=collate_views,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
    )
    return loader, stream


def _on_gpu(cfg: PretrainConfig) -> bool:
    if cfg.accelerator in ("gpu", "cuda"):
        return True
    return cfg.accelerator == "auto" and torch.cuda.is_available()


def _precision(cfg: PretrainConfig) -> str:
    if cfg.precision == "32":
        return "32-true"
    if cfg.precision != "auto":
        return cfg.precision
    return "bf16-mixed" if _on_gpu(cfg) and torch.cuda.is_bf16_supported() else "32-true"


def check_layout(cfg: PretrainConfig) -> None:
    """Settings that cannot work, found before any data is read."""
    if cfg.strategy == "fsdp" and not _on_gpu(cfg):
        raise ConfigError("--strategy fsdp needs GPUs; use --strategy ddp on CPUs")


def _strategy(cfg: PretrainConfig, model) -> Any:
    gpu = _on_gpu(cfg)
    if cfg.strategy == "fsdp":
        check_layout(cfg)
        blocks = {type(b) for b in getattr(model.backbone, "blocks", [])}
        if not blocks:
            raise ConfigError(
                f"--strategy fsdp shards transformer blocks; backbone {model.hparams.arch} has none, use ddp"
            )
        return FSDPStrategy(auto_wrap_policy=blocks)
    if cfg.strategy == "auto" and cfg.world_size == 1:
        return "auto"
    # find_unused_parameters=False: every SSL method uses all its trainable parameters in each step.
    return DDPStrategy(process_group_backend="nccl" if gpu else "gloo", find_unused_parameters=False)


def _loggers(cfg: PretrainConfig, log_every: int) -> list:
    # CSVLogger writes RUN_DIR/metrics.csv (rsbench.contracts.run_dir.METRICS_CSV is Lightning's name).
    loggers: list = [CSVLogger(save_dir=cfg.out, name="", version="", flush_logs_every_n_steps=log_every)]
    if cfg.logger == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(save_dir=cfg.out, name=TENSORBOARD_DIR, version=""))
    elif cfg.logger == "mlflow":
        from lightning.pytorch.loggers import MLFlowLogger

        loggers.append(
            MLFlowLogger(
                experiment_name="rsbench",
                run_name=cfg.out.name,
                tracking_uri=f"file:{(cfg.out / MLFLOW_DIR).resolve()}",
            )
        )
    return loggers


# Lightning warns on every run outside SLURM when `srun` is installed (a login node, a workstation with the
# SLURM client): rsbench launches SLURM jobs itself (--slurm), so the hint to prepend srun only misleads.
warnings.filterwarnings("ignore", message=r".*The `srun` command is available on your system but is not used")


def build_trainer(
    cfg: PretrainConfig,
    model,
    source,
    accounting: RunAccounting,
    max_steps: int,
    micro_batches: int,
    submitit_job: bool,
) -> tuple[Trainer, SignalCheckpoint]:
    ckpt_dir = RunDir(cfg.out).checkpoints
    log_every = cfg.log_interval(max_steps)  # short runs still log a curve
    on_slurm = SLURMEnvironment.detect()
    signals = SignalCheckpoint(RunDir(cfg.out).last_ckpt, cfg.accumulate, stop_on_usr1=on_slurm)
    plugins: list = [AtomicCheckpointIO(on_saved=accounting.checkpoint_saved)]
    if on_slurm:
        # submitit requeues on its own signal (see slurm.py); a hand-started srun is requeued by us.
        plugins.append(SLURMEnvironment(auto_requeue=not submitit_job))
    has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    sync_bn = cfg.world_size > 1 and has_bn and _on_gpu(cfg)
    if cfg.world_size > 1 and has_bn and not sync_bn:
        warnings.warn(
            "BatchNorm statistics are per process on CPUs (torch's SyncBatchNorm needs GPUs); "
            "on GPUs they are synchronised over all devices",
            stacklevel=2,
        )
    trainer = Trainer(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.nodes,
        strategy=_strategy(cfg, model),
        precision=_precision(cfg),
        max_steps=max_steps,
        max_epochs=-1,
        limit_train_batches=micro_batches,
        accumulate_grad_batches=cfg.accumulate,
        sync_batchnorm=sync_bn,
        deterministic=cfg.deterministic,
        use_distributed_sampler=False,
        log_every_n_steps=log_every,
        logger=_loggers(cfg, log_every),
        plugins=plugins,
        enable_model_summary=False,
        default_root_dir=cfg.out,
        num_sanity_val_steps=0,
        callbacks=[
            StepSeeder(cfg.seed),
            DataPosition(source, cfg.world_size),
            signals,
            accounting,
            # No version counter: last.ckpt is also written by SignalCheckpoint and at the end of fit; Lightning
            # would otherwise save "last-v1.ckpt" beside a last.ckpt it did not write itself.
            ModelCheckpoint(
                dirpath=ckpt_dir,
                save_last=True,
                save_top_k=0,
                every_n_train_steps=cfg.checkpoint_every,
                enable_version_counter=False,
            ),
            StepProgressBar(epochs=math.ceil(max_steps * cfg.accumulate / micro_batches)),
        ],
    )
    return trainer, signals


def global_rank(trainer: Trainer) -> int:
    """This process's global rank, known before fit (DDP children are told theirs through the
    environment by the launcher; SLURM tasks by SLURM_PROCID)."""
    set_ranks = getattr(trainer.strategy, "set_world_ranks", None)
    if callable(set_ranks):
        set_ranks()
    return trainer.global_rank
