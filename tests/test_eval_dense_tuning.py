"""Tuning trials of the dense protocols: a trial's weight decay and batch size reach the real optimizer and
loader, and early stopping on the validation split stops at the epoch a hand-computed curve says. Real data:
three Dubai pairs cut to 128x96 (one test, one validation, one train image); NEON OSBS_029 for the detector."""

from __future__ import annotations

import io
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from rich.console import Console

from rsbench.data.normalization import Normalization
from rsbench.evaluate import EvaluateConfig, evaluate, segmentation, training
from rsbench.evaluate.datasets import load_detection_data
from rsbench.evaluate.datasets.samples import DetectionChips, collate_detection, overlap_stride
from rsbench.evaluate.datasets.tiling import ArrayWindow, Region, grid_windows
from rsbench.evaluate.dense import build_dense_encoder, resolve_dense_init
from rsbench.evaluate.detection import _loss as det_loss
from rsbench.evaluate.detection import build_detector

SIZE = 64


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


@pytest.fixture(scope="module")
def dubai3(dubai_excerpt) -> Path:
    """Three real Dubai pairs cut to 128x96."""
    return dubai_excerpt("dubai3", 3, 128, 96)


def trial(data: Path, out: Path, task: dict, **kw) -> EvaluateConfig:
    """A tuning trial's config, as rsbench.benchmark.tuning.trial_values builds it."""
    base = dict(task="segmentation", data=data, out=out, init="random", image_size=SIZE, seeds=[0], epochs=1)
    base |= dict(classes=task["classes"], options=task["options"], holdout="validation", val_fraction=0.2)
    return EvaluateConfig(**{**base, **kw})


def spy_training(monkeypatch) -> dict:
    """Record the optimizer and the loaders the evaluation loop really trains with."""
    seen: dict = {"optimizers": [], "loaders": [], "val": []}
    configure = training.TrainingModule.configure_optimizers

    def configure_optimizers(self):
        out = configure(self)
        seen["optimizers"].append(out["optimizer"])
        return out

    fit = training.fit

    def spy_fit(model, loss_fn, loader, *args, **kwargs):
        seen["loaders"].append(loader)
        seen["val"].append(kwargs.get("val"))
        return fit(model, loss_fn, loader, *args, **kwargs)

    monkeypatch.setattr(training.TrainingModule, "configure_optimizers", configure_optimizers)
    monkeypatch.setattr(training, "fit", spy_fit)
    return seen


@pytest.mark.parametrize("protocol", ["finetune", "frozen"])
def test_a_dense_trial_sets_weight_decay_and_batch_size_of_the_real_optimizer_and_loader(
    protocol: str, dubai3: Path, dubai_task: dict, tmp_path: Path, monkeypatch
):
    seen = spy_training(monkeypatch)
    rows = evaluate(
        trial(dubai3, tmp_path, dubai_task, protocol=[protocol], weight_decay=0.03, batch_size=3, decoder="linear"),
        quiet(),
    )
    [opt], [loader] = seen["optimizers"], seen["loaders"]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.03] * len(opt.param_groups)
    assert loader.batch_size == 3 and loader.drop_last  # more crops than one batch: full batches only
    row = next(r for r in rows if r["headline"])
    assert row["weight_decay"] == row["hparams"]["weight_decay"] == 0.03 and row["hparams"]["batch_size"] == 3
    assert row["split"].startswith("validation: random 0.2 of the train split")
    # No patience: no validation loader, every epoch trained.
    assert seen["val"] == [None] and row["hparams"]["early_stop_patience"] is None


def test_only_tuning_trials_stop_early():
    """A run scored on the test split never stops early (its held-out split is the test split)."""
    trial_cfg = EvaluateConfig(data=Path("."), init="random", holdout="validation", early_stop_patience=2)
    assert training.stop_patience(trial_cfg) == 2
    assert training.stop_patience(trial_cfg.model_copy(update={"holdout": "test"})) is None


# Validation loss per epoch. Patience 2: best 0.8 after epoch 2, no lower loss in epochs 3 and 4 -> stop after 4.
# Patience 3: epoch 5 (0.7) beats 0.8, so training runs to the last epoch (6).
CURVE = [1.0, 0.8, 0.9, 0.85, 0.7, 0.75]


@pytest.mark.parametrize(("patience", "epochs_trained"), [(2, 4), (3, 6)])
def test_early_stopping_of_the_evaluation_loop_follows_the_hand_computed_curve(patience: int, epochs_trained: int):
    """The one loop every trained protocol uses (rsbench.evaluate.training.fit), on a scripted validation curve."""
    epoch = {"n": -1, "training": False}

    def loss_fn(net, batch):
        if net.training and not epoch["training"]:
            epoch["n"] += 1
        epoch["training"] = net.training
        out = net(batch[0]).pow(2).mean()
        return out if net.training else out * 0 + CURVE[epoch["n"]]

    data = torch.utils.data.TensorDataset(torch.randn(8, 3))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    net = torch.nn.Linear(3, 1)
    groups = [{"params": list(net.parameters()), "lr": 1e-2}]
    res = training.fit(
        net, loss_fn, loader, groups, len(CURVE), torch.device("cpu"), progress_bar=False, val=loader, patience=patience
    )
    assert res.epochs == epochs_trained and res.steps == 2 * epochs_trained
    assert res.best_val_loss == pytest.approx(min(CURVE[:epochs_trained]))


def test_dense_early_stopping_stops_at_the_hand_computed_epoch(
    dubai3: Path, dubai_task: dict, tmp_path: Path, monkeypatch
):
    """Frozen decoder on cached maps: the validation loss is replaced by CURVE (epoch by epoch), the rest is real."""
    val_sizes: list[list[int]] = []
    real = segmentation._cached_loss

    def scripted(net, batch, ignore_index, size):
        loss = real(net, batch, ignore_index=ignore_index, size=size)
        if net.training:
            if not val_sizes or val_sizes[-1]:
                val_sizes.append([])  # a training epoch opens a new validation record
            return loss
        val_sizes[-1].append(len(batch[1]))
        return loss * 0 + CURVE[len(val_sizes) - 1]

    monkeypatch.setattr(segmentation, "_cached_loss", scripted)
    patience, epochs_trained = 2, 4  # as above
    cfg = trial(
        dubai3,
        tmp_path,
        dubai_task,
        protocol=["frozen"],
        epochs=len(CURVE),
        early_stop_patience=patience,
        batch_size=2,
        decoder="linear",
    )
    row = next(r for r in evaluate(cfg, quiet()) if r["headline"])
    hp = row["hparams"]
    assert hp["epochs_trained"] == epochs_trained and hp["early_stop_patience"] == patience
    assert len(val_sizes) == epochs_trained
    # Every validation pass reads all windows of the validation image (one whole 128x96 image), never test ones.
    windows = len(grid_windows(96, 128, SIZE, overlap_stride(SIZE)))
    assert all(sum(sizes) == windows for sizes in val_sizes) and row["n_test"] == 1
    steps_per_epoch = hp["crops_per_epoch"] // 2
    assert hp["steps"] == steps_per_epoch * epochs_trained


def test_detection_validation_loss_is_the_training_loss_without_gradients(shared_data: Path):
    """torchvision's detector gives losses only in training mode: the validation pass (eval mode, no grad) gets
    the same loss as a training-mode call with the same sampling seed, and its mode is restored."""
    data = load_detection_data(shared_data / "detection" / "neon_tree_crowns", options={"single_class": "Tree"})
    image, boxes, labels = data.read(next(i for i, it in enumerate(data.items) if it.image.stem == "OSBS_029"))
    flat = image.reshape(image.shape[0], -1).astype(np.float64)
    norm = Normalization(flat.mean(1).tolist(), flat.std(1).tolist())
    chips = DetectionChips([image], [boxes], [labels], [Region(0, ArrayWindow(0, 0, 128, 128))], 128, norm, False)
    batch = collate_detection([chips[0]])
    cfg = EvaluateConfig(task="detection", data=Path("."), init="random", protocol="frozen", image_size=128)
    L.seed_everything(0, verbose=False)
    encoder = build_dense_encoder(resolve_dense_init(cfg, 3, quiet()), 128).freeze(weights=True, norm_stats=True)
    model = build_detector(encoder, 1, 128, 3)
    torch.manual_seed(1)
    train_loss = det_loss(model.train(), batch)
    model.eval()
    torch.manual_seed(1)
    with torch.no_grad():
        val_loss = det_loss(model, batch)
    assert not model.training and not encoder.backbone.training
    assert torch.isfinite(val_loss) and val_loss.item() == pytest.approx(train_loss.item(), rel=1e-5)
