"""CCNet: shapes, loop counts, heads per mode, weight loading, configuration round trip, bad input."""

import json
import math
import os
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from ccnet.factory import build_model
from ccnet.model import (
    BACKBONES,
    DEEP_STEM_INDEX,
    BackboneFeatures,
    CCNet,
    CCNetOutput,
    DilatedResNet,
)

TINY = {"base_width": 8, "head_channels": 16}  # small enough for two shared CPU cores
K = 5


def tiny_model(**overrides) -> CCNet:
    torch.manual_seed(0)
    kwargs = {"num_classes": K, "backbone": "resnet18", **TINY, **overrides}
    if kwargs["backbone"] == "mobilenet_v2":  # no width to shrink: MobileNetV2 is small already
        kwargs.pop("base_width", None)
    return CCNet(**kwargs)


def feature_size(size: int) -> int:
    """Three stride-2 steps with padding: stem conv, max pool, stage 2."""
    for _ in range(3):
        size = math.ceil(size / 2)
    return size


def with_gamma(model: CCNet, gamma: float) -> CCNet:
    """gamma starts at 0, which makes attention the identity: give it weight so loops matter."""
    with torch.no_grad():
        model.attention.cca.gamma.fill_(gamma)
    return model


# -------------------------------------------------------------------------------------------------
# Shapes and modes
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backbone", BACKBONES)
def test_output_shapes_for_every_backbone_on_odd_sizes(backbone):
    model = tiny_model(backbone=backbone).eval()
    images = torch.randn(1, 3, 33, 47)
    with torch.no_grad():
        out = model(images)
    assert isinstance(out, CCNetOutput)
    assert out.logits.shape == (1, K, 33, 47)
    assert out.aux_logits is None and out.attentions is None and out.embeddings is None
    features = model.encode(images)
    assert features.final.shape[-2:] == (feature_size(33), feature_size(47)) == (5, 6)
    assert (features.aux.shape[1], features.final.shape[1]) == model.backbone.feature_channels


@pytest.mark.parametrize("size", [(1, 1), (9, 8), (31, 64)])
def test_any_input_size_works(size):
    model = tiny_model().eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, *size), return_attention=True)
    assert out.logits.shape == (1, K, *size)
    h, w = feature_size(size[0]), feature_size(size[1])
    assert all(a.shape == (1, h, w, h + w) for a in out.attentions)


@pytest.mark.parametrize("loops", [0, 1, 3])
def test_recurrence_overridden_at_call_time(loops):
    model = with_gamma(tiny_model(recurrence=2), 0.5).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 25, 30), recurrence=loops, return_attention=True)
    h, w = feature_size(25), feature_size(30)
    assert len(out.attentions) == loops
    assert all(a.shape == (2, h, w, h + w) for a in out.attentions)


def test_loop_count_changes_the_output_and_defaults_to_the_built_one():
    model = with_gamma(tiny_model(recurrence=2), 0.5).eval()
    images = torch.randn(1, 3, 33, 33)
    with torch.no_grad():
        default = model(images, return_attention=True)
        two, one = model(images, recurrence=2), model(images, recurrence=1)
    assert len(default.attentions) == 2 and model.recurrence == 2
    assert torch.equal(default.logits, two.logits)
    assert not torch.allclose(one.logits, two.logits)


def test_aux_head_and_embeddings_only_in_training_mode():
    model = tiny_model(ccl_channels=4)
    images = torch.randn(2, 3, 33, 47)
    out = model.train()(images)
    assert out.aux_logits.shape == (2, K, 33, 47)
    assert out.embeddings.shape == (2, 4, 5, 6)
    assert out.attentions is None
    with torch.no_grad():
        out = model.eval()(images)
    assert out.aux_logits is None and out.embeddings is None


def test_no_embeddings_without_ccl_and_no_aux_head_when_switched_off():
    out = tiny_model().train()(torch.randn(2, 3, 17, 17))
    assert out.embeddings is None and out.aux_logits is not None
    model = tiny_model(aux_channels=0)
    assert model.aux_head is None
    assert model.train()(torch.randn(2, 3, 17, 17)).aux_logits is None


def test_training_step_reaches_every_parameter():
    model = with_gamma(tiny_model(ccl_channels=4), 0.5).train()
    out = model(torch.randn(2, 3, 24, 24))
    (out.logits.mean() + out.aux_logits.mean() + out.embeddings.mean()).backward()
    no_grad = [name for name, p in model.named_parameters() if p.grad is None]
    assert no_grad == []


def test_encode_then_decode_equals_forward():
    model = with_gamma(tiny_model(), 0.3).eval()
    images = torch.randn(2, 3, 29, 35)
    with torch.no_grad():
        direct = model(images, recurrence=1, return_attention=True)
        features = model.encode(images)
        assert isinstance(features, BackboneFeatures)
        decoded = model.decode(features, (29, 35), recurrence=1, return_attention=True)
    assert torch.equal(direct.logits, decoded.logits)
    assert all(torch.equal(a, b) for a, b in zip(direct.attentions, decoded.attentions, strict=True))


# -------------------------------------------------------------------------------------------------
# Baseline (recurrence = 0)
# -------------------------------------------------------------------------------------------------


def test_baseline_has_no_attention_and_refuses_loops():
    baseline = tiny_model(recurrence=0).eval()
    assert baseline.attention is None
    assert not any("attention" in name for name, _ in baseline.named_parameters())
    images = torch.randn(1, 3, 20, 20)
    with torch.no_grad():
        out = baseline(images, return_attention=True)
    assert out.attentions == []
    with pytest.raises(ValueError, match="recurrence=0"):
        baseline(images, recurrence=1)


def test_zero_loops_on_an_attention_model_equal_the_baseline():
    model = with_gamma(tiny_model(recurrence=2), 0.5).eval()
    baseline = tiny_model(recurrence=0).eval()
    result = baseline.load_state_dict(model.state_dict(), strict=False)
    assert result.missing_keys == [] and all(k.startswith("head.attention.") for k in result.unexpected_keys)
    images = torch.randn(1, 3, 27, 21)
    with torch.no_grad():
        assert torch.equal(model(images, recurrence=0).logits, baseline(images).logits)


# -------------------------------------------------------------------------------------------------
# Architecture options
# -------------------------------------------------------------------------------------------------


def dilations(stage: nn.Sequential, conv: str) -> list[int]:
    return [getattr(block, conv).dilation[0] for block in stage]


def test_contracted_dilation_is_torchvisions_and_mmsegmentations():
    backbone = tiny_model(backbone="resnet50").backbone
    assert backbone.layer2[0].conv2.stride == (2, 2)
    assert backbone.layer3[0].conv2.stride == (1, 1) and backbone.layer4[0].conv2.stride == (1, 1)
    assert dilations(backbone.layer3, "conv2") == [1, 2, 2, 2, 2, 2]
    assert dilations(backbone.layer4, "conv2") == [2, 4, 4]
    assert backbone.layer3[0].downsample[0].stride == (1, 1)


def test_full_dilation_is_the_official_codes():
    backbone = tiny_model(backbone="resnet50", contract_dilation=False).backbone
    assert dilations(backbone.layer3, "conv2") == [2] * 6
    assert dilations(backbone.layer4, "conv2") == [4] * 3


def test_basic_blocks_dilate_their_first_conv_only():
    backbone = tiny_model(backbone="resnet34").backbone
    assert dilations(backbone.layer3, "conv1") == [1, 2, 2, 2, 2, 2]
    assert dilations(backbone.layer4, "conv1") == [2, 4, 4]
    assert dilations(backbone.layer4, "conv2") == [1, 1, 1]


def test_deep_stem_layout_and_ceil_mode():
    model = tiny_model(backbone="resnet50", stem="deep", stem_channels=32, ceil_mode=True)
    backbone = model.backbone
    assert not hasattr(backbone, "conv1") and not hasattr(backbone, "bn1")
    convs = [backbone.stem[DEEP_STEM_INDEX[f"conv{i}"]] for i in (1, 2, 3)]
    bns = [backbone.stem[DEEP_STEM_INDEX[f"bn{i}"]] for i in (1, 2, 3)]
    assert [(c.in_channels, c.out_channels, c.stride[0]) for c in convs] == [
        (3, 16, 2),
        (16, 16, 1),
        (16, 32, 1),
    ]
    assert [bn.num_features for bn in bns] == [16, 16, 32]
    assert all(isinstance(backbone.stem[i], nn.ReLU) for i in (2, 5, 8))
    assert backbone.layer1[0].conv1.in_channels == 32
    assert backbone.maxpool.ceil_mode
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 36, 37)).logits.shape == (1, K, 36, 37)


def test_base_width_scales_every_stage():
    half = DilatedResNet("resnet50", base_width=32)
    widths = [getattr(half, f"layer{i}")[0].conv3.out_channels for i in (1, 2, 3, 4)]
    assert widths == [128, 256, 512, 1024]
    assert (half.layer3_channels, half.layer4_channels) == (512, 1024)


def test_head_layout_and_options():
    model = tiny_model(head_activation="leaky_relu", ccl_channels=3, qk_channels=4, aux_channels=6)
    head = model.head
    assert isinstance(head.reduce.act, nn.LeakyReLU) and head.reduce.act.negative_slope == 0.01
    assert isinstance(model.aux_head.reduce.act, nn.LeakyReLU)
    assert head.reduce.conv.in_channels == model.backbone.layer4_channels == 64
    assert head.fuse.conv.in_channels == 64 + 16  # backbone output concatenated with the head's
    assert head.classifier.out_channels == K and head.classifier.bias is not None
    assert model.attention.cca.query_conv.out_channels == 4
    assert head.ccl_projection.out_channels == 3
    assert model.aux_head.reduce.conv.out_channels == 6
    assert isinstance(head.dropout, nn.Dropout2d) and head.dropout.p == 0.1
    assert tiny_model().config["aux_channels"] == 8  # head_channels // 2 by default


# -------------------------------------------------------------------------------------------------
# Parameter names and pretrained weights
# -------------------------------------------------------------------------------------------------


def test_backbone_names_follow_torchvision():
    keys = set(DilatedResNet("resnet50", base_width=8).state_dict())
    for key in [
        "conv1.weight",
        "bn1.running_var",
        "layer1.0.conv3.weight",
        "layer1.0.downsample.0.weight",
        "layer1.0.downsample.1.bias",
        "layer3.5.bn3.weight",
        "layer4.2.conv2.weight",
    ]:
        assert key in keys
    assert not any(key.startswith("fc.") for key in keys)
    assert "layer1.0.conv3.weight" not in DilatedResNet("resnet18", base_width=8).state_dict()


@pytest.mark.parametrize("depth", ["resnet18", "resnet50"])
def test_backbone_matches_torchvision_resnet(depth):
    models = pytest.importorskip("torchvision.models", reason="torchvision is not installed")
    reference = getattr(models, depth)(weights=None, replace_stride_with_dilation=[False, True, True])
    expected = {k: v.shape for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    ours = {k: v.shape for k, v in DilatedResNet(depth).state_dict().items()}
    assert ours == expected


def save_backbone(path: Path, **backbone_kwargs) -> dict:
    torch.manual_seed(1)
    backbone = DilatedResNet("resnet18", **backbone_kwargs)
    for module in backbone.modules():
        if isinstance(module, nn.BatchNorm2d):  # non-default statistics, so that loading shows
            module.running_mean.uniform_(-1, 1)
    state = {**backbone.state_dict(), "fc.weight": torch.randn(10, 8), "fc.bias": torch.randn(10)}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    return state


@pytest.mark.parametrize("name", ["resnet18.pth", "resnet18.safetensors"])
def test_pretrained_loads_a_torchvision_named_state_dict(tmp_path, name):
    state = save_backbone(tmp_path / name, base_width=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a complete file warns about nothing
        model = tiny_model(pretrained=tmp_path / name)
    assert model.pretrained_report == ([], [], ["fc.bias", "fc.weight"])  # the classifier: reported unused
    loaded = model.backbone.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if not k.startswith("fc."))
    assert "pretrained" not in model.config


def test_pretrained_reports_missing_and_unexpected_keys(tmp_path):
    path = tmp_path / "basic_stem.pth"
    save_backbone(path, base_width=8)
    with pytest.warns(UserWarning, match="missing keys") as caught:
        model = tiny_model(stem="deep", stem_channels=8, pretrained=path)
    missing, unexpected, _ = model.pretrained_report
    assert "stem.0.weight" in missing and "stem.7.running_var" in missing
    assert all(key.startswith("stem.") for key in missing)
    assert sorted(unexpected) == sorted(
        k for k in torch.load(path, weights_only=True) if k.startswith(("conv1.", "bn1."))
    )
    assert "stem.0.weight" in str(caught[0].message) and "conv1.weight" in str(caught[0].message)


def test_pretrained_shape_mismatch_names_the_key(tmp_path):
    path = tmp_path / "wide.pth"
    save_backbone(path, base_width=16)
    with pytest.raises(ValueError, match=r"conv1\.weight"):
        tiny_model(pretrained=path)


def test_pretrained_refuses_a_file_that_is_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(ValueError, match="state dict"):
        tiny_model(pretrained=path)


# -------------------------------------------------------------------------------------------------
# Configuration round trip
# -------------------------------------------------------------------------------------------------


def test_build_model_from_config_rebuilds_the_same_network():
    model = with_gamma(
        tiny_model(
            backbone="resnet50", stem="deep", ceil_mode=True, ccl_channels=3, head_activation="leaky_relu"
        ),
        0.7,
    ).eval()
    config = json.loads(json.dumps(model.config))  # JSON-able, as a checkpoint sidecar stores it
    rebuilt = build_model(config)
    assert rebuilt.config == model.config
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    images = torch.randn(1, 3, 26, 31)
    with torch.no_grad():
        assert torch.equal(model(images).logits, rebuilt.eval()(images).logits)


def test_build_model_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown model config keys"):
        build_model({"num_classes": 3, "depth": 50})


# -------------------------------------------------------------------------------------------------
# Bad input
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("images", "words"),
    [
        (torch.zeros(3, 16, 16), "4-D"),
        (torch.zeros(1, 1, 3, 16, 16), "4-D"),
        (torch.zeros(1, 4, 16, 16), "3 image channels"),
        (torch.zeros(1, 3, 0, 16), "non-empty"),
        (torch.zeros(1, 3, 16, 0), "non-empty"),
    ],
)
def test_bad_images_raise_value_error(images, words):
    model = tiny_model().eval()
    with pytest.raises(ValueError, match=words):
        model(images)


@pytest.mark.parametrize("recurrence", [-1, 1.5, True])
def test_bad_recurrence_at_call_raises(recurrence):
    with pytest.raises(ValueError, match="recurrence must be an integer >= 0"):
        tiny_model().eval()(torch.zeros(1, 3, 16, 16), recurrence=recurrence)


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"backbone": "resnet152"}, "resnet18, resnet34, resnet50, resnet101"),
        ({"recurrence": -1}, "recurrence must be an integer >= 0"),
        ({"num_classes": 0}, "num_classes must be an integer >= 1"),
        ({"stem": "tiny"}, "basic, deep"),
        ({"head_activation": "gelu"}, "relu, leaky_relu"),
        ({"base_width": 0}, "base_width"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_construction_arguments_raise(overrides, words):
    with pytest.raises(ValueError, match=words):
        tiny_model(**overrides)


def test_bad_decode_arguments_raise():
    model = tiny_model().eval()
    features = model.encode(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="out_size"):
        model.decode(features, (16,))
    with pytest.raises(ValueError, match=r"features.final of shape \(B, 64, h, w\)"):
        model.decode(BackboneFeatures(features.aux, features.aux), (16, 16))


# -------------------------------------------------------------------------------------------------
# mmsegmentation's own outputs (the architecture reproduces its CCNet exactly)
# -------------------------------------------------------------------------------------------------

MMSEG_TESTDATA = os.environ.get("CCNET_MMSEG_TESTDATA", "")


@pytest.mark.skipif(
    not (MMSEG_TESTDATA and Path(MMSEG_TESTDATA).is_dir()),
    reason="CCNET_MMSEG_TESTDATA does not point at mmsegmentation's test vectors",
)
@pytest.mark.parametrize("name", ["r18", "r50"])
def test_reproduces_mmsegmentation_logits(name):
    from safetensors.torch import load_file

    from ccnet.convert import convert_state_dict  # owns the key mapping (tests/test_convert.py tests it)

    checkpoint = torch.load(Path(MMSEG_TESTDATA) / f"ccnet_{name}_small.pth", weights_only=True)
    depth, base, stem, _, _, channels, classes = checkpoint["meta"]["arch"]
    conversion = convert_state_dict("mmseg", checkpoint["state_dict"], checkpoint["meta"])
    model = CCNet(
        classes,
        f"resnet{depth}",
        base_width=base,
        head_channels=channels,
        aux_channels=conversion.model_config["aux_channels"],
        stem="deep",
        stem_channels=stem,
    ).eval()
    assert model.config == conversion.model_config
    model.load_state_dict(conversion.state_dict, strict=True)
    io = load_file(str(Path(MMSEG_TESTDATA) / f"ccnet_{name}_small_io.safetensors"))
    with torch.no_grad():
        features = model.encode(io["input"])
        logits, _, _ = model.head(features.final, None, False, False)
        aux_logits = model.aux_head(features.aux)
        full = model(io["input"]).logits
    torch.testing.assert_close(logits, io["decode_logits"], atol=1e-4, rtol=0)
    torch.testing.assert_close(aux_logits, io["aux_logits"], atol=1e-4, rtol=0)
    assert full.shape[-2:] == io["input"].shape[-2:]


# -------------------------------------------------------------------------------------------------
# The stride-4 skip decoder (not in the paper)
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backbone", BACKBONES)
def test_every_backbone_gives_low_features_at_stride_4(backbone):
    model = tiny_model(backbone=backbone).eval()
    with torch.no_grad():
        features = model.encode(torch.randn(1, 3, 64, 96))
    assert features.low.shape == (1, model.backbone.low_channels, 16, 24)
    assert features.final.shape[-2:] == (8, 12)


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v2"])
def test_decoder_model_shapes_training_and_config_round_trip(backbone):
    model = tiny_model(backbone=backbone, decoder_channels=8)
    out = model(torch.randn(2, 3, 33, 47))
    assert out.logits.shape == out.aux_logits.shape == (2, K, 33, 47)
    out.logits.sum().backward()
    assert model.decoder.classifier.weight.grad.abs().sum() > 0  # the decoder learns
    rebuilt = build_model(json.loads(json.dumps(model.config)))
    assert rebuilt.config["decoder_channels"] == 8
    assert rebuilt.state_dict().keys() == model.state_dict().keys()
    assert tiny_model(backbone=backbone).config["decoder_channels"] == 0
    assert tiny_model(backbone=backbone).decoder is None


def test_an_untrained_decoder_starts_from_the_heads_logits():
    """Its correction's classifier starts at zero: only the extra bilinear step (stride 8 -> 4 -> 1) differs."""
    with_decoder = with_gamma(tiny_model(decoder_channels=8), 0.5).eval()
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        a = with_decoder(images).logits  # (1, K, H, W)
        features = with_decoder.encode(images)
        head_logits = with_decoder.head(features.final, None, False, False)[0]  # (1, K, h, w)
        two_steps = nn.functional.interpolate(
            nn.functional.interpolate(head_logits, size=(16, 24), mode="bilinear"), size=(64, 96), mode="bilinear"
        )
    torch.testing.assert_close(a, two_steps)


def test_decoder_needs_low_features():
    model = tiny_model(decoder_channels=8).eval()
    features = model.encode(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match=r"features.low of shape \(B, 8, h, w\)"):
        model.decode(BackboneFeatures(features.aux, features.final), (16, 16))
    with pytest.raises(ValueError, match="decoder_channels"):
        tiny_model(decoder_channels=-1)
