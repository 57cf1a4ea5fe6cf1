"""Whole-image, sliding-window and multi-scale + flip inference, returning logits at input size.

Images are normalised batches (B, 3, H, W) (see `ccnet.preprocess.to_tensor`). The model is used as
given (put it in eval mode first); anything called like `model(images, recurrence=R)` returning an
object with `.logits` (B, K, h, w) works. `progress(done, total)` (a `Progress`) is called after every
forward pass; `total` is `count_forward_passes(...)` for the same arguments.

Whole image or sliding windows (`mode="auto"`): an image runs whole when it has at most
`DEFAULT_MAX_WHOLE_PIXELS` pixels (a 1024x2048 Cityscapes frame does) *and* its estimated memory fits in
half of what the device has free; otherwise it goes through overlapping windows. Measured on this
project's 2-core CPU with a converted ResNet-101 CCNet at R = 2, float32 (docs/CONVERT.md,
`benchmarks/bench_convert_inference.py`): a whole frame costs about `WHOLE_BYTES_PER_PIXEL` bytes per
pixel above the loaded model (1024x2048: 1.34 GiB above it, 2.0 GiB peak; 769x769 windows: 0.62 GiB above
it, 1.3 GiB peak) and is about twice as fast as the windows, which overlap (8 windows hold 4.7 M pixels
against the frame's 2.1 M).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import NamedTuple, Protocol

import torch
import torch.nn.functional as F

__all__ = [
    "DEFAULT_CROP_SIZE",
    "DEFAULT_MAX_WHOLE_PIXELS",
    "WHOLE_BYTES_PER_PIXEL",
    "InferencePlan",
    "Progress",
    "available_memory_bytes",
    "choose_mode",
    "count_forward_passes",
    "plan_inference",
    "whole_pixel_budget",
    "predict",
    "sliding_window_logits",
    "whole_image_logits",
    "window_starts",
]


class Progress(Protocol):
    """Called after every forward pass: `done` of `total` passes (1-based, `done == total` at the end)."""

    def __call__(self, done: int, total: int) -> None: ...


DEFAULT_CROP_SIZE = (769, 769)  # the paper's Cityscapes crop
# A 1024x2048 Cityscapes frame (2.1 M pixels) runs whole; anything larger through windows. Chosen from the
# measurement below: at this size a whole frame needs 1.34 GiB above a ResNet-101 model (0.7 GiB more than
# windows, which take twice the time), which most machines have; a 2048x2048 image would need 2.7 GiB.
DEFAULT_MAX_WHOLE_PIXELS = 1024 * 2048
# Peak memory of a whole-image forward pass above the loaded model, per input pixel: ResNet-101 CCNet,
# R = 2, float32, CPU, inference mode (benchmarks/bench_convert_inference.py, docs/CONVERT.md): 744, 675
# and 669 bytes per pixel at 512x1024, 768x1536 and 1024x2048, rounded up. Smaller models need less.
WHOLE_BYTES_PER_PIXEL = 700
MEMORY_SHARE = 0.5  # of the free memory a whole-image pass may plan to use (the rest: other work, fragmentation)


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


def available_memory_bytes(device: torch.device | str = "cpu") -> int | None:
    """Free memory where the forward pass runs: CUDA's free memory, or Linux's MemAvailable; None if unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # reported in KiB
    except (OSError, ValueError, IndexError):
        pass
    if hasattr(os, "sysconf") and "SC_AVPHYS_PAGES" in os.sysconf_names:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return None


def whole_pixel_budget(available_bytes: int | None, ceiling: int = DEFAULT_MAX_WHOLE_PIXELS) -> int:
    """The largest image (in pixels) to run whole: `ceiling`, lowered when free memory would not hold it."""
    if available_bytes is None:
        return ceiling
    return max(1, min(ceiling, int(available_bytes * MEMORY_SHARE / WHOLE_BYTES_PER_PIXEL)))


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


class InferencePlan(NamedTuple):
    mode: str  # "whole" or "sliding"
    passes: int  # forward passes (the `total` the progress callback will report)
    max_whole_pixels: int  # the budget it was chosen with; pass it on to `predict` for the same choice


def plan_inference(
    size: Sequence[int],
    device: torch.device | str = "cpu",
    mode: str = "auto",
    crop_size: Sequence[int] = DEFAULT_CROP_SIZE,
    stride: Sequence[int] | None = None,
) -> InferencePlan:
    """How one (H, W) image will run on `device` (single scale, no flip), for a caller that shows it first."""
    budget = whole_pixel_budget(available_memory_bytes(device))
    chosen = choose_mode(size, mode, budget)
    return InferencePlan(chosen, count_forward_passes(size, (1.0,), False, chosen, crop_size, stride, budget), budget)


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
    max_whole_pixels: int | None = None,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Logits (B, K, H, W) at input size, averaged over scales (and horizontal flips when flip=True).

    Each scale is inferred whole or by sliding windows (`choose_mode`), then resized back to (H, W).
    `max_whole_pixels=None` (default): DEFAULT_MAX_WHOLE_PIXELS, lowered when the images' device has too
    little free memory (`whole_pixel_budget(available_memory_bytes(images.device))`). `progress` gets the
    total number of passes with every call.
    """
    if max_whole_pixels is None:
        max_whole_pixels = whole_pixel_budget(available_memory_bytes(images.device))
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
