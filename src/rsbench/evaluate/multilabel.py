"""Multi-label classification: kNN label scores and the metrics `map` (macro), `map_micro` and `f1_macro`.

Both metrics are macro averages over the labels that have at least one positive in the evaluated
set: a label absent from a (small, label-fraction) test split has no defined precision/recall, and
counting it as 0 would make scores depend on which rare labels a split happened to draw.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

F1_THRESHOLD = 0.5


def knn_multilabel_scores(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1024,
) -> tuple[torch.Tensor, int]:
    """Per-label scores in [0, 1]: the exp(cos / T)-weighted share of the k nearest neighbours that have
    the label (the multi-label form of the temperature-weighted kNN used for single-label data)."""
    k = min(k, len(train_x))
    bank = F.normalize(train_x.float(), dim=1)
    targets = train_y.float()
    out = []
    for part in test_x.split(chunk):
        sims = F.normalize(part.float(), dim=1) @ bank.t()
        top, idx = sims.topk(k, dim=1)
        weights = torch.softmax(top / temperature, dim=1)  # exp(s/T) / sum exp(s/T), overflow-safe
        out.append(torch.einsum("qk,qkc->qc", weights, targets[idx]))
    return torch.cat(out), k


def multilabel_metrics(scores: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """`scores` N x C in [0, 1] (probabilities), `target` N x C multi-hot."""
    from torchmetrics.functional.classification import multilabel_average_precision, multilabel_f1_score

    present = target.sum(0) > 0
    if not present.any():
        return {"map": float("nan"), "map_micro": float("nan"), "f1_macro": float("nan")}
    s, t, n = scores.float(), target.long(), target.shape[1]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*No positive samples.*")  # the absent labels, dropped below
        ap = multilabel_average_precision(s, t, num_labels=n, average=None)
        f1 = multilabel_f1_score(s, t, num_labels=n, threshold=F1_THRESHOLD, average=None)
        # Micro: every (example, label) pair pooled, so frequent labels weigh more than in the macro `map`.
        micro = multilabel_average_precision(
            s[:, present], t[:, present], num_labels=int(present.sum()), average="micro"
        )
    return {"map": float(ap[present].mean()), "map_micro": float(micro), "f1_macro": float(f1[present].mean())}
