"""Shared fixtures: tiny synthetic datasets written into tmp_path (never data from ../shared)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ccnet.classes import CAMVID

CAMVID_VOID = 11


def synthetic_sample(rng: np.random.Generator, size=(32, 48), num_classes=11, void_fraction=0.05, noise=12.0):
    """An (H, W, 3) uint8 image and its (H, W) uint8 label: class rectangles coloured by the CamVid palette."""
    height, width = size
    label = np.full((height, width), rng.integers(num_classes), dtype=np.uint8)
    for _ in range(4):
        top, left = rng.integers(0, height - 4), rng.integers(0, width - 4)
        label[top : top + rng.integers(4, height // 2 + 4), left : left + rng.integers(4, width // 2 + 4)] = (
            rng.integers(num_classes)
        )
    palette = np.array(CAMVID.palette + ((0, 0, 0),) * max(0, num_classes - 11), dtype=np.float32)
    image = palette[label] + rng.normal(0, noise, (height, width, 3))  # (H, W, 3)
    label[rng.random((height, width)) < void_fraction] = CAMVID_VOID
    return np.clip(image, 0, 255).astype(np.uint8), label


def write_camvid(root: Path, counts=None, size=(32, 48), seed=0, void_fraction=0.05) -> Path:
    """A CamVid (SegNet layout) dataset: root/{split}/*.png and root/{split}annot/*.png."""
    rng = np.random.default_rng(seed)
    for split, count in (counts or {"train": 4, "val": 2}).items():
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / f"{split}annot").mkdir(parents=True, exist_ok=True)
        for index in range(count):
            image, label = synthetic_sample(rng, size, void_fraction=void_fraction)
            Image.fromarray(image).save(root / split / f"frame_{index:03d}.png")
            Image.fromarray(label).save(root / f"{split}annot" / f"frame_{index:03d}.png")
    return root


@pytest.fixture(autouse=True)
def _no_bundled_examples_unless_asked(monkeypatch):
    """The app opens on the bundled examples by default; tests see an app without them unless they set or unset
    CCNET_EXAMPLES themselves (the first-screen tests unset it to get the default)."""
    monkeypatch.setenv("CCNET_EXAMPLES", "none")


@pytest.fixture
def camvid_factory(tmp_path):
    """make(counts={"train": 4, "val": 2}, size=(32, 48), seed=0, name="camvid") -> dataset root."""

    def make(counts=None, size=(32, 48), seed=0, name="camvid", void_fraction=0.05):
        return write_camvid(tmp_path / name, counts, size, seed, void_fraction)

    return make


@pytest.fixture
def tiny_model_config():
    """The smallest CCNet the tests train: resnet18 at width 8, a 16-channel head."""
    return {"backbone": "resnet18", "base_width": 8, "head_channels": 16, "recurrence": 2}


def tiny_training_config(root: Path, **sections) -> dict:
    """A resolved training config for the tiny model on a synthetic CamVid at `root` (sections override)."""
    from training.config import load_config

    base = {
        "data": {"root": str(root), "crop_size": [32, 48], "scale_range": [0.75, 1.25], "num_workers": 0},
        "model": {"backbone": "resnet18", "base_width": 8, "head_channels": 16, "recurrence": 2},
        "optim": {"iterations": 6, "batch_size": 2},
        "train": {"val_every": 3, "save_every": 2, "log_every": 1, "threads": 1},
    }
    for section, values in sections.items():
        base[section] = base.get(section, {}) | values if isinstance(values, dict) else values
    return load_config(None, [base])
