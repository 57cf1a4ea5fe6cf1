"""Influence maps across video frames: ``ccnet.propagation`` for 3D criss-cross attention.

A position (t, y, x) of a (T, h, w) feature volume attends along its own position in the other frames, its
column and its row (``criss_cross_attention_3d``: T + h + w weights, the own position counted once, in the
row part). With A_r the (Thw x Thw) attention of loop r, the influence of every source position on u after r
loops is the row ``e_u^T A_r ... A_1``; rollout uses ``|gamma_r| A_r + I``. As in 2D the dense matrices are
never built: one step touches each position's cross, O(Thw (T + h + w)).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ccnet.propagation import MODES, loop_shape


def apply_cross_transposed_3d(maps: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """``m^T A``: every position's mass spread over its 3D cross by its weights.

    maps (..., T, h, w), attn (..., T, h, w, T + h + w) with matching leading dims; returns (..., T, h, w).
    """
    t, h = maps.shape[-3], maps.shape[-2]
    to_time = torch.einsum("...tyx,...tyxs->...syx", maps, attn[..., :t])  # (..., T, h, w)
    to_column = torch.einsum("...tyx,...tyxi->...tix", maps, attn[..., t : t + h])  # (..., T, h, w)
    to_row = torch.einsum("...tyx,...tyxj->...tyj", maps, attn[..., t + h :])  # (..., T, h, w)
    return to_time + to_column + to_row


def apply_cross_3d(maps: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """``A m``: every position gathers its 3D cross's values by its weights. Shapes as above."""
    t, h = maps.shape[-3], maps.shape[-2]
    from_time = torch.einsum("...tyxs,...syx->...tyx", attn[..., :t], maps)  # (..., T, h, w)
    from_column = torch.einsum("...tyxi,...tix->...tyx", attn[..., t : t + h], maps)  # (..., T, h, w)
    from_row = torch.einsum("...tyxj,...tyj->...tyx", attn[..., t + h :], maps)  # (..., T, h, w)
    return from_time + from_column + from_row


def _stack(attentions: Sequence[torch.Tensor]) -> torch.Tensor:
    """R tensors (1, T, h, w, T+h+w) or (T, h, w, T+h+w) -> (R, T, h, w, T+h+w)."""
    shape = loop_shape(attentions)
    if len(shape) == 5:
        if shape[0] != 1:
            raise ValueError(f"one clip's attentions at a time: expected (1, T, h, w, T + h + w), got {shape}")
        attentions = [a[0] for a in attentions]
        shape = shape[1:]
    if len(shape) != 4 or shape[-1] != sum(shape[:3]):
        raise ValueError(f"expected attention tensors (1, T, h, w, T + h + w) or (T, h, w, T + h + w), got {shape}")
    return torch.stack(list(attentions))  # (R, T, h, w, T+h+w)


def _one_hot(like: torch.Tensor, t: int, y: int, x: int) -> torch.Tensor:
    frames, h, w = like.shape[1:4]
    if not (0 <= t < frames and 0 <= y < h and 0 <= x < w):
        raise ValueError(f"position (t={t}, y={y}, x={x}) is outside the {frames}x{h}x{w} feature volume")
    start = like.new_zeros(frames, h, w)
    start[t, y, x] = 1
    return start


def _scales(mode: str, gammas, loops: int) -> list[float] | None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "attention":
        return None
    gammas = 1.0 if gammas is None else gammas
    gammas = [float(gammas)] * loops if isinstance(gammas, int | float) else [float(g) for g in gammas]
    if len(gammas) != loops:
        raise ValueError(f"rollout needs one gamma per loop ({loops}), got {len(gammas)}")
    return [abs(g) for g in gammas]


def influence_maps_3d(
    attentions: Sequence[torch.Tensor],
    t: int,
    y: int,
    x: int,
    mode: str = "attention",
    gammas: float | Sequence[float] | None = None,
) -> torch.Tensor:
    """Influence of every position of the clip on (t, y, x) after 1, 2, ..., R loops: (R, T, h, w).

    attentions: R tensors (1, T, h, w, T + h + w) or (T, h, w, T + h + w), loop 1 first. mode "attention"
    composes the attention alone, "rollout" adds the residual path (``|gamma_r| A_r + I``). Each map sums to 1.
    """
    stacked = _stack(attentions)  # (R, T, h, w, T+h+w)
    scales = _scales(mode, gammas, len(stacked))
    start = _one_hot(stacked, t, y, x)  # (T, h, w)
    maps = []
    for loops in range(1, len(stacked) + 1):
        chain = start
        for r in reversed(range(loops)):  # e_u^T A_loops ... A_1: loop `loops` first
            spread = apply_cross_transposed_3d(chain, stacked[r])  # (T, h, w)
            chain = spread if scales is None else scales[r] * spread + chain
        maps.append(chain / chain.sum())
    return torch.stack(maps)  # (R, T, h, w)


def reverse_influence_maps_3d(attentions: Sequence[torch.Tensor], t: int, y: int, x: int) -> torch.Tensor:
    """Who reads from (t, y, x): column u of ``A_r ... A_1`` for r = 1..R, as (R, T, h, w) (not normalised)."""
    stacked = _stack(attentions)  # (R, T, h, w, T+h+w)
    current = _one_hot(stacked, t, y, x)  # (T, h, w)
    maps = []
    for attn in stacked:  # A_1 first
        current = apply_cross_3d(current, attn)  # (T, h, w)
        maps.append(current)
    return torch.stack(maps)  # (R, T, h, w)


def uniform_attention_3d(t: int, h: int, w: int, dtype=torch.float32) -> torch.Tensor:
    """Attention that weighs every position of each cross alike (the own position once, as the real one):
    (T, h, w, T + h + w). The baseline a learned map is read against."""
    attn = torch.ones(t, h, w, t + h + w, dtype=dtype)
    frames, rows = torch.arange(t), torch.arange(h)
    attn[frames, :, :, frames] = 0  # own position in the time part
    attn[:, rows, :, t + rows] = 0  # own position in the column part
    return attn / attn.sum(-1, keepdim=True)


def frame_shares(maps: torch.Tensor) -> torch.Tensor:
    """Share of each map's influence that lies in each frame: maps (R, T, h, w) -> (R, T), rows summing to 1."""
    per_frame = maps.sum(dim=(-2, -1))  # (R, T)
    return per_frame / per_frame.sum(dim=-1, keepdim=True)


def temporal_share(maps: torch.Tensor, t: int) -> torch.Tensor:
    """Share of each map's influence that comes from frame t: maps (R, T, h, w) -> (R,).

    1 means the clicked frame alone; read it against the same share under ``uniform_attention_3d``.
    """
    return frame_shares(maps)[:, t]  # (R,)
