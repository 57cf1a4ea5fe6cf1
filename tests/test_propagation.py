"""Influence maps against brute-force composition through dense (hw x hw) matrices."""

import pytest
import torch

from ccnet.attention import criss_cross_attention, cross_to_dense
from ccnet.propagation import influence_maps


def random_attentions(loops, b, h, w):
    """Per-loop attention tensors from random projections, as a trained RCCA would give."""
    attentions = []
    for _ in range(loops):
        q, k = torch.randn(2, b, 3, h, w, dtype=torch.float64)
        _, attn = criss_cross_attention(q, k, torch.zeros(b, 1, h, w, dtype=torch.float64))
        attentions.append(attn)
    return attentions


def brute_force(attentions, y, x, mode, gammas):
    """e_u^T T_r ... T_1 with T = A (attention) or |gamma| A + I (rollout), for r = 1..R."""
    b, h, w, _ = attentions[0].shape
    u = y * w + x
    identity = torch.eye(h * w, dtype=torch.float64)
    maps = []
    for r in range(1, len(attentions) + 1):
        product = identity.expand(b, -1, -1)
        for loop in reversed(range(r)):  # T_r first ... T_1 last
            dense = cross_to_dense(attentions[loop])  # (B, hw, hw)
            if mode == "rollout":
                dense = abs(gammas[loop]) * dense + identity
            product = product @ dense
        row = product[:, u]  # (B, hw)
        maps.append((row / row.sum(-1, keepdim=True)).view(b, h, w))
    return torch.stack(maps, dim=1)  # (B, R, h, w)


@pytest.mark.parametrize("mode", ["attention", "rollout"])
@pytest.mark.parametrize("loops", [1, 2, 3])
@pytest.mark.parametrize("b,h,w", [(1, 5, 5), (2, 4, 7), (1, 6, 3)])
def test_equals_brute_force_composition(mode, loops, b, h, w):
    attentions = random_attentions(loops, b, h, w)
    gammas = [float(g) for g in torch.randn(loops)]
    y, x = int(torch.randint(h, ())), int(torch.randint(w, ()))
    got = influence_maps(attentions, y, x, mode=mode, gammas=gammas)
    torch.testing.assert_close(got, brute_force(attentions, y, x, mode, gammas))
    torch.testing.assert_close(got.sum(dim=(-2, -1)), torch.ones(b, loops, dtype=torch.float64))


def test_one_loop_reaches_only_the_cross_two_loops_reach_everything():
    h, w, y, x = 6, 7, 2, 4
    maps = influence_maps(random_attentions(3, 1, h, w), y, x)[0]  # (R, h, w)
    on_cross = torch.zeros(h, w, dtype=torch.bool)
    on_cross[y, :] = True
    on_cross[:, x] = True
    assert torch.all(maps[0][on_cross] > 0)
    assert torch.all(maps[0][~on_cross] == 0)
    assert torch.all(maps[1] > 0)
    assert torch.all(maps[2] > 0)


def test_unbatched_attentions_give_unbatched_maps():
    attentions = random_attentions(2, 1, 4, 5)
    unbatched = influence_maps([a[0] for a in attentions], 1, 2)
    assert unbatched.shape == (2, 4, 5)
    torch.testing.assert_close(unbatched, influence_maps(attentions, 1, 2)[0])


def test_rollout_keeps_mass_on_the_clicked_pixel():
    attentions = random_attentions(2, 1, 5, 5)
    pure = influence_maps(attentions, 2, 2)[0]
    rollout = influence_maps(attentions, 2, 2, mode="rollout", gammas=0.5)[0]
    assert torch.all(rollout[:, 2, 2] > pure[:, 2, 2])


@pytest.mark.parametrize(
    "kwargs,words",
    [
        (dict(attentions=[], y=0, x=0), "at least one loop"),
        (dict(y=9, x=0), "outside"),
        (dict(y=0, x=-1), "outside"),
        (dict(y=0, x=0, mode="magic"), "mode"),
        (dict(y=0, x=0, mode="rollout", gammas=[1.0]), "one gamma per loop"),
    ],
)
def test_bad_input_raises_clear_value_error(kwargs, words):
    kwargs.setdefault("attentions", random_attentions(2, 1, 4, 4))
    with pytest.raises(ValueError, match=words):
        influence_maps(**kwargs)


def test_mismatched_or_malformed_attentions_raise():
    with pytest.raises(ValueError, match="same shape"):
        influence_maps(random_attentions(1, 1, 4, 4) + random_attentions(1, 1, 5, 4), 0, 0)
    with pytest.raises(ValueError, match="h \\+ w"):
        influence_maps([torch.rand(1, 4, 4, 4)], 0, 0)
    with pytest.raises(ValueError, match="list"):
        influence_maps(torch.rand(1, 4, 4, 8), 0, 0)


@pytest.mark.parametrize("b,h,w", [(1, 5, 5), (2, 4, 7), (1, 1, 6), (3, 6, 1)])
def test_cross_row_and_column_are_the_dense_matrix_row_and_column(b, h, w):
    """The O(h + w) first step of every propagation equals row / column u of the dense (hw x hw) matrix."""
    from ccnet.propagation import cross_column, cross_row

    (attn,) = random_attentions(1, b, h, w)
    dense = cross_to_dense(attn)  # (B, hw, hw)
    for y, x in [(0, 0), (h - 1, w - 1), (h // 2, w // 3)]:
        u = y * w + x
        torch.testing.assert_close(cross_row(attn, y, x), dense[:, u].view(b, h, w))
        torch.testing.assert_close(cross_column(attn, y, x), dense[:, :, u].view(b, h, w))
        torch.testing.assert_close(cross_row(attn[0], y, x), dense[0, u].view(h, w))  # unbatched too


@pytest.mark.parametrize("mode", ["attention", "rollout"])
def test_gradients_flow_through_every_loop(mode):
    """influence_maps is differentiable (e.g. to ask which attention weights made a map): backward works at
    R = 3 and matches the brute-force composition's gradient."""
    attentions = [a.requires_grad_() for a in random_attentions(3, 1, 4, 5)]
    gammas = [0.5, -1.5, 2.0]
    weights = torch.rand(1, 3, 4, 5, dtype=torch.float64)
    (influence_maps(attentions, 2, 3, mode=mode, gammas=gammas) * weights).sum().backward()
    got = [a.grad.clone() for a in attentions]
    for a in attentions:
        a.grad = None
    (brute_force(attentions, 2, 3, mode, gammas) * weights).sum().backward()
    for mine, expected in zip(got, [a.grad for a in attentions], strict=True):
        torch.testing.assert_close(mine, expected)
