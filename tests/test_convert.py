"""ccnet.convert: published mmsegmentation and official CCNet checkpoints -> our safetensors + sidecar.

- mmsegmentation's own outputs reproduced through the converter's files (test vectors in ../shared, read
  through CCNET_MMSEG_TESTDATA; skipped with the reason when it is not set);
- every key of every published key list consumed (meta tensors: names and shapes, no memory);
- the official layout: an independent re-implementation of its forward pass (InPlace-ABN, BGR input,
  dsn bias, ceil-mode pool, undivided dilation) reproduced by the converted model; its full-size key list
  (tests/data) converts and runs;
- strictness and the command line's messages;
- the output: written through ccnet.checkpoint (validated sidecar, the folder's index.json), class names and
  palettes from ccnet.classes; and the app listing converted models from extra folders, bad folders named.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from app.models import load_model, read_catalogue
from app.settings import Settings
from ccnet.checkpoint import FORMAT_VERSION, load_checkpoint, read_index
from ccnet.classes import ADE20K, CITYSCAPES, PASCAL_VOC
from ccnet.convert import (
    CONVERTIBLE_DATASETS,
    MMSEG_MEAN,
    MMSEG_STD,
    ConversionError,
    build_converted_model,
    convert_state_dict,
    fold_conv_bias_into_bn,
    main,
)
from ccnet.factory import build_model
from ccnet.model import CCNet
from tests.test_app_helpers import make_checkpoint_folder

MMSEG_TESTDATA = os.environ.get("CCNET_MMSEG_TESTDATA", "")
needs_mmseg_testdata = pytest.mark.skipif(
    not (MMSEG_TESTDATA and Path(MMSEG_TESTDATA).is_dir()),
    reason="CCNET_MMSEG_TESTDATA does not point at mmsegmentation's test vectors (../shared/testdata/mmseg)",
)
OFFICIAL_KEYS = Path(__file__).parent / "data" / "official_ccnet_keys.json"
CITYSCAPES_CLASSES = 19
BGR_MEAN = (104.00698793, 116.66876762, 122.67891434)  # the official code's IMG_MEAN


def load_converted(weights: Path) -> tuple[CCNet, dict]:
    """A converted checkpoint read back the way a consumer would: sidecar -> model, then strict weights."""
    sidecar = json.loads(weights.with_suffix(".json").read_text())
    model = build_model(sidecar["model_config"]).eval()
    model.load_state_dict(load_file(str(weights)), strict=True)
    return model, sidecar


def head_logits(model: CCNet, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both heads' logits at feature resolution (before the final resize), in eval mode."""
    with torch.no_grad():
        features = model.encode(images)
        logits, _, _ = model.head(features.final, None, False, False)
        return logits, model.aux_head(features.aux)  # (B, K, h, w) each


def meta_state(keys: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """A state dict with these names and shapes and no storage."""
    return {
        key: torch.empty(shape, device="meta", dtype=torch.long if key.endswith("num_batches_tracked") else None)
        for key, shape in keys.items()
    }


def run_cli(*args) -> tuple[int, str, str]:
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(arg) for arg in args])
    return code, out.getvalue(), err.getvalue()


# -------------------------------------------------------------------------------------------------
# mmsegmentation: its own outputs, through the converter's files
# -------------------------------------------------------------------------------------------------


@needs_mmseg_testdata
@pytest.mark.parametrize("name", ["r18", "r50"])
def test_converted_mmseg_models_reproduce_mmsegmentations_logits(tmp_path, name):
    source = Path(MMSEG_TESTDATA) / f"ccnet_{name}_small.pth"
    code, out, err = run_cli("mmseg", source, tmp_path / f"ccnet_{name}", "--dataset", "cityscapes")
    assert code == 0, err
    model, sidecar = load_converted(tmp_path / f"ccnet_{name}.safetensors")
    io = load_file(str(Path(MMSEG_TESTDATA) / f"ccnet_{name}_small_io.safetensors"))
    logits, aux_logits = head_logits(model, io["input"])
    torch.testing.assert_close(logits, io["decode_logits"], atol=1e-4, rtol=0)
    torch.testing.assert_close(aux_logits, io["aux_logits"], atol=1e-4, rtol=0)

    depth, base, stem, _, _, channels, classes = torch.load(source, weights_only=True)["meta"]["arch"]
    config = sidecar["model_config"]
    assert (config["backbone"], config["base_width"], config["stem_channels"]) == (f"resnet{depth}", base, stem)
    assert (config["head_channels"], config["num_classes"], config["stem"]) == (channels, classes, "deep")
    assert sidecar["recurrence"] == config["recurrence"] == 2
    assert sidecar["dataset"] == "cityscapes" and len(sidecar["class_names"]) == len(sidecar["palette"]) == 19
    assert sidecar["class_names"][:3] == ["road", "sidewalk", "building"]
    assert (sidecar["mean"], sidecar["std"]) == (list(MMSEG_MEAN), list(MMSEG_STD))
    assert "gamma.scale" in out


@needs_mmseg_testdata
@pytest.mark.parametrize(
    ("name", "backbone", "classes"),
    [
        ("ccnet_r50-d8_cityscapes_keys.json", "resnet50", 19),
        ("ccnet_r101-d8_cityscapes_keys.json", "resnet101", 19),
        ("ccnet_r101-d8_ade20k_keys.json", "resnet101", 150),
    ],
)
def test_every_key_of_the_published_mmseg_models_is_consumed(name, backbone, classes):
    keys = json.loads((Path(MMSEG_TESTDATA) / name).read_text())
    conversion = convert_state_dict("mmseg", meta_state(keys))  # raises on any key missing or left over
    config = conversion.model_config
    assert (config["backbone"], config["num_classes"]) == (backbone, classes)
    assert (config["base_width"], config["stem_channels"], config["head_channels"]) == (64, 64, 512)
    assert config["aux_channels"] == 256 and config["contract_dilation"] and not config["ceil_mode"]
    assert len(conversion.state_dict) == len(keys)  # one to one: nothing dropped, nothing invented
    assert conversion.state_dict["head.attention.cca.gamma"].shape == (1,)


# -------------------------------------------------------------------------------------------------
# The official code's layout, re-implemented from its source (speedinghzl/CCNet networks/ccnet.py,
# libs/bn.py + libs/src/bn.cu, cc_attention/functions.py) with its parameter names.
# -------------------------------------------------------------------------------------------------


class ABN(nn.Module):
    """InPlace-ABN in eval mode: batch norm scaled by |weight| + eps (bn.cu), then the activation."""

    def __init__(self, channels: int, activation: str = "leaky_relu"):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))
        self.activation = activation

    def forward(self, x):
        scale = self.weight.abs() + 1e-5
        x = F.batch_norm(x, self.running_mean, self.running_var, scale, self.bias, False, 0.0, 1e-5)
        return F.leaky_relu(x, 0.01) if self.activation == "leaky_relu" else x


def backbone_norm(channels: int) -> ABN:
    return ABN(channels, activation="none")  # BatchNorm2d = partial(InPlaceABNSync, activation='none')


class OfficialBottleneck(nn.Module):
    def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = backbone_norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = backbone_norm(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = backbone_norm(planes * 4)
        self.downsample = downsample

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class OfficialCrissCrossAttention(nn.Module):
    """H + W - 1 positions per pixel (itself once), one softmax over them, gamma * out + x."""

    def __init__(self, channels):
        super().__init__()
        self.query_conv = nn.Conv2d(channels, channels // 8, 1)
        self.key_conv = nn.Conv2d(channels, channels // 8, 1)
        self.value_conv = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        q, k, v = self.query_conv(x), self.key_conv(x), self.value_conv(x)
        h = x.shape[2]
        column = torch.einsum("bcyx,bcix->byxi", q, k)  # (B, h, w, h)
        column = column.masked_fill(torch.eye(h, dtype=torch.bool)[:, None, :], float("-inf"))
        row = torch.einsum("bcyx,bcyj->byxj", q, k)  # (B, h, w, w)
        attention = torch.softmax(torch.cat([column, row], dim=-1), dim=-1)
        out = torch.einsum("byxi,bcix->bcyx", attention[..., :h], v)
        out = out + torch.einsum("byxj,bcyj->bcyx", attention[..., h:], v)
        return self.gamma * out + x


class OfficialRCCAModule(nn.Module):
    def __init__(self, in_channels, inter_channels, out_channels, num_classes):
        super().__init__()
        self.conva = nn.Sequential(
            nn.Conv2d(in_channels, inter_channels, 3, padding=1, bias=False), ABN(inter_channels)
        )
        self.cca = OfficialCrissCrossAttention(inter_channels)
        self.convb = nn.Sequential(
            nn.Conv2d(inter_channels, inter_channels, 3, padding=1, bias=False), ABN(inter_channels)
        )
        self.bottleneck = nn.Sequential(
            nn.Conv2d(in_channels + inter_channels, out_channels, 3, padding=1, bias=False),
            ABN(out_channels),
            nn.Dropout2d(0.1),
            nn.Conv2d(out_channels, num_classes, 1),
        )

    def forward(self, x, recurrence):
        out = self.conva(x)
        for _ in range(recurrence):
            out = self.cca(out)
        return self.bottleneck(torch.cat([x, self.convb(out)], 1))


class OfficialCCNet(nn.Module):
    """The official ResNet + RCCA + dsn; full size is (3, 4, 23, 3), base 64, stem 128, 512/512/512."""

    def __init__(self, blocks, base, stem, inter, out_channels, aux_channels, num_classes):
        super().__init__()
        self.conv1 = nn.Conv2d(3, stem // 2, 3, 2, 1, bias=False)
        self.bn1 = backbone_norm(stem // 2)
        self.conv2 = nn.Conv2d(stem // 2, stem // 2, 3, 1, 1, bias=False)
        self.bn2 = backbone_norm(stem // 2)
        self.conv3 = nn.Conv2d(stem // 2, stem, 3, 1, 1, bias=False)
        self.bn3 = backbone_norm(stem)
        self.maxpool = nn.MaxPool2d(3, 2, 1, ceil_mode=True)
        self.inplanes = stem
        for index, (count, stride, dilation) in enumerate(zip(blocks, (1, 2, 1, 1), (1, 1, 2, 4), strict=True)):
            self.add_module(f"layer{index + 1}", self._make_layer(base * 2**index, count, stride, dilation))
        self.head = OfficialRCCAModule(base * 32, inter, out_channels, num_classes)
        self.dsn = nn.Sequential(
            nn.Conv2d(base * 16, aux_channels, 3, padding=1),  # with bias, as in the source
            ABN(aux_channels),
            nn.Dropout2d(0.1),
            nn.Conv2d(aux_channels, num_classes, 1),
        )

    def _make_layer(self, planes, count, stride, dilation):
        downsample = None
        if stride != 1 or self.inplanes != planes * 4:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * 4, 1, stride, bias=False), backbone_norm(planes * 4)
            )
        layers = [OfficialBottleneck(self.inplanes, planes, stride, dilation, downsample)]  # every block dilated
        self.inplanes = planes * 4
        layers += [OfficialBottleneck(self.inplanes, planes, 1, dilation) for _ in range(count - 1)]
        return nn.Sequential(*layers)

    def forward(self, bgr_minus_mean, recurrence):
        x = F.relu(self.bn1(self.conv1(bgr_minus_mean)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = self.maxpool(F.relu(self.bn3(self.conv3(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        aux = self.dsn(x)
        return self.head(self.layer4(x), recurrence), aux


def small_official_model(seed=0) -> OfficialCCNet:
    """Small widths, 19 classes, statistics and scales that exercise every conversion step."""
    torch.manual_seed(seed)
    model = OfficialCCNet((3, 4, 6, 3), base=8, stem=16, inter=64, out_channels=64, aux_channels=32, num_classes=19)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, ABN):
                module.weight.uniform_(-1.5, 1.5)  # negative weights: InPlace-ABN uses |w| + eps
                module.bias.normal_(0, 0.1)
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
        model.dsn[0].bias.normal_(0, 0.5)
        model.head.cca.gamma.fill_(0.7)
    return model.eval()


def official_inputs(rgb: torch.Tensor, sidecar: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The same uint8 RGB image (B, H, W, 3) as the official code feeds it and as ours feeds it."""
    bgr = rgb.flip(-1).float() - torch.tensor(BGR_MEAN)  # cv2.imread order, IMG_MEAN subtracted
    ours = (rgb.float() - torch.tensor(sidecar["mean"])) / torch.tensor(sidecar["std"])
    return bgr.permute(0, 3, 1, 2), ours.permute(0, 3, 1, 2)  # (B, 3, H, W) each


def test_official_reference_has_exactly_the_key_list_in_tests_data():
    keys = json.loads(OFFICIAL_KEYS.read_text())
    with torch.device("meta"):
        reference = OfficialCCNet(
            (3, 4, 23, 3), base=64, stem=128, inter=512, out_channels=512, aux_channels=512, num_classes=19
        )
    assert {key: list(value.shape) for key, value in reference.state_dict().items()} == keys
    assert list(reference.state_dict()) == list(keys)  # registration order too


@pytest.mark.parametrize("recurrence", [1, 2])
def test_converted_official_model_reproduces_the_official_forward_pass(tmp_path, recurrence):
    reference = small_official_model()
    source = tmp_path / "CS_scenes_60000.pth"
    torch.save(reference.state_dict(), source)
    code, out, err = run_cli("official", source, tmp_path / "official", "--recurrence", recurrence)
    assert code == 0, err
    model, sidecar = load_converted(tmp_path / "official.safetensors")
    config = sidecar["model_config"]
    assert (config["ceil_mode"], config["contract_dilation"], config["head_activation"]) == (True, False, "leaky_relu")
    assert (config["stem_channels"], config["aux_channels"], sidecar["recurrence"]) == (16, 32, recurrence)
    assert sidecar["std"] == [1.0, 1.0, 1.0] and sidecar["dataset"] == "cityscapes"

    torch.manual_seed(1)
    rgb = torch.randint(0, 256, (2, 60, 76, 3), dtype=torch.uint8)  # stem output 30x38: ceil mode matters
    official_input, our_input = official_inputs(rgb, sidecar)
    with torch.no_grad():
        expected, expected_aux = reference(official_input, recurrence)
    logits, aux_logits = head_logits(model, our_input)
    assert logits.shape == expected.shape == (2, 19, 8, 10)
    scale = max(1.0, expected.abs().max().item())
    torch.testing.assert_close(logits, expected, atol=1e-4 * scale, rtol=0)
    torch.testing.assert_close(aux_logits, expected_aux, atol=1e-4 * max(1.0, expected_aux.abs().max().item()), rtol=0)
    assert expected.std() > 1e-3 and expected_aux.std() > 1e-3  # not a trivially constant output


def test_the_official_full_size_key_list_converts_and_runs():
    keys = json.loads(OFFICIAL_KEYS.read_text())
    torch.manual_seed(0)
    state = {key: torch.randn(shape) * 0.01 for key, shape in keys.items()}
    for key in state:
        if key.endswith("running_var"):
            state[key] = state[key].abs() + 1
    conversion = convert_state_dict("official", state)
    config = conversion.model_config
    assert (config["backbone"], config["base_width"], config["stem_channels"]) == ("resnet101", 64, 128)
    assert (config["head_channels"], config["aux_channels"], config["num_classes"]) == (512, 512, 19)
    filled = [key for key in conversion.state_dict if not key.endswith("num_batches_tracked")]
    assert len(filled) == len(keys) - 1  # one to one, but for dsn.0.bias, folded into dsn.1.running_mean
    model = build_converted_model(conversion)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 41, 47), return_attention=True)
    assert out.logits.shape == (1, 19, 41, 47) and torch.isfinite(out.logits).all()
    assert len(out.attentions) == 2


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ("drop layer3.22.bn3.running_mean", "missing from the checkpoint (1):\n  layer3.22.bn3.running_mean (->"),
        ("drop head.cca.gamma", "head.cca.gamma (-> head.attention.cca.gamma, shape (1,))"),
        ("add dsn.2.weight", "left over in the checkpoint (1):\n  dsn.2.weight (no place in CCNet)"),
        ("add head.conva.0.bias", "head.conva.0.bias (-> head.reduce.conv.bias, not in CCNet)"),
    ],
)
def test_the_official_key_list_with_a_key_missing_or_extra_is_refused_by_name(change, words):
    keys = json.loads(OFFICIAL_KEYS.read_text())
    action, key = change.split()
    if action == "drop":
        del keys[key]
    else:
        keys[key] = [3]
    with pytest.raises(ConversionError) as caught:
        convert_state_dict("official", meta_state(keys))
    assert words in str(caught.value)
    assert "nothing was written" in str(caught.value)


def test_folding_a_conv_bias_into_the_next_batch_norm_is_exact():
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 5, 3, padding=1).double()
    bn = nn.BatchNorm2d(5).double().eval()
    with torch.no_grad():
        conv.bias.normal_(0, 2)
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
        bn.weight.normal_()
        bn.bias.normal_()
    x = torch.randn(2, 6, 9, 11, dtype=torch.float64)
    with torch.no_grad():
        expected = bn(conv(x))
        folded_bn = nn.BatchNorm2d(5).double().eval()
        folded_bn.load_state_dict(bn.state_dict())
        folded_bn.running_mean.copy_(fold_conv_bias_into_bn(conv.bias, bn.running_mean))
        result = folded_bn(F.conv2d(x, conv.weight, None, padding=1))
    assert (result - expected).abs().max().item() < 1e-12


def test_dataparallel_prefix_and_loss_state_are_handled_and_reported(tmp_path):
    state = {f"module.{key}": value for key, value in small_official_model().state_dict().items()}
    state["module.criterion.criterion.weight"] = torch.ones(19)
    conversion = convert_state_dict("official", state)
    assert any("module." in note for note in conversion.notes)
    assert any("criterion.criterion.weight" in note for note in conversion.notes)


# -------------------------------------------------------------------------------------------------
# Strictness: nothing partial, everything named
# -------------------------------------------------------------------------------------------------


def test_a_missing_key_is_named_and_nothing_is_written(tmp_path):
    state = small_official_model().state_dict()
    del state["layer2.1.bn2.running_var"]
    source = tmp_path / "missing.pth"
    torch.save(state, source)
    code, _, err = run_cli("official", source, tmp_path / "out")
    assert code == 2
    assert "missing from the checkpoint (1)" in err and "layer2.1.bn2.running_var" in err
    assert "backbone.layer2.1.bn2.running_var" in err  # where it would have gone
    assert not list(tmp_path.glob("out.*"))


def test_left_over_and_mismatched_keys_are_all_listed():
    state = small_official_model().state_dict()
    state["head.extra.weight"] = torch.zeros(3)
    state["layer9.0.conv1.weight"] = torch.zeros(3)
    state["head.conva.0.weight"] = torch.zeros(64, 256, 1, 1)
    with pytest.raises(ConversionError) as caught:
        convert_state_dict("official", state)
    message = str(caught.value)
    assert "left over in the checkpoint (2)" in message
    assert "head.extra.weight (no place in CCNet)" in message
    assert "layer9.0.conv1.weight (-> backbone.layer9.0.conv1.weight, not in CCNet)" in message
    assert "shape mismatches (1)" in message
    assert (
        "head.conva.0.weight -> head.reduce.conv.weight: checkpoint (64, 256, 1, 1), CCNet (64, 256, 3, 3)" in message
    )


def test_a_key_given_twice_is_refused():
    state = small_official_model().state_dict()
    state["module.conv1.weight"] = state["conv1.weight"]
    with pytest.raises(ConversionError, match=r"with and without 'module.': module.conv1.weight"):
        convert_state_dict("official", state)


def test_an_unsupported_depth_is_refused_by_name():
    state = small_official_model().state_dict()
    state = {key: value for key, value in state.items() if not key.startswith("layer3.5.")}
    with pytest.raises(ConversionError, match=r"ResNet with \(3, 4, 5, 3\) bottleneck blocks"):
        convert_state_dict("official", state)


# -------------------------------------------------------------------------------------------------
# mmsegmentation layout without the shared test vectors (our own tiny model, renamed to mmseg's names)
# -------------------------------------------------------------------------------------------------

OURS_TO_MMSEG = {
    "head.reduce.": "decode_head.convs.0.",
    "head.project.": "decode_head.convs.1.",
    "head.fuse.": "decode_head.conv_cat.",
    "head.attention.cca.": "decode_head.cca.",
    "head.classifier.": "decode_head.conv_seg.",
    "aux_head.reduce.": "auxiliary_head.convs.0.",
    "aux_head.classifier.": "auxiliary_head.conv_seg.",
}


def mmseg_layout(model: CCNet) -> dict[str, torch.Tensor]:
    state = {}
    for key, value in model.state_dict().items():
        if key == "head.attention.cca.gamma":
            state["decode_head.cca.gamma.scale"] = value.reshape(())  # mmcv's Scale holds a 0-d tensor
            continue
        for ours, theirs in OURS_TO_MMSEG.items():
            if key.startswith(ours):
                key = theirs + key[len(ours) :]
                break
        state[key] = value
    return state


def tiny_mmseg_model(num_classes=CITYSCAPES_CLASSES) -> CCNet:
    torch.manual_seed(3)
    model = CCNet(num_classes, "resnet18", base_width=8, head_channels=16, aux_channels=8, stem="deep")
    with torch.no_grad():
        model.attention.cca.gamma.fill_(0.5)
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
    return model.eval()


PUBLISHED_FILE = "ccnet_r101-d8_769x769_80k_cityscapes_20200618_011502-ad3cd481.pth"


def test_mmseg_round_trip_reads_loops_crop_and_published_scores(tmp_path):
    model = tiny_mmseg_model()
    meta = {"config": "model = dict(decode_head=dict(type='CCHead', recurrence=1))\ncrop_size = (64, 128)\n"}
    torch.save({"meta": meta, "state_dict": mmseg_layout(model)}, tmp_path / PUBLISHED_FILE)
    (tmp_path / "converted").mkdir()
    code, out, err = run_cli("mmseg", tmp_path / PUBLISHED_FILE, tmp_path / "converted")
    assert code == 0, err
    converted, sidecar = load_converted(tmp_path / "converted" / "ccnet_r101-d8_769x769_80k_cityscapes.safetensors")
    assert sidecar["recurrence"] == 1 and sidecar["input_size"] == [64, 128]
    assert sidecar["metrics"] == {"mIoU": 0.7945, "mIoU_ms_flip": 0.8066} and sidecar["split"] == "val"
    assert sidecar["dataset"] == "cityscapes" and sidecar["train_config"]["source_file"] == PUBLISHED_FILE
    images = torch.randn(1, 3, 45, 61)
    with torch.no_grad():
        assert torch.equal(converted(images, recurrence=2).logits, model(images).logits)
    assert "CCNET_EXTRA_CHECKPOINTS=" in out


def test_dataset_follows_the_class_count_and_a_wrong_one_is_refused(tmp_path):
    source = tmp_path / "ade.pth"
    torch.save({"state_dict": mmseg_layout(tiny_mmseg_model(num_classes=150))}, source)
    code, _, err = run_cli("mmseg", source, tmp_path / "wrong", "--dataset", "cityscapes")
    assert code == 2 and "150 classes but --dataset cityscapes has 19; pass --dataset ade20k" in err
    code, _, err = run_cli("mmseg", source, tmp_path / "ade", "--half")
    assert code == 0, err
    sidecar = json.loads((tmp_path / "ade.json").read_text())
    assert sidecar["dataset"] == "ade20k" and sidecar["class_names"][7] == "bed"
    assert sidecar["palette"][0] == [120, 120, 120] and sidecar["weights_dtype"] == "float16"
    assert sidecar["input_size"] is None and sidecar["metrics"] == {}
    assert load_file(str(tmp_path / "ade.safetensors"))["head.classifier.weight"].dtype == torch.float16


# -------------------------------------------------------------------------------------------------
# Command line: help and errors that say what to do
# -------------------------------------------------------------------------------------------------


def test_help_runs_as_a_module():
    result = subprocess.run(
        [sys.executable, "-m", "ccnet.convert", "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0
    assert "{mmseg,official}" in result.stdout and "--dataset" in result.stdout and "--recurrence" in result.stdout


class NotATensor:
    pass


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "no such file. Download the published checkpoint first"),
        (
            {"state_dict": {"a": torch.zeros(1)}, "meta": {"obj": NotATensor()}},
            "re-save it with weights_only-compatible",
        ),
        (b"not a checkpoint at all", "is not a PyTorch checkpoint"),
        ([torch.zeros(1)], "holds a list, not a checkpoint"),
        ({"conv1.weight": torch.zeros(1), "fc.weight": torch.zeros(1)}, "not a CCNet checkpoint in the mmseg layout"),
        ({"head.cca.query_conv.weight": torch.zeros(1)}, "looks like an official one"),
    ],
    ids=["missing", "pickled-object", "garbage", "list", "not-ccnet", "wrong-format"],
)
def test_bad_inputs_give_a_message_that_says_what_to_do(tmp_path, content, words):
    source = tmp_path / "source.pth"
    if isinstance(content, bytes):
        source.write_bytes(content)
    elif content is not None:
        torch.save(content, source)
    code, _, err = run_cli("mmseg", source, tmp_path / "out")
    assert code == 2
    assert words in err
    assert err.startswith("error: ")


def test_existing_output_needs_force(tmp_path):
    source = tmp_path / "tiny.pth"
    torch.save(mmseg_layout(tiny_mmseg_model()), source)
    assert run_cli("mmseg", source, tmp_path / "tiny_out")[0] == 0
    code, _, err = run_cli("mmseg", source, tmp_path / "tiny_out")
    assert code == 2 and "--force" in err
    assert run_cli("mmseg", source, tmp_path / "tiny_out", "--force", "--recurrence", "3")[0] == 0
    assert json.loads((tmp_path / "tiny_out.json").read_text())["recurrence"] == 3


# -------------------------------------------------------------------------------------------------
# Output through ccnet.checkpoint: sidecar, classes from ccnet.classes, the folder's index.json
# -------------------------------------------------------------------------------------------------


def convert_tiny(folder: Path, name: str = "ccnet_tiny_cityscapes", num_classes: int = CITYSCAPES_CLASSES) -> Path:
    """A tiny mmseg-layout CCNet converted by the command line into `folder`; returns the weights path."""
    folder.mkdir(parents=True, exist_ok=True)
    source = folder.parent / f"{name}.pth"
    torch.save({"state_dict": mmseg_layout(tiny_mmseg_model(num_classes))}, source)
    code, _, err = run_cli("mmseg", source, folder / name)
    assert code == 0, err
    return folder / f"{name}.safetensors"


def test_converted_model_is_indexed_and_loads_through_the_library(tmp_path):
    weights = convert_tiny(tmp_path / "converted")
    index = read_index(tmp_path / "converted")
    assert (tmp_path / "converted" / "index.json").is_file()
    [entry] = index["models"]
    assert (entry["name"], entry["dataset"], entry["num_classes"]) == ("ccnet_tiny_cityscapes", "cityscapes", 19)
    assert index["default"] == "ccnet_tiny_cityscapes"  # R = 2: the paper's default loop count
    model, sidecar = load_checkpoint(weights, device="cpu")  # validates every sidecar field
    assert sidecar["class_names"] == list(CITYSCAPES.names) and sidecar["palette"] == CITYSCAPES.palette_lists()
    assert sidecar["format_version"] == FORMAT_VERSION and sidecar["code_version"].startswith("0.")
    images = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        torch.testing.assert_close(model(images).logits, tiny_mmseg_model()(images).logits, atol=0, rtol=0)
    second = convert_tiny(tmp_path / "converted", name="ccnet_tiny_two")
    assert [e["name"] for e in read_index(second.parent)["models"]] == ["ccnet_tiny_cityscapes", "ccnet_tiny_two"]


@pytest.mark.parametrize(
    ("num_classes", "classes", "spot_checks"),
    [
        # mmsegmentation's mmseg/datasets/ade.py palette: first, last and the one colour it uses twice.
        (150, ADE20K, {0: [120, 120, 120], 149: [92, 0, 255], 6: [140, 140, 140], 48: [140, 140, 140]}),
        (21, PASCAL_VOC, {0: [0, 0, 0], 1: [128, 0, 0], 20: [0, 64, 128]}),
        (19, CITYSCAPES, {0: [128, 64, 128], 18: [119, 11, 32]}),
    ],
    ids=["ade20k", "voc", "cityscapes"],
)
def test_class_names_and_palettes_come_from_ccnet_classes_as_mmsegmentation_defines_them(
    tmp_path, num_classes, classes, spot_checks
):
    weights = convert_tiny(tmp_path / "out", name=f"tiny_{num_classes}", num_classes=num_classes)
    sidecar = json.loads(weights.with_suffix(".json").read_text())
    assert sidecar["dataset"] == classes.dataset and sidecar["class_names"] == list(classes.names)
    assert sidecar["palette"] == classes.palette_lists()
    assert {index: sidecar["palette"][index] for index in spot_checks} == spot_checks
    assert any(table is classes for table in CONVERTIBLE_DATASETS.values())  # one table: ccnet.classes' own


def test_a_broken_checkpoint_beside_the_output_is_named_with_the_fix(tmp_path):
    folder = tmp_path / "converted"
    folder.mkdir()
    (folder / "broken.safetensors").write_bytes(b"\0")
    (folder / "broken.json").write_text('{"format_version": 1}')
    source = tmp_path / "tiny.pth"
    torch.save(mmseg_layout(tiny_mmseg_model()), source)
    code, _, err = run_cli("mmseg", source, folder / "tiny", "--dataset", "cityscapes")
    assert code == 2
    assert "broken.json" in err and "could not be rebuilt" in err and "write_index" in err
    assert (folder / "tiny.safetensors").is_file()  # the conversion itself is kept: only the index is stale


# -------------------------------------------------------------------------------------------------
# The app lists converted models from extra folders (CCNET_EXTRA_CHECKPOINTS)
# -------------------------------------------------------------------------------------------------


def test_the_app_catalogue_lists_a_converted_model_from_an_extra_folder(tmp_path):
    bundled = make_checkpoint_folder(tmp_path / "checkpoints", recurrences=(1, 2))
    weights = convert_tiny(tmp_path / "converted")
    settings = Settings.from_env({"CCNET_CHECKPOINTS": str(bundled), "CCNET_EXTRA_CHECKPOINTS": f"{weights.parent}:"})
    assert settings.checkpoint_folders == (bundled, weights.parent)
    catalogue = read_catalogue(settings.checkpoints, settings.extra_checkpoints)
    assert [e.name for e in catalogue.entries] == ["tiny_r1", "tiny_r2", "ccnet_tiny_cityscapes"]
    assert catalogue.problems == () and catalogue.default == "tiny_r2"  # the bundled folder's default
    converted = catalogue.get("ccnet_tiny_cityscapes")
    assert (converted.dataset, converted.num_classes, converted.recurrence) == ("cityscapes", 19, 2)
    assert converted.label == "ccnet_tiny_cityscapes (R=2, cityscapes, 19 classes) in converted/"
    assert catalogue.get("tiny_r2").label.endswith(" in checkpoints/")
    loaded = load_model(converted.path, torch.device("cpu"))
    assert len(loaded.class_names) == 19 and loaded.palette.shape == (19, 3)
    assert read_catalogue(bundled).get("tiny_r2").label == "tiny_r2 (R=2, synthetic, 4 classes, val mIoU 25.0)"


def test_a_folder_without_index_still_lists_its_pairs_and_names_what_it_cannot(tmp_path):
    weights = convert_tiny(tmp_path / "converted")
    (weights.parent / "index.json").unlink()
    (weights.parent / "orphan.safetensors").write_bytes(b"\0")
    (weights.parent / "bad.safetensors").write_bytes(b"\0")
    (weights.parent / "bad.json").write_text("{not json")
    catalogue = read_catalogue(tmp_path / "nothing-bundled", [weights.parent])
    assert [(e.name, e.num_classes) for e in catalogue.entries] == [("ccnet_tiny_cityscapes", 19)]
    [bad, orphan] = catalogue.problems
    assert "bad.json" in bad and "not valid JSON" in bad
    assert "orphan.safetensors" in orphan and "has no sidecar orphan.json" in orphan.replace("`", "")


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda folder: None, "is not a folder: fix the setting or create it"),
        (lambda folder: folder.mkdir(), "holds no checkpoint (NAME.safetensors + NAME.json). Convert a published"),
        (lambda folder: (folder.mkdir(), (folder / "index.json").write_text("[")), "rebuild it with"),
    ],
    ids=["missing", "empty", "broken-index"],
)
def test_a_bad_extra_folder_is_a_clear_problem_and_the_others_stay_listed(tmp_path, make, words):
    bundled = make_checkpoint_folder(tmp_path / "checkpoints", recurrences=(2,))
    make(tmp_path / "extra")
    catalogue = read_catalogue(bundled, [tmp_path / "extra"])
    assert [e.name for e in catalogue.entries] == ["tiny_r2"]
    [problem] = catalogue.problems
    assert str(tmp_path / "extra") in problem and words in problem


def test_a_name_taken_by_an_earlier_folder_is_left_out_with_both_files_named(tmp_path):
    first = convert_tiny(tmp_path / "a")
    second = convert_tiny(tmp_path / "b")
    catalogue = read_catalogue(first.parent, [second.parent])
    assert [e.path for e in catalogue.entries] == [first.resolve()]
    [problem] = catalogue.problems
    assert str(second.resolve()) in problem and str(first.resolve()) in problem and "Rename one" in problem


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_the_app_page_offers_the_converted_model_and_draws_its_cityscapes_legend(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.test_app_helpers import image_bytes, street_rgb

    bundled = make_checkpoint_folder(tmp_path / "checkpoints", recurrences=(2,))
    weights = convert_tiny(tmp_path / "converted")
    monkeypatch.setenv("CCNET_CHECKPOINTS", str(bundled))
    monkeypatch.setenv("CCNET_EXTRA_CHECKPOINTS", f"{weights.parent}{os.pathsep}{tmp_path / 'missing'}")
    monkeypatch.setenv("CCNET_DEVICE", "cpu")
    monkeypatch.setenv("CCNET_EXAMPLES", "none")  # not the bundled examples
    app = AppTest.from_file(str(Path(__file__).absolute().parent.parent / "app" / "main.py"), default_timeout=60)
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    model = app.sidebar.selectbox(key="model")
    assert "ccnet_tiny_cityscapes (R=2, cityscapes, 19 classes) in converted/" in model.options
    assert any("missing" in w.value and "is not a folder" in w.value for w in app.sidebar.warning)
    model.set_value("ccnet_tiny_cityscapes").run()
    app.sidebar.file_uploader(key="upload").set_value(("street.png", image_bytes(street_rgb()), "image/png"))
    app.run()
    assert not app.exception and not app.error, [e.value for e in app.exception] + [e.value for e in app.error]
    legends = [element.proto.body for element in app.get("html") if "background:rgb(" in element.proto.body]
    assert legends, "no class legend drawn"
    named = {name for name in CITYSCAPES.names if any(f">{name}</span>" in legend for legend in legends)}
    assert named, "the legend names no Cityscapes class"
    for name in named:  # each chip in that class's Cityscapes colour
        red, green, blue = CITYSCAPES.palette[CITYSCAPES.names.index(name)]
        assert any(f"rgb({red},{green},{blue})" in legend for legend in legends)
