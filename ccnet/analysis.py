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

# The per-image questions are propagation maths; they are asked from here too, with the others.
from ccnet.propagation import class_attention_matrix, query_independence, reverse_influence_maps  # noqa: F401


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


# -------------------------------------------------------------------------------------------------
# Does the attention follow the classes? (same-class lift)
# -------------------------------------------------------------------------------------------------

LIFT_REGIONS = ("off_cross", "cross")
UNUSED_LIFT = 2.0  # under this class-balanced same-class lift the maps are close to blind: attention not used
UNUSED_GAMMA = 0.1  # under this |gamma| the attention barely reaches the output: its maps are not what the model uses


def cell_centre_labels(labels, size: tuple[int, int]):
    """Labels (..., H, W) sampled at the centres of an (h, w) feature grid: (..., h, w), nearest pixel."""
    h, w = size
    height, width = labels.shape[-2:]
    rows = np.minimum(((np.arange(h) + 0.5) * height / h).astype(np.int64), height - 1)  # (h,)
    cols = np.minimum(((np.arange(w) + 0.5) * width / w).astype(np.int64), width - 1)  # (w,)
    return labels[..., rows, :][..., cols]  # (..., h, w)


def lift_region(cell_classes, y: int, x: int, ignore_index: int, region: str = "off_cross") -> np.ndarray:
    """(h, w) bool: the cells a lift is measured over, ignored cells left out.

    "off_cross": off (y, x)'s row and column (reachable only through two or more loops);
    "cross": on them, without (y, x) itself (all that one loop reaches).
    """
    classes = np.asarray(cell_classes)
    on_cross = cross_mask(*classes.shape, y, x)
    if region == "off_cross":
        mask = ~on_cross
    elif region == "cross":
        mask = on_cross.copy()
        mask[y, x] = False
    else:
        raise ValueError(f"region must be one of {LIFT_REGIONS}, got {region!r}")
    return mask & (classes != ignore_index)


def same_class_lift(influence, y: int, x: int, cell_classes, ignore_index: int, region: str = "off_cross"):
    """How much more of (y, x)'s influence lies on its own class than a class-blind map would put there.

    influence: one map (h, w) of the cell (y, x), or (R, h, w) (one value per map). cell_classes: (h, w)
    class of every cell (ground truth at the cell centres, or a prediction). With c the class of (y, x)
    and the region of ``lift_region``: lift = (share of the region's influence on class-c cells) /
    (share of the region's cells that are class c). 1 = blind to class; NaN when c is ignored, no region
    cell is class c, or the map puts no mass in the region. Use "cross" for R = 1, "off_cross" for R >= 2.
    """
    values = np.asarray(influence, dtype=np.float64)
    classes = np.asarray(cell_classes)
    if values.shape[-2:] != classes.shape:
        raise ValueError(f"influence {values.shape} and cell_classes {classes.shape} differ in (h, w)")
    region = lift_region(classes, y, x, ignore_index, region)
    own = classes[y, x]
    same = region & (classes == own)
    if own == ignore_index or not same.any():  # nothing to compare with: no lift
        result = np.full(values.shape[:-2], np.nan)
        return float(result) if values.ndim == 2 else result
    region_mass = values[..., region].sum(axis=-1)  # (R,) or ()
    same_mass = values[..., same].sum(axis=-1)  # (R,) or ()
    uniform_share = same.sum() / region.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        lift = np.where(region_mass > 0, same_mass / np.where(region_mass > 0, region_mass, 1.0), np.nan)
    lift = lift / uniform_share
    return float(lift) if values.ndim == 2 else lift


def uniform_same_class_share(y: int, x: int, cell_classes, ignore_index: int, region: str = "off_cross") -> float:
    """What a class-blind (uniform) map puts on (y, x)'s class in the region: the lift's denominator.

    NaN when (y, x) is ignored or the region is empty.
    """
    classes = np.asarray(cell_classes)
    mask = lift_region(classes, y, x, ignore_index, region)
    if classes[y, x] == ignore_index or not mask.any():
        return float("nan")
    return float((mask & (classes == classes[y, x])).sum() / mask.sum())


def mean_attention_distance(influence, y: int, x: int, cell_size: tuple[float, float] = (1.0, 1.0)):
    """(influence-weighted mean distance from (y, x), the same for a uniform map), in units of cell_size.

    cell_size = (image pixels per cell vertically, horizontally) gives image pixels (ViT's "mean
    attention distance", measured from the clicked cell's centre to every cell's centre).
    """
    values = np.asarray(influence, dtype=np.float64)
    h, w = values.shape
    rows = (np.arange(h) - y)[:, None] * cell_size[0]  # (h, 1)
    cols = (np.arange(w) - x)[None, :] * cell_size[1]  # (1, w)
    distance = np.sqrt(rows**2 + cols**2)  # (h, w)
    total = values.sum()
    weighted = float((values * distance).sum() / total) if total > 0 else float("nan")
    return weighted, float(distance.mean())


def class_balanced_mean(values, classes) -> tuple[float, dict[int, float]]:
    """Mean of ``values`` per class (NaN values left out), then over the classes that have one."""
    values, classes = np.asarray(values, dtype=np.float64), np.asarray(classes)
    per_class = {}
    for label in np.unique(classes):
        chosen = values[(classes == label) & ~np.isnan(values)]
        if chosen.size:
            per_class[int(label)] = float(chosen.mean())
    overall = float(np.mean(list(per_class.values()))) if per_class else float("nan")
    return overall, per_class
