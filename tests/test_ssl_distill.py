"""Foundation-model pretraining on the real 6-band Sentinel-2 raster: distill, mae_distill (a frozen 3-band
teacher picked from the corpus by band name) and dinov2.

The teacher is an rsbench run pretrained here on a 3-band corpus of the same raster (built with
`bands: [B8A, B11, B12]`), so its backbone.json names its bands; the 6-band corpus has no visible band, so
an RGB teacher is the "missing bands" case. Runs are tiny (32 px tiles, batch 8, a few steps).
"""

from __future__ import annotations

import csv
import hashlib

import pytest
import timm
import torch

from rsbench.contracts.backbone_export import BackboneExport, module_state_dict
from rsbench.contracts.run_dir import RunDir
from rsbench.corpus import CorpusBuildConfig, build_corpus
from rsbench.errors import ConfigError
from rsbench.io import read_json
from rsbench.models import create_backbone
from rsbench.report.context import teacher_cell
from rsbench.report.pretrain_runs import run_from_dir
from rsbench.ssl import get_method
from rsbench.ssl.teacher import FrozenTeacher, teacher_spec
from rsbench.train import PretrainConfig, pretrain

SIZE, BATCH = 32, 8
RASTER = "sentinel2_l1c_T18SVG_20160112_20m_6band.tif"
TEACHER_BANDS = ["B8A_narrownir", "B11_swir1", "B12_swir2"]  # as the GeoTIFF describes them
TEACHER_CANON = ["rededge4", "swir1", "swir2"]  # as a corpus stores them (rsbench.bands' canonical names)
SMALL_MAE = {"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2}
SMALL_DINO = {"out_dim": 128, "hidden_dim": 64, "bottleneck_dim": 32, "n_local": 2}


def _corpus(tmp_path_factory, rasters_dir, name: str, bands=None):
    out = tmp_path_factory.mktemp(name) / "corpus"
    build_corpus(
        CorpusBuildConfig(inputs=[str(rasters_dir / RASTER)], out=str(out), tile_size=SIZE, shard_size=300, bands=bands)
    )
    return out


@pytest.fixture(scope="module")
def corpus6(tmp_path_factory, rasters_dir):
    return _corpus(tmp_path_factory, rasters_dir, "s2-6band")


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory, rasters_dir):
    """A ResNet-18 (BatchNorm: its statistics must not move either) pretrained by rsbench on 3 bands."""
    corpus3 = _corpus(tmp_path_factory, rasters_dir, "s2-3band", bands=TEACHER_BANDS)
    out = tmp_path_factory.mktemp("teacher") / "run"
    cfg = PretrainConfig(
        method="simclr", corpus=corpus3, out=out, backbone="resnet18", image_size=SIZE, batch_size=BATCH,
        max_steps=1, num_workers=0, accelerator="cpu",
    )  # fmt: skip
    return pretrain(cfg)


def _pretrain(corpus, out, method: str, backbone: str, teacher=None, steps: int = 3, **options):
    patch = {"patch_size": 8} if backbone.startswith("vit") else {}
    teacher = {"teacher": str(teacher)} if teacher else {}
    cfg = PretrainConfig(
        method=method, corpus=corpus, out=out, backbone=backbone, image_size=SIZE, batch_size=BATCH,
        max_steps=steps, num_workers=0, accelerator="cpu", log_every=1, **teacher, **patch, **options,
    )  # fmt: skip
    return pretrain(cfg)


def _plain_timm(run_dir) -> torch.nn.Module:
    """The exported backbone through plain timm only (no rsbench loader), as a user would load it."""
    export = BackboneExport(run_dir)
    meta = export.read_meta()
    model = timm.create_model(meta["arch"], **BackboneExport.timm_kwargs(meta))
    model.load_state_dict(torch.load(export.weights, map_location="cpu", weights_only=True), strict=True)
    return model


def _losses(run_dir) -> list[float]:
    with open(RunDir(run_dir).metrics, newline="") as f:
        return [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]


def test_distill_student_learns_a_3_band_teacher_picked_by_name(corpus6, teacher_run, tmp_path):
    run = _pretrain(corpus6, tmp_path / "distill", "distill", "resnet18", teacher_run, steps=8, recipe={"lr": 4e-3})
    meta = BackboneExport(run).read_meta()
    teacher = meta["teacher"]
    # The teacher's bands (from its backbone.json) found among the 6 corpus bands, in the teacher's order.
    assert teacher["bands"] == TEACHER_CANON and teacher["data_bands"] == TEACHER_CANON
    assert teacher["channels"] == [3, 4, 5] and meta["in_chans"] == 6
    assert teacher["sha256"] == hashlib.sha256(BackboneExport(teacher_run).weights.read_bytes()).hexdigest()
    # A corpus teacher keeps its own normalization: its corpus's statistics, not the 6-band corpus's.
    assert teacher["normalization"] == BackboneExport(teacher_run).read_meta()["normalization"]
    student = _plain_timm(run)
    assert student(torch.randn(2, 6, SIZE, SIZE)).shape == (2, 512)
    # The student moves towards the teacher: 1 - cos falls from its random-init value.
    losses = _losses(run)
    assert len(losses) == 8 and sum(losses[-3:]) / 3 < losses[0]
    # The frozen teacher in the final checkpoint (weights and BatchNorm statistics) is the file it came from.
    state = torch.load(RunDir(run).last_ckpt, map_location="cpu", weights_only=True)["state_dict"]
    kept = module_state_dict(state, "teacher.model")
    original = BackboneExport(teacher_run).read_state_dict()
    assert kept.keys() == original.keys()
    assert all(torch.equal(kept[k], original[k]) for k in original)
    # Cost accounting: the teacher's forward counted apart (part of the step's FLOPs) and timed.
    cost = read_json(RunDir(run).run_json)
    assert cost["teacher"]["sha256"] == teacher["sha256"]
    t = cost["teacher_cost"]
    assert 0 < t["flops_per_step"] < cost["flops"]["per_step"] and 0 < t["time_s"] < cost["train_time_s"]
    # The report's cost table names the teacher, its forward's share and its own pretraining cost.
    teacher_hours = run_from_dir(teacher_run, "teacher").device_hours
    assert teacher_cell(run_from_dir(run, "student")) == (
        f"run (resnet18): forward {100 * t['time_fraction']:.0f} % of the time; "
        f"+ {teacher_hours:.4f} device-hours to pretrain it"
    )
    assert teacher_cell(run_from_dir(teacher_run, "teacher")) == "–"


def test_teacher_weights_load_with_weights_only_and_stay_frozen(corpus6, tmp_path, monkeypatch):
    """A timm state_dict file as teacher, its 3 bands named with --teacher-bands in another spelling."""
    path = tmp_path / "rn18.pt"
    torch.save(create_backbone("resnet18", 3).state_dict(), path)
    norm = {"mean": [float(i) for i in range(6)], "std": [2.0] * 6}
    names = ["B05_rededge1", "B06_rededge2", "B07_rededge3", "B8A_narrownir", "B11_swir1", "B12_swir2"]
    spec = teacher_spec(str(path), "resnet18", ["nir08", "swir1", "swir2"], names, norm)
    assert spec["channels"] == [3, 4, 5] and spec["in_chans"] == 3
    # No statistics in a timm file: the teacher's bands keep the data's normalization (identity map).
    assert spec["scale"] == [1.0] * 3 and spec["shift"] == [0.0] * 3
    calls = []
    real_load = torch.load

    def recording_load(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    teacher = FrozenTeacher(spec)
    assert calls and all(c is True for c in calls)
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher.train()  # what Lightning does to the whole module: the teacher stays in eval mode
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    pooled, fmap = teacher(torch.randn(4, 6, SIZE, SIZE))
    assert not teacher.model.training and pooled.shape == (4, 512) and fmap.shape == (4, 512, 1, 1)
    assert pooled.requires_grad is False and not pooled.is_inference()
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


def test_teacher_with_bands_missing_from_the_corpus_is_a_one_line_error(corpus6, tmp_path):
    path = tmp_path / "rgb.pt"
    torch.save(create_backbone("resnet18", 3).state_dict(), path)  # a 3-band timm file: red, green, blue
    with pytest.raises(ConfigError) as err:
        _pretrain(corpus6, tmp_path / "run", "distill", "resnet18", str(path), teacher_arch="resnet18")
    msg = str(err.value)
    assert "\n" not in msg and "red, green, blue not found" in msg and "rededge4" in msg
    assert not (tmp_path / "run").exists()  # nothing written for a run that cannot start
    with pytest.raises(ConfigError, match="give --teacher"):
        _pretrain(corpus6, tmp_path / "none", "distill", "resnet18")


def test_mae_distill_reconstructs_six_bands_with_a_3_band_teacher(corpus6, teacher_run, tmp_path):
    run = _pretrain(
        corpus6, tmp_path / "md", "mae_distill", "vit_tiny_patch16_224", teacher_run, steps=2, recipe=SMALL_MAE
    )
    meta = BackboneExport(run).read_meta()
    assert meta["recipe"]["extra"]["teacher_weight"] == 0.1 and meta["teacher"]["data_bands"] == TEACHER_CANON
    student = _plain_timm(run)
    assert student(torch.randn(2, 6, SIZE, SIZE)).shape == (2, 192)
    state = torch.load(RunDir(run).last_ckpt, map_location="cpu", weights_only=True)["state_dict"]
    original = BackboneExport(teacher_run).read_state_dict()
    assert all(torch.equal(module_state_dict(state, "teacher.model")[k], original[k]) for k in original)


def test_dinov2_trains_a_vit_on_six_bands_and_refuses_a_cnn(corpus6, tmp_path):
    run = _pretrain(corpus6, tmp_path / "d2", "dinov2", "vit_tiny_patch16_224", steps=2, recipe=SMALL_DINO)
    meta = BackboneExport(run).read_meta()
    assert meta["exported_module"] == "teacher_backbone" and meta["in_chans"] == 6
    assert _plain_timm(run)(torch.randn(2, 6, SIZE, SIZE)).shape == (2, 192)
    assert all(torch.isfinite(torch.tensor(_losses(run))))
    with pytest.raises(ConfigError, match="dinov2 needs a ViT backbone") as err:
        get_method("dinov2")(arch="resnet18", in_chans=6, image_size=SIZE, batch_size=BATCH, max_steps=1)
    assert "\n" not in str(err.value)


def test_torchgeo_teacher_sees_its_bands_with_its_own_normalization(tmp_path, monkeypatch):
    """torchgeo:<WeightsEnum> from the local hub cache: its bands (B4, B3, B2) found among a Sentinel-2
    corpus's by name, its Normalize (x / 10000) applied to the raw values behind the normalized views."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    cache = tmp_path / "torch-home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    path = cache / "resnet18_sentinel2_rgb_moco-e3a335e3.pth"
    torch.save(timm.create_model("resnet18", in_chans=3).state_dict(), path)
    source = "torchgeo:ResNet18_Weights.SENTINEL2_RGB_MOCO"
    names = ["B02_blue", "B03_green", "B04_red", "B08_nir", "B11_swir1"]
    norm = {"mean": [900.0, 1000.0, 1100.0, 2500.0, 1800.0], "std": [300.0, 350.0, 400.0, 900.0, 700.0]}
    spec = teacher_spec(source, None, None, names, norm)
    assert spec["bands"] == ["B4", "B3", "B2"] and spec["channels"] == [2, 1, 0]
    raw = torch.rand(2, 5, SIZE, SIZE) * 4000
    views = (raw - torch.tensor(norm["mean"])[:, None, None]) / torch.tensor(norm["std"])[:, None, None]
    reference = timm.create_model("resnet18", num_classes=0)
    reference.load_state_dict({k: v for k, v in torch.load(path, weights_only=True).items() if not k.startswith("fc.")})
    with torch.no_grad():
        expected = reference.eval()(raw[:, [2, 1, 0]] / 10000)
    assert torch.allclose(FrozenTeacher(spec)(views)[0], expected, atol=1e-4, rtol=1e-4)
    with pytest.raises(ConfigError, match=r"band\(s\) B4, B3, B2 not found in the training data") as err:
        teacher_spec(source, None, None, ["B05_rededge1", "B8A_narrownir", "B11_swir1"], norm)
    assert "\n" not in str(err.value)
