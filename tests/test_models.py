"""rsbench.models: backbone creation without the SSL stack, and `backbone_info` on built timm models."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rsbench.contracts.architectures import is_vit_name
from rsbench.models import BackboneInfo, backbone_info, create_backbone


def test_evaluation_imports_neither_lightly_nor_the_ssl_methods():
    code = (
        "import json, sys\n"
        "import rsbench.models, rsbench.evaluate\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'lightly'"
        " or m.startswith('rsbench.ssl'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_models_alone_imports_no_training_stack():
    code = (
        "import json, sys\n"
        "import rsbench.models\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('lightly', 'lightning')"
        " or m.startswith('rsbench.ssl'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_backbone_info_resnet():
    info = backbone_info(create_backbone("resnet18", 4))
    assert info == BackboneInfo(is_vit=False, patch_size=None, feature_dim=512, feature_strides=(2, 4, 8, 16, 32))


def test_backbone_info_vit():
    model = create_backbone("vit_tiny_patch16_224", 3, 64, patch_size=8)
    assert backbone_info(model) == BackboneInfo(is_vit=True, patch_size=8, feature_dim=192, feature_strides=(8,))


def test_a_stack_of_blocks_alone_is_not_a_vit():
    # timm's EfficientNet has `blocks` (its stages) but no patch embedding and several strides.
    info = backbone_info(create_backbone("efficientnet_b0", 3))
    assert not info.is_vit and info.patch_size is None and len(info.feature_strides) > 1


@pytest.mark.parametrize(
    ("arch", "vit"),
    [("vit_small_patch16_224", True), ("deit_tiny_patch16_224", True), ("resnet18", False), ("convnext_tiny", False)],
)
def test_is_vit_name(arch, vit):
    assert is_vit_name(arch) is vit
