"""Turning RGB images into the network's input, identically in training and in the app.

Mean and std are in 0-255 pixel units (RGB order) and travel in every checkpoint's sidecar,
so whoever serves a model normalises exactly as it was trained.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "normalize_image", "to_tensor"]

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


def _check_rgb_uint8(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a numpy array (H, W, 3), got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got shape {tuple(image.shape)}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image (0-255), got dtype {image.dtype}")


def normalize_image(image_rgb_uint8: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32, (pixel - mean) / std per channel."""
    _check_rgb_uint8(image_rgb_uint8)
    mean_array = np.asarray(mean, dtype=np.float32).reshape(1, 1, 3)
    std_array = np.asarray(std, dtype=np.float32).reshape(1, 1, 3)
    normalized = (image_rgb_uint8.astype(np.float32) - mean_array) / std_array  # (H, W, 3)
    return torch.from_numpy(np.ascontiguousarray(normalized.transpose(2, 0, 1)))  # (3, H, W)


def to_tensor(
    image_rgb_uint8: np.ndarray,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, H, W) float32 batch of one, normalised."""
    return normalize_image(image_rgb_uint8, mean, std).unsqueeze(0)  # (1, 3, H, W)
