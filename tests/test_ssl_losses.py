"""SSL losses, queues, EMA and schedules against hand computations written here (no lightly maths)."""

from __future__ import annotations

import math

import pytest
import torch

from rsbench.ssl import get_method
from rsbench.ssl.mocov3 import mocov3_loss
from rsbench.ssl.momentum import momentum_at

T = torch.tensor


def _norm(v: list[float]) -> list[float]:
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def _dot(a, b) -> float:
    return sum(x * y for x, y in zip(a, b))


def _logsumexp(xs: list[float]) -> float:
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def _model(name: str, **recipe):
    arch = "resnet18" if name not in ("mae", "mocov3", "dino") else "vit_tiny_patch16_224"
    return get_method(name)(
        arch=arch,
        in_chans=3,
        image_size=32,
        batch_size=4,
        max_steps=101,
        recipe=recipe,
        patch_size=8 if "vit" in arch else None,
    )


Z0 = [[1.0, 2.0, 0.5], [-1.0, 0.5, 2.0], [0.3, -1.2, 0.7]]
Z1 = [[0.8, 2.2, 0.1], [-0.5, 0.4, 1.0], [1.0, -1.0, -0.3]]


def test_simclr_nt_xent_matches_hand_computation():
    tau = 0.5
    model = _model("simclr", temperature=tau)
    z = [_norm(v) for v in Z0 + Z1]  # 2N anchors: view 0 then view 1
    n = len(Z0)
    total = 0.0
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        logits = [_dot(z[i], z[j]) / tau for j in range(2 * n) if j != i]
        total += _logsumexp(logits) - _dot(z[i], z[pos]) / tau
    expected = total / (2 * n)
    assert model.criterion(T(Z0), T(Z1)).item() == pytest.approx(expected, rel=1e-5)


def test_mocov2_queue_loss_enqueue_and_wraparound():
    tau = 0.2
    model = _model("mocov2", temperature=tau, queue_size=5, proj_dim=3)
    bank = model.criterion.memory_bank
    negatives = [_norm([1.0, 0.0, 1.0]), _norm([0.0, 1.0, -1.0]), [0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    bank.bank.copy_(T(negatives))
    q, k = T(Z0, requires_grad=True), T(Z1)
    loss = model.criterion(q, k)
    expected = 0.0
    for qi, ki in zip(Z0, Z1):
        qi, ki = _norm(qi), _norm(ki)
        logits = [_dot(qi, ki) / tau] + [_dot(qi, nj) / tau for nj in negatives]
        expected += _logsumexp(logits) - logits[0]
    assert loss.item() == pytest.approx(expected / 3, rel=1e-5)
    # Enqueue: the 3 normalized keys replace the oldest entries, the pointer advances.
    assert torch.allclose(bank.bank[:3], T([_norm(v) for v in Z1]), atol=1e-6)
    assert torch.allclose(bank.bank[3:], T(negatives[3:]))
    assert int(bank.bank_ptr) == 3
    # Dequeue at the end: 3 more keys only fit 2 slots; the pointer wraps to 0 (lightly drops the rest).
    model.criterion(q, -k)
    assert torch.allclose(bank.bank[3:], T([_norm([-x for x in v]) for v in Z1[:2]]), atol=1e-6)
    assert int(bank.bank_ptr) == 0
    # No gradient (evaluation), no enqueue.
    before = bank.bank.clone()
    model.criterion(q.detach(), k)
    assert torch.equal(bank.bank, before)
    # The queue and its pointer are persistent buffers: checkpoints hold them.
    state = model.state_dict()
    assert torch.equal(state["criterion.memory_bank.bank"], bank.bank) and "criterion.memory_bank.bank_ptr" in state


def test_mocov3_loss_matches_hand_computation():
    tau = 0.2
    q, k = T(Z0), T(Z1)
    expected = 0.0
    for i, qi in enumerate(Z0):
        logits = [_dot(_norm(qi), _norm(kj)) / tau for kj in Z1]  # negatives: the other keys only
        expected += _logsumexp(logits) - logits[i]
    assert mocov3_loss(q, k, tau).item() == pytest.approx(2 * tau * expected / 3, rel=1e-5)


def test_byol_negative_cosine_matches_hand_computation():
    model = _model("byol")
    cos = [_dot(_norm(a), _norm(b)) for a, b in zip(Z0, Z1)]
    assert model.criterion(T(Z0), T(Z1)).item() == pytest.approx(-sum(cos) / 3, rel=1e-6)


def _standardize(col: list[float]) -> list[float]:
    m = sum(col) / len(col)
    var = sum((x - m) ** 2 for x in col) / len(col)  # batch-norm statistics: biased variance
    return [(x - m) / math.sqrt(var + 1e-5) for x in col]


def test_barlow_twins_loss_matches_hand_computation():
    lam = 5e-3
    model = _model("barlowtwins", lambda_param=lam, proj_dim=8)
    a = [[1.0, 2.0, 0.5], [-1.0, 0.5, 2.0], [0.3, -1.2, 0.7], [2.0, 0.1, -0.4]]
    b = [[0.8, 2.2, 0.1], [-0.5, 0.4, 1.0], [1.0, -1.0, -0.3], [1.5, 0.3, -1.0]]
    n, d = len(a), len(a[0])
    an = list(zip(*[_standardize([r[j] for r in a]) for j in range(d)]))
    bn = list(zip(*[_standardize([r[j] for r in b]) for j in range(d)]))
    c = [[sum(an[s][i] * bn[s][j] for s in range(n)) / n for j in range(d)] for i in range(d)]
    expected = sum((1 - c[i][i]) ** 2 for i in range(d)) + lam * sum(
        c[i][j] ** 2 for i in range(d) for j in range(d) if i != j
    )
    assert model.criterion(T(a), T(b)).item() == pytest.approx(expected, rel=1e-4)


def test_vicreg_loss_matches_hand_computation():
    model = _model("vicreg", proj_dim=8)
    a = [[1.0, 2.0, 0.5], [-1.0, 0.5, 2.0], [0.3, -1.2, 0.7], [2.0, 0.1, -0.4]]
    b = [[0.8, 2.2, 0.1], [-0.5, 0.4, 1.0], [1.0, -1.0, -0.3], [1.5, 0.3, -1.0]]
    n, d = len(a), len(a[0])

    def var_cov(z):
        cols = [[r[j] for r in z] for j in range(d)]
        means = [sum(c) / n for c in cols]
        cov = [
            [sum((cols[i][s] - means[i]) * (cols[j][s] - means[j]) for s in range(n)) / (n - 1) for j in range(d)]
            for i in range(d)
        ]
        variance = sum(max(0.0, 1 - math.sqrt(cov[j][j] + 1e-4)) for j in range(d)) / d
        covariance = sum(cov[i][j] ** 2 for i in range(d) for j in range(d) if i != j) / d
        return variance, covariance

    inv = sum((x - y) ** 2 for ra, rb in zip(a, b) for x, y in zip(ra, rb)) / (n * d)
    (va, ca), (vb, cb) = var_cov(a), var_cov(b)
    expected = 25 * inv + 25 * 0.5 * (va + vb) + 1 * (ca + cb)
    assert model.criterion(T(a), T(b)).item() == pytest.approx(expected, rel=1e-5)


def test_dino_loss_and_centering_match_hand_computation():
    torch.manual_seed(0)
    model = _model("dino", out_dim=5, hidden_dim=16, bottleneck_dim=4, center_momentum=0.9)
    crit = model.criterion
    teacher = [torch.randn(2, 5) for _ in range(2)]
    student = [torch.randn(2, 5) for _ in range(3)]  # 2 global + 1 local
    center = [0.1, -0.2, 0.0, 0.3, 0.05]
    crit.center.copy_(T(center).view(1, 1, 5))
    tt, ts = 0.04, 0.1
    total, terms = 0.0, 0
    for it, t in enumerate(teacher):
        for js, s in enumerate(student):
            if it == js:
                continue  # a view is never its own target
            terms += 1
            for b in range(2):
                tl = [(t[b, k].item() - center[k]) / tt for k in range(5)]
                sl = [s[b, k].item() / ts for k in range(5)]
                lt, ls = _logsumexp(tl), _logsumexp(sl)
                total += -sum(math.exp(tl[k] - lt) * (sl[k] - ls) for k in range(5))
    loss = crit(teacher, student, teacher_temp=tt)
    assert loss.item() == pytest.approx(total / (terms * 2), rel=1e-5)
    # Centering: EMA of the batch mean of the teacher outputs, over both views.
    batch_mean = torch.cat(teacher).mean(0)
    assert torch.allclose(crit.center.view(5), 0.9 * T(center) + 0.1 * batch_mean, atol=1e-6)


def test_dino_model_centers_on_its_teacher_and_warms_up_teacher_temperature():
    torch.manual_seed(0)
    model = _model("dino", out_dim=8, hidden_dim=16, bottleneck_dim=4, center_momentum=0.9)
    views = [torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32), torch.randn(4, 3, 16, 16)]
    with torch.no_grad():
        expected = 0.1 * model.teacher_head(model.teacher_backbone(torch.cat(views[:2]))).mean(0)
    model.training_loss(views)
    assert torch.allclose(model.criterion.center.view(8), expected, atol=1e-6)
    # 0.04 -> 0.07 linearly over 30 % of the 101 steps, then constant.
    assert model.teacher_temp_at(0) == pytest.approx(0.04)
    assert model.teacher_temp_at(15.15) == pytest.approx(0.055)
    assert model.teacher_temp_at(31) == model.teacher_temp_at(100) == pytest.approx(0.07)


def test_momentum_schedule_values():
    # BYOL: tau_k = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2, K = last step.
    for k in (0, 10, 50, 77, 100):
        expected = 1 - (1 - 0.996) * (math.cos(math.pi * k / 100) + 1) / 2
        assert momentum_at(k, 101, 0.996, 1.0) == pytest.approx(expected, abs=1e-9)
    assert momentum_at(60, 101, 0.999, 0.999) == 0.999  # MoCo v2: constant
    assert momentum_at(500, 101, 0.99, 1.0) == 1.0  # past the end: the final value


def test_ema_update_moves_teacher_towards_student():
    model = _model("byol")
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(torch.randn_like(p))  # the student has moved away from the target
    student = [p.detach().clone() for p in model.backbone.parameters()]
    target = [p.detach().clone() for p in model.target_backbone.parameters()]
    assert not all(p.requires_grad for p in model.target_backbone.parameters())
    model.on_train_batch_start(None, 0)  # step 0: momentum 0.996
    for s, t, new in zip(student, target, model.target_backbone.parameters()):
        assert torch.allclose(new, 0.996 * t + 0.004 * s, atol=1e-6)


def test_mae_masking_ratio_targets_and_patchify_round_trip():
    from lightly.models import utils

    torch.manual_seed(0)
    model = _model("mae", decoder_dim=32, decoder_depth=1, decoder_heads=4)
    images = torch.randn(2, 3, 32, 32)
    idx_keep, idx_mask = utils.random_token_mask((2, model.sequence_length), mask_ratio=0.75)
    assert model.sequence_length == 1 + 16 and idx_mask.shape == (2, 12) and idx_keep.shape == (2, 5)
    assert (idx_keep[:, 0] == 0).all()  # the class token is always visible
    # Targets: the pixels of the masked patches, read here straight from the image (row-major grid).
    model.recipe.extra["norm_pix_loss"] = False
    target = model.masked_targets(images, idx_mask)
    j = int(idx_mask[1, 4]) - 1
    r, c = divmod(j, 4)
    patch = images[1, :, r * 8 : (r + 1) * 8, c * 8 : (c + 1) * 8].permute(1, 2, 0).reshape(-1)
    assert torch.equal(target[1, 4], patch)
    model.recipe.extra["norm_pix_loss"] = True
    normed = model.masked_targets(images, idx_mask)[1, 4]
    assert torch.allclose(normed, (patch - patch.mean()) / (patch.var() + 1e-6).sqrt(), atol=1e-5)
    # patchify / unpatchify round trip, any band count.
    x = torch.randn(2, 6, 32, 32)
    assert torch.equal(utils.unpatchify(utils.patchify(x, 8), 8, channels=6), x)
    loss, emb = model.training_loss([images])
    assert torch.isfinite(loss) and emb.shape == (2, 192)
