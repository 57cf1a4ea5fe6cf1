"""Helpers for the app's tests: tiny random-weight checkpoints and small synthetic images.

Kept in a test module of their own (the other app test files import them); the few tests here check the
helpers themselves.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ccnet.checkpoint import read_index, save_checkpoint, write_index
from ccnet.model import CCNet

CLASS_NAMES = ["sky", "building", "road", "car"]
PALETTE = [[70, 130, 180], [128, 0, 0], [128, 64, 128], [64, 0, 128]]


def tiny_model(recurrence: int = 2, seed: int = 0, gamma: float = 0.5, num_classes: int = 4) -> CCNet:
    """Smallest useful CCNet (resnet18, width 8, head 16) with random weights and a non-zero gamma."""
    torch.manual_seed(seed)
    model = CCNet(num_classes, backbone="resnet18", recurrence=recurrence, base_width=8, head_channels=16)
    if model.attention is not None:
        with torch.no_grad():
            model.attention.cca.gamma.fill_(gamma)  # 0 at init would make rollout the identity
    return model.eval()


def save_tiny_checkpoint(
    folder: Path, name: str, recurrence: int = 2, seed: int = 0, classes=None, training: dict | None = None,
    train_config: dict | None = None, gamma: float = 0.5,
) -> Path:
    """`classes`: a ccnet.classes.DatasetClasses (default: four made-up classes); `training`: the sidecar's
    training record (e.g. {"head_only_on": save_id} for a head on another checkpoint's backbone); `train_config`:
    the config it trained with (the index reads the recipe from it: gamma_init, attention_weight)."""
    names = list(classes.names) if classes is not None else CLASS_NAMES
    palette = [list(c) for c in classes.palette] if classes is not None else PALETTE
    metadata = {
        "class_names": names,
        "palette": palette,
        "mean": [123.675, 116.28, 103.53],
        "std": [58.395, 57.12, 57.375],
        "dataset": classes.dataset if classes is not None else "synthetic",
        "split": "val",
        "input_size": [64, 96],
        "metrics": {"mIoU": 0.25},
    }
    if training is not None:
        metadata["training"] = training
    if train_config is not None:
        metadata["train_config"] = train_config
    model = tiny_model(recurrence, seed, gamma=gamma, num_classes=len(names))
    weights, _ = save_checkpoint(model, folder / name, metadata)
    return weights


def make_checkpoint_folder(folder: Path, recurrences=(2,), default: str | None = None) -> Path:
    """A checkpoint folder with one tiny model per loop count (named tiny_r{R}) and its index."""
    folder.mkdir(parents=True, exist_ok=True)
    for recurrence in recurrences:
        save_tiny_checkpoint(folder, f"tiny_r{recurrence}", recurrence, seed=recurrence)
    write_index(folder, default=default)
    return folder


def street_rgb(height: int = 96, width: int = 128, seed: int = 0) -> np.ndarray:
    """A synthetic scene: sky, a building block, a road, a car-ish box, plus noise. (H, W, 3) uint8."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 3), np.float32)
    image[: height // 3] = (120, 170, 230)
    image[height // 3 : 2 * height // 3] = (150, 60, 50)
    image[2 * height // 3 :] = (90, 90, 95)
    image[height // 2 : 3 * height // 4, width // 4 : width // 2] = (30, 40, 160)
    image += rng.normal(0, 12, image.shape)
    return image.clip(0, 255).astype(np.uint8)


def image_bytes(rgb: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format=fmt)
    return buffer.getvalue()


def test_checkpoint_folder_lists_every_tiny_model(tmp_path):
    folder = make_checkpoint_folder(tmp_path / "checkpoints", recurrences=(1, 2, 3))
    index = read_index(folder)
    assert sorted(m["recurrence"] for m in index["models"]) == [1, 2, 3]
    assert index["default"] == "tiny_r2"


def test_street_image_is_deterministic():
    assert np.array_equal(street_rgb(seed=3), street_rgb(seed=3))
