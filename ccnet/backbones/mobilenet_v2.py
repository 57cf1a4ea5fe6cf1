"""MobileNetV2 (width 1.0) dilated to output stride 8, under torchvision's current parameter names.

Inverted-residual settings (t, c, n, s): (1,16,1,1) (6,24,2,2) (6,32,3,2) (6,64,4,2) (6,96,3,1) (6,160,3,2)
(6,320,1,1) after a 3x3 stride-2 stem. For output stride 8 the strides of ``features.7`` and
``features.14`` are 1 and the depthwise convs from there on are dilated by 2 (``features.7``-``13``) and
4 (``features.14``-``17``), as mmsegmentation's and DeepLabV3's MobileNetV2. The auxiliary head reads
``features.13`` (96 channels), the CCNet head ``features.17`` (320 channels); the 1x1 conv to 1280
channels (``features.18``) is not built.

Weights load from two layouts, mapped by explicit rules (``to_torchvision_names``):
- torchvision's ``mobilenet_v2()`` (``features.N.conv.0.0`` ..., optionally without the ``features.``
  prefix, as ``mobilenet_v2().features.state_dict()`` gives);
- the classic pytorch layout (``features.N.conv.0``, ``conv.1``, ``conv.3`` ...), the layout of the shared
  ImageNet file (``training.pretrained``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ccnet.backbones.common import BackboneFeatures, BackboneLoadReport, as_state_dict, load_checked

# (expansion t, output channels c, blocks n, first stride s, dilation at output stride 8)
_SETTINGS = (
    (1, 16, 1, 1, 1),
    (6, 24, 2, 2, 1),
    (6, 32, 3, 2, 1),
    (6, 64, 4, 1, 2),  # stride 2 at output stride 32
    (6, 96, 3, 1, 2),
    (6, 160, 3, 1, 4),  # stride 2 at output stride 32
    (6, 320, 1, 1, 4),
)
_STEM_CHANNELS = 32
LOW_INDEX, AUX_INDEX, FINAL_INDEX = 3, 13, 17  # features.3: 24 channels (stride 4); .13: 96; .17: 320
_LAST_CONV_INDEX = 18  # the 320 -> 1280 conv of the classifier network, not built here


class ConvBNReLU6(nn.Sequential):
    """conv (no bias) -> BN -> ReLU6, children ``0``, ``1``, ``2`` (torchvision's Conv2dNormActivation)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride=1, dilation=1, groups=1):
        padding = dilation * (kernel - 1) // 2
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel, stride, padding, dilation, groups, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """[1x1 expand ->] 3x3 depthwise (dilated) -> 1x1 linear projection, + input when shapes agree."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int, dilation: int):
        super().__init__()
        hidden = in_channels * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(ConvBNReLU6(in_channels, hidden, 1))
        layers += [
            ConvBNReLU6(hidden, hidden, 3, stride, dilation, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)  # (B, C_out, H', W')
        return x + out if self.use_residual else out


class DilatedMobileNetV2(nn.Module):
    """MobileNetV2 features ``features.0``-``features.17`` at output stride 8."""

    def __init__(self):
        super().__init__()
        blocks: list[nn.Module] = [ConvBNReLU6(3, _STEM_CHANNELS, 3, stride=2)]
        in_channels = _STEM_CHANNELS
        for expansion, channels, count, stride, dilation in _SETTINGS:
            for index in range(count):
                blocks.append(InvertedResidual(in_channels, channels, stride if index == 0 else 1, expansion, dilation))
                in_channels = channels
        self.features = nn.Sequential(*blocks)
        self.feature_channels = (
            _SETTINGS[4][1],  # features.13: 96
            _SETTINGS[6][1],  # features.17: 320
        )
        self.low_channels = _SETTINGS[1][1]  # features.3: 24, at output stride 4
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's initialisation, so an untrained backbone behaves like theirs.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> BackboneFeatures:
        low = self.features[: LOW_INDEX + 1](images)  # (B, 24, 2h, 2w)
        x = self.features[LOW_INDEX + 1 : AUX_INDEX + 1](low)  # (B, 96, h, w)
        final = self.features[AUX_INDEX + 1 :](x)  # (B, 320, h, w)
        return BackboneFeatures(aux=x, final=final, low=low)


# -------------------------------------------------------------------------------------------------
# Weight layouts
# -------------------------------------------------------------------------------------------------

# Classic layout (ReLU6 modules at positions 2 and 5 of ``conv``) -> torchvision's, per block kind.
_CLASSIC_T1 = {"0": "0.0", "1": "0.1", "3": "1", "4": "2"}  # features.1: depthwise, project
_CLASSIC_T6 = {"0": "0.0", "1": "0.1", "3": "1.0", "4": "1.1", "6": "2", "7": "3"}  # expand, dw, project
_BLOCK_KEY = re.compile(r"^features\.(\d+)\.conv\.(\d+)\.(.+)$")


def detect_layout(state: Mapping[str, torch.Tensor]) -> str:
    """ "classic" or "torchvision", from the first block's depthwise weight; ValueError otherwise."""
    if "features.1.conv.0.0.weight" in state:
        return "torchvision"
    if "features.1.conv.0.weight" in state and "features.1.conv.3.weight" in state:
        return "classic"
    raise ValueError(
        "not a MobileNetV2 state dict: expected features.1.conv.0.0.weight (torchvision) or "
        "features.1.conv.0.weight and features.1.conv.3.weight (classic pytorch layout)"
    )


def to_torchvision_names(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a MobileNetV2 state dict of either layout to torchvision's names (``features.`` prefixed)."""
    if not any(key.startswith("features.") for key in state):
        state = {f"features.{key}": value for key, value in state.items()}
    if detect_layout(state) == "torchvision":
        return dict(state)
    renamed = {}
    for key, value in state.items():
        match = _BLOCK_KEY.match(key)
        if match is None:  # stem, last conv, anything else: same name in both layouts
            renamed[key] = value
            continue
        block, position, rest = match.groups()
        table = _CLASSIC_T1 if block == "1" else _CLASSIC_T6
        if position not in table:
            raise ValueError(f"{key}: position {position} of a classic MobileNetV2 block holds no parameters")
        renamed[f"features.{block}.conv.{table[position]}.{rest}"] = value
    return renamed


def _is_unused(key: str) -> bool:
    """Keys of the ImageNet network this backbone does not build: the 1280-channel conv, the classifier."""
    return key.startswith(f"features.{_LAST_CONV_INDEX}.") or key.startswith("classifier.")


def load_mobilenet_v2_weights(
    backbone: DilatedMobileNetV2, weights: str | Path | Mapping[str, torch.Tensor]
) -> BackboneLoadReport:
    """Load MobileNetV2 weights of either layout; shapes are checked before anything is loaded."""
    state = to_torchvision_names(as_state_dict(weights))
    unused = [key for key in state if _is_unused(key)]
    return load_checked(backbone, {k: v for k, v in state.items() if k not in unused}, unused)
