"""ccnet.analysis against direct, slow computations (loops over every cell or pixel)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ccnet.analysis import cross_mask, cross_share, hide_cross, map_overlap, prediction_changes
from ccnet.propagation import influence_maps
from tests.test_propagation import random_attentions


def slow_cross_share(influence: np.ndarray, y: int, x: int) -> float:
    on, total = 0.0, 0.0
    for row in range(influence.shape[0]):
        for col in range(influence.shape[1]):
            total += float(influence[row, col])
            if row == y or col == x:
                on += float(influence[row, col])
    return on / total


def test_cross_mask_is_the_row_and_the_column():
    mask = cross_mask(4, 6, 1, 2)
    for row in range(4):
        for col in range(6):
            assert mask[row, col] == (row == 1 or col == 2)
    assert mask.sum() == 4 + 6 - 1
    with pytest.raises(ValueError, match="outside the 4x6 grid"):
        cross_mask(4, 6, 4, 0)


@pytest.mark.parametrize("h, w, y, x", [(5, 5, 2, 2), (4, 7, 0, 6), (6, 3, 5, 0)])
def test_cross_share_equals_a_direct_sum(h, w, y, x):
    influence = np.random.default_rng(h * w).random((h, w))
    assert cross_share(influence, y, x) == pytest.approx(slow_cross_share(influence, y, x))
    assert cross_share(torch.from_numpy(influence), y, x) == pytest.approx(slow_cross_share(influence, y, x))


@pytest.mark.parametrize("mode", ["attention", "rollout"])
def test_one_loop_is_entirely_on_the_cross_and_more_loops_reach_beyond(mode):
    """Not special-cased: the share comes out of influence_maps' maths for real attention weights."""
    h, w, y, x = 7, 9, 3, 5
    maps = influence_maps(random_attentions(3, 1, h, w), y, x, mode=mode, gammas=0.8)[0]  # (R, h, w)
    shares = [cross_share(maps[r], y, x) for r in range(3)]
    assert shares[0] == pytest.approx(1.0, abs=1e-12)
    assert shares[1] < 0.999 and shares[2] < 0.999
    assert shares[1] == pytest.approx(slow_cross_share(maps[1].numpy(), y, x))


def test_hide_cross_zeroes_exactly_the_cross_and_keeps_the_rest():
    influence = np.random.default_rng(1).random((5, 6)).astype(np.float32)
    hidden = hide_cross(influence, 2, 3)
    for row in range(5):
        for col in range(6):
            expected = 0.0 if (row == 2 or col == 3) else influence[row, col]
            assert hidden[row, col] == expected
    assert influence[2, 3] != 0  # the input is not modified
    normalised = influence / influence.sum()
    assert hide_cross(normalised, 2, 3).sum() == pytest.approx(1 - cross_share(normalised, 2, 3), rel=1e-5)


def test_overlap_of_two_maps():
    first = np.random.default_rng(2).random((4, 5))
    second = np.random.default_rng(3).random((4, 5))
    p, q = first / first.sum(), second / second.sum()
    slow = sum(min(p[r, c], q[r, c]) for r in range(4) for c in range(5))
    assert map_overlap(first, second) == pytest.approx(slow)
    assert map_overlap(first, 3 * first) == pytest.approx(1.0)
    disjoint = np.zeros((4, 5))
    disjoint[0, 0] = 1
    other = np.zeros((4, 5))
    other[3, 4] = 1
    assert map_overlap(disjoint, other) == 0.0
    with pytest.raises(ValueError, match="same shape"):
        map_overlap(first, first[:2])


def test_prediction_changes_count_every_pair():
    rng = np.random.default_rng(4)
    before = rng.integers(0, 4, (20, 30))
    after = before.copy()
    flip = rng.random((20, 30)) < 0.2
    after[flip] = rng.integers(0, 4, int(flip.sum()))
    changes = prediction_changes(before, after)
    slow: dict[tuple[int, int], int] = {}
    for row in range(20):
        for col in range(30):
            pair = (int(before[row, col]), int(after[row, col]))
            if pair[0] != pair[1]:
                slow[pair] = slow.get(pair, 0) + 1
    assert {(c.before, c.after): c.pixels for c in changes.transitions} == slow
    counts = [c.pixels for c in changes.transitions]
    assert counts == sorted(counts, reverse=True)
    assert np.array_equal(changes.changed, before != after)
    assert changes.changed_share == pytest.approx(sum(slow.values()) / 600)
    assert sum(c.share for c in changes.transitions) == pytest.approx(changes.changed_share)


def test_identical_predictions_have_no_changes():
    same = np.ones((3, 4), np.int64)
    changes = prediction_changes(same, same)
    assert changes.transitions == [] and changes.changed_share == 0.0
