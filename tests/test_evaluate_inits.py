"""Initialisations: ImageNet weights on multispectral data (timm's first-layer adaptation), published
torchgeo weights from the local hub cache, and torchgeo datasets on disk. Nothing is downloaded: the
tests write the weight files and a torchgeo-layout copy of real EuroSAT images themselves."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import rasterio
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from rasterio.transform import from_origin
from rich.console import Console
from typer.testing import CliRunner

from rsbench.cli import app
from rsbench.errors import ConfigError, DataError
from rsbench.evaluate import EvaluateConfig, evaluate
from rsbench.evaluate.inits import resolve_init

RGB_MOCO = "ResNet18_Weights.SENTINEL2_RGB_MOCO"  # 3 bands B4, B3, B2; Normalize(mean=[0], std=[10000])
ALL_MOCO = "ResNet18_Weights.SENTINEL2_ALL_MOCO"  # 13 bands B1 ... B8, B8a, B9 ... B12


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def cfg(data, out, **kw) -> EvaluateConfig:
    return EvaluateConfig(**{"data": data, "out": out, "init": "random", "seeds": [0], "protocol": ["knn"], **kw})


def cached(out: Path, row: dict) -> torch.Tensor:
    return torch.load(out / "features" / f"{row['features_key']}.pt", weights_only=True)["features"]


def test_imagenet_init_on_more_bands_keeps_the_rgb_response(eurosat_small, tmp_path):
    """The first-layer adaptation for C > 3 bands (timm's adapt_input_conv, or rsbench's adapt_first_layer)
    keeps the RGB filters scaled by 3 / C. So a C-band model sees (R, G, B, 0, ...) as the RGB model sees
    3/C (R, G, B), and an achromatic image (one band repeated) as the RGB model does, at least for C = 6."""
    torch.save(timm.create_model("resnet18").state_dict(), tmp_path / "in1k.pth")  # head included, as published
    models = {c: resolve_init(cfg(eurosat_small, tmp_path, init="imagenet", weights=tmp_path / "in1k.pth"), c,
                              quiet()).build().eval() for c in (3, 4, 6)}
    g = torch.Generator().manual_seed(0)
    x, gray = torch.randn(2, 3, 32, 32, generator=g), torch.randn(2, 1, 32, 32, generator=g)
    with torch.no_grad():
        padded = models[4](torch.cat([x, torch.zeros_like(x[:, :1])], 1))
        assert not torch.allclose(padded, models[3](x), atol=1e-3)  # the rescale is real
        assert torch.allclose(padded, models[3](0.75 * x), atol=1e-5)
        assert torch.allclose(models[6](gray.expand(-1, 6, -1, -1)), models[3](gray.expand(-1, 3, -1, -1)), atol=1e-5)
    assert torch.allclose(models[4].conv1.weight[:, :3], 0.75 * models[3].conv1.weight)
    assert torch.equal(models[4].layer1[0].conv1.weight, models[3].layer1[0].conv1.weight)  # deeper layers as-is


def test_patch_size_sets_the_vit_token_grid_and_the_cache_identity(eurosat_small, tmp_path):
    """--patch-size rebuilds a random ViT on a finer grid (64 px / 8 = 8 x 8 tokens); it names the
    init and keys its feature cache apart from the architecture's default patch."""
    vit = "vit_tiny_patch16_224"
    default = resolve_init(cfg(eurosat_small, tmp_path, backbone=vit, image_size=64), 3, quiet())
    fine = resolve_init(cfg(eurosat_small, tmp_path, backbone=vit, image_size=64, patch_size=8), 3, quiet())
    assert fine.build().patch_embed.num_patches == 64 and default.build().patch_embed.num_patches == 16
    assert fine.name == f"random-{vit}-patch8" and default.name == f"random-{vit}"
    assert fine.identity != default.identity
    with pytest.raises(ConfigError, match="not a multiple"):
        resolve_init(cfg(eurosat_small, tmp_path, backbone=vit, image_size=64, patch_size=12), 3, quiet()).build()


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return tmp_path / "torch-home" / "hub" / "checkpoints"


def write_weights(folder: Path, name: str, in_chans: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    torch.save(timm.create_model("resnet18", in_chans=in_chans).state_dict(), path)  # with its fc head
    return path


def test_torchgeo_init_from_the_hub_cache(eurosat_small, torch_home, tmp_path):
    from torchgeo.models import get_weight

    path = write_weights(torch_home, "resnet18_sentinel2_rgb_moco-e3a335e3.pth", 3)
    init = resolve_init(cfg(eurosat_small, tmp_path, init=f"torchgeo:{RGB_MOCO}"), 3, quiet())
    assert init.image_size == 224 and init.path == str(path.resolve())  # the weights' crop size by default

    rows = evaluate(cfg(eurosat_small, tmp_path / "out", init=f"torchgeo:{RGB_MOCO}", image_size=32), console=quiet())
    r = rows[0]
    assert (r["init"], r["init_kind"], r["backbone"]) == (f"torchgeo-{RGB_MOCO}", "torchgeo", "resnet18")
    assert r["normalization"] == {"mean": [0.0] * 3, "std": [10000.0] * 3, "source": f"torchgeo {RGB_MOCO} transforms",
                                  "bands": ["B4", "B3", "B2"]}
    # Reference for image 0: plain timm + the file, preprocessing by the weights' own Normalize module.
    model = timm.create_model("resnet18", num_classes=0)
    model.load_state_dict({k: v for k, v in torch.load(path, weights_only=True).items() if not k.startswith("fc.")})
    normalize = [t for t in get_weight(RGB_MOCO).transforms if type(t).__name__ == "Normalize"][0]
    first = sorted(sorted(p for p in eurosat_small.iterdir())[0].iterdir())[0]
    x = torch.from_numpy(np.asarray(Image.open(first)).transpose(2, 0, 1).astype(np.float32))[None]
    x = normalize(F.interpolate(x, size=(32, 32), mode="bilinear", antialias=True, align_corners=False))
    with torch.no_grad():
        expected = model.eval()(x)[0]
    assert torch.allclose(cached(tmp_path / "out", r)[0], expected, atol=1e-5, rtol=1e-4)


def test_torchgeo_init_maps_named_bands_onto_the_weights(eurosat_small, torch_home, tmp_path):
    write_weights(torch_home, "resnet18_sentinel2_all_moco-59bfdff9.pth", 13)
    full = resolve_init(cfg(eurosat_small, tmp_path, init=f"torchgeo:{ALL_MOCO}"), 13, quiet()).build().eval()
    init = resolve_init(cfg(eurosat_small, tmp_path, init=f"torchgeo:{ALL_MOCO}", bands=["B04", "B03", "B02"]), 3,
                        quiet())
    assert init.bands == ["B4", "B3", "B2"] and init.normalization["std"] == [10000.0] * 3
    rgb_model = init.build().eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    x13 = torch.zeros(2, 13, 32, 32)
    x13[:, [3, 2, 1]] = x  # the data's R, G, B go to the weights' B4, B3, B2; other bands at their mean (0)
    with torch.no_grad():
        assert torch.allclose(rgb_model(x), full(x13), atol=1e-5)

    with pytest.raises(ConfigError, match="takes 13 band.*name the data's bands"):
        resolve_init(cfg(eurosat_small, tmp_path, init=f"torchgeo:{ALL_MOCO}"), 3, quiet())
    with pytest.raises(ConfigError, match="band 'NIR' of --bands is not among"):
        resolve_init(cfg(eurosat_small, tmp_path, init=f"torchgeo:{ALL_MOCO}", bands=["B04", "B03", "NIR"]), 3, quiet())
    with pytest.raises(ConfigError, match="unknown torchgeo weights 'ResNet18_Weights.NOPE'"):
        resolve_init(cfg(eurosat_small, tmp_path, init="torchgeo:ResNet18_Weights.NOPE"), 3, quiet())


def test_torchgeo_init_offline_without_file_is_one_line_error(eurosat_small, torch_home, tmp_path):
    res = CliRunner().invoke(app, ["evaluate", "--data", str(eurosat_small), "--init", f"torchgeo:{RGB_MOCO}",
                                   "--out", str(tmp_path / "out")])
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 1 and len(lines) == 1, res.output
    assert f"not found at {torch_home / 'resnet18_sentinel2_rgb_moco-e3a335e3.pth'}" in lines[0]
    assert "--weights" in lines[0]


# ---------------------------------------------------------------- torchgeo datasets on disk


def fake_torchgeo_eurosat(root: Path, eurosat_small: Path) -> tuple[Path, Path]:
    """torchgeo's EuroSAT layout (13-band GeoTIFFs + split files) holding real EuroSAT RGB pixels at
    B04, B03, B02, and ImageFolders of the same images for the train / test splits."""
    tif_dir = root / "ds" / "images" / "remote_sensing" / "otherDatasets" / "sentinel_2" / "tif"
    splits = {"train": [], "test": []}
    for cls in sorted(p for p in eurosat_small.iterdir() if p.is_dir()):
        (tif_dir / cls.name).mkdir(parents=True)
        for i, f in enumerate(sorted(cls.iterdir())[:10]):
            split = "train" if i < 8 else "test"
            splits[split].append(f.name)
            (root / f"folder_{split}" / cls.name).mkdir(parents=True, exist_ok=True)
            (root / f"folder_{split}" / cls.name / f.name).symlink_to(f.resolve())
            arr = np.zeros((13, 64, 64), dtype=np.uint16)
            arr[[3, 2, 1]] = np.asarray(Image.open(f)).transpose(2, 0, 1)
            with rasterio.open(tif_dir / cls.name / f"{f.stem}.tif", "w", driver="GTiff", width=64, height=64,
                               count=13, dtype="uint16", crs="EPSG:32632",
                               transform=from_origin(500000, 5000640, 10, 10)) as dst:
                dst.write(arr)
    for split, names in splits.items():
        (root / f"eurosat-{split}.txt").write_text("\n".join(names) + "\n")  # torchgeo lists .jpg names
    return root / "folder_train", root / "folder_test"


def test_torchgeo_dataset_adapter_matches_imagefolder(eurosat_small, tmp_path):
    train, test = fake_torchgeo_eurosat(tmp_path / "eurosat", eurosat_small)
    kw = {"image_size": 32, "protocol": ["knn", "linear"]}
    tg = evaluate(cfg(tmp_path / "eurosat", tmp_path / "a", adapter="torchgeo",
                      options={"dataset": "EuroSAT", "bands": ["B04", "B03", "B02"]}, **kw), console=quiet())
    folder = evaluate(cfg(train, tmp_path / "b", test_data=test, **kw), console=quiet())
    assert [r["value"] for r in tg] == [r["value"] for r in folder]
    assert (tg[0]["n_train"], tg[0]["n_test"], tg[0]["split"]) == (80, 20, "fixed (torchgeo test split)")
    assert torch.equal(cached(tmp_path / "a", tg[0]), cached(tmp_path / "b", folder[0]))
    assert tg[0]["normalization"]["bands"] == ["B04", "B03", "B02"]

    with pytest.raises(DataError, match=f"torchgeo dataset EuroSAT \\(split train\\) not found in {tmp_path}"):
        evaluate(cfg(tmp_path, tmp_path / "c", adapter="torchgeo", options={"dataset": "EuroSAT"}), console=quiet())
    with pytest.raises(ConfigError, match="torchgeo has no dataset 'EuroSet'"):
        evaluate(cfg(tmp_path, tmp_path / "c", adapter="torchgeo", options={"dataset": "EuroSet"}), console=quiet())


@pytest.mark.parametrize("name", ["ResNet50_Weights.FMOW_RGB_GASSL", "ResNet18_Weights.SENTINEL2_ALL_MOCO",
                                  "ViTSmall16_Weights.SENTINEL2_ALL_DINO"])
def test_weights_transforms_fold_into_one_normalization(name):
    """Chained Normalize steps (GASSL: /255 then ImageNet mean/std) == one per-band (x - mean) / std."""
    from torchgeo.models import get_weight
    from torchvision.transforms import v2

    from rsbench.evaluate.torchgeo_init import transforms_preprocessing

    weights = get_weight(name)
    chans = weights.meta["in_chans"]
    mean, std, size = transforms_preprocessing(weights.transforms, chans)
    x = torch.rand(1, chans, 8, 8) * 3000
    steps = [t for t in weights.transforms if isinstance(t, v2.Normalize)]
    expected = x.clone()
    for t in steps:
        expected = t(expected)
    got = (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert size == 224 and len(steps) == (2 if "GASSL" in name else 1)
