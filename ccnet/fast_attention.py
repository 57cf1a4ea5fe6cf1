"""The fast exact criss-cross attention: channels-last tensors and a hand-written backward.

Why it is fast (measured on CPU in ``docs/BENCHMARKS.md``):
- Everything lives in channels-last (B, h, w, C). For one image, its rows are a batch of (w, C)
  matrices and its columns a batch of (h, C) matrices (row stride w*C), both with a contiguous last
  dim, so batched matrix products read them as strided views: no operand is permuted or copied.
- The three 1x1 projections are one GEMM (the three weights stacked), gamma is folded into the
  value weights, and the residual is the accumulator of the aggregation (``out = x + A @ (gamma V)``
  in one ``baddbmm``). The projections' GEMMs, forward and backward, run on MKL or oneDNN, whichever
  measured faster on this CPU (``ccnet.projections``).
- One softmax over the joined column and row scores (a shared max and sum), never concatenated.
- A custom ``autograd.Function``: its backward writes the query, key and value gradients straight
  into one buffer, the layout the projection's backward reads, with no slice-gradient zero fills.
- The first loop reads an NCHW input in place: for one image, (C, h*w) transposed is a valid GEMM
  operand, so the input is never converted (oneDNN's way converts it while it projects). Its gradient is
  formed channels-last and transposed once into the input's own NCHW strides.
- Layout changes (NHWC <-> NCHW) go through ``copy_between_layouts``: a blocked copy or PyTorch's strided copy,
  whichever measured faster on this CPU for that direction and size (timed once, on first use).
- A batched product whose result is strided (the columns of an NHWC map, a slice of the stacked q, k, v) is
  computed into a small contiguous buffer and copied or added over (``product_into``): PyTorch's CPU batched
  product uses MKL's batch call only for a contiguous result.

Attention is kept apart as ``attn_col`` (B, w, h, h) ``[b, x, y, y']`` and ``attn_row`` (B, h, w, w)
``[b, y, x, x']``; the public (B, h, w, h + w) layout is built only when asked for.
The code is device-agnostic PyTorch (it also runs on CUDA, where batched products take the same
strided views); loops over the batch keep every view strided rather than copied.
"""

from __future__ import annotations

import time
from collections import OrderedDict

import torch
from torch.autograd.function import once_differentiable

from ccnet import projections

# -------------------------------------------------------------------------------------------------
# Layout helpers. x is channels-last (B, h, w, c) with a contiguous last dim.
# -------------------------------------------------------------------------------------------------


def _columns(image_map: torch.Tensor) -> torch.Tensor:
    """(h, w, c) -> (w, h, c): one image's columns as a batch of matrices (a strided view)."""
    return image_map.transpose(0, 1)


def _pixels(image_map: torch.Tensor) -> torch.Tensor:
    """(h, w, c) -> (h*w, c), always a view (results are written through it): one row per pixel.

    NHWC gives a row-major matrix, NCHW seen as (h, w, c) a column-major one; both are GEMM operands.
    """
    h, w, c = image_map.shape
    return image_map.view(h * w, c)


def _split(qkv: torch.Tensor, qk_channels: int):
    """Views of the stacked projections: q, k (..., C'), v (..., C)."""
    return qkv[..., :qk_channels], qkv[..., qk_channels : 2 * qk_channels], qkv[..., 2 * qk_channels :]


# Bytes of the scratch buffer a batched product with a strided result is computed into, a chunk of matrices at a
# time: small enough to stay in cache between the product and the copy (or sum) into the result.
SCRATCH_BYTES = 4 * 2**20


def product_into(result: torch.Tensor, a: torch.Tensor, b: torch.Tensor, accumulate: bool = False) -> None:
    """result = a @ b, or result += a @ b, for batches of matrices (n, m, k) @ (n, k, p) -> (n, m, p).

    On CPU, PyTorch runs a batched product as one MKL batch call only when its result is contiguous; into a
    strided result (a column view of an NHWC map, a slice of the stacked q, k, v) it loops over single products,
    1.1-1.3x slower per product at 97x97x512 on an AMD EPYC (benchmarks/profile_attention.py, bench_ablations.py;
    whole products including the sums, so the loop itself is slower still). So a strided result is computed into a
    small contiguous buffer, a chunk of matrices at a time, and copied or added over: exact, the same sums.
    """
    if result.is_contiguous() or result.device.type != "cpu":
        if accumulate:
            result.baddbmm_(a, b)
        else:
            torch.bmm(a, b, out=result)
        return
    n, m, p = result.shape
    chunk = max(1, min(n, SCRATCH_BYTES // (m * p * result.element_size())))
    scratch = result.new_empty(chunk, m, p)  # (chunk, m, p)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        part = scratch[: stop - start]
        torch.bmm(a[start:stop], b[start:stop], out=part)
        if accumulate:
            result[start:stop].add_(part)
        else:
            result[start:stop].copy_(part)


# -------------------------------------------------------------------------------------------------
# Forward pieces
# -------------------------------------------------------------------------------------------------


def joint_softmax_attention(q: torch.Tensor, k: torch.Tensor):
    """Criss-cross attention weights from channels-last q, k (B, h, w, C').

    Returns (attn_col (B, w, h, h) [b, x, y, y'], attn_row (B, h, w, w) [b, y, x, x']); the pixel's
    own column entry is exactly 0 (it is counted in its row). Each pixel's h + w weights sum to 1.
    """
    b, h, w, _ = q.shape
    energy_row = q.new_empty(b, h, w, w)  # (B, h, w, w)
    energy_col = q.new_empty(b, w, h, h)  # (B, w, h, h)
    for image in range(b):
        torch.bmm(q[image], k[image].transpose(1, 2), out=energy_row[image])
        cols_k = _columns(k[image])  # (w, h, C')
        torch.bmm(_columns(q[image]), cols_k.transpose(1, 2), out=energy_col[image])
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


def aggregate(attn_col, attn_row, v, residual=None) -> torch.Tensor:
    """residual + sum over each pixel's cross of attention x value; channels-last (B, h, w, C)."""
    out = torch.empty_like(v, memory_format=torch.contiguous_format)  # (B, h, w, C)
    for image in range(v.shape[0]):
        if residual is None:
            torch.bmm(attn_row[image], v[image], out=out[image])  # (h, w, C)
        else:
            torch.baddbmm(residual[image], attn_row[image], v[image], out=out[image])
        product_into(_columns(out[image]), attn_col[image], _columns(v[image]), accumulate=True)  # (w, h, C)
    return out


# -------------------------------------------------------------------------------------------------
# Backward pieces: gradients of the attention part, written into one (B, h, w, 2C' + C) buffer.
# -------------------------------------------------------------------------------------------------


def attention_backward(qkv, attn_col, attn_row, qk_channels, grad_out, grad_attn) -> torch.Tensor:
    """d(loss)/d(qkv) given the gradients of the aggregation (B, h, w, C) and of the attention."""
    q, k, v = _split(qkv, qk_channels)
    h = q.shape[1]
    grad_qkv = torch.empty_like(qkv, memory_format=torch.contiguous_format)  # (B, h, w, 2C'+C)
    grad_q, grad_k, grad_v = _split(grad_qkv, qk_channels)
    if grad_out is not None:
        _value_gradient(attn_col, attn_row, grad_out, grad_v)
        grad_row, grad_col = _attention_gradient(grad_out, v)  # (B, h, w, w), (B, w, h, h)
    else:
        grad_v.zero_()
        grad_row, grad_col = torch.zeros_like(attn_row), torch.zeros_like(attn_col)
    if grad_attn is not None:
        grad_col += grad_attn[..., :h].permute(0, 2, 1, 3)
        grad_row += grad_attn[..., h:]

    # Softmax backward over the joined scores: dE = A * (dA - sum(A * dA)), in place.
    dot = (attn_row * grad_row).sum(-1) + (attn_col * grad_col).sum(-1).transpose(1, 2)  # (B, h, w)
    grad_energy_row = grad_row.sub_(dot.unsqueeze(-1)).mul_(attn_row)  # (B, h, w, w)
    grad_energy_col = grad_col.sub_(dot.transpose(1, 2).unsqueeze(-1)).mul_(attn_col)  # (B, w, h, h)
    _query_key_gradients(grad_energy_col, grad_energy_row, q, k, grad_q, grad_k)
    return grad_qkv


def _value_gradient(attn_col, attn_row, grad_out, grad_v):
    """grad_v = A^T grad_out along rows, plus along columns."""
    for image in range(grad_out.shape[0]):
        product_into(grad_v[image], attn_row[image].transpose(1, 2), grad_out[image])  # (h, w, C)
        cols_grad_v = _columns(grad_v[image])  # (w, h, C)
        product_into(cols_grad_v, attn_col[image].transpose(1, 2), _columns(grad_out[image]), accumulate=True)


def _attention_gradient(grad_out, v):
    """dA = grad_out . v over each pixel's row and column: (B, h, w, w) and (B, w, h, h)."""
    b, h, w, _ = v.shape
    grad_row = v.new_empty(b, h, w, w)  # (B, h, w, w)
    grad_col = v.new_empty(b, w, h, h)  # (B, w, h, h)
    for image in range(b):
        torch.bmm(grad_out[image], v[image].transpose(1, 2), out=grad_row[image])
        cols_v = _columns(v[image])  # (w, h, C)
        torch.bmm(_columns(grad_out[image]), cols_v.transpose(1, 2), out=grad_col[image])
    return grad_row, grad_col


def _query_key_gradients(grad_energy_col, grad_energy_row, q, k, grad_q, grad_k):
    """dQ = dE K and dK = dE^T Q along rows, plus along columns (into strided slices: ``product_into``)."""
    for image in range(q.shape[0]):
        rows_grad = grad_energy_row[image]  # (h, w, w)
        product_into(grad_q[image], rows_grad, k[image])
        product_into(grad_k[image], rows_grad.transpose(1, 2), q[image])
        cols_grad = grad_energy_col[image]  # (w, h, h)
        product_into(_columns(grad_q[image]), cols_grad, _columns(k[image]), accumulate=True)
        product_into(_columns(grad_k[image]), cols_grad.transpose(1, 2), _columns(q[image]), accumulate=True)


# -------------------------------------------------------------------------------------------------
# Autograd functions
# -------------------------------------------------------------------------------------------------


def _optional_attention(ctx, qkv, attn_col, attn_row, return_attention: bool) -> torch.Tensor:
    if return_attention:
        return join_attention(attn_col, attn_row)  # (B, h, w, h+w)
    empty = qkv.new_empty(0)
    ctx.mark_non_differentiable(empty)
    return empty


def _attention_grad_or_none(grad_attn):
    return grad_attn if grad_attn is not None and grad_attn.numel() else None


class CrissCrossStepFunction(torch.autograd.Function):
    """One RCCA loop, channels-last: out = x + CCA(x W^T + b) with gamma folded into W and b.

    Inputs x (B, h, w, C) (any strides with a per-image (h*w, C) view: NHWC, or NCHW permuted),
    weight (2C' + C, C), bias (2C' + C,). Saves x, weight, the projections qkv and the two attention
    parts (B*h*w*(h + w) numbers, less than v itself).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, qk_channels: int, return_attention: bool, recompute: bool = False):
        qkv = projections.project(x, weight, bias)  # (B, h, w, 2C'+C)
        q, k, v = _split(qkv, qk_channels)
        attn_col, attn_row = joint_softmax_attention(q, k)  # (B, w, h, h), (B, h, w, w)
        out = aggregate(attn_col, attn_row, v, residual=x)  # (B, h, w, C)
        kept = (None, None) if recompute else (attn_col, attn_row)  # recomputed from q, k in backward
        ctx.save_for_backward(x, weight, qkv, *kept)
        ctx.qk_channels = qk_channels
        ctx.set_materialize_grads(False)
        return out, _optional_attention(ctx, qkv, attn_col, attn_row, return_attention)

    @staticmethod
    @once_differentiable  # the backward is hand-written: no double backward (create_graph=True)
    def backward(ctx, grad_out, grad_attn):
        x, weight, qkv, attn_col, attn_row = ctx.saved_tensors
        if attn_col is None:
            attn_col, attn_row = joint_softmax_attention(*_split(qkv, ctx.qk_channels)[:2])
        grad_x = torch.empty_like(x) if ctx.needs_input_grad[0] else None  # (B, h, w, C), x's strides
        if grad_x is not None and not grad_x.is_contiguous():  # channels-first x (the first loop)
            grad_out_nhwc = None if grad_out is None else as_channels_last(grad_out)  # (B, h, w, C)
            grad_x_nhwc = None  # written after the attention backward, see _channels_first_input_gradient
        else:
            grad_out_nhwc = _residual_gradient(grad_out, grad_x)  # (B, h, w, C) contiguous, or None
            grad_x_nhwc = grad_x
        grad_attn = _attention_grad_or_none(grad_attn)
        grad_qkv = attention_backward(qkv, attn_col, attn_row, ctx.qk_channels, grad_out_nhwc, grad_attn)
        grads = _projection_backward(ctx, x, weight, grad_qkv, grad_x_nhwc)
        if grad_x is not None and grad_x_nhwc is None:
            _channels_first_input_gradient(grad_x, grad_out_nhwc, grad_qkv, weight)
            grads = (grad_x, *grads[1:])
        return (*grads, None, None, None)


def _channels_first_input_gradient(grad_x, grad_out_nhwc, grad_qkv, weight) -> None:
    """grad_x (channels-first strides) = grad_out + grad_qkv @ W, computed channels-last and transposed over.

    A GEMM writing a column-major (NCHW) result ran at 77% of one writing a row-major result (97x97x512, AMD
    EPYC; benchmarks/profile_attention.py), and the residual's layout copy was needed anyway: so the sum is
    formed in a channels-last buffer and transposed once.
    """
    for image in range(grad_x.shape[0]):  # one image at a time: the channels-last buffer holds one image
        one = slice(image, image + 1)
        residual = None if grad_out_nhwc is None else grad_out_nhwc[one]
        full = projections.input_gradient(grad_qkv[one], weight, residual=residual)  # (1, h, w, C)
        copy_between_layouts(grad_x[one], full)


def _residual_gradient(grad_out, grad_x):
    """grad_out as a contiguous (B, h, w, C) tensor, and grad_x (contiguous channels-last) filled with it.

    grad_x *is* that tensor: the attention backward reads it before the projection's gradient is accumulated
    onto it, which saves a buffer and a copy.
    """
    if grad_out is None:
        if grad_x is not None:
            grad_x.zero_()
        return None
    if grad_x is None:
        return as_channels_last(grad_out)
    copy_between_layouts(grad_x, grad_out)  # the output's gradient is often NCHW (ToChannelsFirst's backward)
    return grad_x


def as_channels_last(x: torch.Tensor) -> torch.Tensor:
    """A contiguous (B, h, w, C) tensor with x's values: x itself, or a copy of a channels-first view."""
    if x.is_contiguous():
        return x
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)  # (B, h, w, C)
    copy_between_layouts(out, x)
    return out


def _projection_backward(ctx, x, weight, grad_qkv, grad_x):
    """Gradients of x (the residual's, already in grad_x, plus the projection's), weight and bias.

    grad_x is contiguous channels-last or None (a channels-first x is handled by _channels_first_input_gradient).
    """
    if grad_x is not None:
        projections.add_input_gradient(grad_x, grad_qkv, weight)  # (B, h, w, C)
    grad_weight, grad_bias = projections.weight_gradients(
        grad_qkv, x, weight, ctx.needs_input_grad[1], ctx.needs_input_grad[2]
    )  # (2C'+C, C), (2C'+C,)
    return grad_x, grad_weight, grad_bias


class CrissCrossFunction(torch.autograd.Function):
    """CCA on channels-last stacked projections qkv (B, h, w, 2C' + C), no residual."""

    @staticmethod
    def forward(ctx, qkv, qk_channels: int, return_attention: bool):
        q, k, v = _split(qkv, qk_channels)
        attn_col, attn_row = joint_softmax_attention(q, k)  # (B, w, h, h), (B, h, w, w)
        out = aggregate(attn_col, attn_row, v)  # (B, h, w, C)
        ctx.save_for_backward(qkv, attn_col, attn_row)
        ctx.qk_channels = qk_channels
        ctx.set_materialize_grads(False)
        return out, _optional_attention(ctx, qkv, attn_col, attn_row, return_attention)

    @staticmethod
    @once_differentiable  # the backward is hand-written: no double backward (create_graph=True)
    def backward(ctx, grad_out, grad_attn):
        qkv, attn_col, attn_row = ctx.saved_tensors
        if grad_out is not None:
            grad_out = as_channels_last(grad_out)  # (B, h, w, C)
        grad_attn = _attention_grad_or_none(grad_attn)
        grad_qkv = attention_backward(qkv, attn_col, attn_row, ctx.qk_channels, grad_out, grad_attn)
        return grad_qkv, None, None


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


# Recompute the attention in backward instead of keeping it from forward: saves B*h*w*(h + w) floats
# per loop (7 MB at 97x97) for about one extra affinity product and softmax. Off by default: at
# 97x97x512 the memory kept is small beside the projections' (see docs/BENCHMARKS.md).
RECOMPUTE_ATTENTION = False


def criss_cross_step(
    x_nhwc, weight, bias, qk_channels: int, return_attention: bool = False, recompute: bool | None = None
):
    """One CCA loop: x + gamma * CCA(x), gamma already folded into weight and bias.

    x_nhwc (B, h, w, C) -> (out (B, h, w, C) contiguous, attn (B, h, w, h + w) or an empty tensor).
    recompute: recompute the attention in backward (None: ``RECOMPUTE_ATTENTION``).

    Under autocast (CPU bfloat16, CUDA float16 or bfloat16) the step runs as a float32 island, as
    autocast runs softmax: the affinities, the joint softmax and its sums stay exact; the output comes
    back in the autocast dtype for the convolutions that follow, the attention in float32. Gradients
    reach the low-precision input and the float32 parameters through autograd's casts.
    """
    low_precision = _autocast_dtype(x_nhwc.device.type)
    if low_precision is not None:
        with torch.autocast(x_nhwc.device.type, enabled=False):
            out, attn = criss_cross_step(
                x_nhwc.float(), weight.float(), bias.float(), qk_channels, return_attention, recompute
            )
        return out.to(low_precision), attn  # (B, h, w, C) in the autocast dtype, attention float32
    if not _has_pixel_view(x_nhwc):
        x_nhwc = x_nhwc.contiguous()
    recompute = RECOMPUTE_ATTENTION if recompute is None else recompute
    return CrissCrossStepFunction.apply(x_nhwc, weight, bias, qk_channels, return_attention, recompute)


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    """The autocast dtype active for ``device_type``, or None when autocast is off there."""
    if device_type not in ("cpu", "cuda") or not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


def _has_pixel_view(x: torch.Tensor) -> bool:
    """True when every image of (B, h, w, C) flattens to an (h*w, C) view with a unit stride."""
    _, h, w, _ = x.shape
    rows_merge = h == 1 or w == 1 or x.stride(1) == w * x.stride(2)
    return rows_merge and (x.stride(3) == 1 or x.stride(2) == 1 or x.shape[3] == 1)


def criss_cross_attention_fused(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    """The fast path on projected (B, C', h, w), (B, C', h, w), (B, C, h, w) tensors.

    Returns (aggregated (B, C, h, w), attn (B, h, w, h + w)), both differentiable. The aggregated map comes in
    v's memory format, as a convolution's output does: channels-last v gives a channels-last view of the result (no
    transpose; none in backward either when its gradient is channels-last), any other v a contiguous NCHW tensor.
    """
    if q.shape[1:2] != k.shape[1:2]:
        raise ValueError(f"q and k must have the same channels, got {tuple(q.shape)} and {tuple(k.shape)}")
    qkv = StackChannelsLast.apply(q, k, v)  # (B, h, w, 2C'+C)
    out, attn = CrissCrossFunction.apply(qkv, q.shape[1], True)  # (B, h, w, C)
    return from_channels_last(out, like=v), attn  # (B, C, h, w)


class StackChannelsLast(torch.autograd.Function):
    """(B, C_i, h, w) tensors -> one contiguous (B, h, w, sum C_i), each through ``copy_between_layouts``.

    The same as ``torch.cat(tensors, 1).permute(0, 2, 3, 1).contiguous()`` without the concatenated copy. Each
    gradient comes back in its input's layout: a view of the stacked gradient for a channels-last input, a copy
    through ``copy_between_layouts`` for a contiguous NCHW one (autograd, or a convolution's backward, would
    otherwise make that copy with PyTorch's strided ``copy_``, 2x slower to NCHW at 97x97x512 on an AMD EPYC).
    """

    @staticmethod
    def forward(ctx, *tensors):
        first = tensors[0]
        if any(t.dim() != 4 or t.shape[0] != first.shape[0] or t.shape[2:] != first.shape[2:] or
               t.dtype != first.dtype or t.device != first.device for t in tensors):  # fmt: skip
            raise ValueError(
                "q, k and v must be (B, C, h, w) tensors of one batch size, map size, dtype and device; got "
                + ", ".join(f"{tuple(t.shape)} {t.dtype} on {t.device}" for t in tensors)
            )
        b, _, h, w = first.shape
        ctx.sizes = [t.shape[1] for t in tensors]
        ctx.channels_first = [t.is_contiguous() and not t.is_contiguous(memory_format=torch.channels_last)
                              for t in tensors]  # fmt: skip
        out = tensors[0].new_empty(b, h, w, sum(ctx.sizes))  # (B, h, w, sum C_i)
        start = 0
        for tensor in tensors:
            channels = tensor.shape[1]
            copy_between_layouts(out[..., start : start + channels], tensor.permute(0, 2, 3, 1))
            start += channels
        return out

    @staticmethod
    def backward(ctx, grad):
        parts = grad.split(ctx.sizes, dim=-1)  # (B, h, w, C_i) views
        return tuple(transpose_to_channels_first(part) if channels_first else part.permute(0, 3, 1, 2)
                     for part, channels_first in zip(parts, ctx.channels_first, strict=True))  # fmt: skip


def channels_last_view(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h, w, C) view; the fast path reads NCHW and NHWC strides alike."""
    return x.permute(0, 2, 3, 1)  # (B, h, w, C)


def from_channels_last(x_nhwc: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B, h, w, C) -> (B, C, h, w) in the memory format of ``like`` (the module's input)."""
    if like.is_contiguous(memory_format=torch.channels_last) and not like.is_contiguous():
        return x_nhwc.permute(0, 3, 1, 2)  # (B, C, h, w), channels_last strides: a view
    return ToChannelsFirst.apply(x_nhwc)  # (B, C, h, w) contiguous


class ToChannelsFirst(torch.autograd.Function):
    """(B, h, w, C) -> contiguous (B, C, h, w), through ``copy_between_layouts``."""

    @staticmethod
    def forward(ctx, x_nhwc):
        return transpose_to_channels_first(x_nhwc)

    @staticmethod
    def backward(ctx, grad):
        return grad.permute(0, 2, 3, 1)  # (B, h, w, C) view; the consumer copies the fast way


def transpose_to_channels_first(x_nhwc: torch.Tensor) -> torch.Tensor:
    """(B, h, w, C) -> contiguous (B, C, h, w)."""
    b, h, w, c = x_nhwc.shape
    out = x_nhwc.new_empty(b, c, h, w)  # (B, C, h, w)
    copy_between_layouts(out.permute(0, 2, 3, 1), x_nhwc)
    return out


# (to channels-first?, shape, both tensors' strides, dtype, threads, block) -> whether the blocked copy measured
# faster than ``copy_`` for it; the oldest choices are dropped past MAX_COPY_CHOICES (the app meets new sizes)
_BLOCKED_COPY_FASTER: OrderedDict[tuple, bool] = OrderedDict()
MAX_COPY_CHOICES = 256
COPY_METHODS = ("blocked", "torch")


def copy_between_layouts(
    target: torch.Tensor, source: torch.Tensor, block: int = 256, method: str | None = None
) -> None:
    """target[...] = source for two (B, h, w, C) views, transposing NHWC <-> NCHW.

    Two exact ways: PyTorch's strided ``copy_``, or a blocked copy (``block`` pixels at a time, so reads and
    writes stay in cache). Which is faster depends on the CPU, the direction and the size (AMD EPYC with AVX-512:
    blocked about 2x faster to NCHW at 97x97x512, ``copy_`` faster to NHWC and for small maps; a Xeon: blocked
    2.7x faster to NCHW; ``layout_copies`` in benchmarks/profile_attention.py). So ``method=None`` times both once
    per direction, shape, strides and thread count, on first use, and keeps the faster; "blocked" or "torch"
    forces one where the blocked copy applies. Any other pair of layouts, a map of at most ``block`` pixels, or
    another device is left to ``copy_``.
    """
    if method not in (None, *COPY_METHODS):
        raise ValueError(f"method must be one of {COPY_METHODS} or None, got {method!r}")
    _, h, w, _ = target.shape
    to_channels_first = target.stride(3) != 1 and source.stride(3) == 1
    to_channels_last = target.stride(3) == 1 and source.stride(3) != 1
    blocked = (to_channels_first or to_channels_last) and _has_pixel_view(target) and _has_pixel_view(source)
    if not blocked or target.device.type != "cpu" or h * w <= block or method == "torch":
        target.copy_(source)
        return
    if method is None and not torch.compiler.is_compiling():  # traced: no timing, no global state; blocked
        key = (to_channels_first, tuple(target.shape), target.stride(), source.stride(), target.dtype,
               torch.get_num_threads(), block)  # fmt: skip
        if key not in _BLOCKED_COPY_FASTER:
            _BLOCKED_COPY_FASTER[key] = _blocked_copy_is_faster(target, source, block, to_channels_first)
            while len(_BLOCKED_COPY_FASTER) > MAX_COPY_CHOICES:
                _BLOCKED_COPY_FASTER.popitem(last=False)
        if not _BLOCKED_COPY_FASTER.get(key, True):
            target.copy_(source)
            return
    _blocked_copy(target, source, block, to_channels_first)


def _blocked_copy_is_faster(target, source, block: int, to_channels_first: bool, rounds: int = 3) -> bool:
    """Time the blocked copy against ``copy_`` on these very tensors, alternating, the best of a few rounds each
    (the last one run is ``copy_``, so target holds the copy either way)."""
    best = {"blocked": float("inf"), "torch": float("inf")}
    for _ in range(rounds):
        start = time.perf_counter()
        _blocked_copy(target, source, block, to_channels_first)
        best["blocked"] = min(best["blocked"], time.perf_counter() - start)
        start = time.perf_counter()
        target.copy_(source)
        best["torch"] = min(best["torch"], time.perf_counter() - start)
    return best["blocked"] < best["torch"]


def _blocked_copy(target, source, block: int, to_channels_first: bool) -> None:
    b, h, w, _ = target.shape
    for image in range(b):
        if to_channels_first:
            rows, columns = _pixels(source[image]), _pixels(target[image]).t()  # (h*w, C), (C, h*w)
            for start in range(0, h * w, block):
                columns[:, start : start + block].copy_(rows[start : start + block].t())
        else:
            rows, columns = _pixels(target[image]), _pixels(source[image]).t()  # (h*w, C), (C, h*w)
            for start in range(0, h * w, block):
                rows[start : start + block].copy_(columns[:, start : start + block].t())
