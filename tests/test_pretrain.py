"""Pretraining on real data: EuroSAT images and a 6-band Sentinel-2 corpus."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import timm
import torch
import yaml

from rsbench.corpus import CorpusBuildConfig, build_corpus
from rsbench.errors import ConfigError, DataError
from rsbench.train import PretrainConfig, pretrain


def _losses(run_dir: Path) -> list[float]:
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    return [float(r["train/loss"]) for r in rows if r.get("train/loss")]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: on a shared 2-core machine two threads oversubscribe and run ~10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def eurosat_run(tmp_path_factory, eurosat_small, one_thread) -> Path:
    out = tmp_path_factory.mktemp("runs") / "simclr"
    cfg = PretrainConfig(
        images=eurosat_small,
        out=out,
        max_steps=40,
        batch_size=32,
        image_size=32,
        num_workers=0,
        log_every=1,
        recipe={"optimizer": "sgd", "lr": 0.6},
    )
    return pretrain(cfg)


def _reference_flops(model: torch.nn.Module, views: list[torch.Tensor]) -> float:
    """Independent FLOP count of one training step from layer shapes: every conv / linear costs
    2*MACs forward, 2*MACs for its weight gradient and 2*MACs for its input gradient (none for the
    first conv, whose input is the image). Normalisations, activations and the B x B similarity
    matrix of the loss (< 0.1 % here) are left out, as torch.utils.flop_counter leaves them out."""
    total = 0.0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            k = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        else:
            k = module.in_features
        macs = output.numel() * k
        total += 2 * macs * (3 if inputs[0].requires_grad else 2)

    handles = [
        m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    ]
    try:
        model.training_loss(views)
    finally:
        for h in handles:
            h.remove()
    return total


def test_loss_decreases_on_real_eurosat(eurosat_run):
    losses = _losses(eurosat_run)
    assert len(losses) == 40
    assert all(torch.isfinite(torch.tensor(losses)))
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < first - 0.05, f"loss did not decrease: {first:.3f} -> {last:.3f}"


def test_run_dir_artefacts(eurosat_run):
    for name in ("config.yaml", "metrics.csv", "backbone.pt", "backbone.json", "run.json", "checkpoints/last.ckpt"):
        assert (eurosat_run / name).is_file(), name
    meta = json.loads((eurosat_run / "backbone.json").read_text())
    assert meta["arch"] == "resnet18" and meta["in_chans"] == 3 and meta["image_size"] == 32
    assert meta["method"] == "simclr" and meta["steps"] == 40 and meta["feature_dim"] == 512
    assert len(meta["normalization"]["mean"]) == 3 and all(s > 1 for s in meta["normalization"]["std"])  # 0-255 units
    run = json.loads((eurosat_run / "run.json").read_text())
    assert run["images_seen"] == 40 * 32 and run["images_per_s"] > 0
    assert run["status"] == "finished" and len(run["segments"]) == 1 and run["device"] == "cpu"
    assert run["images_per_s"] == pytest.approx(40 * 32 / run["train_time_s"], rel=0.01)
    assert run["device_hours"] == pytest.approx(run["wall_time_s"] / 3600, rel=0.01)
    assert 0 < run["data_wait_s"] + run["compute_s"] <= run["train_time_s"] * 1.01
    assert run["data_wait_fraction"] == pytest.approx(
        run["data_wait_s"] / (run["data_wait_s"] + run["compute_s"]), abs=1e-3
    )
    assert run["peak_memory"]["cpu_rss_peak_bytes"] > 100e6
    from rsbench.ssl import get_method

    model = get_method("simclr")(arch="resnet18", in_chans=3, image_size=32, batch_size=32, max_steps=40)
    expected = _reference_flops(model, [torch.randn(32, 3, 32, 32), torch.randn(32, 3, 32, 32)])
    assert run["flops"]["per_step"] == pytest.approx(expected, rel=0.02)
    assert run["flops"]["per_image"] == pytest.approx(run["flops"]["per_step"] / 32)
    assert run["flops"]["mfu"] is None  # no peak FLOP/s for CPUs
    # The export loads into a plain timm model, strictly.
    model = timm.create_model("resnet18", in_chans=3, num_classes=0)
    model.load_state_dict(torch.load(eurosat_run / "backbone.pt", weights_only=True), strict=True)
    # ... and the weights changed from any fresh init (training really happened).
    fresh = timm.create_model("resnet18", in_chans=3, num_classes=0)
    assert not torch.allclose(model.conv1.weight, fresh.conv1.weight)
    # Lightning checkpoint loads with weights_only=True.
    ckpt = torch.load(eurosat_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 40


def test_rerun_is_noop_and_changed_config_is_an_error(eurosat_run, eurosat_small, capsys):
    before = (eurosat_run / "backbone.pt").stat().st_mtime_ns
    cfg = PretrainConfig(**yaml.safe_load((eurosat_run / "config.yaml").read_text()))
    pretrain(cfg)
    assert "already finished" in capsys.readouterr().out
    assert (eurosat_run / "backbone.pt").stat().st_mtime_ns == before
    with pytest.raises(ConfigError, match="different config"):
        pretrain(cfg.model_copy(update={"max_steps": 41}))


def test_pretrain_on_six_band_sentinel2_corpus(tmp_path, rasters_dir):
    corpus = tmp_path / "corpus"
    build_corpus(
        CorpusBuildConfig(
            inputs=[str(rasters_dir / "sentinel2_l1c_T18SVG_20160112_20m_6band.tif")],
            out=str(corpus),
            tile_size=32,
            shard_size=300,
        )
    )
    run = pretrain(
        PretrainConfig(
            corpus=corpus, out=tmp_path / "run", max_steps=6, batch_size=16, image_size=32, num_workers=0, log_every=1
        )
    )
    meta = json.loads((run / "backbone.json").read_text())
    assert meta["in_chans"] == 6 and meta["data"]["kind"] == "corpus" and meta["data"]["bands"] == 6
    info = json.loads((corpus / "corpus.json").read_text())
    (group,) = info["band_groups"].values()
    assert meta["normalization"]["mean"] == pytest.approx(group["stats"]["mean"])
    # backbone.json says which group the run trained on and how many tiles it used (all: one group).
    assert meta["data"]["band_group"] == group["key"] == "rededge1,rededge2,rededge3,rededge4,swir1,swir2|uint16"
    assert (meta["data"]["tiles"], meta["data"]["tiles_ignored"]) == (group["tiles"], 0)
    model = timm.create_model("resnet18", in_chans=6, num_classes=0)
    model.load_state_dict(torch.load(run / "backbone.pt", weights_only=True))
    losses = _losses(run)
    assert len(losses) == 6 and all(torch.isfinite(torch.tensor(losses)))


def test_bad_inputs_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="exactly one of 'corpus' or 'images'"):
        PretrainConfig(out=tmp_path / "r")
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="broken.jpg"):
        pretrain(PretrainConfig(images=tmp_path / "imgs", out=tmp_path / "r", max_steps=1))
    with pytest.raises(ConfigError, match="unknown SSL method 'nope'"):
        pretrain(PretrainConfig(images=tmp_path / "imgs", method="nope", out=tmp_path / "r2", max_steps=1))
