"""CCNet: a dilated ResNet backbone (output stride 8), the RCCA head and an auxiliary FCN head.

Parameter names, chosen so that other checkpoints map onto ours with a key rename only:

- ``backbone.*`` follows torchvision's ResNet (``conv1``, ``bn1``, ``layer1`` .. ``layer4``, blocks with
  ``conv1/bn1/conv2/bn2(/conv3/bn3)`` and ``downsample.0/1``; no ``fc``), so a torchvision state dict loads
  with ``pretrained=PATH``. With ``stem="deep"`` the stem is ``backbone.stem``, a Sequential laid out as
  mmsegmentation's ResNetV1c (conv, BN, ReLU three times: convs at 0, 3, 6, BNs at 1, 4, 7), so
  mmsegmentation's ImageNet ``resnet*_v1c`` weights load as they are; the official CCNet code names the
  same layers ``conv1/bn1``, ``conv2/bn2``, ``conv3/bn3`` (``DEEP_STEM_INDEX`` gives their positions).
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

import inspect
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ccnet.attention import RecurrentCrissCrossAttention

__all__ = [
    "BACKBONES",
    "DEEP_STEM_INDEX",
    "HEAD_ACTIVATIONS",
    "STEMS",
    "BackboneFeatures",
    "BackboneLoadReport",
    "CCNet",
    "CCNetOutput",
    "DilatedResNet",
    "build_model",
    "load_backbone_weights",
    "read_state_dict",
]

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")
STEMS = ("basic", "deep")
HEAD_ACTIVATIONS = ("relu", "leaky_relu")

# Position inside ``backbone.stem`` of each layer of the deep stem, under the official CCNet code's names.
DEEP_STEM_INDEX = {"conv1": 0, "bn1": 1, "conv2": 3, "bn2": 4, "conv3": 6, "bn3": 7}

# Output stride 8: stages 3 and 4 keep the resolution of stage 2 and dilate instead.
_STAGE_STRIDES = (1, 2, 1, 1)
_STAGE_DILATIONS = (1, 1, 2, 4)
_LEAKY_RELU_SLOPE = 0.01  # InPlace-ABN's default, the official code's head activation


class BackboneFeatures(NamedTuple):
    """Backbone outputs, both at 1/8 of the input size."""

    layer3: torch.Tensor  # (B, C3, h, w): input of the auxiliary head
    layer4: torch.Tensor  # (B, C4, h, w): input of the RCCA head


class CCNetOutput(NamedTuple):
    logits: torch.Tensor  # (B, K, H, W) at input size
    aux_logits: torch.Tensor | None  # (B, K, H, W) in training mode, else None
    attentions: list[torch.Tensor] | None  # R tensors (B, h, w, h + w) when asked, else None
    embeddings: torch.Tensor | None  # (B, ccl_channels, h, w) in training mode with CCL, else None


class BackboneLoadReport(NamedTuple):
    missing: list[str]  # backbone keys the file did not provide (left at their initial values)
    unexpected: list[str]  # file keys the backbone has no place for (``fc.*`` excluded)


# -------------------------------------------------------------------------------------------------
# Argument checks
# -------------------------------------------------------------------------------------------------


def _check_int(name: str, value, minimum: int, meaning: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}{meaning}, got {value!r}")
    return value


def _check_choice(name: str, value, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}: expected one of {', '.join(choices)}")
    return value


def _check_recurrence(recurrence) -> int:
    return _check_int("recurrence", recurrence, 0, " (0 = no attention)")


# -------------------------------------------------------------------------------------------------
# Dilated ResNet backbone
# -------------------------------------------------------------------------------------------------


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(
        in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation, bias=False
    )


def _conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """ResNet-18/34 block. Only ``conv1`` is dilated, as in mmsegmentation (torchvision has no dilated
    BasicBlock), so that mmsegmentation's ResNet-18 CCNets load and give the same outputs."""

    expansion = 1

    def __init__(
        self, in_channels: int, planes: int, stride: int, dilation: int, downsample: nn.Module | None
    ):
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

    def __init__(
        self, in_channels: int, planes: int, stride: int, dilation: int, downsample: nn.Module | None
    ):
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
        block, stage_sizes = _BLOCKS_PER_STAGE[_check_choice("backbone", depth, BACKBONES)]
        stem_channels = base_width if stem_channels is None else stem_channels
        self.stem_kind = _check_choice("stem", stem, STEMS)
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
        self.layer3_channels = in_channels // 2
        self.layer4_channels = in_channels
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
        x = self.layer2(self.layer1(x))  # (B, C2, H/8, W/8)
        stage3 = self.layer3(x)  # (B, C3, h, w)
        stage4 = self.layer4(stage3)  # (B, C4, h, w)
        return BackboneFeatures(stage3, stage4)


# -------------------------------------------------------------------------------------------------
# Loading torchvision-named backbone weights
# -------------------------------------------------------------------------------------------------


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file, or of a ``.pth`` file through ``torch.load(weights_only=True)``
    (never plain unpickling). A ``{"state_dict": ...}`` wrapper is unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ValueError(f"{path} does not hold a state dict (a mapping from names to tensors)")
    return dict(loaded)


def load_backbone_weights(
    backbone: nn.Module, weights: str | Path | Mapping[str, torch.Tensor]
) -> BackboneLoadReport:
    """Load torchvision-named ResNet weights (a file or a state dict) into ``backbone``.

    ``fc.*`` is ignored. Missing and unexpected keys are returned and warned about; a shape mismatch
    raises ``ValueError`` naming the keys, before anything is loaded.
    """
    state = read_state_dict(weights) if isinstance(weights, str | Path) else dict(weights)
    state = {key: value for key, value in state.items() if not key.startswith("fc.")}
    own = backbone.state_dict()
    mismatched = [
        f"{key}: file {tuple(value.shape)}, model {tuple(own[key].shape)}"
        for key, value in state.items()
        if key in own and own[key].shape != value.shape
    ]
    if mismatched:
        raise ValueError("pretrained backbone weights do not fit this backbone: " + "; ".join(mismatched))
    result = backbone.load_state_dict(state, strict=False)
    report = BackboneLoadReport(sorted(result.missing_keys), sorted(result.unexpected_keys))
    if report.missing or report.unexpected:
        warnings.warn(
            f"pretrained backbone weights: missing keys {report.missing}, "
            f"unexpected keys {report.unexpected}",
            stacklevel=2,
        )
    return report


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
        self.attention = (
            RecurrentCrissCrossAttention(channels, recurrence, qk_channels) if recurrence > 0 else None
        )
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
        return logits, attentions, embeddings


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
        raise ValueError(
            f"expected a non-empty batch and spatial size {layout}, got shape {tuple(images.shape)}"
        )


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
        backbone: one of ``BACKBONES``.
        recurrence: R, the default number of RCCA loops; 0 builds the baseline, without attention.
        base_width: width of the first stage (64 is the standard ResNet; 32 halves every stage).
        head_channels: channels of the RCCA head (512 in the paper).
        aux_channels: channels of the auxiliary head; None = head_channels // 2 (mmsegmentation's
            256 for 512; the official code uses 512); 0 = no auxiliary head.
        ccl_channels: channels of the category-consistent-loss embedding (16 in the paper; 0 = off).
        dropout: Dropout2d rate before both classifiers.
        pretrained: path of a torchvision-named ResNet state dict for the backbone (see
            ``load_backbone_weights``); the report lands in ``self.pretrained_report``.
        stem: "basic" (torchvision's 7x7 conv) or "deep" (three 3x3 convs).
        stem_channels: stem output channels; None = base_width. 64 with the deep stem is
            mmsegmentation's ResNetV1c (convs 32, 32, 64), 128 the official code's (64, 64, 128).
        ceil_mode: ceil mode of the stem's max pool (True in the official code).
        contract_dilation: see ``DilatedResNet`` (False in the official code).
        head_activation: "relu" or "leaky_relu" (slope 0.01, the official code's InPlace-ABN).
        qk_channels: query/key channels of the attention; None = head_channels // 8.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet101",
        recurrence: int = 2,
        base_width: int = 64,
        head_channels: int = 512,
        aux_channels: int | None = None,
        ccl_channels: int = 0,
        dropout: float = 0.1,
        pretrained: str | Path | None = None,
        stem: str = "basic",
        stem_channels: int | None = None,
        ceil_mode: bool = False,
        contract_dilation: bool = True,
        head_activation: str = "relu",
        qk_channels: int | None = None,
    ):
        super().__init__()
        _check_int("num_classes", num_classes, 1)
        _check_choice("backbone", backbone, BACKBONES)
        _check_recurrence(recurrence)
        _check_int("base_width", base_width, 1)
        _check_int("head_channels", head_channels, 1)
        aux_channels = max(1, head_channels // 2) if aux_channels is None else aux_channels
        _check_int("aux_channels", aux_channels, 0, " (0 = no auxiliary head)")
        _check_int("ccl_channels", ccl_channels, 0, " (0 = no CCL embedding)")
        if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
            raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
        _check_choice("stem", stem, STEMS)
        stem_channels = base_width if stem_channels is None else stem_channels
        _check_int("stem_channels", stem_channels, 2 if stem == "deep" else 1)
        _check_choice("head_activation", head_activation, HEAD_ACTIVATIONS)
        if qk_channels is not None:
            _check_int("qk_channels", qk_channels, 1)

        # Resolved values, so that a rebuilt model does not depend on today's defaults.
        self.config = {
            "num_classes": num_classes,
            "backbone": backbone,
            "recurrence": recurrence,
            "base_width": base_width,
            "head_channels": head_channels,
            "aux_channels": aux_channels,
            "ccl_channels": ccl_channels,
            "dropout": float(dropout),
            "stem": stem,
            "stem_channels": stem_channels,
            "ceil_mode": bool(ceil_mode),
            "contract_dilation": bool(contract_dilation),
            "head_activation": head_activation,
            "qk_channels": qk_channels,
        }
        self.num_classes = num_classes
        self.backbone = DilatedResNet(backbone, base_width, stem, stem_channels, ceil_mode, contract_dilation)
        self.head = RCCAHead(
            self.backbone.layer4_channels,
            head_channels,
            num_classes,
            recurrence,
            qk_channels,
            ccl_channels,
            dropout,
            head_activation,
        )
        self.aux_head = None
        if aux_channels > 0:
            self.aux_head = FCNAuxHead(
                self.backbone.layer3_channels, aux_channels, num_classes, dropout, head_activation
            )
        self.pretrained_report = (
            None if pretrained is None else load_backbone_weights(self.backbone, pretrained)
        )

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
        logits, attentions, embeddings = self.head(
            features.layer4, recurrence, return_attention, with_embeddings=self.training
        )
        aux_logits = None
        if self.training and self.aux_head is not None:
            aux_logits = _upsample(self.aux_head(features.layer3), size)  # (B, K, H, W)
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

    def _check_features(self, features: BackboneFeatures) -> None:
        expected = (self.backbone.layer3_channels, self.backbone.layer4_channels)
        if not (isinstance(features, tuple) and len(features) == 2):
            raise ValueError("expected features as BackboneFeatures(layer3, layer4), from encode()")
        for name, tensor, channels in zip(BackboneFeatures._fields, features, expected, strict=True):
            if not isinstance(tensor, torch.Tensor) or tensor.dim() != 4 or tensor.shape[1] != channels:
                shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
                raise ValueError(f"expected features.{name} of shape (B, {channels}, h, w), got {shape}")


def build_model(config: Mapping) -> CCNet:
    """Rebuild a CCNet from ``model.config`` (e.g. a checkpoint sidecar's ``model_config``)."""
    if not isinstance(config, Mapping):
        raise ValueError(f"expected a model config mapping, got {type(config).__name__}")
    known = set(inspect.signature(CCNet).parameters)
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"unknown model config keys {unknown}: expected some of {sorted(known)}")
    if "num_classes" not in config:
        raise ValueError("model config lacks num_classes")
    return CCNet(**config)
