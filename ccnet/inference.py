"""Whole-image, sliding-window and multi-scale + flip inference, returning logits at input size.

Images are normalised batches (B, 3, H, W) (see `ccnet.preprocess.to_tensor`). The model is used as
given (put it in eval mode first); anything called like `model(images, recurrence=R)` returning an
object with `.logits` (B, K, h, w) works. `progress(done, total)` is called after every forward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "DEFAULT_CROP_SIZE",
    "DEFAULT_MAX_WHOLE_PIXELS",
    "choose_mode",
    "count_forward_passes",
    "predict",
    "sliding_window_logits",
    "whole_image_logits",
    "window_starts",
]

Progress = Callable[[int, int], None]

DEFAULT_CROP_SIZE = (769, 769)  # the paper's Cityscapes crop
DEFAULT_MAX_WHOLE_PIXELS = 1024 * 1024  # larger images go through sliding windows (memory grows with h*w)


class _PassCounter:
    """Reports each forward pass to the caller's progress callback."""

    def __init__(self, total: int, progress: Progress | None):
        self.total, self.done, self.progress = total, 0, progress

    def step(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)


def _resize(images: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False)


def _logits(model: torch.nn.Module, images: torch.Tensor, recurrence: int | None) -> torch.Tensor:
    logits = model(images, recurrence=recurrence).logits
    return _resize(logits, images.shape[-2:])  # (B, K, H, W)


@torch.no_grad()
def whole_image_logits(model: torch.nn.Module, images: torch.Tensor, recurrence: int | None = None) -> torch.Tensor:
    """One forward pass over the whole image: (B, 3, H, W) -> (B, K, H, W)."""
    return _logits(model, images, recurrence)


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Window offsets covering [0, length): regular steps, the last window flush with the end."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride))
    return starts + [length - window]


def _grid(size: Sequence[int], crop_size: Sequence[int], stride: Sequence[int]) -> list[tuple[int, int]]:
    return [
        (top, left)
        for top in window_starts(size[0], crop_size[0], stride[0])
        for left in window_starts(size[1], crop_size[1], stride[1])
    ]


def _default_stride(crop_size: Sequence[int]) -> tuple[int, int]:
    return (max(1, crop_size[0] * 2 // 3), max(1, crop_size[1] * 2 // 3))  # one third overlap


@torch.no_grad()
def sliding_window_logits(
    model: torch.nn.Module,
    images: torch.Tensor,
    crop_size: Sequence[int] = DEFAULT_CROP_SIZE,
    stride: Sequence[int] | None = None,
    recurrence: int | None = None,
    progress: Progress | None = None,
    _counter: _PassCounter | None = None,
) -> torch.Tensor:
    """Average of overlapping crop_size windows: (B, 3, H, W) -> (B, K, H, W).

    Images smaller than a window are padded with zeros (the mean colour once normalised) and cropped back.
    """
    stride = tuple(stride) if stride is not None else _default_stride(crop_size)
    height, width = images.shape[-2:]
    padded_h, padded_w = max(height, crop_size[0]), max(width, crop_size[1])
    padded = F.pad(images, (0, padded_w - width, 0, padded_h - height))  # (B, 3, H', W')
    windows = _grid((padded_h, padded_w), crop_size, stride)
    counter = _counter or _PassCounter(len(windows), progress)
    summed = None
    hits = images.new_zeros((1, 1, padded_h, padded_w))
    for top, left in windows:
        crop = padded[..., top : top + crop_size[0], left : left + crop_size[1]]
        logits = _logits(model, crop, recurrence)  # (B, K, ch, cw)
        if summed is None:
            summed = images.new_zeros((images.shape[0], logits.shape[1], padded_h, padded_w))
        summed[..., top : top + crop_size[0], left : left + crop_size[1]] += logits
        hits[..., top : top + crop_size[0], left : left + crop_size[1]] += 1
        counter.step()
    return (summed / hits)[..., :height, :width]  # (B, K, H, W)


def choose_mode(size: Sequence[int], mode: str = "auto", max_whole_pixels: int = DEFAULT_MAX_WHOLE_PIXELS) -> str:
    """'whole' or 'sliding': 'auto' picks sliding windows only for images above max_whole_pixels."""
    if mode not in ("auto", "whole", "sliding"):
        raise ValueError(f"inference mode must be 'auto', 'whole' or 'sliding', not {mode!r}")
    if mode != "auto":
        return mode
    return "sliding" if size[0] * size[1] > max_whole_pixels else "whole"


def _scaled_size(size: Sequence[int], scale: float) -> tuple[int, int]:
    return (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))


def count_forward_passes(
    size: Sequence[int],
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    mode: str = "auto",
    crop_size: Sequence[int] = DEFAULT_CROP_SIZE,
    stride: Sequence[int] | None = None,
    max_whole_pixels: int = DEFAULT_MAX_WHOLE_PIXELS,
) -> int:
    """How many forward passes `predict` will make (the `total` its progress callback reports)."""
    stride = tuple(stride) if stride is not None else _default_stride(crop_size)
    total = 0
    for scale in scales:
        scaled = _scaled_size(size, scale)
        if choose_mode(scaled, mode, max_whole_pixels) == "whole":
            passes = 1
        else:
            passes = len(_grid((max(scaled[0], crop_size[0]), max(scaled[1], crop_size[1])), crop_size, stride))
        total += passes * (2 if flip else 1)
    return total


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    images: torch.Tensor,
    recurrence: int | None = None,
    mode: str = "auto",
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    crop_size: Sequence[int] = DEFAULT_CROP_SIZE,
    stride: Sequence[int] | None = None,
    max_whole_pixels: int = DEFAULT_MAX_WHOLE_PIXELS,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Logits (B, K, H, W) at input size, averaged over scales (and horizontal flips when flip=True).

    Each scale is inferred whole or by sliding windows (`choose_mode`), then resized back to (H, W).
    """
    size = tuple(images.shape[-2:])
    total = count_forward_passes(size, scales, flip, mode, crop_size, stride, max_whole_pixels)
    counter = _PassCounter(total, progress)
    summed = None
    for scale in scales:
        scaled = _resize(images, _scaled_size(size, scale))  # (B, 3, h_s, w_s)
        views = [scaled, scaled.flip(-1)] if flip else [scaled]
        for view_index, view in enumerate(views):
            if choose_mode(view.shape[-2:], mode, max_whole_pixels) == "whole":
                logits = whole_image_logits(model, view, recurrence)
                counter.step()
            else:
                logits = sliding_window_logits(model, view, crop_size, stride, recurrence, _counter=counter)
            if view_index == 1:
                logits = logits.flip(-1)  # back to the original orientation
            logits = _resize(logits, size)  # (B, K, H, W)
            summed = logits if summed is None else summed + logits
    return summed / (len(scales) * (2 if flip else 1))
