"""The evaluation stage's one training loop (rsbench.evaluate.training): per-step LR schedules, divergence."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from rsbench.errors import RsbenchError
from rsbench.evaluate.training import fit

LR, EPOCHS, N, BATCH = 0.1, 3, 8, 2
TOTAL = EPOCHS * N // BATCH  # 12 steps


def _loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(
        TensorDataset(torch.randn(N, 2, generator=g), torch.randn(N, 1, generator=g)), batch_size=BATCH, shuffle=False
    )


def _mse(model, batch):
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)


def _fit(warmup_fraction: float, loss_fn=_mse, **kw):
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    return fit(
        model,
        loss_fn,
        _loader(),
        [{"params": list(model.parameters()), "lr": LR}],
        EPOCHS,
        torch.device("cpu"),
        warmup_fraction=warmup_fraction,
        weight_decay=1e-4,
        progress_bar=False,
        **kw,
    )


def test_plain_cosine_per_step_is_torch_cosine_annealing():
    res = _fit(0.0)
    assert res.steps == len(res.losses) == len(res.lrs) == TOTAL
    assert res.lrs == pytest.approx([LR * (1 + math.cos(math.pi * k / TOTAL)) / 2 for k in range(TOTAL)])


def test_warmup_then_cosine_to_zero_per_step():
    res = _fit(0.1)
    warmup = math.ceil(0.1 * TOTAL)  # 2 steps
    decay = TOTAL - warmup  # lightly's CosineWarmupScheduler: cosine over the remaining steps, 0 at the last
    expected = [LR * (k + 1) / warmup for k in range(warmup)]
    expected += [LR * (1 + math.cos(math.pi * s / (decay - 1))) / 2 for s in range(decay)]
    assert res.steps == TOTAL
    assert res.lrs == pytest.approx(expected, abs=1e-12)
    assert res.lrs[warmup] == pytest.approx(LR) and res.lrs[-1] == pytest.approx(0.0, abs=1e-12)


def test_predict_pass_returns_one_output_per_batch():
    res = _fit(0.0, predict=_loader(), predict_fn=lambda m, b: m(b[0]).squeeze(1))
    assert [p.shape for p in res.predictions] == [torch.Size([BATCH])] * (N // BATCH)
    assert res.predict_time_s is not None and res.predict_time_s >= 0


def test_non_finite_loss_raises_the_one_line_divergence_error():
    def nan_loss(model, batch):
        return _mse(model, batch) * float("nan")

    with pytest.raises(RsbenchError) as err:
        _fit(0.0, loss_fn=nan_loss)
    assert str(err.value) == "training diverged (loss nan at step 0); lower --lr"
