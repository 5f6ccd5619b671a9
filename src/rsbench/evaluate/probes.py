"""Probes on frozen features (kNN, linear; single- and multi-label) and the classification metrics."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from rsbench.evaluate.splits import random_split, stratified_split

VAL_FRACTION = 0.2  # of the train split, for the linear probe's choice of C only
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
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1024,
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


def _validation_split(y: torch.Tensor, seed: int, multilabel: bool) -> tuple[np.ndarray, np.ndarray]:
    if multilabel:
        if len(y) < 2:
            return np.arange(len(y)), np.array([], dtype=np.int64)
        return random_split(len(y), VAL_FRACTION, [seed, 1])
    return stratified_split(y.numpy(), VAL_FRACTION, [seed, 1], strict=False)


def classification_metrics(preds: torch.Tensor, target: torch.Tensor, num_classes: int) -> dict[str, float]:
    from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

    return {
        "accuracy": float(multiclass_accuracy(preds, target, num_classes=num_classes, average="micro")),
        "f1_macro": float(multiclass_f1_score(preds, target, num_classes=num_classes, average="macro")),
    }


# --------------------------------------------------------------------------------------------------
# Reference-matched protocol: Euclidean 5-NN and scikit-learn's logistic regression with a C sweep.
# --------------------------------------------------------------------------------------------------

# sklearn's C grid as used by linear-probe protocols: 40 values log-spaced over [1e-6, 1e4].
C_GRID = tuple(float(c) for c in np.logspace(-6, 4, 40))
LOGISTIC_GRAD_TOL = 1e-6  # max |gradient| of the mean objective at which L-BFGS stops (scipy's gtol)
LOGISTIC_MAX_ITER = 2000  # L-BFGS iterations per fit (each C of the sweep, and the refit)
LOGISTIC_HISTORY = 100  # L-BFGS memory: a long one needs far fewer iterations on correlated features
LOGISTIC_HISTORY_BYTES = 256 * 2**20  # ... but the (s, y) pairs stay within this (large heads get fewer)
DEFAULT_C = 1.0  # sklearn's default; used (nearest grid value) when there is no validation data to choose C


def knn5_classify(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    k: int = 5,
    chunk: int = 1024,
) -> tuple[torch.Tensor, int]:
    """Unweighted Euclidean k-NN majority vote on the raw features (torchgeo-bench's kNN protocol).

    Same predictions as sklearn ``KNeighborsClassifier(n_neighbors=k)`` (uniform weights, brute force):
    distances in float64 from the rank-preserving ``||t||^2 - 2 q.t`` form sklearn uses, the k nearest with
    equal distances taken in train order, and among tied votes the smallest class label wins.
    Returns (predictions, k actually used = min(k, n_train)).
    """
    k = min(k, len(train_x))
    if k < 1:
        raise ValueError("knn5_classify needs at least one training sample")
    train_y = torch.as_tensor(train_y).long()
    with _threads_for(train_x):
        bank = train_x.double()
        bank_sq = bank.pow(2).sum(1)
        votes_of = F.one_hot(train_y, int(train_y.max()) + 1).double()  # n_train x L
        preds = []
        for part in test_x.double().split(chunk):
            d = bank_sq - 2.0 * part @ bank.t()  # + ||q||^2 would not change the order
            kth = d.topk(k, dim=1, largest=False).values[:, -1:]  # k-th smallest distance per query
            take = d <= kth
            over = (take.sum(1) > k).nonzero()[:, 0]  # rows with a distance tie across the k-th place
            if len(over):  # keep all closer ones and the first (train order) of the tied ones
                sub, sub_kth = d[over], kth[over]
                tied = sub == sub_kth
                need = k - (sub < sub_kth).sum(1, keepdim=True)
                take[over] = (sub < sub_kth) | (tied & (tied.cumsum(dim=1) <= need))
            counts = take.double() @ votes_of  # exact small integers
            preds.append(counts.argmax(dim=1))  # first maximum = smallest label among tied votes
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long), k


@dataclass
class LogisticProbe:
    """L2-regularised logistic regression (scikit-learn's objective) on standardized features.

    ``logits(x) = ((x - mean) / std) @ weight.T + bias``; mean/std are the training features' mean and
    population std (std clamped to >= 1e-6). ``C`` is sklearn's inverse regularisation strength and
    ``val_curve`` the (C, validation score) pairs of the sweep that chose it (empty if not swept).
    """

    weight: torch.Tensor  # K x D
    bias: torch.Tensor  # K
    mean: torch.Tensor  # D
    std: torch.Tensor  # D
    C: float
    multilabel: bool = False
    val_curve: list[tuple[float, float]] = field(default_factory=list)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        z = (x.to(self.mean.dtype) - self.mean) / self.std
        return z @ self.weight.t() + self.bias

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class indices (single-label) or a 0/1 matrix at probability 0.5 (multi-label)."""
        logits = self.logits(x)
        return (logits > 0).long() if self.multilabel else logits.argmax(dim=1)

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.logits(x)
        return torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=1)

    def state_dict(self) -> dict:
        return {
            "weight": self.weight,
            "bias": self.bias,
            "feature_mean": self.mean,
            "feature_std": self.std,
            "C": self.C,
            "multilabel": self.multilabel,
            "val_curve": [list(p) for p in self.val_curve],
        }


def _standardize_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.double()
    return x.mean(0), x.std(0, unbiased=False).clamp_min(1e-6)


def _logistic_objective(
    theta: torch.Tensor, z: torch.Tensor, target: torch.Tensor, l2: float, multilabel: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """sklearn's objective and its gradient, analytically (no autograd): theta is K x (D + 1), bias last.

    mean_i loss_i + l2 / 2 * ||W||^2, loss_i the cross-entropy (multi-label: the sum over labels of the
    binary cross-entropies, i.e. one independent logistic regression per label).
    """
    n = len(z)
    w, b = theta[:, :-1], theta[:, -1]
    logits = torch.addmm(b, z, w.t())
    if multilabel:
        data = F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / n
        residual = torch.sigmoid(logits) - target
    else:
        logp = torch.log_softmax(logits, dim=1)
        data = -logp.gather(1, target[:, None]).sum() / n
        residual = logp.exp()
        residual[torch.arange(n), target] -= 1.0
    residual /= n
    grad = torch.empty_like(theta)
    torch.mm(residual.t(), z, out=grad[:, :-1])
    grad[:, :-1] += l2 * w
    grad[:, -1] = residual.sum(0)
    return data + 0.5 * l2 * w.pow(2).sum(), grad


def _lbfgs(fun, x0: torch.Tensor, gtol: float, max_iter: int, history: int) -> torch.Tensor:
    """Minimise ``fun(x) -> (f, grad)`` by L-BFGS with a strong-Wolfe line search (torch's, as in
    ``torch.optim.LBFGS``); stops at max |grad| <= gtol, at a relative decrease below 64 eps (scipy's ftol as
    sklearn sets it) or after ``max_iter`` iterations.

    The inverse-Hessian product uses the compact representation (Byrd, Nocedal & Schnabel 1994) on a ring
    buffer of the last ``history`` pairs, a handful of matrix products per iteration instead of torch's
    Python two-loop over the history, so a long history (few iterations on ill-conditioned features) is cheap.
    """
    from torch.optim.lbfgs import _strong_wolfe  # torch is pinned; the same line search torch.optim.LBFGS runs

    def along(x, t, d):
        return fun(x + t * d)

    x = x0.clone()
    f, g = fun(x)
    m = history
    buf = torch.zeros(2 * m, x.numel(), dtype=x.dtype)  # rows: s_0..s_{m-1}, then y_0..y_{m-1}
    sy_buf = torch.zeros(m, m, dtype=x.dtype)  # sy_buf[i, j] = s_i . y_j
    yy_buf = torch.zeros(m, m, dtype=x.dtype)
    slots: list[int] = []  # ring-buffer rows in use, oldest first
    gamma = 1.0
    d, t = -g, min(1.0, 1.0 / max(float(g.abs().sum()), 1e-300))
    for _ in range(max_iter):
        if float(g.abs().max()) <= gtol:
            break
        gtd = g.dot(d)
        f_new = f
        if gtd < 0:
            f_new, g_new, t, _ = _strong_wolfe(along, x, t, d, f, g, gtd, tolerance_change=1e-14)
            f_new = float(f_new)
        if not f_new < f:  # no descent direction or no decrease: retry once from steepest descent
            if not slots:
                break
            slots.clear()
            d, t = -g, min(1.0, 1.0 / max(float(g.abs().sum()), 1e-300))
            continue
        step, y = t * d, g_new - g
        x = x + step
        converged = (f - f_new) <= 64 * np.finfo(float).eps * max(abs(f), abs(f_new), 1.0)
        f, g = f_new, g_new
        if converged:
            break
        ys, yy = float(y.dot(step)), float(y.dot(y))
        if ys > np.finfo(float).eps * yy:  # curvature pair usable (scipy's test)
            slot = slots.pop(0) if len(slots) == m else len(slots)
            slots.append(slot)
            buf[slot], buf[m + slot] = step, y
            prod = buf @ torch.stack([step, y, g], dim=1)  # one pass over the memory
            sy_buf[slot, :] = prod[m:, 0]
            sy_buf[:, slot] = prod[:m, 1]
            yy_buf[slot, :] = yy_buf[:, slot] = prod[m:, 1]
            gamma = ys / yy
            sg, yg = prod[:m, 2], prod[m:, 2]
        elif slots:
            prod = buf @ g
            sg, yg = prod[:m], prod[m:]
        if not slots:
            d, t = -g, min(1.0, 1.0 / max(float(g.abs().sum()), 1e-300))
            continue
        # H g = gamma g + S top - gamma Y r  with R = triu(S'Y), D = diag(S'Y), r = R^-1 S'g and
        # top = R^-T ((D + gamma Y'Y) r - gamma Y'g); columns of S, Y oldest first.
        idx = torch.tensor(slots)
        sy = sy_buf[idx][:, idx]
        r_mat = torch.triu(sy)
        r = torch.linalg.solve_triangular(r_mat, sg[idx, None], upper=True)[:, 0]
        rhs = torch.diagonal(sy) * r + gamma * (yy_buf[idx][:, idx] @ r) - gamma * yg[idx]
        top = torch.linalg.solve_triangular(r_mat.t(), rhs[:, None], upper=False)[:, 0]
        coef = torch.zeros(2 * m, dtype=x.dtype)
        coef[idx], coef[m + idx] = top, -gamma * r
        d = -(gamma * g + buf.t() @ coef)
        t = 1.0
    return x


def _fit_logistic(
    z: torch.Tensor,
    target: torch.Tensor,
    C: float,
    multilabel: bool,
    num_outputs: int,
    init: torch.Tensor | None = None,
) -> torch.Tensor:
    """Minimise sklearn's objective by full-batch L-BFGS (strong Wolfe) in float64; returns theta K x (D+1)."""
    n, d = z.shape
    l2 = 1.0 / (C * n)
    if not multilabel and num_outputs == 2:
        # sklearn fits one weight vector v for two classes; the symmetric multinomial optimum has
        # W = [v/2, -v/2] and would penalise ||v||^2 / 2 as much, so doubling the penalty gives sklearn's v.
        l2 *= 2.0
    theta = torch.zeros(num_outputs, d + 1, dtype=torch.float64) if init is None else init.double()

    def fun(flat: torch.Tensor) -> tuple[float, torch.Tensor]:
        loss, grad = _logistic_objective(flat.view(num_outputs, d + 1), z, target, l2, multilabel)
        return float(loss), grad.view(-1)

    with torch.no_grad():
        history = int(min(LOGISTIC_HISTORY, max(5, LOGISTIC_HISTORY_BYTES // (16 * theta.numel()))))
        return _lbfgs(fun, theta.reshape(-1), LOGISTIC_GRAD_TOL, LOGISTIC_MAX_ITER, history).view_as(theta)


def _logistic_target(y: torch.Tensor, multilabel: bool) -> torch.Tensor:
    return y.double() if multilabel else torch.as_tensor(y).long()


def _logistic_val_score(logits: torch.Tensor, y: torch.Tensor, multilabel: bool) -> tuple[float, float]:
    """(accuracy or mAP, mean validation loss) of validation logits."""
    if multilabel:
        from rsbench.evaluate.multilabel import multilabel_metrics

        score = multilabel_metrics(torch.sigmoid(logits), y)["map"]
        loss = F.binary_cross_entropy_with_logits(logits, y.double(), reduction="sum").item() / len(y)
    else:
        score = (logits.argmax(1) == y).double().mean().item()
        loss = F.cross_entropy(logits, y.long()).item()
    return score, loss


def fit_logistic_probe(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    seed: int,
    c_grid: tuple[float, ...] = C_GRID,
    multilabel: bool = False,
) -> LogisticProbe:
    """Logistic-regression probe with scikit-learn's objective, C chosen on a validation split.

    ``y``: class indices (N,), or with ``multilabel`` an N x ``num_classes`` multi-hot matrix.
    Objective: mean cross-entropy + ||W||^2 / (2 C n) (n training samples, bias not penalised) - the
    minimiser of sklearn ``LogisticRegression(C=C)`` (multinomial, lbfgs; for two classes sklearn's binary
    model). Multi-label: one binary logistic regression per label (``OneVsRestClassifier`` of the same).
    Features are standardized with the mean and population std of the data each fit sees (std clamped to
    >= 1e-6), like ``StandardScaler`` followed by the regression.

    C: each value of ``c_grid`` is fitted on the TRAIN part of ``_validation_split(y, seed, multilabel)``
    (VAL_FRACTION held out), from strong to weak regularisation, each fit warm-started from the previous
    one. The winner has the highest validation accuracy (multi-label: mAP), ties going to the lower
    validation loss, then to the smaller C. The probe is then refitted on all of ``x`` with that C.
    Without validation data (or a one-value grid) the grid value nearest sklearn's default C=1 is used.
    Optimiser: full-batch L-BFGS with strong-Wolfe line search in float64, stopped at a max |gradient|
    of LOGISTIC_GRAD_TOL; deterministic (zero init), so no seed other than the split's is needed.
    """
    with _threads_for(x):
        return _fit_logistic_probe(x, y, num_classes, seed, tuple(float(c) for c in c_grid), multilabel)


def _fit_logistic_probe(x, y, num_classes, seed, c_grid, multilabel) -> LogisticProbe:
    if not c_grid:
        raise ValueError("c_grid is empty")
    x = x.double()
    y = torch.as_tensor(y)
    fit_idx, val_idx = _validation_split(y, seed, multilabel)
    curve: list[tuple[float, float]] = []
    chosen = min(c_grid, key=lambda c: (abs(np.log(c / DEFAULT_C)), c))
    init = None
    if len(c_grid) > 1 and len(val_idx):
        fit_idx, val_idx = torch.as_tensor(fit_idx), torch.as_tensor(val_idx)
        mean, std = _standardize_stats(x[fit_idx])
        z_fit, z_val = (x[fit_idx] - mean) / std, (x[val_idx] - mean) / std
        target = _logistic_target(y[fit_idx], multilabel)
        best, theta = None, None
        for c in sorted(c_grid):  # strong -> weak regularisation, warm-started
            theta = _fit_logistic(z_fit, target, c, multilabel, num_classes, init=theta)
            score, loss = _logistic_val_score(
                torch.addmm(theta[:, -1], z_val, theta[:, :-1].t()), y[val_idx], multilabel
            )
            curve.append((c, score))
            # Highest score, then lowest loss, then smallest C (an undefined mAP ranks last).
            rank = (-score if score == score else float("inf"), loss, c)
            if best is None or rank < best[0]:
                best = (rank, theta)
        chosen = best[0][2]
        init = best[1]  # a good start for the refit (same C, 80% of the data)
    mean, std = _standardize_stats(x)
    theta = _fit_logistic((x - mean) / std, _logistic_target(y, multilabel), chosen, multilabel, num_classes, init=init)
    return LogisticProbe(theta[:, :-1].clone(), theta[:, -1].clone(), mean, std, chosen, multilabel, curve)


def expected_calibration_error(probs: torch.Tensor, y: torch.Tensor, n_bins: int = 15) -> float:
    """Top-label ECE: sum over equal-width confidence bins of |accuracy - mean confidence| * bin share.

    Confidence = max probability, bins [i/n, (i+1)/n) with a confidence of exactly 1 in a bin of its own
    (torchmetrics' ``multiclass_calibration_error(..., n_bins, norm='l1')`` convention, computed the same way).
    """
    probs = torch.as_tensor(probs)
    if len(probs) == 0:
        return float("nan")
    confidences, predictions = probs.max(dim=1)
    confidences = confidences.float()
    correct = predictions.eq(torch.as_tensor(y).to(predictions.device)).float()
    boundaries = torch.linspace(0, 1, n_bins + 1, dtype=confidences.dtype)
    bins = torch.bucketize(confidences, boundaries, right=True) - 1
    count = torch.zeros(n_bins + 1, dtype=torch.float64).scatter_add_(0, bins, torch.ones_like(confidences).double())
    conf = torch.zeros_like(count).scatter_add_(0, bins, confidences.double())
    acc = torch.zeros_like(count).scatter_add_(0, bins, correct.double())
    # sum_b |acc_b - conf_b| / N over the bins' sums, i.e. share-weighted means; empty bins add 0.
    return float((acc - conf).abs().sum() / count.sum())


def per_class_metrics(y_true: torch.Tensor, y_pred: torch.Tensor, num_classes: int) -> dict[str, list[float]]:
    """Per class c in range(num_classes): precision, recall, f1 and support (number of true samples).

    A ratio with a zero denominator is 0 (sklearn ``precision_recall_fscore_support(..., zero_division=0)``).
    """
    t = torch.as_tensor(y_true).long().flatten()
    p = torch.as_tensor(y_pred).long().flatten()
    tp = torch.bincount(t[t == p], minlength=num_classes)[:num_classes].double()
    true_n = torch.bincount(t, minlength=num_classes)[:num_classes].double()
    pred_n = torch.bincount(p, minlength=num_classes)[:num_classes].double()

    def ratio(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.where(b > 0, a / b.clamp_min(1), torch.zeros_like(a))

    precision, recall = ratio(tp, pred_n), ratio(tp, true_n)
    f1 = ratio(2 * tp, pred_n + true_n)  # = 2PR / (P + R), 0 when tp = 0
    return {"precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(), "support": true_n.tolist()}
