"""Questions asked of influence maps and predictions: how much stays on the cross, where classes change.

A pixel's *cross* is its own row and column of the feature grid: the only positions one criss-cross loop
can read from. The share of an influence map on the cross therefore answers "does R = 2 really reach
beyond the cross?" directly: after one loop the share is 1 (the maths of `influence_maps` puts no mass
anywhere else), after two or more loops it is whatever the attention made of it.

Everything here works on numpy arrays or torch tensors alike (only indexing and sums are used).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def cross_mask(height: int, width: int, y: int, x: int) -> np.ndarray:
    """(h, w) bool: True on row y and column x, the cells one criss-cross loop connects to (y, x)."""
    if not (0 <= y < height and 0 <= x < width):
        raise ValueError(f"position (y={y}, x={x}) is outside the {height}x{width} grid")
    mask = np.zeros((height, width), dtype=bool)
    mask[y, :] = True
    mask[:, x] = True
    return mask


def cross_share(influence, y: int, x: int) -> float:
    """Share (0..1) of a map's total mass on the cross of (y, x); influence (..., h, w), summed over all.

    A map with no mass at all has no share anywhere: 0.0.
    """
    values = np.asarray(influence, dtype=np.float64)
    height, width = values.shape[-2:]
    mask = cross_mask(height, width, y, x)
    total = float(values.sum())
    return float(values[..., mask].sum()) / total if total > 0 else 0.0


def hide_cross(influence, y: int, x: int) -> np.ndarray:
    """The map (h, w) with its cross set to 0: what reaches (y, x) from off its row and column.

    Not renormalised, so values keep their meaning (share of the total influence) and the off-cross
    total is `1 - cross_share` for a map summing to 1.
    """
    values = np.array(influence, dtype=np.float32)  # a copy: the caller's map stays intact
    values[cross_mask(*values.shape[-2:], y, x)] = 0.0
    return values


def map_overlap(first, second) -> float:
    """Overlap of two maps as sum(min(p, q)) after normalising each to sum 1: 1 = same map, 0 = disjoint."""
    p = np.asarray(first, dtype=np.float64)
    q = np.asarray(second, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"maps must have the same shape, got {p.shape} and {q.shape}")
    p_total, q_total = p.sum(), q.sum()
    if p_total <= 0 or q_total <= 0:
        return 0.0
    return float(np.minimum(p / p_total, q / q_total).sum())


@dataclass(frozen=True)
class ClassChange:
    """Pixels predicted `before` at one loop count and `after` at the next."""

    before: int
    after: int
    pixels: int
    share: float  # of all the image's pixels


@dataclass(frozen=True)
class PredictionChanges:
    changed: np.ndarray  # (H, W) bool, True where the class differs
    transitions: list[ClassChange]  # largest first

    @property
    def changed_share(self) -> float:
        return float(self.changed.mean()) if self.changed.size else 0.0


def prediction_changes(before: np.ndarray, after: np.ndarray) -> PredictionChanges:
    """Where two class maps (H, W) differ, and which (before -> after) class pairs account for it."""
    if before.shape != after.shape:
        raise ValueError(f"class maps must have the same shape, got {before.shape} and {after.shape}")
    changed = before != after  # (H, W)
    pairs = np.stack([before[changed], after[changed]], axis=1).astype(np.int64)  # (n, 2)
    transitions = []
    if len(pairs):
        unique, counts = np.unique(pairs, axis=0, return_counts=True)  # (k, 2), (k,)
        order = np.lexsort((unique[:, 1], unique[:, 0], -counts))  # largest first, ties by class ids
        transitions = [
            ClassChange(int(unique[i, 0]), int(unique[i, 1]), int(counts[i]), float(counts[i]) / before.size)
            for i in order
        ]
    return PredictionChanges(changed, transitions)
