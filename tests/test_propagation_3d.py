"""Influence maps across frames (ccnet.propagation_3d) against the dense (Thw x Thw) masked reference."""

from __future__ import annotations

import pytest
import torch

import ccnet
from ccnet.attention import criss_cross_attention_3d, criss_cross_attention_3d_reference, criss_cross_mask_3d
from ccnet.propagation_3d import (
    influence_maps_3d,
    reverse_influence_maps_3d,
    temporal_share,
    uniform_attention_3d,
)


def random_loops(t: int, h: int, w: int, loops: int, seed: int = 0):
    """R loops of 3D criss-cross attention in float64: the cross form and the dense reference's matrices."""
    generator = torch.Generator().manual_seed(seed)
    crosses, denses = [], []
    for _ in range(loops):
        q, k = (torch.randn(1, 4, t, h, w, generator=generator, dtype=torch.float64) for _ in range(2))
        v = torch.randn(1, 2, t, h, w, generator=generator, dtype=torch.float64)
        _, cross = criss_cross_attention_3d(q, k, v)  # (1, T, h, w, T+h+w)
        _, dense = criss_cross_attention_3d_reference(q, k, v)  # (1, Thw, Thw)
        crosses.append(cross)
        denses.append(dense[0])
    return crosses, denses


def dense_rows(denses, index: int, scales=None) -> torch.Tensor:
    """e_u^T A_r ... A_1 for r = 1..R (rollout: |g| A + I), normalised: (R, Thw)."""
    rows = []
    for loops in range(1, len(denses) + 1):
        row = torch.zeros(denses[0].shape[0], dtype=torch.float64)
        row[index] = 1
        for r in reversed(range(loops)):
            matrix = denses[r] if scales is None else scales[r] * denses[r] + torch.eye(len(row), dtype=row.dtype)
            row = row @ matrix
        rows.append(row / row.sum())
    return torch.stack(rows)


@pytest.mark.parametrize("t", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("loops", [1, 2, 3])
def test_influence_equals_the_dense_reference(t, loops):
    h, w = 4, 5
    crosses, denses = random_loops(t, h, w, loops, seed=10 * t + loops)
    for position in [(0, 0, 0), (t - 1, 2, 3), (t // 2, h - 1, w - 1)]:
        index = (position[0] * h + position[1]) * w + position[2]
        maps = influence_maps_3d(crosses, *position)  # (R, T, h, w)
        assert maps.shape == (loops, t, h, w)
        torch.testing.assert_close(maps.reshape(loops, -1), dense_rows(denses, index), atol=1e-6, rtol=0)
        torch.testing.assert_close(maps.sum(dim=(1, 2, 3)), torch.ones(loops, dtype=torch.float64))


@pytest.mark.parametrize("t", [1, 3, 5])
def test_rollout_and_reverse_equal_the_dense_reference(t):
    h, w, loops = 3, 4, 3
    crosses, denses = random_loops(t, h, w, loops, seed=t)
    gammas = [0.5, -1.5, 2.0]
    position = (t - 1, 1, 2)
    index = (position[0] * h + position[1]) * w + position[2]
    rollout = influence_maps_3d(crosses, *position, mode="rollout", gammas=gammas)
    expected = dense_rows(denses, index, scales=[abs(g) for g in gammas])
    torch.testing.assert_close(rollout.reshape(loops, -1), expected, atol=1e-6, rtol=0)
    reverse = reverse_influence_maps_3d(crosses, *position)  # (R, T, h, w)
    product = torch.eye(t * h * w, dtype=torch.float64)
    for r in range(loops):
        product = denses[r] @ product  # A_r ... A_1
        torch.testing.assert_close(reverse[r].reshape(-1), product[:, index], atol=1e-6, rtol=0)


def test_each_loop_moves_along_one_axis_so_three_reach_everywhere():
    """One loop: the cross; two: positions differing in two coordinates; three (the paper's R for video):
    every position, another frame, row and column included."""
    t, h, w = 3, 4, 5
    crosses, _ = random_loops(t, h, w, 3)
    maps = influence_maps_3d(crosses, 1, 2, 3)
    mask = criss_cross_mask_3d(t, h, w)[(1 * h + 2) * w + 3].view(t, h, w)
    assert (maps[0][~mask] == 0).all() and (maps[0][mask] > 0).all()
    assert maps[1][0, 0, 3] > 0 and maps[1][0, 0, 0] == 0  # two coordinates changed, not three
    assert (maps[2] > 0).all()


def test_temporal_share_and_its_uniform_baseline():
    t, h, w = 5, 4, 6
    uniform = [uniform_attention_3d(t, h, w, torch.float64)] * 2
    maps = influence_maps_3d(uniform, 2, 1, 1)
    share = temporal_share(maps, 2)
    assert share.shape == (2,) and (share > 1 / t).all() and (share < 1).all()
    # after one loop: the clicked frame holds its row and column ((h - 1) + w of T - 1 + h - 1 + w positions)
    assert share[0].item() == pytest.approx((h - 1 + w) / (t - 1 + h - 1 + w))
    confined = torch.zeros(1, t, h, w, dtype=torch.float64)
    confined[0, 2] = 1
    assert temporal_share(confined, 2).item() == 1


def test_the_public_entry_point_and_bad_input():
    crosses, _ = random_loops(2, 3, 3, 2)
    assert ccnet.influence_maps_3d is influence_maps_3d
    assert influence_maps_3d([c[0] for c in crosses], 0, 0, 0).shape == (2, 2, 3, 3)  # unbatched works too
    with pytest.raises(ValueError, match="outside the 2x3x3"):
        influence_maps_3d(crosses, 2, 0, 0)
    with pytest.raises(ValueError, match="list of per-loop"):
        influence_maps_3d(crosses[0], 0, 0, 0)
    with pytest.raises(ValueError, match="empty"):
        influence_maps_3d([], 0, 0, 0)
    with pytest.raises(ValueError, match="one clip"):
        influence_maps_3d([torch.cat([crosses[0], crosses[0]])], 0, 0, 0)
    with pytest.raises(ValueError, match="mode"):
        influence_maps_3d(crosses, 0, 0, 0, mode="dense")
    with pytest.raises(ValueError, match="one gamma per loop"):
        influence_maps_3d(crosses, 0, 0, 0, mode="rollout", gammas=[1.0])
