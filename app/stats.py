"""Numbers under each column: from the library's maps, and with the evaluation's metric (no model maths)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ccnet.analysis import cross_share, mean_attention_distance, same_class_lift, uniform_same_class_share
from ccnet.metrics import confusion_matrix, scores_from_confusion


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
    """The image's mean IoU, defined exactly as the evaluation script defines it (ccnet.metrics)."""
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


# A gamma this small leaves the attention's contribution under a few percent of the features: say so.
QUIET_GAMMA = 0.05
NO_IGNORE = -1  # predictions have no ignored cells


@dataclass(frozen=True)
class Lift:
    lift: float  # share on the class over a uniform map's share; 1 = blind to class, NaN = undefined
    uniform_share: float  # what a uniform map puts on the class in the same region (0..1)
    region: str  # "cross" (R = 1) or "off_cross" (R >= 2)


@dataclass(frozen=True)
class Scorecard:
    """Is this map meaningful? Each number with the baseline it is read against."""

    lift_predicted: Lift  # against the predicted classes
    lift_truth: Lift | None  # against the ground truth, when the image has labels
    distance_px: float  # influence-weighted mean distance from the clicked pixel (image pixels)
    uniform_distance_px: float  # the same for a uniform map over the image
    gamma: float
    branch_weight: list[float]  # per loop at the clicked cell: |gamma * aggregated| / |residual input|

    @property
    def attention_quiet(self) -> bool:
        return abs(self.gamma) < QUIET_GAMMA


def lift_for(influence: np.ndarray, cell: tuple[int, int], classes: np.ndarray, ignore: int, loops: int) -> Lift:
    """The same-class lift of a composed map in the region its loop count can reach beyond the cross."""
    region = "cross" if loops == 1 else "off_cross"
    return Lift(
        lift=float(same_class_lift(influence, *cell, classes, ignore, region)),
        uniform_share=uniform_same_class_share(*cell, classes, ignore, region),
        region=region,
    )


def scorecard(
    influence: np.ndarray,
    cell: tuple[int, int],
    predicted_classes: np.ndarray,
    truth_classes: np.ndarray | None,
    image_size: tuple[int, int],
    loops: int,
    gamma: float,
    branch_weight: np.ndarray | None,
) -> Scorecard:
    """influence (h, w) after `loops` loops; *_classes (h, w) at the cell centres; truth ignores 255."""
    h, w = influence.shape
    cell_size = (image_size[0] / h, image_size[1] / w)
    distance, uniform = mean_attention_distance(influence, *cell, cell_size)
    at_cell = [] if branch_weight is None else [float(b[cell]) for b in branch_weight]
    return Scorecard(
        lift_predicted=lift_for(influence, cell, predicted_classes, NO_IGNORE, loops),
        lift_truth=None if truth_classes is None else lift_for(influence, cell, truth_classes, 255, loops),
        distance_px=distance,
        uniform_distance_px=uniform,
        gamma=gamma,
        branch_weight=at_cell,
    )
