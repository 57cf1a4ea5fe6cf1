"""Backbones as a small registry (timm-style): ``create_backbone(name, ...)`` and ``list_backbones()``.

Every backbone returns ``BackboneFeatures(aux, final)`` at output stride 8 and says the channel counts of
both in ``feature_channels``, so the heads are built from that, not from a table keyed by name. Each
family lives in its own module: ``resnet`` (dilated ResNet-18/34/50/101), ``mobilenet_v2``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from ccnet.backbones.common import BackboneFeatures, BackboneLoadReport, check_choice, read_state_dict
from ccnet.backbones.mobilenet_v2 import DilatedMobileNetV2, load_mobilenet_v2_weights
from ccnet.backbones.resnet import DEEP_STEM_INDEX, RESNETS, STEMS, DilatedResNet, load_resnet_weights

__all__ = [
    "DEEP_STEM_INDEX",
    "RESNETS",
    "STEMS",
    "BackboneFeatures",
    "BackboneLoadReport",
    "DilatedMobileNetV2",
    "DilatedResNet",
    "create_backbone",
    "is_resnet",
    "list_backbones",
    "load_backbone_weights",
    "read_state_dict",
]


class _Entry(NamedTuple):
    build: Callable[..., nn.Module]
    load: Callable[[nn.Module, object], BackboneLoadReport]


_REGISTRY: dict[str, _Entry] = {
    **{name: _Entry(lambda name=name, **kw: DilatedResNet(name, **kw), load_resnet_weights) for name in RESNETS},
    "mobilenet_v2": _Entry(lambda: DilatedMobileNetV2(), load_mobilenet_v2_weights),
}


def list_backbones() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def is_resnet(name: str) -> bool:
    return name in RESNETS


def create_backbone(
    name: str,
    output_stride: int = 8,
    pretrained: str | Path | Mapping[str, torch.Tensor] | None = None,
    **kwargs,
) -> nn.Module:
    """Build backbone ``name`` (family arguments as keywords), optionally loading pretrained weights.

    The load report (missing, unexpected and unused keys) lands in ``backbone.pretrained_report``.
    """
    entry = _REGISTRY[check_choice("backbone", name, list_backbones())]
    if output_stride != 8:
        raise ValueError(f"output_stride {output_stride} is not supported: CCNet's backbones run at 8")
    try:
        backbone = entry.build(**kwargs)
    except TypeError as error:
        raise ValueError(f"backbone {name!r} does not take arguments {sorted(kwargs)}: {error}") from None
    backbone.pretrained_report = None if pretrained is None else entry.load(backbone, pretrained)
    return backbone


def load_backbone_weights(
    backbone: nn.Module, weights: str | Path | Mapping[str, torch.Tensor]
) -> BackboneLoadReport:
    """Load pretrained weights into a backbone made by ``create_backbone``, by its family's rules."""
    if isinstance(backbone, DilatedMobileNetV2):
        return load_mobilenet_v2_weights(backbone, weights)
    if isinstance(backbone, DilatedResNet):
        return load_resnet_weights(backbone, weights)
    raise ValueError(f"no weight loader for {type(backbone).__name__}")
