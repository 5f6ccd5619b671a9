"""Probes on frozen features (kNN, linear; single- and multi-label) and the classification metrics."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rsbench.evaluate.splits import random_split, stratified_split

VAL_FRACTION = 0.2  # of the train split, for the weight-decay sweep only
# Enough for the probe accuracy to settle; wd=0 on separable features would otherwise run forever.
LBFGS_MAX_ITER = 100
# Below this many feature values, multi-threaded BLAS costs more in synchronisation than it saves
# (measured 10-60x slower with 2 threads on a busy 2-core machine), so probes run single-threaded.
SINGLE_THREAD_NUMEL = 20_000_000


@contextlib.contextmanager
def _threads_for(x: torch.Tensor):
    before = torch.get_num_threads()
    if x.numel() <= SINGLE_THREAD_NUMEL:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def knn_classify(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, num_classes: int,
    k: int = 20, temperature: float = 0.07, chunk: int = 1024,
) -> tuple[torch.Tensor, int]:
    """Top-1 predictions of temperature-weighted cosine kNN, and the k actually used (<= n_train)."""
    from lightly.utils.benchmarking.knn import knn_predict  # slow import; only needed here

    k = min(k, len(train_x))
    with _threads_for(train_x):
        bank = F.normalize(train_x.float(), dim=1).t().contiguous()
        preds = [
            knn_predict(F.normalize(part.float(), dim=1), bank, train_y, num_classes, knn_k=k, knn_t=temperature)[:, 0]
            for part in test_x.split(chunk)
        ]
    return torch.cat(preds), k


@dataclass
class LinearProbe:
    """Multinomial logistic regression on features standardized with the train mean/std."""

    weight: torch.Tensor  # C x D
    bias: torch.Tensor  # C
    mean: torch.Tensor  # D
    std: torch.Tensor  # D
    weight_decay: float

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.mean) / self.std) @ self.weight.t() + self.bias

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x).argmax(dim=1)

    def state_dict(self) -> dict:
        return {"weight": self.weight, "bias": self.bias, "feature_mean": self.mean, "feature_std": self.std,
                "weight_decay": self.weight_decay}


def _loss(logits: torch.Tensor, y: torch.Tensor, multilabel: bool) -> torch.Tensor:
    # Multi-label: one independent logistic regression per label (BCE), fitted jointly.
    return F.binary_cross_entropy_with_logits(logits, y.float()) if multilabel else F.cross_entropy(logits, y)


def _train(x: torch.Tensor, y: torch.Tensor, num_classes: int, weight_decay: float,
           multilabel: bool = False) -> LinearProbe:
    mean, std = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-6)
    z = (x - mean) / std
    # Zero init + full-batch L-BFGS on a convex loss: the fit is deterministic, no seed needed.
    linear = nn.Linear(x.shape[1], num_classes)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    opt = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=LBFGS_MAX_ITER, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-5, tolerance_change=1e-9)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = _loss(linear(z), y, multilabel) + 0.5 * weight_decay * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return LinearProbe(linear.weight.detach().clone(), linear.bias.detach().clone(), mean, std, float(weight_decay))


def fit_linear_probe(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, weight_decays: list[float], seed: int,
    multilabel: bool = False,
) -> LinearProbe:
    """Pick the weight decay on a validation split of the TRAIN data, then refit on all of it.

    The grid, the split (it depends on seed and labels only) and the optimiser are the same for every
    init, so probes of different backbones are tuned identically.
    """
    with _threads_for(x):
        return _fit_linear_probe(x, y, num_classes, weight_decays, seed, multilabel)


def _validation_split(y: torch.Tensor, seed: int, multilabel: bool) -> tuple[np.ndarray, np.ndarray]:
    if multilabel:
        if len(y) < 2:
            return np.arange(len(y)), np.array([], dtype=np.int64)
        return random_split(len(y), VAL_FRACTION, [seed, 1])
    return stratified_split(y.numpy(), VAL_FRACTION, [seed, 1], strict=False)


def _fit_linear_probe(x, y, num_classes, weight_decays, seed, multilabel) -> LinearProbe:
    best = weight_decays[0]
    fit_idx, val_idx = _validation_split(y, seed, multilabel)
    if len(weight_decays) > 1 and len(val_idx):
        fit_idx, val_idx = torch.as_tensor(fit_idx), torch.as_tensor(val_idx)
        scores = []
        for i, wd in enumerate(weight_decays):
            logits = _train(x[fit_idx], y[fit_idx], num_classes, wd, multilabel).logits(x[val_idx])
            if multilabel:
                from rsbench.evaluate.multilabel import multilabel_metrics

                score = multilabel_metrics(torch.sigmoid(logits), y[val_idx])["map"]
            else:
                score = (logits.argmax(1) == y[val_idx]).float().mean().item()
            # Highest accuracy (mAP); ties go to the lower validation loss (better calibrated).
            scores.append((-score, _loss(logits, y[val_idx], multilabel).item(), i))
        best = weight_decays[min(scores)[2]]
    return _train(x, y, num_classes, best, multilabel)


def classification_metrics(preds: torch.Tensor, target: torch.Tensor, num_classes: int) -> dict[str, float]:
    from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

    return {
        "accuracy": float(multiclass_accuracy(preds, target, num_classes=num_classes, average="micro")),
        "f1_macro": float(multiclass_f1_score(preds, target, num_classes=num_classes, average="macro")),
    }
