"""CCNet: a backbone at output stride 8 (``ccnet.backbones``), the RCCA head and an auxiliary FCN head.

Parameter names, chosen so that other checkpoints map onto ours with a key rename only:

- ``backbone.*``: the backbone's own names (torchvision's ResNet or MobileNetV2; see ``ccnet.backbones``).
- ``head.reduce.{conv,bn}`` -> ``head.attention.cca.{query_conv,key_conv,value_conv,gamma}`` ->
  ``head.project.{conv,bn}`` -> concat with the backbone output -> ``head.fuse.{conv,bn}`` -> dropout ->
  ``head.classifier``; ``head.ccl_projection`` (category consistent loss embeddings) when asked for.
  mmsegmentation's CCHead: ``convs.0``, ``cca``, ``convs.1``, ``conv_cat``, ``conv_seg`` (gamma stored as
  ``cca.gamma.scale``, shape ()). Official code: ``head.conva``, ``head.cca``, ``head.convb``,
  ``head.bottleneck.0/1`` and ``head.bottleneck.3`` (classifier).
- ``aux_head.reduce.{conv,bn}`` -> dropout -> ``aux_head.classifier``. mmsegmentation's FCNHead:
  ``convs.0``, ``conv_seg``; official code: ``dsn.0`` (a conv *with* bias: fold it into the BN's
  running mean), ``dsn.1``, ``dsn.3``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ccnet.attention import RecurrentCrissCrossAttention
from ccnet.backbones import (
    DEEP_STEM_INDEX,
    STEMS,
    BackboneFeatures,
    BackboneLoadReport,
    DilatedMobileNetV2,
    DilatedResNet,
    create_backbone,
    is_resnet,
    list_backbones,
    load_backbone_weights,
    read_state_dict,
)
from ccnet.backbones.common import check_choice as _check_choice

__all__ = [
    "BACKBONES",
    "DEEP_STEM_INDEX",
    "HEAD_ACTIVATIONS",
    "STEMS",
    "BackboneFeatures",
    "BackboneLoadReport",
    "CCNet",
    "CCNetOutput",
    "DilatedMobileNetV2",
    "DilatedResNet",
    "load_backbone_weights",
    "read_state_dict",
]

BACKBONES = list_backbones()
HEAD_ACTIVATIONS = ("relu", "leaky_relu")
_LEAKY_RELU_SLOPE = 0.01  # InPlace-ABN's default, the official code's head activation


class CCNetOutput(NamedTuple):
    logits: torch.Tensor  # (B, K, H, W) at input size
    aux_logits: torch.Tensor | None  # (B, K, H, W) in training mode, else None
    attentions: list[torch.Tensor] | None  # R tensors (B, h, w, h + w) when asked, else None
    embeddings: torch.Tensor | None  # (B, ccl_channels, h, w) in training mode with CCL, else None


# -------------------------------------------------------------------------------------------------
# Argument checks
# -------------------------------------------------------------------------------------------------


def _check_int(name: str, value, minimum: int, meaning: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}{meaning}, got {value!r}")
    return value


def _check_recurrence(recurrence) -> int:
    return _check_int("recurrence", recurrence, 0, " (0 = no attention)")


def _conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)


# -------------------------------------------------------------------------------------------------
# Heads
# -------------------------------------------------------------------------------------------------


def _activation(name: str) -> nn.Module:
    if name == "leaky_relu":
        return nn.LeakyReLU(_LEAKY_RELU_SLOPE, inplace=True)
    return nn.ReLU(inplace=True)


class ConvBNAct(nn.Sequential):
    """3x3 conv (no bias) -> BN -> activation, children named ``conv``, ``bn``, ``act``."""

    def __init__(self, in_channels: int, out_channels: int, activation: str):
        conv = _conv3x3(in_channels, out_channels)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        super().__init__(OrderedDict(conv=conv, bn=nn.BatchNorm2d(out_channels), act=_activation(activation)))


def _classifier(in_channels: int, num_classes: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, num_classes, 1)
    # Small initial logits, as mmsegmentation initialises its segmentation convs.
    nn.init.normal_(conv.weight, std=0.01)
    nn.init.zeros_(conv.bias)
    return conv


class RCCAHead(nn.Module):
    """reduce -> RCCA(R) -> project -> concat with the input -> fuse -> dropout -> classifier.

    Built with ``recurrence=0`` it has no attention module at all (the ablation baseline).
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        num_classes: int,
        recurrence: int,
        qk_channels: int | None,
        ccl_channels: int,
        dropout: float,
        activation: str,
    ):
        super().__init__()
        self.recurrence = recurrence
        self.reduce = ConvBNAct(in_channels, channels, activation)
        self.attention = RecurrentCrissCrossAttention(channels, recurrence, qk_channels) if recurrence > 0 else None
        self.project = ConvBNAct(channels, channels, activation)
        self.fuse = ConvBNAct(in_channels + channels, channels, activation)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = _classifier(channels, num_classes)
        self.ccl_projection = nn.Conv2d(channels, ccl_channels, 1) if ccl_channels > 0 else None

    def loop_count(self, recurrence: int | None) -> int:
        """The loop count to run: the built one by default; a baseline can only run 0 loops."""
        if recurrence is None:
            return self.recurrence
        loops = _check_recurrence(recurrence)
        if loops > 0 and self.attention is None:
            raise ValueError(
                f"recurrence={loops} asked of a model built with recurrence=0, which has no attention "
                "module: expected recurrence 0 or None"
            )
        return loops

    def forward(
        self, x: torch.Tensor, recurrence: int | None, return_attention: bool, with_embeddings: bool
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor | None]:
        logits, _, attentions, embeddings = self.run(x, recurrence, return_attention, with_embeddings)
        return logits, attentions, embeddings

    def run(
        self, x: torch.Tensor, recurrence: int | None, return_attention: bool, with_embeddings: bool
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], torch.Tensor | None]:
        """(logits, fused features, attentions, embeddings): ``forward`` plus the features a decoder reads."""
        loops = self.loop_count(recurrence)
        reduced = self.reduce(x)  # (B, C, h, w)
        attended, attentions = reduced, []
        if loops > 0 and return_attention:
            attended, attentions = self.attention(reduced, loops, return_attention=True)  # (B, C, h, w)
        elif loops > 0:
            attended = self.attention(reduced, loops)  # (B, C, h, w)
        projected = self.project(attended)  # (B, C, h, w)
        fused = self.fuse(torch.cat([x, projected], dim=1))  # (B, C, h, w); input first, as both references
        logits = self.classifier(self.dropout(fused))  # (B, K, h, w)
        embeddings = None
        if with_embeddings and self.ccl_projection is not None:
            embeddings = self.ccl_projection(attended)  # (B, E, h, w)
        return logits, fused, attentions, embeddings


class SkipDecoder(nn.Module):
    """Refines the head's stride-8 logits at stride 4 from the backbone's stride-4 features (not in the paper).

    Thin classes (a CamVid pole is 2-6 pixels wide at 360x480) fill less than one stride-8 cell, and
    bilinear upsampling of stride-8 logits cannot draw them: DeepLabv3+'s fix, a skip from an early layer.
    Output = upsampled head logits + a correction from [upsampled head features, reduced low features];
    the correction's classifier starts at zero, so an untrained decoder passes the head's logits on (through
    one more bilinear step).
    The attention is untouched: it still runs on the stride-8 grid the app shows.
    """

    LOW_REDUCED = 32

    def __init__(self, low_channels: int, head_channels: int, channels: int, num_classes: int, activation: str):
        super().__init__()
        self.reduce_low = nn.Sequential(
            OrderedDict(
                conv=nn.Conv2d(low_channels, self.LOW_REDUCED, 1, bias=False),
                bn=nn.BatchNorm2d(self.LOW_REDUCED),
                act=_activation(activation),
            )
        )
        self.fuse = ConvBNAct(head_channels + self.LOW_REDUCED, channels, activation)
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        nn.init.zeros_(self.classifier.weight)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, logits: torch.Tensor, fused: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        size = low.shape[-2:]
        up_logits = _upsample(logits, size)  # (B, K, 2h, 2w)
        up_fused = _upsample(fused, size)  # (B, C, 2h, 2w)
        x = self.fuse(torch.cat([up_fused, self.reduce_low(low)], dim=1))  # (B, D, 2h, 2w)
        return up_logits + self.classifier(x)  # (B, K, 2h, 2w)


class FCNAuxHead(nn.Module):
    """Auxiliary head on stage 3: reduce -> dropout -> classifier (a deep-supervision signal)."""

    def __init__(self, in_channels: int, channels: int, num_classes: int, dropout: float, activation: str):
        super().__init__()
        self.reduce = ConvBNAct(in_channels, channels, activation)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = _classifier(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.reduce(x)))  # (B, K, h, w)


# -------------------------------------------------------------------------------------------------
# CCNet
# -------------------------------------------------------------------------------------------------


def _check_images(images, channels: int) -> None:
    layout = f"(B, {channels}, H, W)"
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"expected images as a tensor {layout}, got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"expected a 4-D images tensor {layout}, got shape {tuple(images.shape)}")
    if images.shape[1] != channels:
        raise ValueError(f"expected {channels} image channels {layout}, got shape {tuple(images.shape)}")
    if images.shape[0] == 0 or images.shape[2] == 0 or images.shape[3] == 0:
        raise ValueError(f"expected a non-empty batch and spatial size {layout}, got shape {tuple(images.shape)}")


def _check_out_size(out_size) -> tuple[int, int]:
    size = tuple(out_size) if isinstance(out_size, Sequence) else ()
    if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
        raise ValueError(f"expected out_size as two positive integers (H, W), got {out_size!r}")
    return size


def _upsample(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)  # (B, K, H, W)


class CCNet(nn.Module):
    """CCNet for semantic segmentation (Huang et al., TPAMI 2020).

    Args:
        num_classes: K, the number of output classes.
        backbone: one of ``BACKBONES`` (``ccnet.backbones.list_backbones()``).
        recurrence: R, the default number of RCCA loops; 0 builds the baseline, without attention.
        base_width: ResNet only: width of the first stage (None = 64, the standard ResNet; 32 halves it).
        head_channels: channels of the RCCA head (512 in the paper).
        aux_channels: channels of the auxiliary head; None = head_channels // 2 (mmsegmentation's
            256 for 512; the official code uses 512); 0 = no auxiliary head.
        ccl_channels: channels of the category-consistent-loss embedding (16 in the paper; 0 = off).
        dropout: Dropout2d rate before both classifiers.
        pretrained: path of a state dict for the backbone (see ``ccnet.backbones.load_backbone_weights``);
            the report lands in ``self.pretrained_report``.
        stem, stem_channels, ceil_mode, contract_dilation: ResNet only (None = the default given here).
        stem: "basic" (torchvision's 7x7 conv, the default) or "deep" (three 3x3 convs).
        stem_channels: stem output channels; None = base_width. 64 with the deep stem is
            mmsegmentation's ResNetV1c (convs 32, 32, 64), 128 the official code's (64, 64, 128).
        ceil_mode: ceil mode of the stem's max pool (True in the official code).
        contract_dilation: see ``DilatedResNet`` (False in the official code).
        head_activation: "relu" or "leaky_relu" (slope 0.01, the official code's InPlace-ABN).
        qk_channels: query/key channels of the attention; None = head_channels // 8.
        decoder_channels: channels of the stride-4 skip decoder (``SkipDecoder``, not in the paper);
            0 = none, the paper's model.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet101",
        recurrence: int = 2,
        base_width: int | None = None,
        head_channels: int = 512,
        aux_channels: int | None = None,
        ccl_channels: int = 0,
        dropout: float = 0.1,
        pretrained: str | Path | None = None,
        stem: str | None = None,
        stem_channels: int | None = None,
        ceil_mode: bool | None = None,
        contract_dilation: bool | None = None,
        head_activation: str = "relu",
        qk_channels: int | None = None,
        decoder_channels: int = 0,
    ):
        super().__init__()
        _check_int("num_classes", num_classes, 1)
        _check_choice("backbone", backbone, BACKBONES)
        _check_recurrence(recurrence)
        backbone_kwargs = _backbone_arguments(backbone, base_width, stem, stem_channels, ceil_mode, contract_dilation)
        _check_int("head_channels", head_channels, 1)
        aux_channels = max(1, head_channels // 2) if aux_channels is None else aux_channels
        _check_int("aux_channels", aux_channels, 0, " (0 = no auxiliary head)")
        _check_int("ccl_channels", ccl_channels, 0, " (0 = no CCL embedding)")
        if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
            raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
        _check_choice("head_activation", head_activation, HEAD_ACTIVATIONS)
        if qk_channels is not None:
            _check_int("qk_channels", qk_channels, 1)
        _check_int("decoder_channels", decoder_channels, 0, " (0 = no skip decoder)")

        # Resolved values, so that a rebuilt model does not depend on today's defaults. The ResNet-only
        # arguments stay None for other backbones.
        self.config = {
            "num_classes": num_classes,
            "backbone": backbone,
            "recurrence": recurrence,
            "base_width": backbone_kwargs.get("base_width"),
            "head_channels": head_channels,
            "aux_channels": aux_channels,
            "ccl_channels": ccl_channels,
            "dropout": float(dropout),
            "stem": backbone_kwargs.get("stem"),
            "stem_channels": backbone_kwargs.get("stem_channels"),
            "ceil_mode": backbone_kwargs.get("ceil_mode"),
            "contract_dilation": backbone_kwargs.get("contract_dilation"),
            "head_activation": head_activation,
            "qk_channels": qk_channels,
            "decoder_channels": decoder_channels,
        }
        self.num_classes = num_classes
        self.backbone = create_backbone(backbone, **backbone_kwargs)
        aux_in, final_in = self.backbone.feature_channels
        self.head = RCCAHead(
            final_in, head_channels, num_classes, recurrence, qk_channels, ccl_channels, dropout, head_activation
        )
        self.aux_head = None
        if aux_channels > 0:
            self.aux_head = FCNAuxHead(aux_in, aux_channels, num_classes, dropout, head_activation)
        self.decoder = None
        if decoder_channels > 0:
            self.decoder = SkipDecoder(
                self.backbone.low_channels, head_channels, decoder_channels, num_classes, head_activation
            )
        self.pretrained_report = None if pretrained is None else load_backbone_weights(self.backbone, pretrained)

    @property
    def attention(self) -> RecurrentCrissCrossAttention | None:
        """The RCCA module (None for a baseline built with recurrence=0)."""
        return self.head.attention

    @property
    def recurrence(self) -> int:
        """The loop count the model was built (and presumably trained) with."""
        return self.head.recurrence

    def encode(self, images: torch.Tensor) -> BackboneFeatures:
        """Run the backbone once; ``decode`` can then run the head for several loop counts."""
        _check_images(images, 3)
        return self.backbone(images)

    def decode(
        self,
        features: BackboneFeatures,
        out_size,
        recurrence: int | None = None,
        return_attention: bool = False,
    ) -> CCNetOutput:
        """Heads on backbone features; logits upsampled to ``out_size`` (H, W)."""
        size = _check_out_size(out_size)
        self._check_features(features)
        logits, fused, attentions, embeddings = self.head.run(
            features.final, recurrence, return_attention, with_embeddings=self.training
        )  # logits (B, K, h, w)
        if self.decoder is not None:
            logits = self.decoder(logits, fused, features.low)  # (B, K, 2h, 2w)
        aux_logits = None
        if self.training and self.aux_head is not None:
            aux_logits = _upsample(self.aux_head(features.aux), size)  # (B, K, H, W)
        return CCNetOutput(
            logits=_upsample(logits, size),  # (B, K, H, W)
            aux_logits=aux_logits,
            attentions=attentions if return_attention else None,
            embeddings=embeddings,
        )

    def forward(
        self, images: torch.Tensor, recurrence: int | None = None, return_attention: bool = False
    ) -> CCNetOutput:
        features = self.encode(images)
        return self.decode(features, images.shape[-2:], recurrence, return_attention)

    @torch.no_grad()
    def attention_branch_weight(self, features: BackboneFeatures, recurrence: int | None = None) -> torch.Tensor:
        """How much each loop's attention moves each cell: |gamma * aggregated| / |residual input|.

        Per loop r and cell, the norm over channels of what the attention adds, over the norm of the
        features it adds to. Near 0: the attention barely reaches the output (e.g. gamma ~ 0).
        Returns (B, R, h, w); (B, 0, h, w) for a model without attention or R = 0.
        """
        self._check_features(features)
        loops = self.head.loop_count(recurrence)
        state = self.head.reduce(features.final)  # (B, C, h, w)
        weights = []
        for _ in range(loops):
            updated = self.attention(state, 1)  # (B, C, h, w): state + gamma * aggregated
            added = (updated - state).norm(dim=1)  # (B, h, w)
            weights.append(added / state.norm(dim=1).clamp(min=1e-12))
            state = updated
        b, _, h, w = state.shape
        return torch.stack(weights, dim=1) if weights else state.new_zeros(b, 0, h, w)  # (B, R, h, w)

    def _check_features(self, features: BackboneFeatures) -> None:
        expected = self.backbone.feature_channels
        if not isinstance(features, BackboneFeatures):
            raise ValueError("expected features as BackboneFeatures(aux, final, low), from encode()")
        checked = [("aux", features.aux, expected[0]), ("final", features.final, expected[1])]
        if self.decoder is not None:
            checked.append(("low", features.low, self.backbone.low_channels))
        for name, tensor, channels in checked:
            if not isinstance(tensor, torch.Tensor) or tensor.dim() != 4 or tensor.shape[1] != channels:
                shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
                raise ValueError(f"expected features.{name} of shape (B, {channels}, h, w), got {shape}")


def _backbone_arguments(backbone: str, base_width, stem, stem_channels, ceil_mode, contract_dilation) -> dict:
    """The family arguments of ``backbone``, defaults resolved; ResNet-only ones refused elsewhere."""
    given = {
        "base_width": base_width,
        "stem": stem,
        "stem_channels": stem_channels,
        "ceil_mode": ceil_mode,
        "contract_dilation": contract_dilation,
    }
    if not is_resnet(backbone):
        extra = sorted(name for name, value in given.items() if value is not None)
        if extra:
            raise ValueError(f"{', '.join(extra)} apply to ResNet backbones only, not {backbone!r}: leave them null")
        return {}
    base_width = 64 if base_width is None else _check_int("base_width", base_width, 1)
    stem = _check_choice("stem", "basic" if stem is None else stem, STEMS)
    stem_channels = base_width if stem_channels is None else stem_channels
    _check_int("stem_channels", stem_channels, 2 if stem == "deep" else 1)
    return {
        "base_width": base_width,
        "stem": stem,
        "stem_channels": stem_channels,
        "ceil_mode": bool(ceil_mode) if ceil_mode is not None else False,
        "contract_dilation": bool(contract_dilation) if contract_dilation is not None else True,
    }
