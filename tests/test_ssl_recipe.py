"""Recipes and overrides, the collapse monitor, view pipelines, and `rsbench methods`."""

from __future__ import annotations

import math
from dataclasses import asdict

import pytest
import torch
from typer.testing import CliRunner

from rsbench.cli import app
from rsbench.errors import ConfigError
from rsbench.ssl import CATALOG, METHODS, get_method, resolve_recipe
from rsbench.ssl.augment import BandMeanGrayscale, CentredSolarize, RGBColorJitter, local_crop_size, ssl_view_transform
from rsbench.ssl.monitoring import CollapseMonitor, effective_rank
from rsbench.ssl.recipe import SMALL_BATCH_BASE, DataFit, fit_to_data, given_keys, sample_store_limit

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


def test_mae_distill_small_batch_preset_keeps_the_one_block_decoder_of_mae():
    # Without it the preset trained the paper's 8-block decoder: 7x MAE's step time at 64 px on CPU.
    mae, hybrid = resolve_recipe("mae", {}, "small-batch"), resolve_recipe("mae_distill", {}, "small-batch")
    for key in ("decoder_depth", "decoder_dim", "decoder_heads"):
        assert hybrid[key] == mae[key] != resolve_recipe("mae_distill", {})[key]


def test_small_batch_preset_is_the_paper_recipe_with_the_small_batch_keys():
    for name in NAMES:
        card, paper, small = CATALOG[name], resolve_recipe(name, {}), resolve_recipe(name, {}, "small-batch")
        expected = {**SMALL_BATCH_BASE, **card.small_batch}
        for key, value in asdict(paper).items():
            if key == "extra":
                for k, v in value.items():
                    assert small[k] == expected.get(k, v), (name, k)
            else:
                assert getattr(small, key) == expected.get(key, value), (name, key)
    # AdamW at batch 64: peak LR 1e-3; DINO keeps its own weight decay (0.04, cosine to 0.4).
    assert resolve_recipe("byol", {}, "small-batch").scaled_lr(64) == pytest.approx(1e-3)
    dino = resolve_recipe("dino", {}, "small-batch")
    assert (dino.weight_decay, dino.weight_decay_end, dino["out_dim"]) == (0.04, 0.4, 4096)
    # Overrides apply on top of the preset.
    r = resolve_recipe("simclr", {"lr": 0.002, "temperature": 0.5}, "small-batch")
    assert (r.optimizer, r.lr, r["temperature"]) == ("adamw", 0.002, 0.5)
    with pytest.raises(ConfigError, match="unknown recipe preset 'large'.*paper, small-batch"):
        resolve_recipe("simclr", {}, "large")


def _fit(name: str, preset: str, overrides: dict, n_samples: int, batch_size: int):
    card = CATALOG[name]
    return fit_to_data(
        resolve_recipe(name, overrides, preset),
        method=name,
        preset=preset,
        sample_store_keys=card.sample_store_keys,
        paper_batch_size=card.paper_batch_size,
        n_samples=n_samples,
        batch_size=batch_size,
        given=given_keys(overrides),
    )


def test_queue_longer_than_the_data_is_adapted_from_the_preset_and_warned_when_given():
    # Largest power of two not above half the samples, by hand: 2,300 -> 1,150 -> 1,024; 2,048 -> 1,024; 3 -> 1.
    assert [sample_store_limit(n) for n in (2300, 2048, 2047, 3)] == [1024, 1024, 512, 1]
    # The preset's 65,536 keys on EuroSAT's 2,300 images: adapted and recorded, no warning.
    fit = _fit("mocov2", "small-batch", {}, 2300, 64)
    assert fit.overrides == {"queue_size": 1024} and fit.warnings == []
    assert [(a["key"], a["preset"], a["used"]) for a in fit.adaptations] == [("queue_size", 65536, 1024)]
    assert "28.5 times" in fit.adaptations[0]["reason"]  # 65,536 / 2,300
    # A queue the user asked for is kept, with a warning naming the key and the size that fits.
    for given in ({"queue_size": 4096}, {"extra": {"queue_size": 4096}}):
        fit = _fit("mocov2", "small-batch", given, 2300, 64)
        assert fit.overrides == {} and fit.adaptations == []
        assert len(fit.warnings) == 1 and "'queue_size'" in fit.warnings[0] and "at most 1024" in fit.warnings[0]
    # A queue that fits is left alone; methods without a queue have nothing to fit.
    assert _fit("mocov2", "small-batch", {"queue_size": 1024}, 2300, 64) == DataFit({}, [], [])
    assert _fit("simclr", "small-batch", {}, 100, 64) == DataFit({}, [], [])


def test_paper_recipe_far_below_its_batch_is_warned_once():
    fit = _fit("simclr", "paper", {}, 2300, 64)  # tuned for 4,096: 64 is 1/64 of it
    assert fit.overrides == {} and len(fit.warnings) == 1
    assert "batch 4096" in fit.warnings[0] and "0.075" in fit.warnings[0] and "--recipe small-batch" in fit.warnings[0]
    assert _fit("simclr", "paper", {}, 2300, 512).warnings == []  # 1/8 of the paper's batch: within range
    assert _fit("mocov2", "paper", {}, 2300, 64).warnings[1:] == []  # paper batch 256: only the queue may speak
    assert _fit("simclr", "small-batch", {}, 2300, 64).warnings == []
    assert _fit("simclr", "paper", {"lr": 0.5, "lr_scaling": "none"}, 2300, 64).warnings == []  # the user chose


def test_methods_cli_shows_both_presets_and_rows_stay_whole_in_a_log():
    runner = CliRunner()
    result = runner.invoke(app, ["methods", "--method", "mocov2"], env={"COLUMNS": None})
    assert result.exit_code == 0, result.output
    row = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:4]] for line in _rows(result.output)}
    assert row["optimizer"] == ["'sgd'", "'adamw'"] and row["lr"] == ["0.03", "0.004"]
    assert row["queue_size (fitted to the data)"] == ["65536", "65536"]
    assert row["momentum_start"] == ["0.999", "0.99"]
    # Not a terminal and no COLUMNS: Rich would wrap at 80 columns; every method stays on one line.
    result = runner.invoke(app, ["methods"], env={"COLUMNS": None})
    lines = {line.split("│")[1].strip(): line for line in _rows(result.output)}
    assert set(NAMES) <= set(lines)
    assert lines["mocov2"].rstrip(" │").endswith("He et al. 2020, CVPR, Sec. 3-4")
    assert lines["dino"].rstrip(" │").endswith("App. (official code defaults)")


def _rows(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("│") and line.split("│")[1].strip()]


def test_pretrain_recipe_option_takes_a_preset_name(tmp_path):
    result = CliRunner().invoke(
        app, ["pretrain", "--images", str(tmp_path), "--out", str(tmp_path / "run"), "--recipe", "large"]
    )
    assert result.exit_code != 0 and "small-batch" in result.output and "recipe_preset" in result.output
