"""The fast exact criss-cross attention: channels-last tensors and a hand-written backward.

Why it is fast (measured on CPU in ``docs/BENCHMARKS.md``):
- Everything lives in channels-last (B, h, w, C). A row of the map is then a (w, C) matrix with a
  contiguous last dim, and so is a column ((h, C), row stride w*C): both are fed to batched matrix
  products as strided views, so nothing is permuted or copied to reach rows or columns.
- The three 1x1 projections are one GEMM (``F.linear`` with the three weights stacked), and the
  residual scale gamma is folded into the value weights, so ``out = x + A @ (gamma * V)`` is one
  ``baddbmm`` per direction with the residual as its accumulator.
- One softmax over the joined column and row scores (a shared max and sum), never concatenated.
- A custom ``autograd.Function`` whose backward writes the query, key and value gradients straight
  into one buffer, the layout the projection's backward reads, with no slice-gradient zero fills.

Attention is kept apart as ``attn_col`` (B, w, h, h) ``[b, x, y, y']`` and ``attn_row`` (B, h, w, w)
``[b, y, x, x']``; the public (B, h, w, h + w) layout is built only when asked for.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _rows(t: torch.Tensor) -> torch.Tensor:
    """(B, h, w, c) -> (B*h, w, c): one matrix per image row, a view whenever strides allow."""
    b, h, w, c = t.shape
    return t.reshape(b * h, w, c)


def _columns(t: torch.Tensor, image: int) -> torch.Tensor:
    """(B, h, w, c) -> (w, h, c) for one image: one matrix per column, a strided view."""
    return t[image].transpose(0, 1)


def _split(qkv: torch.Tensor, qk_channels: int):
    """Views of the stacked projections: q, k (B, h, w, C'), v (B, h, w, C)."""
    return qkv[..., :qk_channels], qkv[..., qk_channels : 2 * qk_channels], qkv[..., 2 * qk_channels :]


def joint_softmax_attention(q: torch.Tensor, k: torch.Tensor):
    """Criss-cross attention weights from channels-last q, k (B, h, w, C').

    Returns (attn_col (B, w, h, h) [b, x, y, y'], attn_row (B, h, w, w) [b, y, x, x']); the pixel's
    own column entry is exactly 0 (it is counted in its row). Each pixel's h + w weights sum to 1.
    """
    b, h, w, _ = q.shape
    energy_row = torch.bmm(_rows(q), _rows(k).transpose(1, 2)).view(b, h, w, w)  # (B, h, w, w)
    energy_col = q.new_empty(b, w, h, h)  # (B, w, h, h)
    for image in range(b):  # b and x cannot share one batch dim of a strided view
        cols_q, cols_k = _columns(q, image), _columns(k, image)  # (w, h, C')
        torch.bmm(cols_q, cols_k.transpose(1, 2), out=energy_col[image])
    energy_col.diagonal(dim1=2, dim2=3).fill_(float("-inf"))

    # One softmax over the joined scores: shared max and shared sum, computed in place.
    peak = torch.maximum(energy_row.amax(-1), energy_col.amax(-1).transpose(1, 2))  # (B, h, w)
    attn_row = energy_row.sub_(peak.unsqueeze(-1)).exp_()  # (B, h, w, w)
    attn_col = energy_col.sub_(peak.transpose(1, 2).unsqueeze(-1)).exp_()  # (B, w, h, h)
    total = attn_row.sum(-1) + attn_col.sum(-1).transpose(1, 2)  # (B, h, w)
    attn_row.div_(total.unsqueeze(-1))
    attn_col.div_(total.transpose(1, 2).unsqueeze(-1))
    return attn_col, attn_row


def join_attention(attn_col: torch.Tensor, attn_row: torch.Tensor) -> torch.Tensor:
    """The public layout (B, h, w, h + w): column weights first, then row weights."""
    return torch.cat([attn_col.permute(0, 2, 1, 3), attn_row], dim=-1)  # (B, h, w, h+w)


def aggregate(attn_col, attn_row, v, residual=None):
    """residual + sum over each pixel's cross of attention x value, channels-last (B, h, w, C)."""
    b, h, w, c = v.shape
    if residual is None:
        out = torch.bmm(attn_row.view(b * h, w, w), _rows(v))  # (B*h, w, C)
    else:
        out = torch.baddbmm(_rows(residual), attn_row.view(b * h, w, w), _rows(v))  # (B*h, w, C)
    out = out.view(b, h, w, c)
    for image in range(b):
        _columns(out, image).baddbmm_(attn_col[image], _columns(v, image))  # (w, h, C) += (w,h,h)@(w,h,C)
    return out


class CrissCrossFunction(torch.autograd.Function):
    """out = residual + CCA(q, k, v) on channels-last stacked projections ``qkv`` (B, h, w, 2C' + C).

    Saves qkv and the two attention parts (B*h*w*(h + w) numbers, less than v itself) and writes
    the q, k, v gradients into one (B, h, w, 2C' + C) buffer, the layout ``F.linear``'s backward reads.
    """

    @staticmethod
    def forward(ctx, qkv, residual, qk_channels: int, return_attention: bool):
        q, k, v = _split(qkv, qk_channels)
        attn_col, attn_row = joint_softmax_attention(q, k)  # (B, w, h, h), (B, h, w, w)
        out = aggregate(attn_col, attn_row, v, residual)  # (B, h, w, C)
        ctx.save_for_backward(qkv, attn_col, attn_row)
        ctx.qk_channels = qk_channels
        ctx.has_residual = residual is not None
        ctx.set_materialize_grads(False)
        if return_attention:
            return out, join_attention(attn_col, attn_row)  # (B, h, w, h+w)
        empty = qkv.new_empty(0)
        ctx.mark_non_differentiable(empty)
        return out, empty

    @staticmethod
    def backward(ctx, grad_out, grad_attn):
        qkv, attn_col, attn_row = ctx.saved_tensors
        q, k, v = _split(qkv, ctx.qk_channels)
        b, h, w, _ = q.shape
        grad_qkv = torch.empty_like(qkv, memory_format=torch.contiguous_format)  # (B, h, w, 2C'+C)
        grad_q, grad_k, grad_v = _split(grad_qkv, ctx.qk_channels)

        # Gradient of the attention weights, still split (B, h, w, w) and (B, w, h, h).
        if grad_out is not None:
            grad_out = grad_out.contiguous()  # (B, h, w, C)
            _value_gradient(attn_col, attn_row, grad_out, grad_v)
            grad_row, grad_col = _attention_gradient(grad_out, v)
        else:
            grad_v.zero_()
            grad_row, grad_col = torch.zeros_like(attn_row), torch.zeros_like(attn_col)
        if grad_attn is not None and grad_attn.numel():
            grad_col += grad_attn[..., :h].permute(0, 2, 1, 3)
            grad_row += grad_attn[..., h:]

        # Softmax backward over the joined scores: dE = A * (dA - sum(A * dA)), in place.
        dot = (attn_row * grad_row).sum(-1) + (attn_col * grad_col).sum(-1).transpose(1, 2)  # (B, h, w)
        grad_energy_row = grad_row.sub_(dot.unsqueeze(-1)).mul_(attn_row)  # (B, h, w, w)
        grad_energy_col = grad_col.sub_(dot.transpose(1, 2).unsqueeze(-1)).mul_(attn_col)  # (B, w, h, h)
        _query_key_gradients(grad_energy_col, grad_energy_row, q, k, grad_q, grad_k)

        grad_residual = grad_out if ctx.has_residual else None
        return grad_qkv, grad_residual, None, None


def _value_gradient(attn_col, attn_row, grad_out, grad_v):
    """grad_v = A^T grad_out along rows, plus along columns; written into the grad_qkv buffer."""
    b, h, w, _ = grad_out.shape
    torch.bmm(attn_row.view(b * h, w, w).transpose(1, 2), _rows(grad_out), out=_rows(grad_v))
    for image in range(b):
        cols_grad = _columns(grad_out, image)  # (w, h, C)
        _columns(grad_v, image).baddbmm_(attn_col[image].transpose(1, 2), cols_grad)


def _attention_gradient(grad_out, v):
    """dA = grad_out . v over each pixel's row and column: (B, h, w, w) and (B, w, h, h)."""
    b, h, w, _ = v.shape
    grad_row = torch.bmm(_rows(grad_out), _rows(v).transpose(1, 2)).view(b, h, w, w)  # (B, h, w, w)
    grad_col = v.new_empty(b, w, h, h)  # (B, w, h, h)
    for image in range(b):
        torch.bmm(_columns(grad_out, image), _columns(v, image).transpose(1, 2), out=grad_col[image])
    return grad_row, grad_col


def _query_key_gradients(grad_energy_col, grad_energy_row, q, k, grad_q, grad_k):
    """dQ = dE K and dK = dE^T Q along rows and columns, written into the grad_qkv buffer."""
    b, h, w, _ = q.shape
    rows_grad = grad_energy_row.view(b * h, w, w)
    torch.bmm(rows_grad, _rows(k), out=_rows(grad_q))
    torch.bmm(rows_grad.transpose(1, 2), _rows(q), out=_rows(grad_k))
    for image in range(b):
        cols_grad = grad_energy_col[image]  # (w, h, h)
        _columns(grad_q, image).baddbmm_(cols_grad, _columns(k, image))
        _columns(grad_k, image).baddbmm_(cols_grad.transpose(1, 2), _columns(q, image))


# -------------------------------------------------------------------------------------------------
# Entry points
# -------------------------------------------------------------------------------------------------


def fused_projection_weights(query_conv, key_conv, value_conv, gamma):
    """One (2C' + C, C) weight and bias for the three 1x1 convolutions, gamma folded into the value."""
    weight = torch.cat(
        [query_conv.weight.flatten(1), key_conv.weight.flatten(1), gamma * value_conv.weight.flatten(1)]
    )  # (2C'+C, C)
    bias = torch.cat([query_conv.bias, key_conv.bias, gamma * value_conv.bias])  # (2C'+C,)
    return weight, bias


def criss_cross_step(x_nhwc, weight, bias, qk_channels: int, return_attention: bool = False):
    """One CCA loop in channels-last: x + gamma * CCA(x), gamma already folded into weight and bias.

    x_nhwc (B, h, w, C) -> (out (B, h, w, C), attn (B, h, w, h + w) or an empty tensor).
    """
    qkv = F.linear(x_nhwc, weight, bias)  # (B, h, w, 2C'+C)
    return CrissCrossFunction.apply(qkv, x_nhwc, qk_channels, return_attention)


def criss_cross_attention_fused(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    """The fast path on projected (B, C', h, w), (B, C', h, w), (B, C, h, w) tensors.

    Returns (aggregated (B, C, h, w), attn (B, h, w, h + w)), both differentiable.
    """
    qkv = torch.cat([q, k, v], dim=1).permute(0, 2, 3, 1).contiguous()  # (B, h, w, 2C'+C)
    out, attn = CrissCrossFunction.apply(qkv, None, q.shape[1], True)  # (B, h, w, C)
    return out.permute(0, 3, 1, 2).contiguous(), attn  # (B, C, h, w)


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> contiguous (B, h, w, C); free when x is already in channels_last format."""
    return x.permute(0, 2, 3, 1).contiguous()  # (B, h, w, C)


def from_channels_last(x_nhwc: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B, h, w, C) -> (B, C, h, w) in the memory format of ``like`` (the module's input)."""
    out = x_nhwc.permute(0, 3, 1, 2)  # (B, C, h, w), channels_last strides
    if like.is_contiguous(memory_format=torch.channels_last) and not like.is_contiguous():
        return out
    return out.contiguous()
