"""From per-loop criss-cross attention to a pixel's influence map after 1..R loops.

With A_r the (hw x hw) attention of loop r (rows are receiving pixels), the influence of every
source position on pixel u after r loops is the row ``e_u^T A_r ... A_1`` (brief, section RCCA,
treating the 1x1 convolutions as identity). Rollout adds the residual path: ``T_r = |gamma_r| A_r + I``.

The dense matrices are never built: applying ``m^T A`` to a map m only touches each pixel's cross,
O(hw (h + w)) per loop. Chain r applies A_r first and A_1 last, so the R chains use different
loops at each step; they are advanced together, one step for all of them at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

MODES = ("attention", "rollout")


def apply_cross_transposed(maps: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """``m^T A`` for each map m: spread every pixel's mass over its cross by its attention weights.

    maps (..., h, w) and attn (..., h, w, h + w) with matching leading dims; returns (..., h, w).
    """
    h = maps.shape[-2]
    to_column = torch.einsum("...yx,...yxi->...ix", maps, attn[..., :h])  # (..., h, w)
    to_row = torch.einsum("...yx,...yxj->...yj", maps, attn[..., h:])  # (..., h, w)
    return to_column + to_row


def cross_row(attn: torch.Tensor, y: int, x: int) -> torch.Tensor:
    """Row (y, x) of one loop's attention as a map: where (y, x) reads from, ``e_u^T A`` in O(h + w).

    attn (..., h, w, h + w); returns (..., h, w), zero off (y, x)'s cross. The one-hot start of every
    chain makes the first step of a propagation this slice, not a full sparse step.
    """
    h, w = attn.shape[-3], attn.shape[-2]
    row = attn.new_zeros(attn.shape[:-3] + (h, w))  # (..., h, w)
    row[..., :, x] = attn[..., y, x, :h]  # its column
    row[..., y, :] += attn[..., y, x, h:]  # its row (adds the weight on itself)
    return row


def cross_column(attn: torch.Tensor, y: int, x: int) -> torch.Tensor:
    """Column (y, x) of one loop's attention as a map: who reads from (y, x), ``A e_u`` in O(h + w).

    attn (..., h, w, h + w); returns (..., h, w): cell (i, x) reads (y, x) through its column part at index
    y, cell (y, j) through its row part at index h + x.
    """
    h, w = attn.shape[-3], attn.shape[-2]
    column = attn.new_zeros(attn.shape[:-3] + (h, w))  # (..., h, w)
    column[..., :, x] = attn[..., :, x, y]
    column[..., y, :] += attn[..., y, :, h + x]
    return column


def influence_maps(
    attentions: Sequence[torch.Tensor],
    y: int,
    x: int,
    mode: str = "attention",
    gammas: float | Sequence[float] | None = None,
) -> torch.Tensor:
    """Influence of every feature position on position (y, x) after 1, 2, ..., R loops.

    attentions: R tensors (B, h, w, h + w) or (h, w, h + w), loop 1 first (as RCCA returns them).
    mode: "attention" composes the attention alone; "rollout" includes the residual path,
    ``|gamma_r| * A_r + I`` per loop. gammas: the residual scale of each loop (one float for all,
    default 1.0); only used by rollout.
    Returns (B, R, h, w) or (R, h, w); map r - 1 sums to 1.
    """
    stacked, batched = _stack_attentions(attentions)  # (R, B, h, w, h+w)
    loops, batch, h, w, _ = stacked.shape
    _check_position(y, x, h, w)
    scales = _residual_scales(mode, gammas, loops, stacked)  # (R,) or None

    # chains[r] follows "after r + 1 loops"; all start as the one-hot map of (y, x), so their first step
    # (chain r by loop r) is row (y, x) of that loop.
    chains = cross_row(stacked, y, x)  # (R, B, h, w)
    if scales is not None:
        one_hot = stacked.new_zeros(batch, h, w)
        one_hot[:, y, x] = 1
        chains = scales.view(-1, 1, 1, 1) * chains + one_hot
    for step in range(1, loops):
        # Chains step..R-1 still advance, chain r by loop r - step (0-based): loops 0..R-1-step in order, so
        # both are slices (views). Indexing with an index tensor copied the attentions at every step (3/4 of
        # the time at R = 3 on a 45 x 60 grid).
        current = chains[step:]  # (n, B, h, w)
        spread = apply_cross_transposed(current, stacked[: loops - step])  # (n, B, h, w)
        if scales is not None:
            spread = scales[: loops - step].view(-1, 1, 1, 1) * spread + current
        chains = torch.cat([chains[:step], spread])  # a new tensor: `current` stays intact for autograd

    chains = chains / chains.sum(dim=(-2, -1), keepdim=True)  # each map sums to 1
    maps = chains.transpose(0, 1)  # (B, R, h, w)
    return maps if batched else maps[0]


def loop_shape(attentions: Sequence[torch.Tensor]) -> tuple[int, ...]:
    """The one shape of a list of per-loop attentions; ValueError for a tensor, an empty list or mixed shapes."""
    if isinstance(attentions, torch.Tensor):
        raise ValueError("attentions must be a list of per-loop tensors (as RCCA returns), not one tensor")
    if len(attentions) == 0:
        raise ValueError("attentions is empty: influence maps need at least one loop (recurrence >= 1)")
    shapes = {tuple(a.shape) for a in attentions}
    if len(shapes) != 1:
        raise ValueError(f"every loop's attention must have the same shape, got {sorted(shapes)}")
    return shapes.pop()


def _stack_attentions(attentions: Sequence[torch.Tensor]) -> tuple[torch.Tensor, bool]:
    shape = loop_shape(attentions)
    if len(shape) not in (3, 4) or shape[-1] != shape[-3] + shape[-2]:
        raise ValueError(f"expected attention tensors (B, h, w, h + w) or (h, w, h + w), got {shape}")
    batched = len(shape) == 4
    stacked = torch.stack([a if batched else a.unsqueeze(0) for a in attentions])  # (R, B, h, w, h+w)
    return stacked, batched


def _check_position(y: int, x: int, h: int, w: int) -> None:
    if not (0 <= y < h and 0 <= x < w):
        raise ValueError(f"position (y={y}, x={x}) is outside the {h}x{w} feature map")


def _residual_scales(mode: str, gammas, loops: int, like: torch.Tensor) -> torch.Tensor | None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "attention":
        return None
    if gammas is None:
        gammas = 1.0
    if isinstance(gammas, (int, float)):
        gammas = [float(gammas)] * loops
    if len(gammas) != loops:
        raise ValueError(f"rollout needs one gamma per loop ({loops}), got {len(gammas)}")
    # Magnitude of the attention path against the identity: a negative learned gamma still mixes in.
    return torch.tensor([abs(float(g)) for g in gammas], dtype=like.dtype, device=like.device)


# -------------------------------------------------------------------------------------------------
# The other direction: who reads from a pixel, and who reads from which class
# -------------------------------------------------------------------------------------------------


def apply_cross(maps: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """``A m`` for each map m: every pixel gathers its cross's values by its attention weights.

    maps (..., h, w) and attn (..., h, w, h + w) with matching leading dims; returns (..., h, w).
    """
    h = maps.shape[-2]
    from_column = torch.einsum("...yxi,...ix->...yx", attn[..., :h], maps)  # (..., h, w)
    from_row = torch.einsum("...yxj,...yj->...yx", attn[..., h:], maps)  # (..., h, w)
    return from_column + from_row


def _propagate_forward(stacked: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """``A_r ... A_1 m`` for r = 1..R: stacked (R, h, w, h+w), start (..., h, w) -> (R, ..., h, w)."""
    results, current = [], start
    for attn in stacked:  # loop 1 first: the composition applies A_1 to m first
        current = apply_cross(current, attn)  # (..., h, w)
        results.append(current)
    return torch.stack(results)


def reverse_influence_maps(attentions: Sequence[torch.Tensor], y: int, x: int) -> torch.Tensor:
    """Who reads from cell (y, x): column (y, x) of ``A_r ... A_1`` for r = 1..R, as (R, h, w).

    Entry [r, u] is the share of u's influence after r + 1 loops that comes from (y, x) (the same
    number ``influence_maps(attentions, *u)[r, y, x]`` gives), so a map does not sum to 1.
    """
    stacked, batched = _stack_attentions(attentions)  # (R, B, h, w, h+w)
    if batched and stacked.shape[1] != 1:
        raise ValueError("reverse_influence_maps takes one image's attentions: (h, w, h + w) per loop")
    stacked = stacked[:, 0]  # (R, h, w, h+w)
    _, h, w, _ = stacked.shape
    _check_position(y, x, h, w)
    first = cross_column(stacked[0], y, x)  # (h, w): A_1 e_u, no sparse step needed from a one-hot start
    if len(stacked) == 1:
        return first.unsqueeze(0)
    return torch.cat([first.unsqueeze(0), _propagate_forward(stacked[1:], first)])  # (R, h, w)


def class_attention_matrix(
    attentions: Sequence[torch.Tensor], cell_classes: torch.Tensor, num_classes: int, ignore_index: int
) -> torch.Tensor:
    """Who attends to whom, by class: (R, K, K); [r, i, j] = mean over the known cells u of class i of
    the share of u's influence after r + 1 loops that lies on class-j cells (among known cells).

    Rows sum to 1; the row of a class absent from the image is NaN. The K class-indicator maps (and
    one of all known cells, the denominator) are propagated through the loops: K + 1 influence maps'
    worth of work, never an hw x hw matrix. attentions: (h, w, h + w) per loop; cell_classes (h, w).
    """
    stacked, batched = _stack_attentions(attentions)  # (R, B, h, w, h+w)
    if batched and stacked.shape[1] != 1:
        raise ValueError("class_attention_matrix takes one image's attentions: (h, w, h + w) per loop")
    stacked = stacked[:, 0].double()  # (R, h, w, h+w)
    classes = torch.as_tensor(cell_classes, device=stacked.device).long()  # (h, w)
    if classes.shape != stacked.shape[1:3]:
        grid = tuple(stacked.shape[1:3])
        raise ValueError(f"cell_classes {tuple(classes.shape)} must match the attention grid {grid}")
    known = classes != ignore_index  # (h, w)
    labels = torch.arange(num_classes, device=stacked.device).view(-1, 1, 1)  # (K, 1, 1)
    indicators = ((classes == labels) & known).double()  # (K, h, w)
    reached = _propagate_forward(stacked, torch.cat([indicators, known.double().unsqueeze(0)]))  # (R, K+1, h, w)
    shares = reached[:, :num_classes] / reached[:, num_classes:].clamp(min=1e-300)  # (R, K, h, w): P_u(class j)
    counts = indicators.sum(dim=(-2, -1))  # (K,) cells of class i
    # [r, i, j] = sum over u of class i of shares[r, j, u], over the count of class i
    sums = torch.einsum("ihw,rjhw->rij", indicators, shares)  # (R, K, K)
    matrix = sums / counts.view(1, -1, 1)
    matrix[:, counts == 0] = float("nan")
    return matrix


def query_independence(maps: torch.Tensor) -> float:
    """Mean cosine similarity between the influence maps of different query cells, maps (N, h, w).

    Near 1: every query sees the same map (GCNet's finding about non-local blocks); low: query-specific.
    """
    flat = maps.reshape(maps.shape[0], -1).double()  # (N, hw)
    if flat.shape[0] < 2:
        raise ValueError("query_independence needs the maps of at least two query cells")
    unit = flat / flat.norm(dim=1, keepdim=True).clamp(min=1e-300)
    similarity = unit @ unit.T  # (N, N)
    n = flat.shape[0]
    return float((similarity.sum() - similarity.diagonal().sum()) / (n * (n - 1)))


def final_influence_maps(attentions: Sequence[torch.Tensor], cells: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Influence maps after all R loops of many cells at once: (N, h, w), the last map of
    ``influence_maps(attentions, y, x)`` for each (y, x), in one pass of batched sparse steps."""
    stacked, batched = _stack_attentions(attentions)  # (R, B, h, w, h+w)
    if batched and stacked.shape[1] != 1:
        raise ValueError("final_influence_maps takes one image's attentions: (h, w, h + w) per loop")
    stacked = stacked[:, 0]  # (R, h, w, h+w)
    _, h, w, _ = stacked.shape
    maps = stacked.new_zeros(len(cells), h, w)  # (N, h, w): one-hot rows e_u
    for index, (y, x) in enumerate(cells):
        _check_position(y, x, h, w)
        maps[index, y, x] = 1
    for attn in reversed(stacked):  # e_u^T A_R ... A_1: the last loop first
        maps = apply_cross_transposed(maps, attn)  # (N, h, w): the ellipsis broadcasts attn over N
    return maps / maps.sum(dim=(-2, -1), keepdim=True)


def region_influence_maps(attentions: Sequence[torch.Tensor], region: torch.Tensor) -> torch.Tensor:
    """The influence maps of a region's cells averaged, after 1..R loops: (R, h, w), each summing to 1.

    region: (h, w) bool. The average of rows e_u^T A_r ... A_1 over u in the region is one map propagated
    from the region's normalised indicator (the step is linear), so a region costs what one cell costs.
    """
    stacked, batched = _stack_attentions(attentions)  # (R, B, h, w, h+w)
    if batched and stacked.shape[1] != 1:
        raise ValueError("region_influence_maps takes one image's attentions: (h, w, h + w) per loop")
    stacked = stacked[:, 0]  # (R, h, w, h+w)
    mask = torch.as_tensor(region, device=stacked.device).bool()
    if mask.shape != stacked.shape[1:3] or not mask.any():
        raise ValueError(f"region must be a non-empty (h, w) = {tuple(stacked.shape[1:3])} mask")
    start = mask.to(stacked.dtype) / mask.sum()  # (h, w)
    maps = []
    for loops in range(1, stacked.shape[0] + 1):
        current = start
        for attn in reversed(stacked[:loops]):  # the last of these loops first
            current = apply_cross_transposed(current, attn)  # (h, w)
        maps.append(current / current.sum())
    return torch.stack(maps)  # (R, h, w)
