"""The reference-matched probes (Euclidean 5-NN, sklearn-objective logistic regression with a C sweep, ECE,
per-class metrics) against scikit-learn / torchmetrics, on real EuroSAT pixel features.

Features: every EuroSAT RGB image block-averaged to 8 x 8 per band (PixelFeatures, 192 dims, float64).
The logistic-regression tests use a seeded stratified subset of 60 images per class (600 images,
480 train / 120 test) so that sklearn's tightly converged reference fits stay within the time budget.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rsbench.evaluate.baselines import PixelFeatures
from rsbench.evaluate.multilabel import multilabel_metrics
from rsbench.evaluate.probes import (
    C_GRID,
    LogisticProbe,
    _validation_split,
    expected_calibration_error,
    fit_logistic_probe,
    knn5_classify,
    per_class_metrics,
)
from rsbench.evaluate.splits import stratified_split

NUM_CLASSES = 10
SEED = 0


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """sklearn's lbfgs loss runs OpenMP threads; on a small busy machine they oversubscribe (measured 20x
    slower), so the references run single-threaded, like the probes themselves (probes._threads_for)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def eurosat_pixels(eurosat_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(2300 x 192 float64 features, labels) of all EuroSAT RGB images."""
    classes = sorted(p.name for p in eurosat_dir.iterdir() if p.is_dir())
    assert len(classes) == NUM_CLASSES
    images, labels = [], []
    for c, name in enumerate(classes):
        for f in sorted((eurosat_dir / name).iterdir()):
            images.append(np.asarray(Image.open(f).convert("RGB")))
            labels.append(c)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        feats = PixelFeatures(3)(x).double()
    return feats, torch.tensor(labels)


@pytest.fixture(scope="module")
def full_split(eurosat_pixels):
    """Stratified 80/20 train/test split of all 2300 images."""
    x, y = eurosat_pixels
    tr, te = stratified_split(y.numpy(), 0.2, SEED)
    return x[tr], y[tr], x[te], y[te]


@pytest.fixture(scope="module")
def small_split(eurosat_pixels):
    """60 images per class (seeded), split stratified 80/20: 480 train / 120 test."""
    x, y = eurosat_pixels
    rng = np.random.default_rng(123)
    keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(y.numpy() == c))[:60] for c in range(NUM_CLASSES)]))
    x, y = x[keep], y[keep]
    tr, te = stratified_split(y.numpy(), 0.2, SEED)
    return x[tr], y[tr], x[te], y[te]


def _standardized(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train)
    return [scaler.transform(a) for a in (train, *others)]


def _acc(pred, y) -> float:
    return float((np.asarray(pred) == np.asarray(y)).mean())


# ----------------------------------------------------------------------------------------------- kNN


def test_knn5_equals_sklearn_on_real_features(full_split):
    from sklearn.neighbors import KNeighborsClassifier

    xtr, ytr, xte, yte = full_split
    ref = KNeighborsClassifier(n_neighbors=5).fit(xtr.numpy(), ytr.numpy()).predict(xte.numpy())
    preds, k = knn5_classify(xtr, ytr, xte)
    assert k == 5 and preds.dtype == torch.long
    np.testing.assert_array_equal(preds.numpy(), ref)
    # Chunking and float32 inputs change nothing.
    np.testing.assert_array_equal(knn5_classify(xtr.float(), ytr, xte.float(), chunk=37)[0].numpy(), ref)
    # And the exact rule: stable sort of the exact distances, first 5, most frequent label (smallest on ties).
    a, b = xte.numpy(), xtr.numpy()
    d = np.concatenate([((a[i : i + 20, None, :] - b[None]) ** 2).sum(-1) for i in range(0, len(a), 20)])
    nn = np.argsort(d, axis=1, kind="stable")[:, :5]
    votes = np.stack([np.bincount(row, minlength=NUM_CLASSES) for row in ytr.numpy()[nn]])
    np.testing.assert_array_equal(preds.numpy(), votes.argmax(1))
    assert 0.3 < _acc(preds, yte) < 1.0  # a real signal, not a degenerate constant


def test_knn5_ties_hand_built():
    from sklearn.neighbors import KNeighborsClassifier

    # Train (index: point -> label): 0..3 at distance 1 from the origin with labels 2, 2, 1, 1; 4..6 at
    # distance 2 with labels 2, 0, 0.
    train_x = torch.tensor([[1, 0], [0, 1], [-1, 0], [0, -1], [2, 0], [0, 2], [-2, 0]], dtype=torch.float64)
    train_y = torch.tensor([2, 2, 1, 1, 2, 0, 0])
    # - the origin: the 5th neighbour is a distance tie among 4, 5, 6; train order takes index 4 -> votes
    #   {2: 3, 1: 2} -> 2 (taking 5 or 6 would give {2: 2, 1: 2, 0: 1} -> 1);
    # - (10, 0): neighbours 4, 0, then 1 and 3 (tied, both in), then 5 -> labels 2, 2, 2, 1, 0 -> 2;
    # - (0, -10): neighbours 3, then 0 and 2 (tied), then 4 and 6 (tied) -> labels 1, 2, 1, 2, 0: a 2-2 vote
    #   tie between labels 1 and 2 -> the smaller label, 1.
    test_x = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, -10.0]], dtype=torch.float64)
    preds, k = knn5_classify(train_x, train_y, test_x)
    assert k == 5 and preds.tolist() == [2, 2, 1]
    ref = KNeighborsClassifier(n_neighbors=5, algorithm="brute").fit(train_x.numpy(), train_y.numpy())
    np.testing.assert_array_equal(preds.numpy(), ref.predict(test_x.numpy()))

    # A vote tie decided by the label: the 5-NN labels 3, 3, 0, 0, 7 -> 0 (and sklearn agrees).
    tx = torch.tensor([[1.0], [2.0], [3.0], [4.0], [5.0], [50.0]])
    ty = torch.tensor([3, 3, 0, 0, 7, 7])
    preds, _ = knn5_classify(tx, ty, torch.tensor([[0.0]]))
    assert preds.tolist() == [0]
    ref = KNeighborsClassifier(n_neighbors=5, algorithm="brute").fit(tx.numpy(), ty.numpy())
    assert ref.predict([[0.0]]).tolist() == [0]

    # Boundary tie where the tied (farther) points come first in train order: exactly which of them sklearn
    # keeps depends on its heap layout and thread chunking; ours is the documented stable rule (index 0).
    tx = torch.tensor([[2.0, 0], [0, 2], [-2, 0], [1, 0], [0, 1], [-1, 0], [0, -1]])
    ty = torch.tensor([3, 1, 2, 0, 0, 1, 1])
    assert knn5_classify(tx, ty, torch.zeros(1, 2))[0].tolist() == [0]  # {0: 2, 1: 2, 3: 1} -> 0

    # Fewer training samples than k: k shrinks to n_train.
    preds, k = knn5_classify(tx[:3], ty[:3], torch.zeros(1, 2))
    assert k == 3 and preds.tolist() == [1]  # one vote each for 3, 1, 2 -> the smallest, 1

    # Many exact ties (small integer features with duplicates): the stable-sort rule, row by row.
    gen = torch.Generator().manual_seed(0)
    tx = torch.randint(0, 3, (300, 3), generator=gen).double()
    ty = torch.randint(0, 4, (300,), generator=gen)
    qx = torch.randint(0, 3, (60, 3), generator=gen).double()
    d = ((qx[:, None] - tx[None]) ** 2).sum(-1).numpy()
    nn = np.argsort(d, axis=1, kind="stable")[:, :5]
    expected = np.stack([np.bincount(row, minlength=4) for row in ty.numpy()[nn]]).argmax(1)
    np.testing.assert_array_equal(knn5_classify(tx, ty, qx, chunk=7)[0].numpy(), expected)


# ------------------------------------------------------------------------------- logistic regression


@pytest.mark.parametrize("C", [1e-3, 0.1, 1.0])
def test_logistic_fixed_C_matches_sklearn(small_split, C):
    """Fixed C (a one-value grid: no sweep, fit on all train): same accuracy (within 1 point, i.e. at most one
    of the 120 test images), coefficients within 0.1% relative (Frobenius), centred intercepts within 1e-2,
    and class probabilities within 1e-3."""
    from sklearn.linear_model import LogisticRegression

    xtr, ytr, xte, yte = small_split
    probe = fit_logistic_probe(xtr, ytr, NUM_CLASSES, seed=SEED, c_grid=(C,))
    assert isinstance(probe, LogisticProbe) and probe.C == C and probe.val_curve == []
    ztr, zte = _standardized(xtr.numpy(), xte.numpy())
    ref = LogisticRegression(C=C, max_iter=5000, tol=1e-8).fit(ztr, ytr.numpy())

    ours_acc = _acc(probe.predict(xte), yte)
    assert abs(ours_acc - ref.score(zte, yte.numpy())) <= 0.01 + 1e-12
    w = probe.weight.numpy()
    rel = np.linalg.norm(w - ref.coef_) / np.linalg.norm(ref.coef_)
    assert rel < 1e-3, rel
    # Softmax is invariant to a common shift of the intercepts; compare them centred.
    b_ours, b_ref = probe.bias.numpy(), ref.intercept_
    np.testing.assert_allclose(b_ours - b_ours.mean(), b_ref - b_ref.mean(), atol=1e-2)
    np.testing.assert_allclose(probe.predict_proba(xte).numpy(), ref.predict_proba(zte), atol=1e-3)
    # The standardization is the population one (StandardScaler).
    np.testing.assert_allclose(probe.mean.numpy(), xtr.numpy().mean(0))
    np.testing.assert_allclose(probe.std.numpy(), xtr.numpy().std(0))


def test_logistic_binary_matches_sklearn_binary_model(small_split):
    """Two classes: sklearn fits one weight vector v (binary loss, penalty ||v||^2 / (2Cn)); ours has
    w1 - w0 = v and the same probabilities."""
    from sklearn.linear_model import LogisticRegression

    xtr, ytr, xte, yte = small_split
    tr, te = ytr < 2, yte < 2
    C = 0.1
    probe = fit_logistic_probe(xtr[tr], ytr[tr], 2, seed=SEED, c_grid=(C,))
    ztr, zte = _standardized(xtr[tr].numpy(), xte[te].numpy())
    ref = LogisticRegression(C=C, max_iter=5000, tol=1e-8).fit(ztr, ytr[tr].numpy())
    v = (probe.weight[1] - probe.weight[0]).numpy()
    assert np.linalg.norm(v - ref.coef_[0]) / np.linalg.norm(ref.coef_[0]) < 1e-3
    np.testing.assert_allclose(probe.predict_proba(xte[te]).numpy(), ref.predict_proba(zte), atol=1e-3)


def _sklearn_sweep(xtr: np.ndarray, ytr: np.ndarray, fit_idx, val_idx, c_grid):
    """The same protocol with sklearn: StandardScaler on the fit part, every C (warm-started, strong -> weak),
    val accuracy, ties -> lower val log-loss -> smaller C; then StandardScaler + refit on all train."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    zfit, zval = _standardized(xtr[fit_idx], xtr[val_idx])
    clf = LogisticRegression(C=c_grid[0], max_iter=2000, tol=1e-6, warm_start=True)
    ranked, curve = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the weakest C do not converge in 2000 iterations
        for c in sorted(c_grid):
            clf.set_params(C=c).fit(zfit, ytr[fit_idx])
            acc = clf.score(zval, ytr[val_idx])
            loss = log_loss(ytr[val_idx], clf.predict_proba(zval), labels=clf.classes_)
            curve.append((c, acc))
            ranked.append((-acc, loss, c))
    chosen = min(ranked)[2]
    return chosen, curve


def test_logistic_sweep_matches_sklearn_protocol(small_split):
    xtr, ytr, xte, yte = small_split
    probe = fit_logistic_probe(xtr, ytr, NUM_CLASSES, seed=SEED)
    assert len(probe.val_curve) == len(C_GRID) == 40
    assert [c for c, _ in probe.val_curve] == sorted(C_GRID)
    assert probe.C in C_GRID

    fit_idx, val_idx = _validation_split(ytr, SEED, False)
    assert len(val_idx) == 100  # round(VAL_FRACTION * 48) = 10 of the 48 train images per class
    chosen, curve = _sklearn_sweep(xtr.numpy(), ytr.numpy(), fit_idx, val_idx, C_GRID)

    # The validation curves agree wherever sklearn converges (C <= 1 here): at most one image of 100 apart.
    for (c, ours), (c_ref, ref) in zip(probe.val_curve, curve):
        assert c == c_ref
        if c <= 1.0:
            assert abs(ours - ref) <= 1 / 100 + 1e-12, (c, ours, ref)

    from sklearn.linear_model import LogisticRegression

    ztr, zte = _standardized(xtr.numpy(), xte.numpy())
    ref = LogisticRegression(C=chosen, max_iter=5000, tol=1e-8).fit(ztr, ytr.numpy())
    ref_acc, ours_acc = ref.score(zte, yte.numpy()), _acc(probe.predict(xte), yte)
    if probe.C != chosen:  # only acceptable as a tie in validation accuracy broken differently
        best_ref = max(a for _, a in curve)
        assert dict(curve)[probe.C] == best_ref, (probe.C, chosen, curve)
    assert abs(ours_acc - ref_acc) <= 0.01 + 1e-12, (ours_acc, ref_acc, probe.C, chosen)
    # The refit is on all train: the probe's standardization is the full train one.
    np.testing.assert_allclose(probe.mean.numpy(), xtr.numpy().mean(0))
    sd = probe.state_dict()
    assert sd["C"] == probe.C and len(sd["val_curve"]) == 40 and sd["weight"].shape == (NUM_CLASSES, 192)


# ------------------------------------------------------------------------------------------- metrics


def test_ece_matches_torchmetrics(small_split):
    from torchmetrics.functional.classification import multiclass_calibration_error

    def ref(p, y):
        return float(multiclass_calibration_error(p, y, num_classes=NUM_CLASSES, n_bins=15, norm="l1"))

    xtr, ytr, xte, yte = small_split
    probe = fit_logistic_probe(xtr, ytr, NUM_CLASSES, seed=SEED, c_grid=(0.1,))
    probs = probe.predict_proba(xte)
    assert abs(expected_calibration_error(probs, yte) - ref(probs, yte)) < 1e-6
    assert abs(expected_calibration_error(probs.float(), yte) - ref(probs.float(), yte)) < 1e-6

    gen = torch.Generator().manual_seed(0)
    rand = torch.softmax(3 * torch.randn(2000, NUM_CLASSES, generator=gen), dim=1)
    y = torch.randint(0, NUM_CLASSES, (2000,), generator=gen)
    for n_bins in (15,):
        assert abs(expected_calibration_error(rand, y, n_bins) - ref(rand, y)) < 1e-6
    # Confidence exactly 1 (one-hot predictions, some wrong) and exactly on bin edges.
    onehot = torch.nn.functional.one_hot(y.roll(1)[:200], NUM_CLASSES).float()
    assert abs(expected_calibration_error(onehot, y[:200]) - ref(onehot, y[:200])) < 1e-6
    edges = torch.full((30, NUM_CLASSES), 0.0)
    edges[:, 0] = torch.linspace(0, 1, 16)[torch.arange(30) % 16].clamp_min(0.2)
    edges[:, 1] = 1 - edges[:, 0]
    assert abs(expected_calibration_error(edges, y[:30]) - ref(edges, y[:30])) < 1e-6


def test_per_class_metrics_match_sklearn(small_split):
    from sklearn.metrics import precision_recall_fscore_support

    xtr, ytr, xte, yte = small_split
    preds = fit_logistic_probe(xtr, ytr, NUM_CLASSES, seed=SEED, c_grid=(0.1,)).predict(xte)
    cases = [
        (yte, preds, NUM_CLASSES),
        (yte, torch.where(preds == 3, torch.tensor(4), preds), NUM_CLASSES),  # class 3 never predicted
        (yte, preds, NUM_CLASSES + 2),  # two classes absent from truth and predictions
        (torch.tensor([0, 0, 1]), torch.tensor([2, 2, 2]), 3),  # tp = 0 everywhere
    ]
    for y_true, y_pred, n in cases:
        ours = per_class_metrics(y_true, y_pred, n)
        p, r, f, s = precision_recall_fscore_support(
            y_true.numpy(), y_pred.numpy(), labels=list(range(n)), zero_division=0
        )
        for key, ref in zip(("precision", "recall", "f1", "support"), (p, r, f, s)):
            assert len(ours[key]) == n
            np.testing.assert_allclose(ours[key], ref, atol=1e-12, err_msg=key)


# --------------------------------------------------------------------------------------- multi-label


def _multi_hot(y: torch.Tensor) -> torch.Tensor:
    """Label sets {class, class // 2 + 10}: 15 labels, two per image."""
    out = torch.zeros(len(y), 15, dtype=torch.long)
    out[torch.arange(len(y)), y] = 1
    out[torch.arange(len(y)), y // 2 + 10] = 1
    return out


def test_multilabel_probe_matches_sklearn_one_vs_rest(small_split):
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    xtr, ytr, xte, yte = small_split
    mtr, mte = _multi_hot(ytr), _multi_hot(yte)
    C = 0.1
    probe = fit_logistic_probe(xtr, mtr, 15, seed=SEED, c_grid=(C,), multilabel=True)
    ztr, zte = _standardized(xtr.numpy(), xte.numpy())
    ref = OneVsRestClassifier(LogisticRegression(C=C, max_iter=5000, tol=1e-8)).fit(ztr, mtr.numpy())
    coef = np.stack([e.coef_[0] for e in ref.estimators_])
    assert np.linalg.norm(probe.weight.numpy() - coef) / np.linalg.norm(coef) < 1e-3
    probs = probe.predict_proba(xte)
    np.testing.assert_allclose(probs.numpy(), ref.predict_proba(zte), atol=1e-3)
    assert probe.predict(xte).shape == (len(xte), 15)
    ours_map = multilabel_metrics(probs, mte)["map"]
    assert abs(ours_map - multilabel_metrics(torch.from_numpy(ref.predict_proba(zte)), mte)["map"]) < 1e-3

    # A (short) sweep chooses C by validation mAP: the chosen C has the best mAP on the curve.
    grid = C_GRID[8:32:4]
    swept = fit_logistic_probe(xtr, mtr, 15, seed=SEED, c_grid=grid, multilabel=True)
    scores = dict(swept.val_curve)
    assert list(scores) == sorted(grid) and all(0 < s <= 1 for s in scores.values())
    assert scores[swept.C] == max(scores.values())
    assert multilabel_metrics(swept.predict_proba(xte), mte)["map"] > 0.3  # chance: ~0.13 (label prevalence)
