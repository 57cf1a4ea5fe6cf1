"""Backbones: the registry, the dilated MobileNetV2, and loading pretrained weights of either layout."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

from ccnet.backbones import (
    DilatedMobileNetV2,
    DilatedResNet,
    create_backbone,
    list_backbones,
    load_backbone_weights,
)
from ccnet.backbones.mobilenet_v2 import detect_layout, to_torchvision_names
from ccnet.factory import build_model
from ccnet.model import CCNet

# torchvision's names -> the classic layout, per block kind (the inverse of the loader's rules).
_TO_CLASSIC_T1 = {"0.0": "0", "0.1": "1", "1": "3", "2": "4"}
_TO_CLASSIC_T6 = {"0.0": "0", "0.1": "1", "1.0": "3", "1.1": "4", "2": "6", "3": "7"}


_OUR_BLOCK_KEY = re.compile(r"^features\.(\d+)\.conv\.(\d+\.\d+|\d+)\.([a-z_]+)$")


def _as_classic(state: dict) -> dict:
    """Our (torchvision-named) MobileNetV2 state dict written in the classic pytorch layout."""
    classic = {}
    for key, value in state.items():
        match = _OUR_BLOCK_KEY.match(key)
        if match is None:
            classic[key] = value
            continue
        block, position, rest = match.groups()
        table = _TO_CLASSIC_T1 if block == "1" else _TO_CLASSIC_T6
        classic[f"features.{block}.conv.{table[position]}.{rest}"] = value
    return classic


def _random_state(seed: int) -> dict:
    torch.manual_seed(seed)
    backbone = DilatedMobileNetV2()
    for tensor in backbone.state_dict().values():
        if tensor.is_floating_point():
            tensor.copy_(torch.randn_like(tensor).abs() + 0.1)  # positive: valid running_var too
    return backbone.state_dict()


def test_registry_lists_every_family():
    assert set(list_backbones()) == {"resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v2"}
    assert isinstance(create_backbone("mobilenet_v2"), DilatedMobileNetV2)
    assert isinstance(create_backbone("resnet18", base_width=8), DilatedResNet)
    with pytest.raises(ValueError, match="unknown backbone 'vgg16'"):
        create_backbone("vgg16")
    with pytest.raises(ValueError, match="does not take arguments"):
        create_backbone("mobilenet_v2", base_width=8)
    with pytest.raises(ValueError, match="output_stride 16"):
        create_backbone("mobilenet_v2", output_stride=16)


@pytest.mark.parametrize("size", [(64, 96), (33, 47), (17, 9)])
def test_mobilenet_v2_gives_both_levels_at_stride_8(size):
    backbone = DilatedMobileNetV2().eval()
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, *size))
    expected = tuple(-(-s // 8) for s in size)  # each stride-2 conv rounds up
    assert features.aux.shape == (1, 96, *expected) and features.final.shape == (1, 320, *expected)
    assert backbone.feature_channels == (96, 320)


def test_mobilenet_v2_dilates_after_the_removed_strides():
    features = DilatedMobileNetV2().features
    depthwise = {i: features[i].conv[-3][0] for i in range(1, 18)}  # the 3x3 depthwise conv of each block
    assert [depthwise[i].stride[0] for i in range(1, 18)] == [1, 2, 1, 2, 1, 1] + [1] * 11
    assert [depthwise[i].dilation[0] for i in range(1, 18)] == [1] * 6 + [2] * 7 + [4] * 4
    assert all(depthwise[i].padding == depthwise[i].dilation for i in range(1, 18))
    assert len(features) == 18  # the 1280-channel conv is not built


def test_ccnet_heads_are_built_from_the_backbone_channels():
    model = CCNet(11, "mobilenet_v2", recurrence=2, head_channels=32)
    assert model.head.reduce.conv.in_channels == 320
    assert model.aux_head.reduce.conv.in_channels == 96
    assert model.config["base_width"] is None and model.config["stem"] is None
    rebuilt = build_model(model.config)
    assert rebuilt.config == model.config
    with pytest.raises(ValueError, match="base_width apply to ResNet backbones only"):
        CCNet(11, "mobilenet_v2", base_width=32)


def test_classic_layout_loads_to_the_same_weights_as_torchvision_layout():
    state = _random_state(0)
    classic = _as_classic(state)
    assert detect_layout(classic) == "classic" and detect_layout(state) == "torchvision"
    assert to_torchvision_names(classic).keys() == state.keys()
    for layout in (classic, state, {k.removeprefix("features."): v for k, v in classic.items()}):
        backbone = DilatedMobileNetV2()
        report = load_backbone_weights(backbone, layout)
        assert report.missing == [] and report.unexpected == []
        loaded = backbone.state_dict()
        assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_a_wrong_shape_is_refused_before_anything_loads():
    state = _as_classic(_random_state(1))
    state["features.4.conv.3.weight"] = torch.zeros(144, 1, 5, 5)  # a 5x5 depthwise: not ours
    backbone = DilatedMobileNetV2()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    with pytest.raises(ValueError, match=r"features\.4\.conv\.1\.0\.weight: file \(144, 1, 5, 5\)"):
        load_backbone_weights(backbone, state)
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())


def test_unknown_and_unused_keys_are_reported_and_missing_keys_named():
    state = _random_state(2)
    del state["features.0.1.running_var"]
    state["features.99.weight"] = torch.zeros(1)
    state["features.18.0.weight"] = torch.zeros(1280, 320, 1, 1)
    state["classifier.1.weight"] = torch.zeros(1000, 1280)
    with pytest.warns(UserWarning, match="missing keys"):
        report = load_backbone_weights(DilatedMobileNetV2(), state)
    assert report.missing == ["features.0.1.running_var"]
    assert report.unexpected == ["features.99.weight"]
    assert report.unused == ["classifier.1.weight", "features.18.0.weight"]


def test_not_a_mobilenet_is_refused_with_the_expected_keys():
    with pytest.raises(ValueError, match="not a MobileNetV2 state dict"):
        load_backbone_weights(DilatedMobileNetV2(), {"conv1.weight": torch.zeros(1)})


def test_resnet_loader_reports_fc_as_unused():
    backbone = DilatedResNet("resnet18", base_width=8)
    state = dict(backbone.state_dict()) | {"fc.weight": torch.zeros(10, 64), "fc.bias": torch.zeros(10)}
    report = load_backbone_weights(backbone, state)
    assert report.missing == [] and report.unexpected == [] and report.unused == ["fc.bias", "fc.weight"]


PRETRAINED_DIR = os.environ.get("CCNET_PRETRAINED_DIR")


@pytest.mark.skipif(not PRETRAINED_DIR, reason="CCNET_PRETRAINED_DIR is not set (CI sets it to ../shared/pretrained)")
def test_the_real_imagenet_file_loads_completely_and_gives_imagenet_like_features():
    path = Path(PRETRAINED_DIR) / "mobilenet_v2_imagenet.pt"
    model = CCNet(11, "mobilenet_v2", recurrence=2, head_channels=32, pretrained=path).eval()
    report = model.pretrained_report
    assert report.missing == [] and report.unexpected == []
    assert len(report.unused) == 6 and all(k.startswith("features.18.") for k in report.unused)
    # Trained BN statistics: the stem's running variance is far from its initial ones.
    assert not torch.allclose(model.backbone.features[0][1].running_var, torch.ones(32))
    # Loaded, not random: the stem's filters match the file's exactly.
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert torch.equal(model.backbone.features[0][0].weight, raw["features.0.0.weight"])
    assert torch.equal(model.backbone.features[17].conv[2].weight, raw["features.17.conv.6.weight"])
