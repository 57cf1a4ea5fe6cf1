"""Class weights from the training labels: ENet's 1 / ln(c + frequency), computed once and cached.

The cache key covers the dataset, split, class count and every label file's name, size and mtime,
so a changed dataset is recounted. Cache folder: $CCNET_CACHE_DIR, else ~/.cache/ccnet.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ccnet.checkpoint import atomic_write
from ccnet.datasets import IGNORE_INDEX, DatasetSpec, map_label, read_label

ENET_C = 1.02


def cache_dir() -> Path:
    return Path(os.environ.get("CCNET_CACHE_DIR") or Path.home() / ".cache" / "ccnet")


def count_pixels(spec: DatasetSpec, progress: bool = True) -> np.ndarray:
    """(K,) int64 pixel count per class over the split's labels (ignored pixels not counted)."""
    counts = np.zeros(spec.num_classes, dtype=np.int64)
    for sample in tqdm(spec.samples, desc="counting class pixels", disable=not progress, leave=False):
        label = map_label(read_label(sample.label), spec.label_lut, sample.label, spec.num_classes)
        counts += np.bincount(label[label != IGNORE_INDEX].ravel(), minlength=spec.num_classes)[: spec.num_classes]
    return counts


def enet_weights(counts: np.ndarray, c: float = ENET_C) -> list[float]:
    """w_k = 1 / ln(c + p_k), p_k the class's share of labelled pixels (rare classes weigh up to 1/ln(c))."""
    frequencies = counts / max(int(counts.sum()), 1)
    return (1.0 / np.log(c + frequencies)).tolist()


def _cache_key(spec: DatasetSpec) -> str:
    digest = hashlib.sha256(f"{spec.name}|{spec.root.resolve()}|{spec.split}|{spec.num_classes}".encode())
    for sample in spec.samples:
        stat = sample.label.stat()
        digest.update(f"{sample.label.name}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:24]


def class_pixel_counts(spec: DatasetSpec, use_cache: bool = True) -> np.ndarray:
    """Pixel counts per class, from the cache when the labels have not changed."""
    path = cache_dir() / "class_counts" / f"{spec.name}-{spec.split}-{_cache_key(spec)}.json"
    if use_cache and path.is_file():
        try:
            return np.asarray(json.loads(path.read_text())["counts"], dtype=np.int64)
        except (json.JSONDecodeError, KeyError, OSError):
            pass  # a damaged cache entry is recomputed
    counts = count_pixels(spec)
    if use_cache:
        content = json.dumps({"dataset": spec.name, "split": spec.split, "counts": counts.tolist()})
        try:
            atomic_write(path, lambda temporary: Path(temporary).write_text(content))
        except OSError:
            pass  # a read-only home only costs a recount next time
    return counts
