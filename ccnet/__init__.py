"""Criss-cross attention (CCNet) library: attention modules, the segmentation model, losses,
influence maps, and the checkpoint format the app serves."""

from ccnet import classes
from ccnet.attention import (
    RCCA,
    CrissCrossAttention,
    CrissCrossAttention3D,
    NonLocalBlock,
    RecurrentCrissCrossAttention,
)
from ccnet.checkpoint import CheckpointError, load_checkpoint, read_index, save_checkpoint, write_index
from ccnet.factory import build_model
from ccnet.inference import predict
from ccnet.losses import CategoryConsistentLoss, OhemCrossEntropy
from ccnet.model import (
    BACKBONES,
    BackboneFeatures,
    CCNet,
    CCNetOutput,
    DilatedResNet,
    load_backbone_weights,
)
from ccnet.preprocess import IMAGENET_MEAN, IMAGENET_STD, to_tensor
from ccnet.propagation import influence_maps
from ccnet.propagation_3d import influence_maps_3d, reverse_influence_maps_3d

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "classes",
    "load_checkpoint",
    "predict",
    "read_index",
    "save_checkpoint",
    "to_tensor",
    "write_index",
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
    "influence_maps_3d",
    "reverse_influence_maps_3d",
]
