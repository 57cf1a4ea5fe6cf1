"""Augmentation on the paper's lines (random scale, padded random crop, flip) and normalisation.

Transforms take numpy arrays and an explicit random generator and return tensors:
image (3, H, W) float32 normalised by `ccnet.preprocess`, label (H, W) int64 with 255 = ignore.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ccnet.datasets import IGNORE_INDEX
from ccnet.preprocess import IMAGENET_MEAN, IMAGENET_STD, normalize_image


def random_scale(
    image: np.ndarray, label: np.ndarray, scale_range: Sequence[float], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Resize both by one factor drawn uniformly from scale_range (bilinear image, nearest label)."""
    low, high = scale_range
    scale = rng.uniform(low, high) if high > low else low
    if scale == 1.0:
        return image, label
    height, width = label.shape
    size = (max(1, round(width * scale)), max(1, round(height * scale)))  # cv2 wants (W, H)
    image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    label = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)
    return image, label


def pad_to_size(
    image: np.ndarray, label: np.ndarray, size: Sequence[int], fill: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Pad bottom/right up to at least `size` (H, W): image with the mean colour, label with ignore."""
    height, width = label.shape
    pad_h, pad_w = max(size[0] - height, 0), max(size[1] - width, 0)
    if pad_h == 0 and pad_w == 0:
        return image, label
    # The mean colour normalises to 0, the same as padding the normalised tensor with zeros.
    colour = [int(round(c)) for c in fill]
    image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=colour)
    label = cv2.copyMakeBorder(label, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=IGNORE_INDEX)
    return image, label


def random_crop(
    image: np.ndarray, label: np.ndarray, size: Sequence[int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A crop of exactly `size` (H, W) at a uniform position (inputs at least that large)."""
    height, width = label.shape
    top = int(rng.integers(0, height - size[0] + 1))
    left = int(rng.integers(0, width - size[1] + 1))
    return image[top : top + size[0], left : left + size[1]], label[top : top + size[0], left : left + size[1]]


def random_flip(image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if rng.random() < 0.5:
        return image[:, ::-1], label[:, ::-1]
    return image, label


def label_to_tensor(label: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(label)).long()  # (H, W)


@dataclass
class TrainTransform:
    """Random scale -> pad (mean colour / ignore) -> random crop -> flip -> normalise."""

    crop_size: Sequence[int] | None = (240, 320)  # (H, W); None keeps the scaled image whole
    scale_range: Sequence[float] = (0.5, 1.0)
    flip: bool = True
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD

    def __call__(
        self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = random_scale(image, label, self.scale_range, rng)
        if self.crop_size is not None:
            image, label = pad_to_size(image, label, self.crop_size, self.mean)
            image, label = random_crop(image, label, self.crop_size, rng)
        if self.flip:
            image, label = random_flip(image, label, rng)
        return normalize_image(np.ascontiguousarray(image), self.mean, self.std), label_to_tensor(label)


@dataclass
class EvalTransform:
    """Normalisation only: evaluation sees the image at its own resolution."""

    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD

    def __call__(
        self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return normalize_image(image, self.mean, self.std), label_to_tensor(label)
