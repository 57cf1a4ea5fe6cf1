"""Same-class lift (ccnet.analysis) and the affinity loss (ccnet.losses) against brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ccnet.analysis import (
    cell_centre_labels,
    class_balanced_mean,
    lift_region,
    mean_attention_distance,
    same_class_lift,
    uniform_same_class_share,
)
from ccnet.attention import criss_cross_mask, cross_to_dense
from ccnet.losses import AttentionAffinityLoss, same_class_targets

IGNORE = 255


def _brute_lift(influence, y, x, classes, region):
    h, w = classes.shape
    cells = [(i, j) for i in range(h) for j in range(w) if classes[i, j] != IGNORE]
    on_cross = lambda i, j: i == y or j == x  # noqa: E731
    if region == "off_cross":
        chosen = [(i, j) for i, j in cells if not on_cross(i, j)]
    else:
        chosen = [(i, j) for i, j in cells if on_cross(i, j) and (i, j) != (y, x)]
    same = [(i, j) for i, j in chosen if classes[i, j] == classes[y, x]]
    if classes[y, x] == IGNORE or not same:
        return math.nan
    mass = sum(influence[i, j] for i, j in chosen)
    return (sum(influence[i, j] for i, j in same) / mass) / (len(same) / len(chosen))


@pytest.mark.parametrize("region", ["off_cross", "cross"])
@pytest.mark.parametrize("seed", range(4))
def test_lift_matches_brute_force(region, seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(2, 7, size=2)
    classes = rng.integers(0, 3, size=(h, w))
    classes[rng.random((h, w)) < 0.2] = IGNORE
    influence = rng.random((3, h, w))
    y, x = int(rng.integers(h)), int(rng.integers(w))
    lifts = same_class_lift(influence, y, x, classes, IGNORE, region)
    assert lifts.shape == (3,)
    for r in range(3):
        expected = _brute_lift(influence[r], y, x, classes, region)
        single = same_class_lift(influence[r], y, x, classes, IGNORE, region)
        assert (math.isnan(expected) and math.isnan(single)) or single == pytest.approx(expected, rel=1e-12)
        assert (math.isnan(expected) and math.isnan(lifts[r])) or lifts[r] == pytest.approx(expected)


def test_uniform_map_is_blind_and_a_same_class_map_reaches_the_ceiling():
    classes = np.array([[0, 0, 1, 1], [0, 1, 1, 1], [0, 0, 0, 1]])
    uniform = np.ones((3, 4))
    assert same_class_lift(uniform, 0, 0, classes, IGNORE) == pytest.approx(1.0)
    assert same_class_lift(uniform, 0, 0, classes, IGNORE, "cross") == pytest.approx(1.0)
    region = lift_region(classes, 0, 0, IGNORE)
    same_only = np.where((classes == 0) & region, 1.0, 0.0)
    share = ((classes == 0) & region).sum() / region.sum()
    assert same_class_lift(same_only, 0, 0, classes, IGNORE) == pytest.approx(1 / share)


def test_lift_is_nan_when_it_has_no_meaning():
    classes = np.array([[IGNORE, 0], [1, 1]])
    influence = np.ones((2, 2))
    assert math.isnan(same_class_lift(influence, 0, 0, classes, IGNORE))  # the clicked cell is ignored
    assert math.isnan(same_class_lift(influence, 0, 1, classes, IGNORE))  # no class-0 cell off the cross
    assert math.isnan(same_class_lift(np.zeros((2, 2)), 1, 1, np.array([[1, 1], [1, 1]]), IGNORE))  # no mass
    with pytest.raises(ValueError, match="region must be one of"):
        same_class_lift(influence, 1, 1, classes, IGNORE, "everywhere")
    with pytest.raises(ValueError, match="differ in"):
        same_class_lift(np.ones((3, 3)), 1, 1, classes, IGNORE)


def test_lift_works_on_a_single_row_or_column():
    classes = np.array([[0, 1, 0, 0]])
    influence = np.array([[0.1, 0.1, 0.7, 0.1]])
    # h = 1: everything is on the cross; the cross region holds 3 cells, 2 of class 0.
    assert same_class_lift(influence, 0, 0, classes, IGNORE, "cross") == pytest.approx((0.8 / 0.9) / (2 / 3))
    assert math.isnan(same_class_lift(influence, 0, 0, classes, IGNORE, "off_cross"))


def test_class_balanced_mean_weights_classes_equally():
    overall, per_class = class_balanced_mean([1.0, 3.0, 5.0, math.nan], [0, 0, 1, 2])
    assert per_class == {0: 2.0, 1: 5.0} and overall == pytest.approx(3.5)


def test_cell_centre_labels_samples_the_centres():
    labels = np.arange(8 * 12).reshape(8, 12)
    cells = cell_centre_labels(labels, (2, 3))
    assert cells.tolist() == [[labels[2, 2], labels[2, 6], labels[2, 10]], [labels[6, 2], labels[6, 6], labels[6, 10]]]
    assert torch.equal(cell_centre_labels(torch.from_numpy(labels), (2, 3)), torch.from_numpy(cells))


# --- the affinity loss ---------------------------------------------------------------------------------


def test_targets_are_the_same_class_cells_of_the_cross_in_attention_layout():
    rng = np.random.default_rng(0)
    cells = torch.from_numpy(rng.integers(0, 3, size=(2, 4, 5)))
    cells[0, 1, 2] = IGNORE
    targets, valid = same_class_targets(cells, IGNORE)  # (B, h, w, h+w)
    dense = cross_to_dense(targets)  # (B, hw, hw): row u = where u's target mass lies
    h, w = 4, 5
    mask = criss_cross_mask(h, w)
    flat = cells.reshape(2, -1)
    for b in range(2):
        for u in range(h * w):
            expected = mask[u] & (flat[b] == flat[b, u]) & (flat[b] != IGNORE)
            if flat[b, u] == IGNORE:
                assert not valid[b].reshape(-1)[u]
                continue
            expected = expected.double() / expected.sum()
            assert torch.allclose(dense[b, u].double(), expected)


def test_affinity_loss_is_minimal_for_same_class_attention_and_trains_towards_it():
    torch.manual_seed(0)
    labels = torch.randint(0, 3, (1, 12, 15))
    cells = cell_centre_labels(labels, (4, 5))
    targets, _ = same_class_targets(cells, IGNORE)
    loss = AttentionAffinityLoss(IGNORE)
    random_attention = torch.softmax(torch.randn(1, 4, 5, 9), dim=-1)
    assert loss([targets.clamp(min=1e-9)], labels) < loss([random_attention], labels)
    logits = torch.zeros(1, 4, 5, 9, requires_grad=True)
    optimizer = torch.optim.SGD([logits], lr=5.0)
    first = None
    for _ in range(50):
        value = loss([torch.softmax(logits, dim=-1)], labels)
        first = value.item() if first is None else first
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    assert value.item() < 0.8 * first


def test_affinity_loss_needs_attention_and_ignores_unlabelled_images():
    loss = AttentionAffinityLoss(IGNORE)
    with pytest.raises(ValueError, match="return_attention"):
        loss([], torch.zeros(1, 4, 4, dtype=torch.long))
    attention = torch.softmax(torch.randn(1, 2, 2, 4), dim=-1).requires_grad_()
    value = loss([attention], torch.full((1, 4, 4), IGNORE))
    value.backward()
    assert value.item() == 0 and attention.grad.abs().sum() == 0


# --- the scorecard's other numbers ----------------------------------------------------------------------


def test_uniform_share_is_the_lift_denominator():
    classes = np.array([[0, 0, 1], [1, 0, 1], [0, 1, IGNORE]])
    # (0, 0): off-cross cells (1,1)=0, (1,2)=1, (2,1)=1, (2,2) ignored -> 1 of 3 is class 0
    assert uniform_same_class_share(0, 0, classes, IGNORE) == pytest.approx(1 / 3)
    assert math.isnan(uniform_same_class_share(2, 2, classes, IGNORE))


def test_mean_attention_distance_against_brute_force_and_uniform():
    rng = np.random.default_rng(3)
    influence = rng.random((4, 6))
    weighted, uniform = mean_attention_distance(influence, 1, 2, cell_size=(8.0, 5.0))
    cells = [(i, j) for i in range(4) for j in range(6)]
    dist = {c: math.hypot(8.0 * (c[0] - 1), 5.0 * (c[1] - 2)) for c in cells}
    assert weighted == pytest.approx(sum(influence[c] * dist[c] for c in cells) / influence.sum())
    assert uniform == pytest.approx(sum(dist.values()) / len(cells))
    one_hot = np.zeros((4, 6))
    one_hot[1, 2] = 1.0
    assert mean_attention_distance(one_hot, 1, 2)[0] == 0.0


def test_attention_branch_weight_is_zero_at_gamma_zero_and_matches_the_loops():
    from ccnet.model import CCNet

    torch.manual_seed(0)
    model = CCNet(3, "resnet18", recurrence=2, base_width=8, head_channels=16).eval()
    images = torch.randn(1, 3, 40, 48)
    features = model.encode(images)
    assert torch.all(model.attention_branch_weight(features) == 0)  # gamma starts at 0
    with torch.no_grad():
        model.attention.cca.gamma.fill_(0.7)
        weights = model.attention_branch_weight(features, 3)  # (1, 3, h, w)
        state = model.head.reduce(features.final)
        expected = []
        for _ in range(3):
            nxt = model.attention(state, 1)
            expected.append((nxt - state).norm(dim=1) / state.norm(dim=1))
            state = nxt
    assert weights.shape == (1, 3, 5, 6)
    torch.testing.assert_close(weights, torch.stack(expected, dim=1))
    assert model.attention_branch_weight(features, 0).shape == (1, 0, 5, 6)
