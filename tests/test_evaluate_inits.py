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


@pytest.fixture
def in1k(tmp_path) -> Path:
    """A stand-in for timm's ImageNet resnet18 checkpoint: random weights, head included, as published."""
    torch.save(timm.create_model("resnet18").state_dict(), tmp_path / "in1k.pth")
    return tmp_path / "in1k.pth"


def imagenet(data, out, weights, in_chans, **kw):
    return resolve_init(cfg(data, out, init="imagenet", weights=weights, **kw), in_chans, quiet())


def test_imagenet_init_on_more_bands_keeps_the_rgb_response(eurosat_small, tmp_path, in1k):
    """The first-layer adaptation for C > 3 bands (rsbench's adapt_first_layer) puts the RGB filters on the
    red, green, blue bands scaled by 3 / C and the RGB mean filter elsewhere. So a C-band model sees
    (R, G, B, 0, ...) as the RGB model sees 3/C (R, G, B), and an achromatic image (one band repeated) as
    the RGB model does. More than 3 bands must be named (or --rgb-bands given) to say where R, G, B are."""
    models = {
        3: imagenet(eurosat_small, tmp_path, in1k, 3).build().eval(),
        4: imagenet(eurosat_small, tmp_path, in1k, 4, bands=["red", "green", "blue", "nir"]).build().eval(),
        6: imagenet(eurosat_small, tmp_path, in1k, 6, rgb_bands=["1", "2", "3"]).build().eval(),
    }
    g = torch.Generator().manual_seed(0)
    x, gray = torch.randn(2, 3, 32, 32, generator=g), torch.randn(2, 1, 32, 32, generator=g)
    with torch.no_grad():
        padded = models[4](torch.cat([x, torch.zeros_like(x[:, :1])], 1))
        assert not torch.allclose(padded, models[3](x), atol=1e-3)  # the rescale is real
        assert torch.allclose(padded, models[3](0.75 * x), atol=1e-5)
        assert torch.allclose(models[6](gray.expand(-1, 6, -1, -1)), models[3](gray.expand(-1, 3, -1, -1)), atol=1e-5)
    assert torch.allclose(models[4].conv1.weight[:, :3], 0.75 * models[3].conv1.weight)
    assert torch.equal(models[4].layer1[0].conv1.weight, models[3].layer1[0].conv1.weight)  # deeper layers as-is
    with pytest.raises(ConfigError, match="4 unnamed bands.*--rgb-bands 4,3,2"):
        imagenet(eurosat_small, tmp_path, in1k, 4)  # never R, G, B on channels 0-2 by default


def test_imagenet_filters_follow_the_sentinel2_band_order(eurosat_small, tmp_path, in1k):
    """Sentinel-2 order B02, B03, B04, B08: R goes to channel 2, G to 1, B to 0, the mean to B08."""
    rgb = imagenet(eurosat_small, tmp_path, in1k, 3)
    s2 = imagenet(eurosat_small, tmp_path, in1k, 4, bands=["B02", "B03", "B04", "B08"])
    assert s2.band_mapping == {
        "red": 2,
        "green": 1,
        "blue": 0,
        "others": "mean RGB filter",
        "source": "band names",
        "bands": ["B02", "B03", "B04", "B08"],
        "sensor": "sentinel2 (inferred from the band names)",
    }
    assert rgb.band_mapping["source"] == "assumed RGB order (3 unnamed bands)"
    assert s2.identity["rgb"] == [2, 1, 0] and "rgb" not in rgb.identity  # keys their feature caches apart
    w = timm.create_model("resnet18", num_classes=0)
    w.load_state_dict({k: v for k, v in torch.load(in1k, weights_only=True).items() if not k.startswith("fc.")})
    red, green, blue = (w.conv1.weight[:, i] for i in range(3))  # timm's ImageNet input order is R, G, B
    m3, m4 = rgb.build().eval(), s2.build().eval()
    conv = m4.conv1.weight
    assert torch.allclose(conv[:, 2], 0.75 * red) and torch.allclose(conv[:, 1], 0.75 * green)
    assert torch.allclose(conv[:, 0], 0.75 * blue) and torch.allclose(conv[:, 3], 0.75 * w.conv1.weight.mean(1))
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))  # an RGB image ...
    x4 = torch.zeros(2, 4, 32, 32)
    x4[:, [2, 1, 0]] = x  # ... in the Sentinel-2 channels of red, green, blue
    with torch.no_grad():
        assert torch.allclose(m4(x4), m3(0.75 * x), atol=1e-5)
    # The same data with --rgb-bands picks the same channels.
    by_flag = imagenet(eurosat_small, tmp_path, in1k, 4, rgb_bands=["3", "2", "1"])
    assert torch.equal(by_flag.build().conv1.weight, conv) and by_flag.identity == s2.identity


def test_imagenet_on_bgr_data_reorders_the_filters(eurosat_small, tmp_path, in1k):
    rgb = imagenet(eurosat_small, tmp_path, in1k, 3).build().eval()
    bgr = imagenet(eurosat_small, tmp_path, in1k, 3, bands=["blue", "green", "red"])
    assert (bgr.band_mapping["red"], bgr.band_mapping["green"], bgr.band_mapping["blue"]) == (2, 1, 0)
    model = bgr.build().eval()
    assert torch.equal(model.conv1.weight, rgb.conv1.weight[:, [2, 1, 0]])  # 3 bands: no rescale
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(model(x[:, [2, 1, 0]]), rgb(x), atol=1e-6)


def test_random_init_is_one_draw_per_seed(eurosat_small, tmp_path):
    init = resolve_init(cfg(eurosat_small, tmp_path), 3, quiet())
    s1, s2, again = init.for_seed(1), init.for_seed(2), init.for_seed(1)
    w = {
        k: i.build().conv1.weight
        for k, i in (("base", init), ("s0", init.for_seed(0)), ("s1", s1), ("s2", s2), ("again", again))
    }
    assert not torch.allclose(w["s1"], w["s2"]) and not torch.allclose(w["s1"], w["base"])
    assert torch.equal(w["s1"], w["again"])
    assert torch.equal(w["s0"], w["base"])  # seed 0 is the draw of build(), as before per-seed draws
    assert s1.identity != s2.identity and s1.identity == again.identity and init.for_seed(0).identity == init.identity
    assert s1.name == s2.name == init.name == "random-resnet18" and s1.kind == "random"
    assert init.band_mapping is None
    # The caller's RNG is left alone; other kinds are the same for every seed.
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    s2.build()
    assert torch.equal(torch.random.get_rng_state(), before)
    pixels = resolve_init(cfg(eurosat_small, tmp_path, init="pixels"), 3, quiet())
    assert pixels.for_seed(3) is pixels


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
    assert init.band_mapping == {
        "weights_channels": [0, 1, 2],
        "weights_bands": ["B4", "B3", "B2"],
        "dropped": 0,
        "source": "the data has the weights' bands",
    }

    rows = evaluate(cfg(eurosat_small, tmp_path / "out", init=f"torchgeo:{RGB_MOCO}", image_size=32), console=quiet())
    r = rows[0]
    assert (r["init"], r["init_kind"], r["backbone"]) == (f"torchgeo-{RGB_MOCO}", "torchgeo", "resnet18")
    assert r["normalization"] == {
        "mean": [0.0] * 3,
        "std": [10000.0] * 3,
        "source": f"torchgeo {RGB_MOCO} transforms",
        "bands": ["B4", "B3", "B2"],
    }
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
    init = resolve_init(
        cfg(eurosat_small, tmp_path, init=f"torchgeo:{ALL_MOCO}", bands=["B04", "B03", "B02"]), 3, quiet()
    )
    assert init.bands == ["B4", "B3", "B2"] and init.normalization["std"] == [10000.0] * 3
    assert init.band_mapping == {
        "weights_channels": [3, 2, 1],
        "weights_bands": ["B4", "B3", "B2"],
        "dropped": 10,
        "source": "--bands matched to the weights' bands",
        "bands": ["B04", "B03", "B02"],
    }
    # GeoTIFF band descriptions are matched by their band number.
    described = resolve_init(
        cfg(eurosat_small, tmp_path, init=f"torchgeo:{ALL_MOCO}", bands=["B04_red", "B03_green", "B02_blue"]),
        3,
        quiet(),
    )
    assert described.bands == ["B4", "B3", "B2"] and described.identity == init.identity
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
    res = CliRunner().invoke(
        app,
        ["evaluate", "--data", str(eurosat_small), "--init", f"torchgeo:{RGB_MOCO}", "--out", str(tmp_path / "out")],
    )
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
            with rasterio.open(
                tif_dir / cls.name / f"{f.stem}.tif",
                "w",
                driver="GTiff",
                width=64,
                height=64,
                count=13,
                dtype="uint16",
                crs="EPSG:32632",
                transform=from_origin(500000, 5000640, 10, 10),
            ) as dst:
                dst.write(arr)
    for split, names in splits.items():
        (root / f"eurosat-{split}.txt").write_text("\n".join(names) + "\n")  # torchgeo lists .jpg names
    return root / "folder_train", root / "folder_test"


def test_torchgeo_dataset_adapter_matches_imagefolder(eurosat_small, tmp_path):
    train, test = fake_torchgeo_eurosat(tmp_path / "eurosat", eurosat_small)
    kw = {"image_size": 32, "protocol": ["knn", "linear"]}
    tg = evaluate(
        cfg(
            tmp_path / "eurosat",
            tmp_path / "a",
            adapter="torchgeo",
            options={"dataset": "EuroSAT", "bands": ["B04", "B03", "B02"]},
            **kw,
        ),
        console=quiet(),
    )
    folder = evaluate(cfg(train, tmp_path / "b", test_data=test, **kw), console=quiet())
    assert [r["value"] for r in tg] == [r["value"] for r in folder]
    assert (tg[0]["n_train"], tg[0]["n_test"], tg[0]["split"]) == (80, 20, "fixed (torchgeo test split)")
    assert torch.equal(cached(tmp_path / "a", tg[0]), cached(tmp_path / "b", folder[0]))
    assert tg[0]["normalization"]["bands"] == ["B04", "B03", "B02"]

    with pytest.raises(DataError, match=f"torchgeo dataset EuroSAT \\(split train\\) not found in {tmp_path}"):
        evaluate(cfg(tmp_path, tmp_path / "c", adapter="torchgeo", options={"dataset": "EuroSAT"}), console=quiet())
    with pytest.raises(ConfigError, match="torchgeo has no dataset 'EuroSet'"):
        evaluate(cfg(tmp_path, tmp_path / "c", adapter="torchgeo", options={"dataset": "EuroSet"}), console=quiet())


@pytest.mark.parametrize(
    "name",
    ["ResNet50_Weights.FMOW_RGB_GASSL", "ResNet18_Weights.SENTINEL2_ALL_MOCO", "ViTSmall16_Weights.SENTINEL2_ALL_DINO"],
)
def test_weights_transforms_fold_into_one_normalization(name):
    """Chained Normalize steps (GASSL: /255 then ImageNet mean/std) == one per-band (x - mean) / std."""
    from torchgeo.models import get_weight
    from torchvision.transforms import v2

    from rsbench.models.torchgeo_weights import transforms_preprocessing

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


def test_imagenet_init_with_a_bad_weights_file_names_that_file(eurosat_small, tmp_path):
    bad = tmp_path / "weights.pth"
    bad.write_bytes(b"not a checkpoint")
    args = ["evaluate", "--data", str(eurosat_small), "--init", "imagenet", "--weights", str(bad)]
    res = CliRunner().invoke(app, [*args, "--protocol", "knn", "--out", str(tmp_path / "out")])
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 1 and len(lines) == 1, res.output
    assert f"from --weights {bad}" in lines[0] and "download them once" not in lines[0]
