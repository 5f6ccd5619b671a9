"""Backbones: band-count adaptation of ImageNet weights, ViT sizes, and the export format."""

from __future__ import annotations

import json

import pytest
import timm
import torch
import torch.nn.functional as F

from rsbench.errors import ConfigError
from rsbench.models import adapt_first_layer, backbone_kwargs, create_backbone, load_exported_backbone


@pytest.fixture(scope="module")
def rgb_weights(tmp_path_factory):
    """Stand-ins for ImageNet checkpoints (full models with classifier heads, as timm saves them)."""
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("weights")
    files = {}
    for arch in ("resnet18", "vit_tiny_patch16_224"):
        files[arch] = out / f"{arch}.pth"
        torch.save(timm.create_model(arch).state_dict(), files[arch])
    return files


def test_adapt_first_layer_rule():
    w = torch.randn(8, 3, 3, 3)
    six = adapt_first_layer(w, 6)
    assert six.shape == (8, 6, 3, 3)
    assert torch.allclose(six[:, :3], w * 3 / 6)  # RGB copied, rescaled
    for band in range(3, 6):
        assert torch.allclose(six[:, band], w.mean(1) * 3 / 6)  # extra bands: the RGB mean
    assert torch.allclose(adapt_first_layer(w, 1)[:, 0], w.sum(1))  # one band: RGB summed
    assert adapt_first_layer(w, 3) is w


@pytest.mark.parametrize("arch,size", [("resnet18", 32), ("vit_tiny_patch16_224", 64)])
@pytest.mark.parametrize("bands", [1, 4, 6])
def test_band_adaptation_preserves_rgb_outputs_on_achromatic_input(rgb_weights, arch, size, bands):
    rgb = create_backbone(arch, 3, size, pretrained=True, weights_file=rgb_weights[arch]).eval()
    multi = create_backbone(arch, bands, size, pretrained=True, weights_file=rgb_weights[arch]).eval()
    gray = torch.randn(2, 1, size, size)
    with torch.no_grad():
        expected = rgb(gray.expand(-1, 3, -1, -1))
        got = multi(gray.expand(-1, bands, -1, -1))
        assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)
        # Everything but the first layer is the RGB network's.
        for key, value in rgb.state_dict().items():
            if value.dim() != 4 or value.shape[1] != 3:
                assert torch.equal(multi.state_dict()[key], value), key
    if bands == 4:
        # timm's own rule (cycle R, G, B over the extra bands) breaks this for 4 bands: ours is needed.
        conv = "conv1.weight" if arch == "resnet18" else "patch_embed.proj.weight"
        state = multi.state_dict()
        state[conv] = timm.models.adapt_input_conv(4, rgb.state_dict()[conv])
        multi.load_state_dict(state)
        with torch.no_grad():
            assert not torch.allclose(multi(gray.expand(-1, 4, -1, -1)), expected, atol=1e-3)


def test_pretrained_vit_position_embeddings_are_resampled_to_the_image_size(rgb_weights):
    src = torch.load(rgb_weights["vit_tiny_patch16_224"], weights_only=True)["pos_embed"]  # 1 + 14x14
    model = create_backbone(
        "vit_tiny_patch16_224", 3, 64, pretrained=True, weights_file=rgb_weights["vit_tiny_patch16_224"]
    )
    pos = model.pos_embed.detach()
    assert pos.shape == (1, 1 + 4 * 4, 192)
    assert torch.equal(pos[:, :1], src[:, :1])  # the class token's embedding is kept
    grid = src[:, 1:].reshape(1, 14, 14, 192).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(4, 4), mode="bicubic", antialias=True, align_corners=False)
    assert torch.allclose(pos[:, 1:], expected.permute(0, 2, 3, 1).reshape(1, 16, 192), atol=1e-5)


def test_vit_patch_and_image_size_and_errors():
    model = create_backbone("vit_tiny_patch16_224", 6, 48, patch_size=8)
    assert model.patch_embed.patch_size == (8, 8) and model.pos_embed.shape[1] == 1 + 6 * 6
    assert model(torch.randn(2, 6, 48, 48)).shape == (2, 192)
    assert backbone_kwargs("vit_tiny_patch16_224", 48, 8) == {"img_size": 48, "patch_size": 8}
    assert backbone_kwargs("resnet18", 48, 8) == {}
    with pytest.raises(ConfigError, match="not a multiple of the ViT patch size 7"):
        create_backbone("vit_tiny_patch16_224", 3, 48, patch_size=7)
    with pytest.raises(ConfigError, match="unknown backbone 'resnet_nope'"):
        create_backbone("resnet_nope", 3)


def test_exported_vit_loads_with_plain_timm_and_load_exported_backbone(tmp_path):
    model = create_backbone("vit_tiny_patch16_224", 4, 32, patch_size=8).eval()
    torch.save(model.state_dict(), tmp_path / "backbone.pt")
    kwargs = backbone_kwargs("vit_tiny_patch16_224", 32, 8)
    (tmp_path / "backbone.json").write_text(
        json.dumps({"arch": "vit_tiny_patch16_224", "in_chans": 4, "image_size": 32, "timm_kwargs": kwargs})
    )
    plain = timm.create_model("vit_tiny_patch16_224", in_chans=4, num_classes=0, **kwargs).eval()
    plain.load_state_dict(torch.load(tmp_path / "backbone.pt", weights_only=True), strict=True)
    loaded, meta = load_exported_backbone(tmp_path)
    x = torch.randn(2, 4, 32, 32)
    with torch.no_grad():
        assert torch.allclose(plain(x), model(x), atol=1e-6)
        assert torch.allclose(loaded.eval()(x), model(x), atol=1e-6)
