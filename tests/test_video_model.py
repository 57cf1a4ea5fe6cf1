"""The video CCNet (ccnet/video_model.py): shapes, loops, the frames' independence outside the attention,
T = 1 against the 2D model, saving and loading, bad input."""

from __future__ import annotations

import pytest
import torch

from ccnet.checkpoint import load_checkpoint, save_checkpoint
from ccnet.factory import build_model
from ccnet.model import CCNet
from ccnet.propagation_3d import influence_maps_3d
from ccnet.video_model import VideoCCNet

K = 5
TINY = {"num_classes": K, "backbone": "resnet18", "base_width": 8, "head_channels": 16}


def video(frames: int = 3, recurrence: int = 3, **extra) -> VideoCCNet:
    torch.manual_seed(0)
    model = build_model(TINY | {"recurrence": recurrence, "frames": frames} | extra)
    with torch.no_grad():
        model.attention.cca.gamma.fill_(1.0)
    return model.eval()


def test_shapes_of_every_output_and_loop_override():
    model = video(frames=3, recurrence=3, decoder_channels=8, ccl_channels=4)
    clips = torch.randn(2, 3, 3, 40, 56)
    with torch.no_grad():
        out = model(clips, return_attention=True)
    assert out.logits.shape == (2, 3, K, 40, 56)
    assert len(out.attentions) == 3 and out.attentions[0].shape == (2, 3, 5, 7, 3 + 5 + 7)
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(2, 3, 5, 7))
    with torch.no_grad():
        assert len(model(clips, recurrence=1, return_attention=True).attentions) == 1
    model.train()
    out = model(clips)
    assert out.aux_logits.shape == (2, 3, K, 40, 56) and out.embeddings.shape == (2, 3, 4, 5, 7)
    out.logits.sum().backward()
    assert model.attention.cca.query_conv.weight.grad.abs().sum() > 0


def test_frames_meet_only_in_the_attention():
    """Changing frame 0 changes frame 2's logits only through the attention (not with gamma = 0)."""
    model = video(frames=3)
    clips = torch.randn(1, 3, 3, 32, 32)
    changed = clips.clone()
    changed[0, 0] += 1
    with torch.no_grad():
        delta = (model(clips).logits[0, 2] - model(changed).logits[0, 2]).abs().max()
        model.attention.cca.gamma.fill_(0.0)
        still = (model(clips).logits[0, 2] - model(changed).logits[0, 2]).abs().max()
    assert delta > 1e-4 and still == 0


def test_one_frame_is_the_2d_model():
    """T = 1: the time part holds only the masked own position, so 3D attention is 2D criss-cross attention."""
    video_model = video(frames=1, recurrence=2)
    flat = CCNet(**TINY, recurrence=2).eval()
    state = {k: (v.flatten(1) if v.dim() == 5 else v) for k, v in video_model.state_dict().items()}
    flat.load_state_dict({k: (v[..., None, None] if k.endswith("_conv.weight") else v) for k, v in state.items()})
    images = torch.randn(2, 3, 40, 48)
    with torch.no_grad():
        a = video_model(images[:, None], return_attention=True)
        b = flat(images, return_attention=True)
    torch.testing.assert_close(a.logits[:, 0], b.logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(a.attentions[1][:, 0, ..., 1:], b.attentions[1], atol=1e-5, rtol=1e-5)


def test_influence_maps_of_a_clip_sum_to_one_and_reach_other_frames():
    model = video(frames=3, recurrence=3)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 3, 48, 64), return_attention=True)
    maps = influence_maps_3d(out.attentions, 1, 2, 3)  # (R, T, h, w)
    assert maps.shape == (3, 3, 6, 8)
    torch.testing.assert_close(maps.sum(dim=(1, 2, 3)), torch.ones(3))
    assert (maps[2] > 0).all()  # three loops reach every position of the clip


def test_save_and_load_keep_the_frames(tmp_path):
    model = video(frames=2, recurrence=3)
    metadata = {"class_names": [f"c{i}" for i in range(K)], "palette": [[i, i, i] for i in range(K)],
                "mean": [0, 0, 0], "std": [1, 1, 1], "dataset": "synthetic", "split": "val",
                "input_size": [32, 32], "metrics": {}}  # fmt: skip
    save_checkpoint(model, tmp_path / "video", metadata)
    loaded, saved = load_checkpoint(tmp_path / "video", device="cpu")
    assert isinstance(loaded, VideoCCNet) and saved["model_config"]["frames"] == 2
    clips = torch.randn(1, 2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(clips).logits, model(clips).logits)
    assert not isinstance(build_model(TINY | {"recurrence": 2}), VideoCCNet)  # 2D configs stay 2D


def test_bad_clips_and_configs_are_refused():
    model = video(frames=3)
    with pytest.raises(ValueError, match=r"clips \(B, T, 3, H, W\)"):
        model(torch.randn(3, 3, 32, 32))
    with pytest.raises(ValueError, match="clips of 3 frames, got 2"):
        model(torch.randn(1, 2, 3, 32, 32))
    with pytest.raises(ValueError, match="frames must be an integer >= 1"):
        build_model(TINY | {"recurrence": 3, "frames": 0})
    baseline = build_model(TINY | {"recurrence": 0, "frames": 3}).eval()
    with torch.no_grad():
        assert baseline(torch.randn(1, 3, 3, 32, 32)).logits.shape == (1, 3, K, 32, 32)
