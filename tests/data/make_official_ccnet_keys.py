"""Write official_ccnet_keys.json: every state-dict key and shape of the official CCNet Cityscapes model.

Derived by reading speedinghzl/CCNet's source (networks/ccnet.py, libs/bn.py and cc_attention/functions.py
of the master branch, whose released R=1/R=2 Cityscapes models this describes; the pytorch-1.1 branch
builds the same layout). This script spells that layout out module by module, in registration order,
independently of ccnet.convert, so that the converter is tested against the source rather than itself:

    python tests/data/make_official_ccnet_keys.py   # from the repository root
"""

import json
from pathlib import Path

NUM_CLASSES = 19  # Cityscapes
STAGE_BLOCKS = (3, 4, 23, 3)  # Seg_Model / Res_Deeplab: ResNet(Bottleneck, [3, 4, 23, 3])
STAGE_PLANES = (64, 128, 256, 512)
STAGE_STRIDES = (1, 2, 1, 1)  # layer3/layer4 dilate (2, 4) instead of striding
EXPANSION = 4  # Bottleneck.expansion


def conv(keys: dict, name: str, out_channels: int, in_channels: int, kernel: int, bias: bool = False) -> None:
    keys[f"{name}.weight"] = [out_channels, in_channels, kernel, kernel]
    if bias:  # nn.Conv2d's default is bias=True; the source passes bias=False everywhere but dsn.0 and classifiers
        keys[f"{name}.bias"] = [out_channels]


def abn(keys: dict, name: str, channels: int) -> None:
    """InPlaceABN / InPlaceABNSync (libs/bn.py): weight, bias, running_mean, running_var; no batch counter."""
    for field in ("weight", "bias", "running_mean", "running_var"):
        keys[f"{name}.{field}"] = [channels]


def official_keys() -> dict:
    keys: dict[str, list[int]] = {}
    # ResNet.__init__: conv1 = conv3x3(3, 64, stride=2), bn1; conv2 = conv3x3(64, 64), bn2; conv3 (64 -> 128), bn3
    conv(keys, "conv1", 64, 3, 3)
    abn(keys, "bn1", 64)
    conv(keys, "conv2", 64, 64, 3)
    abn(keys, "bn2", 64)
    conv(keys, "conv3", 128, 64, 3)
    abn(keys, "bn3", 128)
    inplanes = 128  # self.inplanes = 128
    for stage, (blocks, planes, stride) in enumerate(zip(STAGE_BLOCKS, STAGE_PLANES, STAGE_STRIDES, strict=True)):
        for index in range(blocks):
            prefix = f"layer{stage + 1}.{index}"
            conv(keys, f"{prefix}.conv1", planes, inplanes, 1)
            abn(keys, f"{prefix}.bn1", planes)
            conv(keys, f"{prefix}.conv2", planes, planes, 3)
            abn(keys, f"{prefix}.bn2", planes)
            conv(keys, f"{prefix}.conv3", planes * EXPANSION, planes, 1)
            abn(keys, f"{prefix}.bn3", planes * EXPANSION)
            if index == 0 and (stride != 1 or inplanes != planes * EXPANSION):  # _make_layer's downsample
                conv(keys, f"{prefix}.downsample.0", planes * EXPANSION, inplanes, 1)
                abn(keys, f"{prefix}.downsample.1", planes * EXPANSION)
            inplanes = planes * EXPANSION
    # self.head = RCCAModule(2048, 512, num_classes): inter_channels = in_channels // 4
    in_channels, out_channels = 2048, 512
    inter = in_channels // 4
    conv(keys, "head.conva.0", inter, in_channels, 3)
    abn(keys, "head.conva.1", inter)
    # CrissCrossAttention(inter): its own parameter gamma (zeros(1)) comes before its submodules' keys
    keys["head.cca.gamma"] = [1]
    conv(keys, "head.cca.query_conv", inter // 8, inter, 1, bias=True)
    conv(keys, "head.cca.key_conv", inter // 8, inter, 1, bias=True)
    conv(keys, "head.cca.value_conv", inter, inter, 1, bias=True)
    conv(keys, "head.convb.0", inter, inter, 3)
    abn(keys, "head.convb.1", inter)
    conv(keys, "head.bottleneck.0", out_channels, in_channels + inter, 3)
    abn(keys, "head.bottleneck.1", out_channels)  # bottleneck.2 is Dropout2d(0.1): no parameters
    conv(keys, "head.bottleneck.3", NUM_CLASSES, out_channels, 1, bias=True)
    # self.dsn: Conv2d(1024, 512, 3, padding=1) with the default bias, InPlaceABNSync(512), Dropout2d, Conv2d
    conv(keys, "dsn.0", 512, 1024, 3, bias=True)
    abn(keys, "dsn.1", 512)
    conv(keys, "dsn.3", NUM_CLASSES, 512, 1, bias=True)
    return keys


if __name__ == "__main__":
    target = Path(__file__).with_name("official_ccnet_keys.json")
    target.write_text(json.dumps(official_keys(), indent=1) + "\n")
    print(f"wrote {target}")
