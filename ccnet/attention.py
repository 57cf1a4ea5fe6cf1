"""Criss-cross attention (2D and 3D), its recurrent form, and the non-local baseline.

Layout of the 2D attention returned everywhere: (B, h, w, h + w). For the pixel (y, x),
``attn[b, y, x, :h]`` are its weights over its column (rows 0..h-1 at column x, its own entry
exactly 0 so that it is counted once) and ``attn[b, y, x, h:]`` over its row (itself included).

Formulations of the same maths live here:
- ``criss_cross_attention``: the fast path (``ccnet.fast_attention``: channels-last tensors, one
  joint softmax, a hand-written backward). The modules use its fused form, which also merges the
  three 1x1 projections into one GEMM and the residual into the aggregation.
- ``criss_cross_attention_einsum``: the formulation most public code uses, kept for benchmarks.
- ``criss_cross_attention_bmm``: our first version (batched products over permuted copies), kept
  for the benchmark history.
- ``criss_cross_attention_reference``: dense (hw x hw) attention with everything off the cross
  masked to -inf. Slow and memory hungry; it is the definition the others are tested against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ccnet.fast_attention import (
    channels_last_view,
    criss_cross_attention_fused,
    criss_cross_step,
    from_channels_last,
    fused_projection_weights,
)

# -------------------------------------------------------------------------------------------------
# Functional forms on projected tensors: q, k (B, C', h, w), v (B, C, h, w).
# Each returns (aggregated (B, C, h, w), attention (B, h, w, h + w)); no gamma, no residual.
# -------------------------------------------------------------------------------------------------


def _own_position_mask(h: int, device: torch.device) -> torch.Tensor:
    """-inf on the diagonal: a pixel is counted in its row, so its column entry is removed."""
    return torch.diag(torch.full((h,), float("-inf"), device=device))  # (h, h)


def criss_cross_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    """Exact criss-cross attention, the fastest path (channels-last, hand-written backward).

    The aggregated map comes in v's memory format: channels-last q, k, v (``x.to(memory_format=torch.channels_last)``)
    skip the layout transposes NCHW tensors cost (q, k, v in, the output out, their gradients back).
    """
    return criss_cross_attention_fused(q, k, v)


def criss_cross_attention_bmm(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    """Our first version: batched matrix products over permuted contiguous copies."""
    b, _, h, w = q.shape
    # Column scores: for each column x, (h, C') @ (C', h) gives every pixel's column affinities.
    q_cols = q.permute(0, 3, 2, 1).reshape(b * w, h, -1)  # (B*w, h, C')
    k_cols = k.permute(0, 3, 1, 2).reshape(b * w, -1, h)  # (B*w, C', h)
    energy_col = torch.bmm(q_cols, k_cols).view(b, w, h, h)  # (B, w, h, h)
    energy_col = energy_col + _own_position_mask(h, q.device).to(q.dtype)
    # Row scores: for each row y, (w, C') @ (C', w).
    q_rows = q.permute(0, 2, 3, 1).reshape(b * h, w, -1)  # (B*h, w, C')
    k_rows = k.permute(0, 2, 1, 3).reshape(b * h, -1, w)  # (B*h, C', w)
    energy_row = torch.bmm(q_rows, k_rows).view(b, h, w, w)  # (B, h, w, w)

    energy = torch.cat([energy_col.permute(0, 2, 1, 3), energy_row], dim=-1)  # (B, h, w, h+w)
    attn = F.softmax(energy, dim=-1)  # (B, h, w, h+w)

    attn_col = attn[..., :h].permute(0, 2, 1, 3).reshape(b * w, h, h)  # (B*w, h, h)
    attn_row = attn[..., h:].reshape(b * h, w, w)  # (B*h, w, w)
    v_cols = v.permute(0, 3, 2, 1).reshape(b * w, h, -1)  # (B*w, h, C)
    v_rows = v.permute(0, 2, 3, 1).reshape(b * h, w, -1)  # (B*h, w, C)
    out_col = torch.bmm(attn_col, v_cols).view(b, w, h, -1).permute(0, 3, 2, 1)  # (B, C, h, w)
    out_row = torch.bmm(attn_row, v_rows).view(b, h, w, -1).permute(0, 3, 1, 2)  # (B, C, h, w)
    return out_col + out_row, attn


def criss_cross_attention_einsum(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    """The common einsum formulation (as most CCA re-implementations write it)."""
    h = q.shape[2]
    energy_col = torch.einsum("bcyx,bcix->byxi", q, k)  # (B, h, w, h)
    energy_col = energy_col + _own_position_mask(h, q.device).to(q.dtype)[:, None, :]
    energy_row = torch.einsum("bcyx,bcyj->byxj", q, k)  # (B, h, w, w)
    attn = F.softmax(torch.cat([energy_col, energy_row], dim=-1), dim=-1)  # (B, h, w, h+w)
    out_col = torch.einsum("byxi,bcix->bcyx", attn[..., :h], v)  # (B, C, h, w)
    out_row = torch.einsum("byxj,bcyj->bcyx", attn[..., h:], v)  # (B, C, h, w)
    return out_col + out_row, attn


def criss_cross_mask(h: int, w: int, device=None) -> torch.Tensor:
    """Boolean (hw, hw) matrix: True where key position is on the query position's cross."""
    ys = torch.arange(h, device=device).repeat_interleave(w)  # (hw,)
    xs = torch.arange(w, device=device).repeat(h)  # (hw,)
    return (ys[:, None] == ys[None, :]) | (xs[:, None] == xs[None, :])  # (hw, hw)


def criss_cross_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    """Dense attention with everything off the cross masked to -inf (the definition)."""
    b, _, h, w = q.shape
    energy = torch.einsum("bcn,bcm->bnm", q.flatten(2), k.flatten(2))  # (B, hw, hw)
    energy = energy.masked_fill(~criss_cross_mask(h, w, q.device), float("-inf"))
    dense = F.softmax(energy, dim=-1)  # (B, hw, hw)
    out = torch.einsum("bnm,bcm->bcn", dense, v.flatten(2)).view_as(v)  # (B, C, h, w)
    return out, dense_to_cross(dense, h, w)


def dense_to_cross(dense: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Read the (B, h, w, h + w) layout out of a dense (B, hw, hw) criss-cross attention."""
    b = dense.shape[0]
    grid = dense.view(b, h, w, h, w)  # (B, y, x, y', x')
    column = grid.diagonal(dim1=2, dim2=4).permute(0, 1, 3, 2).clone()  # (B, h, w, h): [y, x, y']
    column.diagonal(dim1=1, dim2=3).zero_()  # own entry lives in the row part
    row = grid.diagonal(dim1=1, dim2=3).permute(0, 3, 1, 2)  # (B, h, w, w): [y, x, x']
    return torch.cat([column, row], dim=-1)  # (B, h, w, h+w)


def cross_to_dense(attn: torch.Tensor) -> torch.Tensor:
    """Inverse of ``dense_to_cross``: scatter (B, h, w, h + w) into a dense (B, hw, hw) matrix."""
    b, h, w, _ = attn.shape
    grid = attn.new_zeros(b, h, w, h, w)  # (B, y, x, y', x')
    grid.diagonal(dim1=2, dim2=4).copy_(attn[..., :h].permute(0, 1, 3, 2))  # column part
    grid.diagonal(dim1=1, dim2=3).add_(attn[..., h:].permute(0, 2, 3, 1))  # row part (adds own)
    return grid.view(b, h * w, h * w)


# -------------------------------------------------------------------------------------------------
# Modules
# -------------------------------------------------------------------------------------------------


def _check_feature_map(x: torch.Tensor, channels: int, dims: int, layout: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"expected a tensor of shape {layout}, got {type(x).__name__}")
    if x.dim() != dims:
        raise ValueError(f"expected a {dims}-D tensor {layout}, got shape {tuple(x.shape)}")
    if x.shape[1] != channels:
        raise ValueError(f"expected {channels} channels (dim 1 of {layout}), got shape {tuple(x.shape)}")
    if any(size == 0 for size in x.shape[2:]):
        raise ValueError(f"expected a non-empty spatial size in {layout}, got shape {tuple(x.shape)}")


class _Projections(nn.Module):
    """Query/key/value 1x1 convolutions and the residual scale, named as the official code names them."""

    def __init__(self, in_channels: int, qk_channels: int | None, conv: type[nn.Module]):
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be at least 1, got {in_channels}")
        qk_channels = max(1, in_channels // 8) if qk_channels is None else qk_channels
        if qk_channels < 1:
            raise ValueError(f"qk_channels must be at least 1, got {qk_channels}")
        self.in_channels = in_channels
        self.qk_channels = qk_channels
        self.query_conv = conv(in_channels, qk_channels, kernel_size=1)
        self.key_conv = conv(in_channels, qk_channels, kernel_size=1)
        self.value_conv = conv(in_channels, in_channels, kernel_size=1)
        # gamma starts at 0 so a fresh module is the identity and training grows the attention path.
        self.gamma = nn.Parameter(torch.zeros(1))

    def project(self, x: torch.Tensor):
        return self.query_conv(x), self.key_conv(x), self.value_conv(x)

    def fused_weights(self):
        """The three projections as one (2C' + C, C) weight and bias, gamma folded into the value part."""
        return fused_projection_weights(self.query_conv, self.key_conv, self.value_conv, self.gamma)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, qk_channels={self.qk_channels}"


class CrissCrossAttention(_Projections):
    """One criss-cross attention module: each pixel attends to the h + w - 1 pixels of its row and column."""

    def __init__(self, in_channels: int, qk_channels: int | None = None):
        super().__init__(in_channels, qk_channels, nn.Conv2d)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        _check_feature_map(x, self.in_channels, 4, "(B, C, h, w)")
        weight, bias = self.fused_weights()  # (2C'+C, C), (2C'+C,)
        out, attn = criss_cross_step(channels_last_view(x), weight, bias, self.qk_channels, return_attention)
        out = from_channels_last(out, like=x)  # (B, C, h, w)
        return (out, attn) if return_attention else out


class RecurrentCrissCrossAttention(nn.Module):
    """RCCA: one criss-cross attention module applied ``recurrence`` times with shared weights."""

    def __init__(self, in_channels: int, recurrence: int = 2, qk_channels: int | None = None):
        super().__init__()
        self.recurrence = _check_recurrence(recurrence)
        self.cca = CrissCrossAttention(in_channels, qk_channels)

    def forward(self, x: torch.Tensor, recurrence: int | None = None, return_attention: bool = False):
        loops = self.recurrence if recurrence is None else _check_recurrence(recurrence)
        _check_feature_map(x, self.cca.in_channels, 4, "(B, C, h, w)")
        if loops == 0:
            return (x, []) if return_attention else x
        # The whole loop stays channels-last: one layout change in, one out.
        weight, bias = self.cca.fused_weights()  # (2C'+C, C), (2C'+C,)
        state = channels_last_view(x)  # (B, h, w, C)
        attentions = []
        for _ in range(loops):
            state, attn = criss_cross_step(state, weight, bias, self.cca.qk_channels, return_attention)
            if return_attention:
                attentions.append(attn)  # (B, h, w, h+w)
        out = from_channels_last(state, like=x)  # (B, C, h, w)
        return (out, attentions) if return_attention else out

    def extra_repr(self) -> str:
        return f"recurrence={self.recurrence}"


RCCA = RecurrentCrissCrossAttention


def _check_recurrence(recurrence) -> int:
    if isinstance(recurrence, bool) or not isinstance(recurrence, int) or recurrence < 0:
        raise ValueError(f"recurrence must be an integer >= 0 (0 = no attention), got {recurrence!r}")
    return recurrence


# -------------------------------------------------------------------------------------------------
# 3D criss-cross attention: positions sharing at least two of (t, y, x), T + h + w - 2 of them.
# -------------------------------------------------------------------------------------------------


def criss_cross_attention_3d(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    """Exact 3D criss-cross attention; q, k (B, C', T, h, w), v (B, C, T, h, w).

    Returns (aggregated (B, C, T, h, w), attn (B, T, h, w, T + h + w)) with ``[..., :T]`` over time
    (own entry 0), ``[..., T:T+h]`` over the column (own entry 0) and ``[..., T+h:]`` over the row.
    """
    t, h = q.shape[2], q.shape[3]
    energy_time = torch.einsum("bctyx,bcsyx->btyxs", q, k)  # (B, T, h, w, T)
    energy_time = energy_time + _own_position_mask(t, q.device).to(q.dtype)[:, None, None, :]
    energy_col = torch.einsum("bctyx,bctix->btyxi", q, k)  # (B, T, h, w, h)
    energy_col = energy_col + _own_position_mask(h, q.device).to(q.dtype)[:, None, :]
    energy_row = torch.einsum("bctyx,bctyj->btyxj", q, k)  # (B, T, h, w, w)
    attn = F.softmax(torch.cat([energy_time, energy_col, energy_row], dim=-1), dim=-1)
    out = (
        torch.einsum("btyxs,bcsyx->bctyx", attn[..., :t], v)
        + torch.einsum("btyxi,bctix->bctyx", attn[..., t : t + h], v)
        + torch.einsum("btyxj,bctyj->bctyx", attn[..., t + h :], v)
    )  # (B, C, T, h, w)
    return out, attn


def criss_cross_mask_3d(t: int, h: int, w: int, device=None) -> torch.Tensor:
    """Boolean (Thw, Thw): True where two positions share at least two of their three coordinates."""
    grid = torch.stack(
        torch.meshgrid(
            torch.arange(t, device=device),
            torch.arange(h, device=device),
            torch.arange(w, device=device),
            indexing="ij",
        ),
        dim=-1,
    ).view(-1, 3)  # (Thw, 3)
    shared = (grid[:, None, :] == grid[None, :, :]).sum(-1)  # (Thw, Thw)
    return shared >= 2


def criss_cross_attention_3d_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    """Dense masked 3D reference: returns (aggregated (B, C, T, h, w), dense attn (B, Thw, Thw))."""
    _, _, t, h, w = q.shape
    energy = torch.einsum("bcn,bcm->bnm", q.flatten(2), k.flatten(2))  # (B, Thw, Thw)
    energy = energy.masked_fill(~criss_cross_mask_3d(t, h, w, q.device), float("-inf"))
    dense = F.softmax(energy, dim=-1)  # (B, Thw, Thw)
    out = torch.einsum("bnm,bcm->bcn", dense, v.flatten(2)).view_as(v)
    return out, dense


class CrissCrossAttention3D(_Projections):
    """Criss-cross attention over video features (B, C, T, h, w), as in the paper's CamVid experiments."""

    def __init__(self, in_channels: int, qk_channels: int | None = None):
        super().__init__(in_channels, qk_channels, nn.Conv3d)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        _check_feature_map(x, self.in_channels, 5, "(B, C, T, h, w)")
        aggregated, attn = criss_cross_attention_3d(*self.project(x))  # (B, C, T, h, w)
        out = self.gamma * aggregated + x
        return (out, attn) if return_attention else out


# -------------------------------------------------------------------------------------------------
# Non-local block: the dense baseline, with the same projections as CCA.
# -------------------------------------------------------------------------------------------------


def non_local_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    """Dense softmax attention over all hw positions; returns (aggregated, attn (B, hw, hw))."""
    query = q.flatten(2).transpose(1, 2)  # (B, hw, C')
    attn = F.softmax(torch.bmm(query, k.flatten(2)), dim=-1)  # (B, hw, hw)
    out = torch.bmm(v.flatten(2), attn.transpose(1, 2)).view_as(v)  # (B, C, h, w)
    return out, attn


class NonLocalBlock(_Projections):
    """Non-local (dense) attention block: every pixel attends to every pixel; O((hw)^2) cost."""

    def __init__(self, in_channels: int, qk_channels: int | None = None):
        super().__init__(in_channels, qk_channels, nn.Conv2d)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        _check_feature_map(x, self.in_channels, 4, "(B, C, h, w)")
        aggregated, attn = non_local_attention(*self.project(x))  # (B, C, h, w), (B, hw, hw)
        out = self.gamma * aggregated + x
        return (out, attn) if return_attention else out
