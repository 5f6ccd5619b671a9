"""Recipes and overrides, the collapse monitor, view pipelines, and `rsbench methods`."""

from __future__ import annotations

import math

import pytest
import torch
from typer.testing import CliRunner

from rsbench.cli import app
from rsbench.errors import ConfigError
from rsbench.ssl import METHODS, get_method, resolve_recipe
from rsbench.ssl.augment import BandMeanGrayscale, CentredSolarize, RGBColorJitter, local_crop_size, ssl_view_transform
from rsbench.ssl.monitoring import CollapseMonitor, effective_rank

NAMES = [
    "simclr",
    "mocov2",
    "mocov3",
    "byol",
    "dino",
    "mae",
    "barlowtwins",
    "vicreg",
    "distill",
    "dinov2",
    "mae_distill",
]


def test_registry_names_and_paper_defaults():
    assert sorted(METHODS) == sorted(NAMES)
    r = resolve_recipe("mocov2", {})
    assert (r.optimizer, r.lr, r["queue_size"], r["temperature"], r["momentum_start"]) == (
        "sgd",
        0.03,
        65536,
        0.2,
        0.999,
    )
    r = resolve_recipe("mae", {})
    assert (r.lr, r.weight_decay, r.betas, r["mask_ratio"]) == (1.5e-4, 0.05, (0.9, 0.95), 0.75)
    r = resolve_recipe("dino", {})
    assert (r["warmup_teacher_temp"], r["teacher_temp"], r["student_temp"], r["momentum_start"]) == (
        0.04,
        0.07,
        0.1,
        0.996,
    )
    assert resolve_recipe("barlowtwins", {})["lambda_param"] == 5e-3
    r = resolve_recipe("vicreg", {})
    assert (r["lambda_param"], r["mu_param"], r["nu_param"]) == (25, 25, 1)
    r = resolve_recipe("dinov2", {})  # DINOv2's ssl_default_config.yaml: 4e-3 x sqrt(B/1024)
    assert r.scaled_lr(1024) == pytest.approx(4e-3) and (r.weight_decay, r.weight_decay_end) == (0.04, 0.2)
    assert (r["koleo_weight"], r["ibot_weight"], r["momentum_start"], r["mask_ratio_max"]) == (0.1, 1.0, 0.992, 0.5)
    assert resolve_recipe("mae_distill", {})["teacher_weight"] == 0.1  # Clay's weight of the teacher term
    assert get_method("mocov3").default_backbone.startswith("vit") and get_method("mae").default_backbone.startswith(
        "vit"
    )


def test_lr_scaling_rules():
    r = resolve_recipe("mocov3", {})
    assert r.scaled_lr(4096) == pytest.approx(1.5e-4 * 16)
    assert resolve_recipe("simclr", {"lr_scaling": "sqrt", "lr": 1.2}).scaled_lr(1024) == pytest.approx(0.075 * 32)
    assert resolve_recipe("simclr", {"lr_scaling": "none", "lr": 0.5}).scaled_lr(64) == 0.5


def test_overrides_flat_or_nested_merge_with_method_keys():
    r = resolve_recipe("mocov2", {"lr": 1, "temperature": 0.1, "extra": {"queue_size": 4096}, "betas": [0.9, 0.95]})
    assert r.lr == 1.0 and isinstance(r.lr, float) and r.betas == (0.9, 0.95)
    assert (r["temperature"], r["queue_size"], r["momentum_start"]) == (0.1, 4096, 0.999)  # others kept
    assert resolve_recipe("dino", {"weight_decay_end": None}).weight_decay_end is None


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"temprature": 0.1}, "unknown recipe key 'temprature' for method 'simclr'"),
        ({"extra": {"queue_size": 10}}, "unknown recipe key 'queue_size' for method 'simclr'"),
        ({"lr": "fast"}, "recipe key 'lr' of method 'simclr' must be a number"),
        ({"temperature": True}, "recipe key 'temperature' of method 'simclr' must be a number"),
        ({"optimizer": "adam"}, "'optimizer' must be one of lars, sgd, adamw"),
        ({"lr_scaling": "cubic"}, "'lr_scaling' must be one of linear, sqrt, none"),
        ({"betas": [0.9]}, "recipe key 'betas' of method 'simclr' must be a list of 2 numbers"),
    ],
)
def test_bad_overrides_name_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match):
        resolve_recipe("simclr", overrides)


def test_effective_rank_matches_hand_values():
    assert effective_rank(torch.eye(4)) == pytest.approx(4, rel=1e-4)  # 4 equal singular values
    assert effective_rank(torch.ones(8, 5)) == pytest.approx(1, rel=1e-4)  # rank one
    z = torch.tensor([[3.0, 0.0], [0.0, 1.0]])  # singular values 3, 1 -> p = (0.75, 0.25)
    assert effective_rank(z) == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))), rel=1e-4)


def test_collapse_monitor_needs_a_sustained_collapse():
    mon = CollapseMonitor(fraction=0.1, patience=3)
    torch.manual_seed(0)
    healthy = mon.check(torch.randn(64, 32))
    assert healthy["std_l2"] == pytest.approx(1 / math.sqrt(32), rel=0.1) and healthy["collapse"] == 0
    point = torch.ones(64, 32) + 1e-4 * torch.randn(64, 32)
    flags = [mon.check(point)["collapse"] for _ in range(4)]
    assert flags == [0, 0, 1, 1]
    assert mon.check(torch.randn(64, 32))["collapse"] == 0  # recovery resets the streak


def has_op(step, op_type) -> bool:
    """A view step is op_type itself or a RandomApply around it."""
    return isinstance(step, op_type) or any(isinstance(t, op_type) for t in getattr(step, "transforms", []))


def test_view_pipelines_for_any_band_count():
    torch.manual_seed(0)
    for bands in (3, 6):
        x = torch.randn(bands, 48, 48)
        for name in NAMES:
            multi_crop = name in ("dino", "dinov2")
            opts = {"n_local": 3, "patch_size": 8} if multi_crop else {}
            views = get_method(name).view_transform(32, bands, None, **opts)(x)
            n = 5 if multi_crop else {"mae": 1, "mae_distill": 1, "distill": 1}.get(name, 2)
            assert len(views) == n and all(v.shape[0] == bands for v in views)
            assert all(v.shape[-2:] == (32, 32) for v in views[:2])
            if multi_crop:
                assert all(v.shape[-2:] == (16, 16) for v in views[2:])
    six = ssl_view_transform(32, 6, color_jitter=True).transforms
    assert not any(isinstance(t, RGBColorJitter) or has_op(t, BandMeanGrayscale) for t in six)  # RGB-only ops skipped
    rgb = ssl_view_transform(32, 3, color_jitter=True).transforms
    assert any(isinstance(t, RGBColorJitter) for t in rgb) and any(has_op(t, BandMeanGrayscale) for t in rgb)
    assert local_crop_size(224) == 96 and local_crop_size(64) == 32 and local_crop_size(32, 8) == 16


def test_rgb_colour_jitter_and_solarize_on_normalized_data():
    torch.manual_seed(0)
    x = torch.randn(3, 16, 16)
    jitter = RGBColorJitter(p=1.0)
    y = jitter(x)
    assert y.shape == x.shape and not torch.allclose(x, y)
    assert y.min() >= x.min() - 1e-5 and y.max() <= x.max() + 1e-5  # stays in the image's own range
    with pytest.raises(ValueError, match="needs 3 bands"):
        jitter(torch.randn(4, 8, 8))
    s = CentredSolarize()(x)
    assert torch.equal(s, torch.where(x > 0, -x, x))


def test_methods_cli_lists_every_method_and_one_recipe():
    runner = CliRunner()
    result = runner.invoke(app, ["methods"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    for name in NAMES:
        assert name in result.output
    assert "0.03 x B/256" in result.output and "65536" in result.output and "0.996->1 (cosine)" in result.output
    result = runner.invoke(app, ["methods", "--method", "dino"], env={"COLUMNS": "250"})
    assert result.exit_code == 0 and "teacher_temp_warmup_fraction" in result.output
    result = runner.invoke(app, ["methods", "--method", "swav"])
    assert result.exit_code == 1 and "unknown SSL method 'swav'" in result.output
