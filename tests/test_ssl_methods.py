"""Every SSL method trains on real data: EuroSAT RGB images and a 6-band Sentinel-2 corpus.

Runs are tiny (32 px, batch 16, a few dozen steps, ResNet-18 / ViT-Tiny with 8-px patches), with a
small-batch AdamW recipe and small heads so that a few steps show learning on CPU; the paper
recipes themselves are checked in test_ssl_recipe.py.
"""

from __future__ import annotations

import json
import statistics
import warnings

import lightning as L
import pytest
import timm
import torch
from torch.utils.data import DataLoader, Dataset

from rsbench.corpus import CorpusBuildConfig, CorpusDataset, build_corpus
from rsbench.ssl import get_method
from rsbench.train import PretrainConfig, pretrain
from rsbench.train.data import ImageFilesDataset, collate_views, image_folder_source

STEPS, BATCH, SIZE = 30, 16, 32
FAST = {"optimizer": "adamw", "lr": 0.008, "weight_decay": 1e-4, "warmup_fraction": 0.2, "weight_decay_end": None}
SMALL = {
    "simclr": {},
    "mocov2": {},
    "mocov3": {"hidden_dim": 512, "momentum_start": 0.99},
    "byol": {"hidden_dim": 512, "momentum_start": 0.99},
    "dino": {
        "out_dim": 256,
        "hidden_dim": 512,
        "bottleneck_dim": 64,
        "momentum_start": 0.99,
        "lr": 0.032,
        "warmup_fraction": 0.0,
    },  # the early fit of the teacher shows at once
    "mae": {"decoder_dim": 64, "decoder_depth": 1, "decoder_heads": 4},
    "barlowtwins": {"proj_dim": 512},
    "vicreg": {"proj_dim": 512},
}
VIT = ("mocov3", "dino", "mae")
DINO_WINDOW = range(1, 10)


class Tiles(Dataset):
    """In-memory normalized tiles with a view transform (the corpus streams; tests want shuffling)."""

    def __init__(self, tiles: list[torch.Tensor]):
        self.tiles, self.transform = tiles, None

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, i: int):
        return self.transform(self.tiles[i])


class Losses(L.Callback):
    """Records the training loss, and over `window` steps the loss that an untrained copy of the
    model gets on the very same batches (same RNG draws): a control for batch-to-batch noise."""

    def __init__(self, control: L.LightningModule, window: range):
        self.values: list[float] = []
        self.control, self.window, self.control_values = control, window, []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step in self.window:
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                self.control_values.append(float(self.control.training_loss(batch)[0]))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.values.append(float(outputs["loss"]))


@pytest.fixture(scope="module")
def eurosat(eurosat_small):
    paths, norm = image_folder_source(eurosat_small)
    return ImageFilesDataset(paths, norm), 3


@pytest.fixture(scope="module")
def sentinel2_corpus(tmp_path_factory, rasters_dir):
    out = tmp_path_factory.mktemp("s2") / "corpus"
    build_corpus(
        CorpusBuildConfig(
            inputs=[str(rasters_dir / "sentinel2_l1c_T18SVG_20160112_20m_6band.tif")],
            out=str(out),
            tile_size=SIZE,
            shard_size=300,
        )
    )
    return out


@pytest.fixture(scope="module")
def sentinel2(sentinel2_corpus):
    stream = CorpusDataset(sentinel2_corpus, bands=6, shuffle=False)
    return Tiles(list(stream)), stream.bands


RUNS: dict[tuple[str, int], tuple] = {}  # finished runs, reused by the checkpoint test


def train(name: str, data: tuple[Dataset, int], **recipe):
    dataset, bands = data
    cls = get_method(name)
    arch, patch = ("vit_tiny_patch16_224", 8) if name in VIT else ("resnet18", None)
    dataset.transform = cls.view_transform(
        SIZE, bands, None, **({"n_local": 2, "patch_size": 8} if name == "dino" else {})
    )
    models = []
    for _ in range(2):  # the model and its untrained twin (identical initial weights)
        L.seed_everything(0, verbose=False)
        models.append(
            cls(
                arch=arch,
                in_chans=bands,
                image_size=SIZE,
                batch_size=BATCH,
                max_steps=STEPS,
                recipe={**FAST, **SMALL[name], **recipe},
                patch_size=patch,
            )
        )
    window = DINO_WINDOW if name == "dino" else range(STEPS - STEPS // 3, STEPS)
    model, losses = models[0], Losses(models[1], window)
    trainer = L.Trainer(
        max_steps=STEPS,
        max_epochs=-1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[losses],
        log_every_n_steps=5,
    )
    L.seed_everything(0, verbose=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(
            model, DataLoader(dataset, batch_size=BATCH, shuffle=True, drop_last=True, collate_fn=collate_views)
        )
    RUNS[(name, bands)] = model, trainer, losses
    return model, trainer, losses


def _check_learns(name: str, record: Losses) -> None:
    losses = record.values
    assert len(losses) == STEPS and all(torch.isfinite(torch.tensor(losses))), losses
    if name == "dino":
        # DINO's loss is H(teacher) + KL(teacher || student). The student fits the teacher at once
        # (KL falls), then centring and the temperature warmup flatten the teacher so H rises
        # towards log K (Caron et al. 2021, Sec. 5.3, Fig. 7); only long runs see the loss fall again.
        # So the check is on the first steps: below the start, and below the untrained twin (medians:
        # a ViT-Tiny at this LR has single-step spikes).
        early = losses[DINO_WINDOW.start : DINO_WINDOW.stop]
        assert min(early) < losses[0] - 0.3, losses
        assert statistics.median(early) < statistics.median(record.control_values) - 0.2, (early, record.control_values)
        return
    third = STEPS // 3
    first, last = sum(losses[:third]) / third, sum(losses[-third:]) / third
    assert last < first - 0.02 * abs(first), f"{name}: loss did not decrease: {first:.4f} -> {last:.4f}"
    # ... because of training: the untrained twin scores worse on the same last batches.
    control = sum(record.control_values) / len(record.control_values)
    assert len(record.control_values) == third and last < control - 0.02 * abs(control), (
        f"{name}: trained {last:.4f} vs untrained {control:.4f} on the same batches"
    )


def _check_monitoring_and_export(model, trainer, bands: int) -> None:
    metrics = trainer.callback_metrics
    assert {"train/loss", "train/lr", "train/std_l2", "train/rank"} <= metrics.keys()
    assert 1 <= float(metrics["train/rank"]) <= BATCH
    if model.monitor_collapse:
        assert float(metrics["train/collapse"]) == 0.0
    # The exported network (DINO's teacher, else the backbone) is a plain timm model (num_classes=0)
    # with backbone_kwargs() for ViTs.
    exported = getattr(model, model.exported_module)
    plain = timm.create_model(model.hparams.arch, in_chans=bands, num_classes=0, **model.backbone_kwargs()).eval()
    plain.load_state_dict(exported.state_dict(), strict=True)
    x = torch.randn(2, bands, SIZE, SIZE)
    with torch.no_grad():
        assert torch.allclose(plain(x), exported.eval()(x), atol=1e-5)
    assert plain.num_features == model.feature_dim


@pytest.mark.parametrize("name", list(SMALL))
def test_method_learns_on_eurosat(name, eurosat):
    model, trainer, record = train(name, eurosat)
    _check_learns(name, record)
    _check_monitoring_and_export(model, trainer, 3)
    teacher = {
        "mocov2": "key_backbone",
        "mocov3": "key_backbone",
        "byol": "target_backbone",
        "dino": "teacher_backbone",
    }.get(name)
    if teacher:  # the EMA teacher followed the student, slowly
        first = next(model.backbone.parameters())
        t = next(getattr(model, teacher).parameters())
        assert not t.requires_grad and not torch.equal(t, first)


@pytest.mark.parametrize("name", list(SMALL))
def test_method_learns_on_six_band_sentinel2(name, sentinel2):
    model, trainer, record = train(name, sentinel2)
    _check_learns(name, record)
    _check_monitoring_and_export(model, trainer, 6)


def test_checkpoint_holds_queue_and_teacher(sentinel2, tmp_path):
    model, trainer, _ = RUNS.get(("mocov2", 6)) or train("mocov2", sentinel2)
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    state = torch.load(tmp_path / "last.ckpt", weights_only=True)["state_dict"]
    fresh = get_method("mocov2")(**model.hparams)
    assert not torch.equal(fresh.criterion.memory_bank.bank, model.criterion.memory_bank.bank)
    fresh.load_state_dict(state, strict=True)
    assert torch.equal(fresh.criterion.memory_bank.bank, model.criterion.memory_bank.bank)
    assert int(fresh.criterion.memory_bank.bank_ptr) == STEPS * BATCH
    for a, b in zip(fresh.key_backbone.parameters(), model.key_backbone.parameters()):
        assert torch.equal(a, b)


def test_collapse_is_flagged_and_warned(eurosat):
    """A method whose embeddings are one point for every image trips the monitor."""

    class Collapsed(get_method("simclr")):
        def training_loss(self, views):
            loss, z = super().training_loss(views)
            return loss, torch.ones_like(z)

    dataset, bands = eurosat
    dataset.transform = Collapsed.view_transform(SIZE, bands)
    model = Collapsed(arch="resnet18", in_chans=3, image_size=SIZE, batch_size=8, max_steps=6, recipe=FAST)
    trainer = L.Trainer(
        max_steps=6,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    with pytest.warns(UserWarning, match="representation collapse at step 4"):
        trainer.fit(model, DataLoader(dataset, batch_size=8, shuffle=True, drop_last=True, collate_fn=collate_views))
    assert float(trainer.callback_metrics["train/collapse"]) == 1.0
    assert float(trainer.callback_metrics["train/std_l2"]) == 0.0


def test_pretrain_entry_point_runs_a_vit_method_on_the_corpus(sentinel2_corpus, tmp_path):
    run = pretrain(
        PretrainConfig(
            method="mae",
            corpus=sentinel2_corpus,
            backbone="vit_tiny_patch16_224",
            out=tmp_path / "mae",
            max_steps=4,
            batch_size=16,
            image_size=SIZE,
            num_workers=0,
            log_every=1,
            recipe=SMALL["mae"],
        )
    )
    meta = json.loads((run / "backbone.json").read_text())
    assert meta["method"] == "mae" and meta["in_chans"] == 6 and meta["recipe"]["extra"]["mask_ratio"] == 0.75
    kwargs = meta.get("timm_kwargs", {"img_size": meta["image_size"]})
    plain = timm.create_model("vit_tiny_patch16_224", in_chans=6, num_classes=0, **kwargs)
    plain.load_state_dict(torch.load(run / "backbone.pt", weights_only=True), strict=True)
