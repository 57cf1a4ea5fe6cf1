"""Numbers under each column: from the library's maps, and with the evaluation's metric (no model maths)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ccnet.analysis import cross_share
from training.metrics import confusion_matrix, scores_from_confusion


@dataclass(frozen=True)
class InfluenceStats:
    coverage_90: float  # share of the image (0..1) holding 90% of the influence
    entropy_bits: float  # Shannon entropy of the map
    entropy_share: float  # entropy over its maximum log2(h * w): 0 = one cell, 1 = uniform
    own_class_share: float  # share of the influence on cells predicted as the clicked pixel's class
    miou: float | None = None  # the image's mIoU at this loop count, when ground truth is known
    cross_share: float | None = None  # share on the clicked cell's own row and column (1.0 after one loop)


def coverage_share(influence: np.ndarray, mass: float = 0.9) -> float:
    """Smallest share of cells whose summed influence reaches `mass` of the total."""
    values = np.sort(influence.ravel())[::-1]  # (h * w,) largest first
    total = float(values.sum())
    if total <= 0:
        return 0.0
    needed = int(np.searchsorted(np.cumsum(values), mass * total - 1e-12 * total)) + 1
    return min(needed, values.size) / values.size


def entropy_bits(influence: np.ndarray) -> float:
    probabilities = influence.ravel().astype(np.float64)
    probabilities = probabilities[probabilities > 0] / probabilities.sum()
    return float(-(probabilities * np.log2(probabilities)).sum()) if probabilities.size else 0.0


def own_class_share(influence: np.ndarray, classes_on_grid: np.ndarray, clicked_class: int) -> float:
    """Influence mass on cells of `clicked_class`; classes_on_grid (h, w) matches influence (h, w)."""
    total = float(influence.sum())
    return float(influence[classes_on_grid == clicked_class].sum()) / total if total > 0 else 0.0


def image_miou(prediction: np.ndarray, labels: np.ndarray, num_classes: int, ignore_index: int = 255) -> float:
    """The image's mean IoU, defined exactly as the evaluation script defines it (training.metrics)."""
    confusion = confusion_matrix(
        torch.from_numpy(prediction.astype(np.int64)),
        torch.from_numpy(labels.astype(np.int64)),
        num_classes,
        ignore_index,
    )  # (K, K)
    return float(scores_from_confusion(confusion, [str(k) for k in range(num_classes)]).mean_iou)


def influence_stats(
    influence: np.ndarray,
    classes_on_grid: np.ndarray,
    clicked_class: int,
    miou: float | None = None,
    cell: tuple[int, int] | None = None,
) -> InfluenceStats:
    bits = entropy_bits(influence)
    return InfluenceStats(
        coverage_90=coverage_share(influence, 0.9),
        entropy_bits=bits,
        entropy_share=bits / math.log2(influence.size) if influence.size > 1 else 0.0,
        own_class_share=own_class_share(influence, classes_on_grid, clicked_class),
        miou=miou,
        cross_share=cross_share(influence, *cell) if cell is not None else None,
    )
