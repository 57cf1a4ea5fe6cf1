"""Per-image attention questions (ccnet.propagation) against dense compositions in float64."""

from __future__ import annotations

import math

import pytest
import torch

from ccnet.attention import cross_to_dense
from ccnet.propagation import (
    class_attention_matrix,
    influence_maps,
    query_independence,
    reverse_influence_maps,
)

IGNORE = 255


def random_attentions(loops: int, h: int, w: int, seed: int = 0) -> list[torch.Tensor]:
    """Valid criss-cross attentions: softmax over each cell's cross, own column entry 0."""
    torch.manual_seed(seed)
    attentions = []
    for _ in range(loops):
        scores = torch.randn(h, w, h + w, dtype=torch.float64)
        own = torch.zeros(h, w, h + w, dtype=torch.bool)
        own[torch.arange(h)[:, None], torch.arange(w)[None, :], torch.arange(h)[:, None]] = True
        attentions.append(torch.softmax(scores.masked_fill(own, float("-inf")), dim=-1))
    return attentions


def dense_products(attentions) -> list[torch.Tensor]:
    """A_r ... A_1 as (hw, hw) matrices, r = 1..R (rows: receiving cells)."""
    products, current = [], None
    for attn in attentions:
        dense = cross_to_dense(attn.unsqueeze(0))[0]  # (hw, hw)
        current = dense if current is None else dense @ current
        products.append(current)
    return products


SHAPES = [(3, 4, 1), (4, 3, 2), (3, 5, 3), (1, 6, 2), (5, 1, 3)]


@pytest.mark.parametrize("h,w,loops", SHAPES)
def test_reverse_maps_are_columns_of_the_composition(h, w, loops):
    attentions = random_attentions(loops, h, w)
    products = dense_products(attentions)
    for y, x in [(0, 0), (h - 1, w - 1), (h // 2, w // 2)]:
        reverse = reverse_influence_maps(attentions, y, x)  # (R, h, w)
        for r in range(loops):
            torch.testing.assert_close(reverse[r].reshape(-1), products[r][:, y * w + x])
        # the same number as reading each cell's own influence map at (y, x)
        u = (h - 1, 0)
        assert reverse[-1][u] == pytest.approx(float(influence_maps(attentions, *u)[-1, y, x]))


@pytest.mark.parametrize("h,w,loops", SHAPES)
def test_class_matrix_matches_dense_brute_force(h, w, loops):
    attentions = random_attentions(loops, h, w, seed=1)
    generator = torch.Generator().manual_seed(2)
    classes = torch.randint(0, 3, (h, w), generator=generator)
    classes.view(-1)[0] = IGNORE
    num_classes = 4  # class 3 is absent: its row is NaN
    matrix = class_attention_matrix(attentions, classes, num_classes, IGNORE)  # (R, K, K)
    flat = classes.reshape(-1)
    known = flat != IGNORE
    for r, product in enumerate(dense_products(attentions)):
        for i in range(num_classes):
            members = [u for u in range(h * w) if flat[u] == i]
            if not members:
                assert torch.isnan(matrix[r, i]).all()
                continue
            for j in range(num_classes):
                shares = [float(product[u, (flat == j) & known].sum() / product[u, known].sum()) for u in members]
                assert float(matrix[r, i, j]) == pytest.approx(sum(shares) / len(shares), rel=1e-9, abs=1e-12)
            assert float(matrix[r, i].sum()) == pytest.approx(1.0)


def test_class_matrix_checks_shapes():
    attentions = random_attentions(2, 3, 4)
    with pytest.raises(ValueError, match="must match the attention grid"):
        class_attention_matrix(attentions, torch.zeros(4, 3, dtype=torch.long), 2, IGNORE)


def test_query_independence_is_one_for_identical_maps_and_lower_for_distinct_ones():
    same = torch.rand(1, 4, 5).repeat(6, 1, 1)
    assert query_independence(same) == pytest.approx(1.0)
    one_hots = torch.eye(20, dtype=torch.float64).reshape(20, 4, 5)[:6]
    assert query_independence(one_hots) == pytest.approx(0.0)
    attentions = random_attentions(2, 5, 6)
    maps = torch.stack([influence_maps(attentions, y, x)[-1] for y, x in [(0, 0), (4, 5), (2, 3)]])
    value = query_independence(maps)
    assert 0 < value < 1 and not math.isnan(value)
    with pytest.raises(ValueError, match="at least two"):
        query_independence(maps[:1])


def test_final_maps_of_many_cells_equal_one_at_a_time():
    from ccnet.propagation import final_influence_maps

    attentions = random_attentions(3, 4, 5, seed=4)
    cells = [(0, 0), (3, 4), (2, 1)]
    together = final_influence_maps(attentions, cells)  # (N, h, w)
    for index, cell in enumerate(cells):
        torch.testing.assert_close(together[index], influence_maps(attentions, *cell)[-1])
    with pytest.raises(ValueError, match="outside"):
        final_influence_maps(attentions, [(4, 0)])


def test_region_maps_are_the_mean_of_their_cells_maps():
    from ccnet.propagation import region_influence_maps

    attentions = random_attentions(3, 4, 5, seed=5)
    region = torch.zeros(4, 5, dtype=torch.bool)
    region[1:3, 2:4] = True
    region[0, 0] = True
    maps = region_influence_maps(attentions, region)  # (R, h, w)
    cells = region.nonzero().tolist()
    expected = torch.stack([influence_maps(attentions, y, x) for y, x in cells]).mean(dim=0)  # (R, h, w)
    torch.testing.assert_close(maps, expected)
    with pytest.raises(ValueError, match="non-empty"):
        region_influence_maps(attentions, torch.zeros(4, 5, dtype=torch.bool))
