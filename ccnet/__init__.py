"""Criss-cross attention (CCNet) library: attention modules, the segmentation model, losses,
influence maps, and the checkpoint format the app serves."""

from ccnet.attention import (
    RCCA,
    CrissCrossAttention,
    CrissCrossAttention3D,
    NonLocalBlock,
    RecurrentCrissCrossAttention,
)
from ccnet.losses import CategoryConsistentLoss, OhemCrossEntropy
from ccnet.model import (
    BACKBONES,
    BackboneFeatures,
    CCNet,
    CCNetOutput,
    DilatedResNet,
    build_model,
    load_backbone_weights,
)
from ccnet.propagation import influence_maps

__version__ = "0.1.0"

__all__ = [
    "BACKBONES",
    "BackboneFeatures",
    "CCNet",
    "CCNetOutput",
    "CategoryConsistentLoss",
    "DilatedResNet",
    "OhemCrossEntropy",
    "build_model",
    "load_backbone_weights",
    "RCCA",
    "CrissCrossAttention",
    "CrissCrossAttention3D",
    "NonLocalBlock",
    "RecurrentCrissCrossAttention",
    "influence_maps",
]
