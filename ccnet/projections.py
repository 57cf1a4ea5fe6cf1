"""The criss-cross step's stacked 1x1 projections, forward and backward, on the faster of two exact GEMM backends.

Each product is a plain matrix product over the pixels: forward ``qkv = x W^T + b``, the input gradient ``G W``, the
weight gradient ``G^T x``. On CPU PyTorch runs ``torch.mm`` through MKL and a 1x1 convolution through oneDNN, and
which is faster depends on the CPU: at the paper's size (97 x 97 pixels, 512 -> 640 channels) on an AMD EPYC with
AVX-512 (Zen 5), oneDNN's channels-last convolution ran these products 1.4-2.2x faster than MKL, which most likely
takes its AVX2 kernels on an AMD CPU (``projection_backends`` in benchmarks/profile_attention.py). So each product
is timed both ways once per operation, shapes, strides, dtype and thread count, on first use, and the faster kept,
as ``copy_between_layouts`` does for layout copies. ``PROJECTION_METHOD`` forces one way (tests, benchmarks).

Both ways compute the same sums in float32 (or float64) with no reduced precision; they differ only in the order of
the additions. Tensors are channels-last: x (B, h, w, C) with a per-image (h*w, C) view (NHWC, or NCHW permuted),
grad_qkv (B, h, w, 2C' + C) contiguous, weight (2C' + C, C).
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import _get_current_dispatch_mode

PROJECTION_METHODS = ("matmul", "convolution")
# None: each product's faster way, timed on first use; "matmul" or "convolution" forces one everywhere. The
# environment variable CCNET_PROJECTION_METHOD sets it for a process: where the two ways time alike, the choice (and
# so the last bits of the float sums) may differ between processes; forcing one makes runs repeat bit for bit.
PROJECTION_METHOD: str | None = os.environ.get("CCNET_PROJECTION_METHOD") or None
# (operation, shapes and strides, dtype, threads) -> the faster way; the oldest choices are dropped past
# MAX_PROJECTION_CHOICES (the app meets new image sizes)
_FASTER_PROJECTION: OrderedDict[tuple, str] = OrderedDict()
MAX_PROJECTION_CHOICES = 256


def project(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The stacked projections (B, h, w, C) -> contiguous (B, h, w, 2C' + C): x W^T + b."""
    ways = {"matmul": _project_by_matmul, "convolution": _project_by_convolution}
    return ways[_method("project", ways, (x, weight, bias))](x, weight, bias)


def input_gradient(grad_qkv: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
    """residual + grad_qkv W as a new contiguous (B, h, w, C) tensor (residual: contiguous (B, h, w, C) or None)."""
    ways = {"matmul": _input_gradient_by_matmul, "convolution": _input_gradient_by_convolution}
    return ways[_method("input_gradient", ways, (grad_qkv, weight, residual))](grad_qkv, weight, residual)


def add_input_gradient(grad_x: torch.Tensor, grad_qkv: torch.Tensor, weight: torch.Tensor) -> None:
    """grad_x += grad_qkv W, in place, for a contiguous (B, h, w, C) grad_x.

    MKL adds the product into grad_x inside the GEMM; oneDNN's convolution returns it, so it is computed a few
    rows at a time (``CHUNK_BYTES``) and added, keeping the peak memory the GEMM's.
    """
    ways = {"matmul": _add_input_gradient_by_matmul, "convolution": _add_input_gradient_by_convolution}
    ways[_method("add_input_gradient", ways, (grad_x, grad_qkv, weight), in_place=True)](grad_x, grad_qkv, weight)


def weight_gradients(grad_qkv: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, need_weight: bool, need_bias: bool):
    """(grad_weight (2C' + C, C) or None, grad_bias (2C' + C,) or None) of ``project(x, weight, bias)``."""
    if not need_weight:
        return None, grad_qkv.sum(dim=(0, 1, 2)) if need_bias else None  # (2C'+C,)
    ways = {"matmul": lambda g, x_, w: _weight_gradients_by_matmul(g, x_, need_bias),
            "convolution": lambda g, x_, w: _weight_gradients_by_convolution(g, x_, w, need_bias)}  # fmt: skip
    return ways[_method("weight_gradients", ways, (grad_qkv, x, weight))](grad_qkv, x, weight)


# -------------------------------------------------------------------------------------------------
# The two ways
# -------------------------------------------------------------------------------------------------


def _pixels(image_map: torch.Tensor) -> torch.Tensor:
    """(h, w, c) -> (h*w, c) view: row-major for NHWC, column-major for NCHW seen as (h, w, c)."""
    h, w, c = image_map.shape
    return image_map.view(h * w, c)


def _project_by_matmul(x, weight, bias):
    b, h, w, _ = x.shape
    qkv = x.new_empty(b, h, w, weight.shape[0])  # (B, h, w, 2C'+C)
    for image in range(b):
        torch.addmm(bias, _pixels(x[image]), weight.t(), out=qkv[image].view(h * w, -1))
    return qkv


def _project_by_convolution(x, weight, bias):
    return _convolve(x, weight, bias)  # (B, h, w, 2C'+C)


def _input_gradient_by_matmul(grad_qkv, weight, residual):
    b, h, w, _ = grad_qkv.shape
    out = grad_qkv.new_empty(b, h, w, weight.shape[1])  # (B, h, w, C)
    for image in range(b):
        pixels = grad_qkv[image].view(h * w, -1)  # (h*w, 2C'+C)
        if residual is None:
            torch.mm(pixels, weight, out=out[image].view(h * w, -1))
        else:
            torch.addmm(_pixels(residual[image]), pixels, weight, out=out[image].view(h * w, -1))
    return out


def _add_input_gradient_by_matmul(grad_x, grad_qkv, weight):
    b, h, w, _ = grad_x.shape
    for image in range(b):
        grad_x[image].view(h * w, -1).addmm_(grad_qkv[image].view(h * w, -1), weight)  # (h*w, C)


def _add_input_gradient_by_convolution(grad_x, grad_qkv, weight):
    for rows in _row_chunks(grad_x):
        grad_x[rows].add_(_convolve(grad_qkv[rows], weight.t()))  # (b, rows, w, C)


def _input_gradient_by_convolution(grad_qkv, weight, residual):
    out = _convolve(grad_qkv, weight.t())  # (B, h, w, C)
    return out if residual is None else out.add_(residual)


def _weight_gradients_by_matmul(grad_qkv, x, need_bias):
    b, h, w, _ = x.shape
    grad_weight = x.new_zeros(grad_qkv.shape[-1], x.shape[-1])  # (2C'+C, C)
    for image in range(b):
        grad_weight.addmm_(grad_qkv[image].view(h * w, -1).t(), _pixels(x[image]))
    return grad_weight, grad_qkv.sum(dim=(0, 1, 2)) if need_bias else None


def _weight_gradients_by_convolution(grad_qkv, x, weight, need_bias):
    """One ``convolution_backward`` on an NHWC x; on any other layout (an NCHW input), a few rows at a time, each
    copied to channels-last (``CHUNK_BYTES``), and the parts summed: no whole copy of x is made."""
    out_channels, in_channels = weight.shape
    kernel = weight.contiguous()[:, :, None, None]  # (2C'+C, C, 1, 1); only its shape is read (no input gradient)
    grad_weight = grad_bias = None
    for rows in [(slice(None),)] if x.is_contiguous() else _row_chunks(x):
        _, part_weight, part_bias = torch.ops.aten.convolution_backward(
            _as_channels_last_nchw(grad_qkv[rows]), _as_channels_last_nchw(x[rows]), kernel,
            [out_channels] if need_bias else None, (1, 1), (0, 0), (1, 1), False, (0, 0), 1, (False, True, need_bias),
        )  # fmt: skip
        grad_weight = part_weight if grad_weight is None else grad_weight.add_(part_weight)
        if need_bias:
            grad_bias = part_bias if grad_bias is None else grad_bias.add_(part_bias)
    return grad_weight.reshape(out_channels, in_channels), grad_bias


# Bytes of one chunk of a map that oneDNN's way handles a few rows at a time (an added product, an NCHW input's
# channels-last copy): small beside the maps, so the way's peak memory stays the GEMM's; big enough that each
# chunk is still a large product (2048 pixels at 512 channels).
CHUNK_BYTES = 4 * 2**20


def _row_chunks(x: torch.Tensor):
    """Index tuples of (B, h, w, C) row blocks of about CHUNK_BYTES: all images at once when x fits, else one
    image and a few of its rows at a time (a block of one image is channels-last contiguous when x is)."""
    b, h, w, c = x.shape
    if x.numel() * x.element_size() <= CHUNK_BYTES:
        return [(slice(None),)]
    rows = max(1, CHUNK_BYTES // (w * c * x.element_size()))
    return [(slice(image, image + 1), slice(start, start + rows)) for image in range(b) for start in range(0, h, rows)]


def _convolve(x, weight, bias=None):
    """x W^T (+ b) as a 1x1 convolution on channels-last maps: (B, h, w, C_in) -> contiguous (B, h, w, C_out)."""
    kernel = weight.contiguous()[:, :, None, None]  # (C_out, C_in, 1, 1)
    out = F.conv2d(_as_channels_last_nchw(x), kernel, bias)  # (B, C_out, h, w), channels-last strides
    return out.permute(0, 2, 3, 1).contiguous()  # (B, h, w, C_out): a view where oneDNN kept channels-last


def _as_channels_last_nchw(x):
    """(B, h, w, C) -> (B, C, h, w) with channels-last strides (oneDNN's fast layout): a view of an NHWC map, a
    copy of anything else (an NCHW input's map)."""
    nchw = x.permute(0, 3, 1, 2)  # (B, C, h, w)
    return nchw if x.is_contiguous() else nchw.contiguous(memory_format=torch.channels_last)


@contextlib.contextmanager
def forced_method(method: str | None) -> Iterator[None]:
    """Run the projections one way inside the block (None: the timed choice), e.g. to compare the two."""
    if method not in (None, *PROJECTION_METHODS):
        raise ValueError(f"method must be one of {PROJECTION_METHODS} or None, got {method!r}")
    global PROJECTION_METHOD
    before, PROJECTION_METHOD = PROJECTION_METHOD, method
    try:
        yield
    finally:
        PROJECTION_METHOD = before


# -------------------------------------------------------------------------------------------------
# Choosing the way
# -------------------------------------------------------------------------------------------------


def _method(operation: str, ways: dict[str, Callable], args: tuple, in_place: bool = False) -> str:
    """The way to run ``operation`` on ``args``: the one timed faster here before, timed now, or forced (CPU only).

    ``in_place``: the ways add into ``args[0]`` (timed on a copy of it, so the probe changes nothing).
    """
    first = next(a for a in args if a is not None)
    # Other devices keep matmul (cuBLAS; a forced convolution there could run cuDNN in TF32). A traced graph, a call
    # under a dispatch mode (a FLOP counter, fake tensors) or with deterministic algorithms asked for neither times
    # (the timing calls would be counted, the choice could differ between runs) nor records a choice.
    if first.device.type != "cpu" or torch.compiler.is_compiling() or _get_current_dispatch_mode() is not None:
        return "matmul"
    if PROJECTION_METHOD is not None:
        if PROJECTION_METHOD not in PROJECTION_METHODS:
            raise ValueError(f"PROJECTION_METHOD (or CCNET_PROJECTION_METHOD) must be one of {PROJECTION_METHODS} or "
                             f"None, got {PROJECTION_METHOD!r}")
        return PROJECTION_METHOD
    if torch.are_deterministic_algorithms_enabled():
        return "matmul"
    layout = tuple(None if a is None else (tuple(a.shape), a.stride()) for a in args)
    key = (operation, layout, first.dtype, torch.get_num_threads())
    choice = _FASTER_PROJECTION.get(key)
    if choice is None:
        choice = _checked_fastest_way(operation, ways, args, in_place)
        _FASTER_PROJECTION[key] = choice  # stored and returned as a local: another thread may trim the cache
        while len(_FASTER_PROJECTION) > MAX_PROJECTION_CHOICES:
            _FASTER_PROJECTION.popitem(last=False)
    return choice


def _checked_fastest_way(operation: str, ways: dict[str, Callable], args: tuple, in_place: bool) -> str:
    """The faster way on these tensors, if its result agrees with matmul's on random tensors of the same shapes and
    strides (not these: a first batch's zeros or NaNs would test nothing): a library kernel that is wrong on this
    CPU (as oneDNN's AVX-512 bfloat16 depthwise weight gradients are on some, see training/precision.py) is never
    chosen."""
    timed_args = (args[0].clone(), *args[1:]) if in_place else args
    chosen = fastest_way({name: functools.partial(way, *timed_args) for name, way in ways.items()})
    del timed_args
    if chosen == "matmul":
        return chosen
    samples = tuple(None if a is None else _random_like(a) for a in args)
    results = {}
    for name in ("matmul", chosen):
        if in_place:
            target = samples[0].clone()
            ways[name](target, *samples[1:])
            results[name] = target.sub_(samples[0])  # the product that was added
        else:
            results[name] = ways[name](*samples)
    dtype = args[0].dtype
    if not results_agree(results[chosen], results["matmul"], _tolerance(dtype)):
        warnings.warn(f"ccnet.projections: the {chosen} way's {operation} ({dtype}) disagrees with torch.mm on "
                      "this CPU; using torch.mm", RuntimeWarning, stacklevel=4)  # fmt: skip
        return "matmul"
    return chosen


def _random_like(tensor: torch.Tensor) -> torch.Tensor:
    """A standard-normal tensor with ``tensor``'s shape, strides, dtype and device."""
    out = torch.empty_strided(tensor.shape, tensor.stride(), dtype=tensor.dtype, device=tensor.device)
    return out.normal_()


def _tolerance(dtype: torch.dtype) -> float:
    """How far two exact ways may differ, relative to the largest value: float sums in another order."""
    return max(1e-3, 100 * torch.finfo(dtype).eps)


def results_agree(got, expected, tolerance: float = 1e-3) -> bool:
    """True when two results (tensors, or tuples of tensors or None) match to ``tolerance`` of expected's largest
    magnitude: the two ways differ only in the order of float sums, far below this."""
    if isinstance(expected, tuple):
        return len(got) == len(expected) and all(
            results_agree(a, b, tolerance) for a, b in zip(got, expected, strict=True)
        )
    if expected is None or got is None:
        return got is expected
    scale = expected.abs().max().item() if expected.numel() else 0.0
    return got.shape == expected.shape and bool((got - expected).abs().max() <= tolerance * scale + 1e-30)


def fastest_way(ways: dict[str, Callable[[], object]], rounds: int = 3) -> str:
    """The name of the fastest of ``ways`` (calls whose results are dropped), alternating them, the best of
    ``rounds`` each: the first call of each may build oneDNN's kernel and is not counted against it when a later one
    is faster."""
    best = dict.fromkeys(ways, float("inf"))
    for _ in range(rounds):
        for name, way in ways.items():
            start = time.perf_counter()
            way()
            best[name] = min(best[name], time.perf_counter() - start)
    return min(best, key=best.get)
