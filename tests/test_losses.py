"""CategoryConsistentLoss and OhemCrossEntropy against values computed by hand."""

import math

import pytest
import torch
import torch.nn.functional as F

from ccnet.losses import CategoryConsistentLoss, OhemCrossEntropy

VOID = 255


def embeddings_from_points(points) -> torch.Tensor:
    """points: nested list [B][w] of E-vectors -> embeddings (B, E, 1, w), float64."""
    return torch.tensor(points, dtype=torch.float64).permute(0, 2, 1)[:, :, None, :]


def phi_var_by_hand(d: float, delta_v: float = 0.5, delta_d: float = 1.5) -> float:
    if d <= delta_v:
        return 0.0
    if d <= delta_d:
        return (d - delta_v) ** 2
    return d - delta_d + (delta_d - delta_v) ** 2


# -------------------------------------------------------------------------------------------------
# Category consistent loss
# -------------------------------------------------------------------------------------------------


def test_ccl_two_classes_by_hand():
    # Class 0: (0,0), (2,0) -> mean (1,0), distances 1, 1.
    # Class 1: (0,3), (0,-1) -> mean (0,1), distances 2, 2.
    emb = embeddings_from_points([[[0, 0], [2, 0], [0, 3], [0, -1]]])
    labels = torch.tensor([[[0, 0, 1, 1]]])
    alpha, beta, gamma = 1.0, 0.5, 0.1
    l_var = ((0.5**2 + 0.5**2) / 2 + (1.5 + 1.5) / 2) / 2  # phi(1) = 0.25, phi(2) = 2 - 1.5 + 1 = 1.5
    l_dis = 2 * (3 - math.sqrt(2)) ** 2 / (2 * 1)  # |mu0 - mu1| = sqrt 2, both ordered pairs
    l_reg = (1 + 1) / 2
    expected = alpha * l_var + beta * l_dis + gamma * l_reg
    loss = CategoryConsistentLoss(alpha=alpha, beta=beta, gamma=gamma)(emb, labels)
    assert loss.item() == pytest.approx(expected, abs=1e-12)


def test_ccl_quadratic_distance_by_hand():
    emb = embeddings_from_points([[[0, 0], [2, 0], [0, 3], [0, -1]]])
    labels = torch.tensor([[[0, 0, 1, 1]]])
    l_var = ((1 - 0.5) ** 2 + (2 - 0.5) ** 2) / 2  # max(0, d - delta_v)^2, same d within each class
    l_dis = (3 - math.sqrt(2)) ** 2
    expected = l_var + l_dis + 0.001 * 1.0
    loss = CategoryConsistentLoss(distance="quadratic")(emb, labels)
    assert loss.item() == pytest.approx(expected, abs=1e-12)


def test_ccl_three_classes_across_the_batch_with_void_by_hand():
    # Class 0: (0,0) (0,0) (3,0) -> mean (1,0), d = 1, 1, 2. Class 2: (0,4) (0,6) -> mean (0,5), d = 1, 1.
    # Class 5: (2,0) alone -> d = 0. Void pixels sit far away and must change nothing.
    emb = embeddings_from_points(
        [
            [[0, 0], [0, 0], [0, 4], [100, 100]],
            [[3, 0], [2, 0], [0, 6], [-50, 7]],
        ]
    )
    labels = torch.tensor([[[0, 0, 2, VOID]], [[0, 5, 2, VOID]]])
    l_var = ((0.25 + 0.25 + 1.5) / 3 + (0.25 + 0.25) / 2 + 0.0) / 3
    # Means (1,0), (0,5), (2,0): only |mu0 - mu5| = 1 is within 2 * delta_d = 3.
    l_dis = 2 * (3 - 1) ** 2 / (3 * 2)
    l_reg = (1 + 5 + 2) / 3
    expected = l_var + l_dis + 0.001 * l_reg
    loss = CategoryConsistentLoss()(emb, labels)
    assert loss.item() == pytest.approx(expected, abs=1e-12)


def test_ccl_honours_a_custom_ignore_index():
    emb = embeddings_from_points([[[0, 0], [2, 0], [9, 9]]])
    with_void = CategoryConsistentLoss(ignore_index=-1)(emb, torch.tensor([[[4, 4, -1]]]))
    without = CategoryConsistentLoss(ignore_index=-1)(emb[..., :2], torch.tensor([[[4, 4]]]))
    assert with_void.item() == pytest.approx(without.item(), abs=1e-12)
    assert with_void.item() == pytest.approx(0.25 + 0.001 * 1.0, abs=1e-12)


def test_ccl_downsamples_labels_to_the_feature_size():
    torch.manual_seed(0)
    emb = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    small = torch.randint(0, 3, (2, 4, 5))
    small[0, 0, 0] = VOID
    big = small.repeat_interleave(4, dim=1).repeat_interleave(4, dim=2)  # (2, 16, 20), 4x4 blocks
    loss = CategoryConsistentLoss()
    assert loss(emb, big).item() == pytest.approx(loss(emb, small).item(), abs=1e-12)


@pytest.mark.parametrize("knot", [0.5, 1.5])
def test_ccl_variance_term_is_continuous_at_delta_v_and_delta_d(knot):
    # One class, two pixels at +-d: mean 0, both at distance d, so the loss is phi_var(d).
    loss = CategoryConsistentLoss(gamma=0.0)

    def at(d):
        emb = embeddings_from_points([[[d, 0], [-d, 0]]])
        return loss(emb, torch.tensor([[[1, 1]]])).item()

    eps = 1e-9
    assert at(knot - eps) == pytest.approx(at(knot + eps), abs=1e-7)
    assert at(knot) == pytest.approx(phi_var_by_hand(knot), abs=1e-12)
    for d in (0.3, 0.9, 1.5, 2.7):
        assert at(d) == pytest.approx(phi_var_by_hand(d), abs=1e-12)


def test_ccl_distance_term_is_continuous_at_twice_delta_d():
    loss = CategoryConsistentLoss(gamma=0.0)

    def at(d):  # two one-pixel classes d apart: only l_dis is non-zero
        emb = embeddings_from_points([[[0, 0], [d, 0]]])
        return loss(emb, torch.tensor([[[0, 1]]])).item()

    assert at(3.0 - 1e-9) == pytest.approx(0.0, abs=1e-12)
    assert at(3.0 + 1e-9) == 0.0
    assert at(2.0) == pytest.approx(1.0, abs=1e-12)


def test_ccl_is_zero_for_tight_far_apart_classes():
    # Every pixel within delta_v of its class mean, means 4 > 2 * delta_d apart.
    emb = embeddings_from_points([[[0, 0.4], [0, -0.4], [4, 0.3], [4, -0.3], [0, 4.2], [0, 3.8]]])
    labels = torch.tensor([[[0, 0, 1, 1, 2, 2]]])
    assert CategoryConsistentLoss(gamma=0.0)(emb, labels).item() == 0.0
    # Means (0,0), (4,0), (0,4): the regulariser alone is (0 + 4 + 4) / 3.
    assert CategoryConsistentLoss(gamma=1.0)(emb, labels).item() == pytest.approx(8 / 3, abs=1e-12)


def test_ccl_one_class_is_finite_with_finite_gradients_even_at_the_mean():
    emb = embeddings_from_points([[[1, 2], [1, 2], [1, 2]]]).requires_grad_(True)  # all on the mean
    loss = CategoryConsistentLoss()(emb, torch.tensor([[[3, 3, 3]]]))
    assert loss.item() == pytest.approx(0.001 * math.sqrt(5), abs=1e-12)  # only l_reg remains
    loss.backward()
    assert torch.isfinite(emb.grad).all()


def test_ccl_with_no_class_is_zero_and_differentiable():
    emb = torch.randn(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    loss = CategoryConsistentLoss()(emb, torch.full((2, 3, 3), VOID))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(emb.grad, torch.zeros_like(emb))


def test_ccl_coincident_class_means_give_finite_gradients():
    # Two classes with the same mean: the pair distance is 0, where a plain norm's gradient is NaN.
    emb = embeddings_from_points([[[1, 0], [-1, 0], [0, 1], [0, -1]]]).requires_grad_(True)
    loss = CategoryConsistentLoss()(emb, torch.tensor([[[0, 0, 1, 1]]]))
    assert loss.item() == pytest.approx(0.25 + 9.0, abs=1e-12)  # phi(1) per class; (2*1.5 - 0)^2
    loss.backward()
    assert torch.isfinite(emb.grad).all()


@pytest.mark.parametrize("distance", ["piecewise", "quadratic"])
def test_ccl_gradcheck(distance):
    torch.manual_seed(1)
    emb = torch.randn(2, 3, 3, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 3, (2, 3, 4))
    labels[1, 2, 3] = VOID
    loss = CategoryConsistentLoss(distance=distance, gamma=0.1)
    assert torch.autograd.gradcheck(lambda e: loss(e, labels), (emb,))


def test_ccl_rejects_bad_arguments():
    with pytest.raises(ValueError, match="distance"):
        CategoryConsistentLoss(distance="cubic")
    with pytest.raises(ValueError, match="delta_v < delta_d"):
        CategoryConsistentLoss(delta_v=2.0, delta_d=1.0)
    loss = CategoryConsistentLoss()
    with pytest.raises(ValueError, match=r"\(B, E, h, w\)"):
        loss(torch.zeros(3, 4, 5), torch.zeros(1, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="labels of shape"):
        loss(torch.zeros(2, 3, 4, 5), torch.zeros(1, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        loss(torch.zeros(1, 3, 4, 5), torch.zeros(1, 4, 5))


# -------------------------------------------------------------------------------------------------
# OHEM cross entropy
# -------------------------------------------------------------------------------------------------


def logits_with_true_probs(probs) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-class logits (1, 2, 1, n) whose softmax gives class 0 the probabilities ``probs``."""
    p = torch.tensor(probs, dtype=torch.float64)
    logits = torch.stack([p.log(), (1 - p).log()])[None, :, None, :]  # (1, 2, 1, n)
    return logits, torch.zeros(1, 1, len(probs), dtype=torch.long)


def random_batch(seed=0):
    torch.manual_seed(seed)
    logits = torch.randn(2, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 4, (2, 5, 6))
    labels[0, :2] = VOID
    return logits, labels


def test_ohem_equals_cross_entropy_when_every_pixel_is_kept():
    logits, labels = random_batch()
    plain = F.cross_entropy(logits, labels, ignore_index=VOID)
    assert OhemCrossEntropy(thresh=1.0, min_kept=0)(logits, labels).item() == pytest.approx(plain.item())
    assert OhemCrossEntropy(thresh=0.0, min_kept=10**6)(logits, labels).item() == pytest.approx(plain.item())


def test_ohem_keeps_only_pixels_below_the_threshold():
    logits, labels = logits_with_true_probs([0.9, 0.6, 0.3, 0.95, 0.5])
    labels[0, 0, 4] = VOID  # 0.5 would be kept were it not void
    ohem = OhemCrossEntropy(thresh=0.7, min_kept=1)
    assert ohem.kept_mask(logits, labels).tolist() == [[[False, True, True, False, False]]]
    expected = (-math.log(0.6) - math.log(0.3)) / 2
    assert ohem(logits, labels).item() == pytest.approx(expected, abs=1e-12)


def test_ohem_raises_the_threshold_to_keep_min_kept_hardest_pixels():
    logits, labels = logits_with_true_probs([0.9, 0.6, 0.3, 0.95])
    ohem = OhemCrossEntropy(thresh=0.5, min_kept=3)  # only 0.3 is below 0.5; 0.6 and 0.9 join it
    expected = (-math.log(0.9) - math.log(0.6) - math.log(0.3)) / 3
    assert ohem(logits, labels).item() == pytest.approx(expected, abs=1e-12)


def test_ohem_class_weights_give_a_weighted_mean_over_kept_pixels():
    logits, labels = random_batch(seed=3)
    weight = [1.0, 2.0, 0.5, 3.0]
    ohem = OhemCrossEntropy(thresh=0.3, min_kept=5, weight=weight)
    kept = ohem.kept_mask(logits, labels)
    assert 5 <= int(kept.sum()) < int((labels != VOID).sum())
    target = labels.masked_fill(~kept, VOID)
    expected = F.cross_entropy(
        logits, target, weight=torch.tensor(weight, dtype=torch.float64), ignore_index=VOID
    )
    assert ohem(logits, labels).item() == pytest.approx(expected.item(), abs=1e-12)


def test_ohem_with_only_void_pixels_is_zero_and_differentiable():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = OhemCrossEntropy()(logits, torch.full((1, 2, 2), VOID))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_ohem_rejects_mismatched_labels():
    with pytest.raises(ValueError, match=r"labels of shape \(1, 4, 4\)"):
        OhemCrossEntropy()(torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="min_kept"):
        OhemCrossEntropy(min_kept=-1)


def test_3d_affinity_targets_match_the_3d_cross_by_brute_force():
    from ccnet.attention import criss_cross_attention_3d
    from ccnet.losses import AttentionAffinityLoss, same_class_targets_3d

    generator = torch.Generator().manual_seed(3)
    t, h, w = 3, 4, 5
    cells = torch.randint(0, 3, (2, t, h, w), generator=generator)
    cells[0, 1, 2, 2] = 255
    targets, valid = same_class_targets_3d(cells, 255)
    assert targets.shape == (2, t, h, w, t + h + w)
    for b, f, y, x in [(0, 0, 0, 0), (1, 2, 3, 4), (0, 1, 2, 3)]:
        own = int(cells[b, f, y, x])
        same_time = [s != f and int(cells[b, s, y, x]) == own for s in range(t)]
        same_col = [i != y and int(cells[b, f, i, x]) == own for i in range(h)]
        same_row = [int(cells[b, f, y, j]) == own for j in range(w)]  # the own position, once, here
        expected = torch.tensor(same_time + same_col + same_row, dtype=torch.float32)
        torch.testing.assert_close(targets[b, f, y, x], expected / expected.sum())
    assert not valid[0, 1, 2, 2]
    # The loss takes 3D attention with clip labels (B, T, H, W) or frame-major labels (B*T, H, W).
    q, k, v = (torch.randn(2, 4, t, h, w, generator=generator) for _ in range(3))
    _, attn = criss_cross_attention_3d(q, k, v)
    labels = cells.repeat_interleave(8, dim=-1).repeat_interleave(8, dim=-2)  # (B, T, 8h, 8w)
    loss = AttentionAffinityLoss(255)
    clip_loss = loss([attn], labels)
    assert torch.isfinite(clip_loss) and clip_loss > 0
    torch.testing.assert_close(loss([attn], labels.flatten(0, 1)), clip_loss)
    perfect = targets.clamp(min=1e-9) / targets.clamp(min=1e-9).sum(-1, keepdim=True)
    assert loss([perfect], labels) < clip_loss  # the target itself scores better than random attention
