"""Dilated ResNets at output stride 8 (ResNet-18/34/50/101), torchvision's parameter names.

``conv1``, ``bn1``, ``layer1`` .. ``layer4``, blocks with ``conv1/bn1/conv2/bn2(/conv3/bn3)`` and
``downsample.0/1``; no ``fc``), so a torchvision state dict loads as it is. With ``stem="deep"`` the stem is
``stem``, a Sequential laid out as mmsegmentation's ResNetV1c (conv, BN, ReLU three times: convs at 0, 3,
6, BNs at 1, 4, 7), so mmsegmentation's ImageNet ``resnet*_v1c`` weights load as they are; the official
CCNet code names the same layers ``conv1/bn1``, ``conv2/bn2``, ``conv3/bn3`` (``DEEP_STEM_INDEX``).
The auxiliary head reads ``layer3``, the CCNet head ``layer4``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ccnet.backbones.common import (
    BackboneFeatures,
    BackboneLoadReport,
    as_state_dict,
    check_choice,
    load_checked,
)

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")
STEMS = ("basic", "deep")

# Position inside ``stem`` of each layer of the deep stem, under the official CCNet code's names.
DEEP_STEM_INDEX = {"conv1": 0, "bn1": 1, "conv2": 3, "bn2": 4, "conv3": 6, "bn3": 7}

# Output stride 8: stages 3 and 4 keep the resolution of stage 2 and dilate instead.
_STAGE_STRIDES = (1, 2, 1, 1)
_STAGE_DILATIONS = (1, 1, 2, 4)


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


def _conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """ResNet-18/34 block. Only ``conv1`` is dilated, as in mmsegmentation (torchvision has no dilated
    BasicBlock), so that mmsegmentation's ResNet-18 CCNets load and give the same outputs."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int, dilation: int, downsample: nn.Module | None):
        super().__init__()
        self.conv1 = _conv3x3(in_channels, planes, stride, dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """ResNet-50/101 block, stride and dilation on the 3x3 conv (torchvision's "ResNet v1.5")."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int, dilation: int, downsample: nn.Module | None):
        super().__init__()
        self.conv1 = _conv1x1(in_channels, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


_BLOCKS_PER_STAGE = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
}


def _make_stage(
    block: type[BasicBlock | Bottleneck],
    in_channels: int,
    planes: int,
    num_blocks: int,
    stride: int,
    dilation: int,
    first_dilation: int,
) -> nn.Sequential:
    out_channels = planes * block.expansion
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(_conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))
    blocks = [block(in_channels, planes, stride, first_dilation, downsample)]
    blocks += [block(out_channels, planes, 1, dilation, None) for _ in range(num_blocks - 1)]
    return nn.Sequential(*blocks)


def _deep_stem(stem_channels: int) -> nn.Sequential:
    """Three 3x3 convs (stem/2, stem/2, stem), mmsegmentation's ResNetV1c and the official CCNet stem."""
    half = stem_channels // 2
    layers = []
    for in_channels, out_channels, stride in ((3, half, 2), (half, half, 1), (half, stem_channels, 1)):
        layers += [
            _conv3x3(in_channels, out_channels, stride),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


class DilatedResNet(nn.Module):
    """ResNet at output stride 8: stage 3 dilated by 2, stage 4 by 4, no classifier.

    ``contract_dilation=True`` gives the first block of a dilated stage the previous stage's dilation
    (torchvision's ``replace_stride_with_dilation``, mmsegmentation's ``contract_dilation``);
    ``False`` dilates every block of the stage fully (the official CCNet code).
    """

    def __init__(
        self,
        depth: str = "resnet101",
        base_width: int = 64,
        stem: str = "basic",
        stem_channels: int | None = None,
        ceil_mode: bool = False,
        contract_dilation: bool = True,
    ):
        super().__init__()
        block, stage_sizes = _BLOCKS_PER_STAGE[check_choice("backbone", depth, RESNETS)]
        stem_channels = base_width if stem_channels is None else stem_channels
        self.stem_kind = check_choice("stem", stem, STEMS)
        if stem == "basic":
            self.conv1 = nn.Conv2d(3, stem_channels, 7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(stem_channels)
            self.relu = nn.ReLU(inplace=True)
        else:
            self.stem = _deep_stem(stem_channels)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=ceil_mode)

        in_channels = stem_channels
        previous_dilation = 1
        for index, (num_blocks, stride, dilation) in enumerate(
            zip(stage_sizes, _STAGE_STRIDES, _STAGE_DILATIONS, strict=True)
        ):
            first_dilation = previous_dilation if contract_dilation else dilation
            planes = base_width * 2**index
            stage = _make_stage(block, in_channels, planes, num_blocks, stride, dilation, first_dilation)
            self.add_module(f"layer{index + 1}", stage)
            in_channels = planes * block.expansion
            previous_dilation = dilation
        self.low_channels = base_width * block.expansion  # layer1, at output stride 4
        self.layer3_channels = in_channels // 2
        self.layer4_channels = in_channels
        self.feature_channels = (self.layer3_channels, self.layer4_channels)  # (aux, final)
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's initialisation, so an untrained backbone behaves like theirs.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> BackboneFeatures:
        if self.stem_kind == "basic":
            x = self.relu(self.bn1(self.conv1(images)))  # (B, S, H/2, W/2)
        else:
            x = self.stem(images)  # (B, S, H/2, W/2)
        x = self.maxpool(x)  # (B, S, H/4, W/4)
        stage1 = self.layer1(x)  # (B, C1, H/4, W/4)
        x = self.layer2(stage1)  # (B, C2, H/8, W/8)
        stage3 = self.layer3(x)  # (B, C3, h, w)
        stage4 = self.layer4(stage3)  # (B, C4, h, w)
        return BackboneFeatures(aux=stage3, final=stage4, low=stage1)


def load_resnet_weights(
    backbone: DilatedResNet, weights: str | Path | Mapping[str, torch.Tensor]
) -> BackboneLoadReport:
    """Load torchvision-named ResNet weights (a file or a state dict); ``fc.*`` is reported as unused."""
    state = as_state_dict(weights)
    unused = [key for key in state if key.startswith("fc.")]
    return load_checked(backbone, {k: v for k, v in state.items() if k not in unused}, unused)
