"""Whole-image, sliding-window and multi-scale + flip inference (ccnet.inference)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from ccnet.inference import (
    DEFAULT_MAX_WHOLE_PIXELS,
    WHOLE_BYTES_PER_PIXEL,
    Progress,
    available_memory_bytes,
    choose_mode,
    count_forward_passes,
    plan_inference,
    predict,
    sliding_window_logits,
    whole_pixel_budget,
    window_starts,
)
from ccnet.model import CCNet
from ccnet.preprocess import IMAGENET_MEAN, IMAGENET_STD, to_tensor


class PixelwiseModel(nn.Module):
    """A 1x1 conv: each pixel's logits depend on that pixel only, so every inference mode must agree."""

    def __init__(self, classes: int = 3):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, classes, 1)
        self.calls: list[tuple[int, int]] = []
        self.recurrences: list[int | None] = []

    def forward(self, images, recurrence=None):
        self.calls.append(tuple(images.shape[-2:]))
        self.recurrences.append(recurrence)
        return SimpleNamespace(logits=self.conv(images))  # (B, K, H, W)


def test_to_tensor_normalises_with_mean_and_std():
    image = np.zeros((2, 3, 3), dtype=np.uint8)
    image[0, 0] = (124, 116, 104)
    tensor = to_tensor(image, IMAGENET_MEAN, IMAGENET_STD)
    assert tensor.shape == (1, 3, 2, 3) and tensor.dtype == torch.float32
    expected = (torch.tensor([124, 116, 104.0]) - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(tensor[0, :, 0, 0], expected)
    with pytest.raises(ValueError, match="uint8"):
        to_tensor(image.astype(np.float32), IMAGENET_MEAN, IMAGENET_STD)


def test_window_starts_cover_the_image_and_end_flush():
    assert window_starts(10, 10, 5) == [0]
    assert window_starts(8, 10, 5) == [0]
    assert window_starts(25, 10, 6) == [0, 6, 12, 15]


def test_sliding_equals_whole_for_a_pixelwise_model():
    model = PixelwiseModel()
    images = torch.randn(2, 3, 21, 34)
    whole = predict(model, images, mode="whole")
    sliding = predict(model, images, mode="sliding", crop_size=(8, 10), stride=(5, 7))
    assert whole.shape == (2, 3, 21, 34)
    assert torch.allclose(whole, sliding, atol=1e-5)
    assert set(model.calls[1:]) == {(8, 10)}  # every window has the crop size


def test_sliding_pads_images_smaller_than_the_window():
    model = PixelwiseModel()
    images = torch.randn(1, 3, 5, 6)
    logits = sliding_window_logits(model, images, crop_size=(8, 8))
    assert logits.shape == (1, 3, 5, 6) and model.calls == [(8, 8)]
    assert torch.allclose(logits, model.conv(images), atol=1e-6)


def test_flip_and_scales_average_back_at_input_size():
    model = PixelwiseModel()
    images = torch.randn(1, 3, 16, 24)
    single = predict(model, images)
    flipped = predict(model, images, flip=True)
    assert torch.allclose(single, flipped, atol=1e-5)  # a pixelwise model is flip-equivariant
    multi = predict(model, images, scales=(0.5, 1.0, 1.5), flip=True)
    assert multi.shape == (1, 3, 16, 24)
    assert sorted(set(model.calls)) == [(8, 12), (16, 24), (24, 36)]


def test_progress_reports_every_forward_pass_and_recurrence_is_passed_on():
    model = PixelwiseModel()
    images = torch.randn(1, 3, 20, 30)
    reports = []
    predict(
        model,
        images,
        recurrence=3,
        mode="auto",
        scales=(1.0, 2.0),
        flip=True,
        crop_size=(16, 16),
        max_whole_pixels=20 * 30,
        progress=lambda done, total: reports.append((done, total)),
    )
    expected = count_forward_passes((20, 30), (1.0, 2.0), True, "auto", (16, 16), None, 20 * 30)
    assert expected == 2 * (1 + 4 * 6)  # whole at scale 1; 4x6 windows (stride 10) at scale 2 (40x60); x2 flips
    assert reports == [(done, expected) for done in range(1, expected + 1)]
    assert set(model.recurrences) == {3}


def test_auto_mode_runs_a_cityscapes_frame_whole_and_larger_images_by_windows():
    assert choose_mode((360, 480)) == "whole"
    assert choose_mode((1024, 2048)) == "whole"  # 2.1 M pixels: whole is twice as fast and fits (docs/CONVERT.md)
    assert choose_mode((1025, 2048)) == "sliding" and choose_mode((2048, 2048)) == "sliding"
    assert choose_mode((1024, 2048), "sliding") == "sliding"
    assert choose_mode((4096, 4096), "whole") == "whole"
    with pytest.raises(ValueError, match="inference mode"):
        choose_mode((4, 4), "tiles")


def test_predict_runs_a_real_ccnet_at_any_loop_count(tiny_model_config):
    model = CCNet(num_classes=5, **tiny_model_config).eval()
    images = torch.randn(1, 3, 32, 48)
    for recurrence in (0, 1, 3):
        assert predict(model, images, recurrence=recurrence).shape == (1, 5, 32, 48)


def test_the_whole_image_budget_shrinks_when_free_memory_would_not_hold_the_frame():
    frame = 1024 * 2048
    assert whole_pixel_budget(None) == DEFAULT_MAX_WHOLE_PIXELS  # unknown memory: the measured default
    assert whole_pixel_budget(64 * 2**30) == DEFAULT_MAX_WHOLE_PIXELS  # plenty: capped at the default
    assert whole_pixel_budget(2 * frame * WHOLE_BYTES_PER_PIXEL) == frame  # exactly enough (half is the share)
    tight = 2**30  # 1 GiB free: a 1024x2048 frame (about 1.7 GB) must go through windows
    assert choose_mode((1024, 2048), max_whole_pixels=whole_pixel_budget(tight)) == "sliding"
    assert choose_mode((512, 1024), max_whole_pixels=whole_pixel_budget(tight)) == "whole"
    free = available_memory_bytes("cpu")
    assert free is None or free > 0


def test_predict_reads_free_memory_to_choose_and_reports_the_same_total(monkeypatch):
    import ccnet.inference as inference

    model, images, reports = PixelwiseModel(), torch.randn(1, 3, 40, 60), []
    monkeypatch.setattr(inference, "available_memory_bytes", lambda device: 2 * 40 * 30 * WHOLE_BYTES_PER_PIXEL)
    progress: Progress = lambda done, total: reports.append((done, total))  # noqa: E731  (the Protocol's shape)
    predict(model, images, crop_size=(40, 40), stride=(40, 20), progress=progress)
    assert model.calls == [(40, 40), (40, 40)]  # 2400 px > the 1200 px budget: two windows
    assert reports == [(1, 2), (2, 2)]
    monkeypatch.setattr(inference, "available_memory_bytes", lambda device: None)
    predict(model, images, crop_size=(40, 40), progress=progress)
    assert model.calls[-1] == (40, 60) and reports[-1] == (1, 1)  # memory unknown: the default, whole


def test_a_plan_says_the_mode_and_passes_predict_will_use(monkeypatch):
    import ccnet.inference as inference

    monkeypatch.setattr(inference, "available_memory_bytes", lambda device: 64 * 2**30)
    assert plan_inference((1024, 2048)) == (("whole", 1, DEFAULT_MAX_WHOLE_PIXELS))
    sliding = plan_inference((1024, 2048), mode="sliding", stride=(513, 513))
    assert (sliding.mode, sliding.passes) == ("sliding", 8)  # mmsegmentation's Cityscapes grid: 2 x 4 windows
    monkeypatch.setattr(inference, "available_memory_bytes", lambda device: 2**30)  # 1 GiB free
    tight = plan_inference((1024, 2048), stride=(513, 513))
    assert (tight.mode, tight.passes) == ("sliding", 8) and tight.max_whole_pixels < 1024 * 2048
    model, reports = PixelwiseModel(), []
    planned = plan_inference((40, 60), crop_size=(16, 16))
    predict(
        model,
        torch.randn(1, 3, 40, 60),
        crop_size=(16, 16),
        max_whole_pixels=planned.max_whole_pixels,
        progress=lambda done, total: reports.append(total),
    )
    assert set(reports) == {planned.passes} and len(model.calls) == planned.passes
