"""Where the time of criss-cross attention goes: a per-operation profile of ours and of einsum.

Runs RCCA forward + backward (the whole module: projections, attention, residual) under `torch.profiler` and
groups every CPU operation's self time into kinds: matrix products (by shape family), softmax and other
elementwise work, layout copies (permute, contiguous, cat, copy_), allocation and fills, and the rest. Prints
one Markdown table per method and size, and the products' achieved GFLOP/s against a large `torch.mm`. Then
three side tables: the 1x1 projections' products alone by layout, one loop's column products three ways (into
strided views, through `product_into`, on a transposed copy), and the layout copies both ways (PyTorch's `copy_`
against the blocked copy, the choice `copy_between_layouts` makes on first use).

    python benchmarks/profile_attention.py                     # paper size, R = 2, both methods (~1 min)
    python benchmarks/profile_attention.py --size 45x60x128 --rounds 5

Pause training first (it waits for runs/TRAINING_RUNNING to go, as every benchmark here does).
"""

from __future__ import annotations

import argparse
import collections

import common
import torch
import torch.nn.functional as F
from bench_attention import build_step
from bench_roofline import gemm_gflops
from torch.profiler import ProfilerActivity, profile

from ccnet.fast_attention import COPY_METHODS, copy_between_layouts, product_into

GEMM_OPS = {"aten::bmm", "aten::baddbmm", "aten::baddbmm_", "aten::addmm", "aten::addmm_", "aten::mm",
            "aten::addbmm", "aten::matmul"}
KINDS = (  # (kind, operations), first match wins; the rest is "other"
    ("matrix products", GEMM_OPS),
    ("convolution (1x1 projections)", {"aten::mkldnn_convolution", "aten::convolution_backward",
                                       "aten::_convolution", "aten::thnn_conv2d", "aten::_slow_conv2d_forward",
                                       "aten::_slow_conv2d_backward"}),
    ("softmax", {"aten::_softmax", "aten::_softmax_backward_data", "aten::softmax"}),
    ("exp, sums, max, scaling", {"aten::exp_", "aten::exp", "aten::sum", "aten::amax", "aten::maximum",
                                 "aten::div_", "aten::div", "aten::sub_", "aten::sub", "aten::mul_", "aten::mul",
                                 "aten::add_", "aten::add", "aten::neg"}),
    ("layout copies", {"aten::copy_", "aten::contiguous", "aten::cat", "aten::clone", "aten::_to_copy"}),
    ("views (no data moved)", {"aten::select", "aten::as_strided", "aten::view", "aten::slice", "aten::unsqueeze",
                               "aten::expand", "aten::diagonal", "aten::t", "aten::alias", "aten::reshape",
                               "aten::_unsafe_view", "aten::squeeze", "aten::unbind", "aten::split",
                               "aten::permute", "aten::transpose"}),
    ("allocation and fills", {"aten::empty", "aten::empty_like", "aten::zeros", "aten::zeros_like", "aten::zero_",
                              "aten::fill_", "aten::empty_strided", "aten::resize_"}),
)  # fmt: skip


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="97x97x512", help="h x w x C of the feature map (default: the paper's)")
    parser.add_argument("--loops", type=int, default=2, help="R (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="profiled steps per method (after a warm-up)")
    parser.add_argument("--methods", nargs="+", default=["ours (fused, default)", "einsum (common)"])
    parser.add_argument("--top", type=int, default=12, help="operations listed per method")
    return parser.parse_args(argv)


def kind_of(name: str) -> str:
    return next((kind for kind, ops in KINDS if name in ops), "other")


def profile_method(method: str, h: int, w: int, channels: int, loops: int, rounds: int) -> dict:
    """`profile_step` on one method's RCCA training step (projections, loops, residual, forward + backward)."""
    return profile_step(build_step(method, h, w, channels, loops, "train", "cpu"), rounds)


def attention_part_step(h: int, w: int, channels: int, memory_format=torch.contiguous_format):
    """One forward + backward of `criss_cross_attention` alone on fixed random q, k, v (no projections)."""
    from ccnet.attention import criss_cross_attention

    q, k = (torch.randn(1, channels // 8, h, w).contiguous(memory_format=memory_format).requires_grad_()
            for _ in range(2))  # fmt: skip
    v = torch.randn(1, channels, h, w).contiguous(memory_format=memory_format).requires_grad_()
    grad = torch.randn(1, channels, h, w).contiguous(memory_format=memory_format)
    return lambda: criss_cross_attention(q, k, v)[0].backward(grad)


def profile_step(step, rounds: int) -> dict:
    """Self CPU time per operation (and per input shape of the products) over `rounds` calls of `step`, in ms
    per step, after one warm-up call."""
    step()  # warm-up
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(rounds):
            step()
    by_op, by_kind, products = collections.Counter(), collections.Counter(), collections.Counter()
    flops = 0.0
    for event in prof.key_averages(group_by_input_shape=True):
        ms = event.self_cpu_time_total / 1000 / rounds
        by_op[event.key] += ms
        by_kind[kind_of(event.key)] += ms
        if event.key in GEMM_OPS:
            shapes = tuple(tuple(s) for s in event.input_shapes if s)
            products[(event.key, shapes)] += ms
            flops += _product_flops(event.key, shapes) * event.count / rounds
    total = sum(by_kind.values())
    return {"total_ms": total, "by_op": by_op, "by_kind": by_kind, "products": products, "gemm_flops": flops}


def _product_flops(name: str, shapes: tuple) -> float:
    """2 x multiply-adds of one call, from its input shapes (0 where the shapes do not say)."""
    try:
        if name in ("aten::bmm",):
            (b, m, k), (_, _, n) = shapes[0], shapes[1]
        elif name in ("aten::baddbmm", "aten::baddbmm_"):
            (b, m, k), (_, _, n) = shapes[1], shapes[2]
        elif name == "aten::mm":
            (m, k), (_, n) = shapes[0], shapes[1]
            b = 1
        elif name in ("aten::addmm", "aten::addmm_"):
            (m, k), (_, n) = shapes[1], shapes[2]
            b = 1
        else:
            return 0.0
    except (ValueError, IndexError):
        return 0.0
    return 2.0 * b * m * k * n


def _median_seconds(cases: dict, rounds: int) -> dict[str, float]:
    """Each case's median time over `rounds` interleaved rounds (the callers warm them up first)."""
    return {name: t["median"] for name, t in common.time_interleaved(cases, rounds, warmup=0).items()}


def _rows(seconds: dict[str, float], flops_of) -> list[dict]:
    return [{"case": name, "ms": 1000 * t, "gflops": flops_of(name) / t / 1e9} for name, t in seconds.items()]


def projection_gemms(h: int, w: int, channels: int, rounds: int = 5) -> list[dict]:
    """The 1x1 projections' three products (forward, grad_x, grad_weight) alone, with the pixels' matrix row-major
    (an NHWC map) and column-major (an NCHW map, as the first loop reads its input): ms and GFLOP/s of each."""
    pixels, out_channels = h * w, 2 * (channels // 8) + channels
    weight = torch.randn(out_channels, channels)  # (2C'+C, C)
    grad_qkv = torch.randn(pixels, out_channels)  # (h*w, 2C'+C)
    rows = torch.randn(pixels, channels)  # (h*w, C) row-major: NHWC
    columns = torch.randn(channels, pixels).t()  # (h*w, C) column-major: NCHW
    qkv = torch.empty(pixels, out_channels)
    grad_weight = torch.zeros(out_channels, channels)
    cases = {
        "forward x W^T, x NHWC": lambda: torch.mm(rows, weight.t(), out=qkv),
        "forward x W^T, x NCHW": lambda: torch.mm(columns, weight.t(), out=qkv),
        "grad_x += G W, grad_x NHWC": lambda: rows.addmm_(grad_qkv, weight),
        "grad_x += G W, grad_x NCHW": lambda: columns.addmm_(grad_qkv, weight),
        "grad_W += G^T x, x NHWC": lambda: grad_weight.addmm_(grad_qkv.t(), rows),
        "grad_W += G^T x, x NCHW": lambda: grad_weight.addmm_(grad_qkv.t(), columns),
    }
    flops = 2.0 * pixels * channels * out_channels
    for call in cases.values():
        call()  # warm-up
    return _rows(_median_seconds(cases, rounds), lambda name: flops)


def column_products(h: int, w: int, channels: int, rounds: int = 5) -> list[dict]:
    """One loop's aggregation and value gradient three ways: the columns' products written straight into strided
    views of the NHWC maps (PyTorch then loops over single products), through ``product_into`` (the fast path: a
    small contiguous buffer, chunk by chunk, so MKL's batch call runs them), and on a whole transposed copy (the
    copies and the sum back counted). Each way is checked equal to the first before it is timed."""
    qk = channels // 8
    qkv = torch.randn(h, w, 2 * qk + channels)  # (h, w, 2C'+C), one image
    v = qkv[..., 2 * qk :]  # (h, w, C) view, as the fast path's v
    x, grad_out = torch.randn(h, w, channels), torch.randn(h, w, channels)  # (h, w, C)
    attn_row, attn_col = torch.rand(h, w, w), torch.rand(w, h, h)
    out = torch.empty(h, w, channels)  # (h, w, C)
    grad_qkv = torch.empty(h, w, 2 * qk + channels)
    grad_v = grad_qkv[..., 2 * qk :]  # (h, w, C) view, as the fast path's
    by_columns, column_part = torch.empty(w, h, channels), torch.empty(w, h, channels)  # (w, h, C)

    def aggregate_strided():
        torch.baddbmm(x, attn_row, v, out=out)
        out.transpose(0, 1).baddbmm_(attn_col, v.transpose(0, 1))

    def aggregate_in_chunks():
        torch.baddbmm(x, attn_row, v, out=out)
        product_into(out.transpose(0, 1), attn_col, v.transpose(0, 1), accumulate=True)

    def aggregate_transposed():
        by_columns.copy_(v.transpose(0, 1))
        torch.bmm(attn_col, by_columns, out=column_part)
        torch.add(x, column_part.transpose(0, 1), out=out)
        out.baddbmm_(attn_row, v)

    def value_gradient_strided():
        torch.bmm(attn_row.transpose(1, 2), grad_out, out=grad_v)
        grad_v.transpose(0, 1).baddbmm_(attn_col.transpose(1, 2), grad_out.transpose(0, 1))

    def value_gradient_in_chunks():
        product_into(grad_v, attn_row.transpose(1, 2), grad_out)
        product_into(grad_v.transpose(0, 1), attn_col.transpose(1, 2), grad_out.transpose(0, 1), accumulate=True)

    def value_gradient_transposed():
        by_columns.copy_(grad_out.transpose(0, 1))
        torch.bmm(attn_col.transpose(1, 2), by_columns, out=column_part)
        grad_v.copy_(column_part.transpose(0, 1))
        grad_v.baddbmm_(attn_row.transpose(1, 2), grad_out)

    cases = {
        "aggregation, columns into strided views": aggregate_strided,
        "aggregation, columns through product_into (the fast path)": aggregate_in_chunks,
        "aggregation, columns on a transposed copy": aggregate_transposed,
        "value gradient, columns into strided views": value_gradient_strided,
        "value gradient, through product_into (the fast path)": value_gradient_in_chunks,
        "value gradient, columns on a transposed copy": value_gradient_transposed,
    }
    first = {}
    for name, call in cases.items():
        call()  # warm-up, and the result each way must agree on
        result = (out if name.startswith("aggregation") else grad_v).clone()
        torch.testing.assert_close(result, first.setdefault(name.split(",")[0], result), msg=name)
    flops = 2.0 * h * w * (h + w) * channels  # rows and columns
    return _rows(_median_seconds(cases, rounds), lambda name: flops)


def projection_backends(h: int, w: int, channels: int, rounds: int = 5) -> list[dict]:
    """The projections' product (h*w x C x (2C' + C)) by backend: MKL through ``torch.mm`` (what the fast path
    calls) against oneDNN through a 1x1 convolution, NCHW and channels-last, forward and backward (input and weight
    gradients); each result checked against ``torch.mm`` first. Which is faster depends on the CPU: MKL may take
    its AVX2 kernels on an AMD CPU, oneDNN picks its kernels by instruction set."""
    out_channels = 2 * (channels // 8) + channels
    x = torch.randn(1, channels, h, w)  # (1, C, h, w)
    weight = torch.randn(out_channels, channels) / channels**0.5  # (2C'+C, C)
    grad = torch.randn(1, out_channels, h, w)  # (1, 2C'+C, h, w)
    pixels = x.flatten(2)[0].t().contiguous()  # (h*w, C)
    grad_pixels = grad.flatten(2)[0].t().contiguous()  # (h*w, 2C'+C)
    kernel = weight[:, :, None, None].contiguous()  # (2C'+C, C, 1, 1)
    layouts = {"NCHW": torch.contiguous_format, "channels-last": torch.channels_last}

    def conv_backward(inputs, grads):
        return torch.ops.aten.convolution_backward(grads, inputs, kernel, None, (1, 1), (0, 0), (1, 1), False,
                                                   (0, 0), 1, (True, True, False))[:2]  # fmt: skip

    cases = {"forward, torch.mm (MKL)": lambda: torch.mm(pixels, weight.t()),
             "backward, torch.mm (MKL)": lambda: (torch.mm(grad_pixels, weight), torch.mm(grad_pixels.t(), pixels))}
    expected = torch.mm(pixels, weight.t())  # (h*w, 2C'+C)
    for name, layout in layouts.items():
        inputs, grads = x.contiguous(memory_format=layout), grad.contiguous(memory_format=layout)
        got = F.conv2d(inputs, kernel).flatten(2)[0].t()  # (h*w, 2C'+C)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
        grad_x, grad_w = conv_backward(inputs, grads)
        torch.testing.assert_close(grad_x.flatten(2)[0].t(), torch.mm(grad_pixels, weight), rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(grad_w.flatten(1), torch.mm(grad_pixels.t(), pixels), rtol=1e-4, atol=1e-2)
        cases[f"forward, 1x1 convolution (oneDNN), {name}"] = lambda i=inputs: F.conv2d(i, kernel)
        cases[f"backward, 1x1 convolution (oneDNN), {name}"] = lambda i=inputs, g=grads: conv_backward(i, g)
    flops = 2.0 * h * w * channels * out_channels
    for call in cases.values():
        call()  # warm-up
    return _rows(_median_seconds(cases, rounds), lambda name: flops * (2 if name.startswith("backward") else 1))


COPY_SIZES = ((1, 45, 60, 128), (8, 36, 48, 128), (1, 97, 97, 128), (1, 97, 97, 512))  # (B, h, w, C)


def layout_copies(sizes=COPY_SIZES, rounds: int = 7) -> list[dict]:
    """NHWC <-> NCHW both ways, PyTorch's strided ``copy_`` against the blocked copy: the choice
    ``copy_between_layouts`` makes by timing both on first use, shown for a few sizes (ms, median)."""
    rows = []
    for b, h, w, c in sizes:
        channels_last, channels_first = torch.randn(b, h, w, c), torch.randn(b, c, h, w).permute(0, 2, 3, 1)
        for direction, target, source in (("to NCHW", channels_first, channels_last),
                                          ("to NHWC", channels_last, channels_first)):  # fmt: skip
            cases = {method: lambda t=target, s=source, m=method: copy_between_layouts(t, s, method=m)
                     for method in COPY_METHODS}  # fmt: skip
            for call in cases.values():
                call()  # warm-up
            times = {method: 1000 * seconds for method, seconds in _median_seconds(cases, rounds).items()}
            rows.append({"size": f"{b} x {h} x {w} x {c}", "direction": direction, **times})
    return rows


def format_copies(rows: list[dict]) -> str:
    lines = ["| B x h x w x C | direction | torch `copy_` (ms) | blocked (ms) | faster |",
             "| --- | --- | ---: | ---: | --- |"]  # fmt: skip
    for r in rows:
        faster = "blocked" if r["blocked"] < r["torch"] else "torch"
        ratio = max(r["blocked"], r["torch"]) / min(r["blocked"], r["torch"])
        lines.append(f"| {r['size']} | {r['direction']} | {r['torch']:.2f} | {r['blocked']:.2f} | "
                     f"{faster}, {ratio:.1f}x |")  # fmt: skip
    return "\n".join(lines)


def format_gemms(rows: list[dict], ceiling: float) -> str:
    lines = ["| projection product (alone) | ms (median) | GFLOP/s | of the ceiling |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {r['case']} | {r['ms']:.1f} | {r['gflops']:.0f} | {100 * r['gflops'] / ceiling:.0f}% |" for r in rows]
    return "\n".join(lines)


def format_profile(method: str, result: dict, ceiling: float, top: int) -> str:
    total = result["total_ms"]
    gemm_ms = result["by_kind"]["matrix products"]
    rate = result["gemm_flops"] / (gemm_ms / 1000) / 1e9 if gemm_ms else 0.0
    lines = [f"**{method}**: {total:.1f} ms of self CPU time per step; matrix products {gemm_ms:.1f} ms at "
             f"{rate:.0f} GFLOP/s ({100 * rate / ceiling:.0f}% of the ceiling).", "",
             "| kind | ms per step | share |", "| --- | ---: | ---: |"]  # fmt: skip
    for kind, ms in result["by_kind"].most_common():
        lines.append(f"| {kind} | {ms:.1f} | {100 * ms / total:.0f}% |")
    lines += ["", "| operation | input shapes | ms per step |", "| --- | --- | ---: |"]
    for (name, shapes), ms in result["products"].most_common(top):
        lines.append(f"| {name} | {' '.join('x'.join(map(str, s)) for s in shapes)} | {ms:.1f} |")
    others = [(op, ms) for op, ms in result["by_op"].most_common() if op not in GEMM_OPS][:top]
    lines += ["", "| other operation | ms per step |", "| --- | ---: |"]
    lines += [f"| {op} | {ms:.1f} |" for op, ms in others]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    h, w, channels = (int(v) for v in args.size.split("x"))
    common.wait_until_quiet(log=print)
    ceiling = gemm_gflops(2048)
    print(f"Machine: {common.describe_machine()}. {common.load_note()}.")
    print(f"Threads: {torch.get_num_threads()}. Ceiling: float32 `torch.mm` 2048^3 = {ceiling:.1f} GFLOP/s.")
    print(f"RCCA R = {args.loops}, forward + backward, 1 x {channels} x {h} x {w}, {args.rounds} profiled steps.\n")
    for method in args.methods:
        result = profile_method(method, h, w, channels, args.loops, args.rounds)
        print(format_profile(method, result, ceiling, args.top) + "\n")
    for name, memory_format in (("NCHW", torch.contiguous_format), ("channels-last", torch.channels_last)):
        result = profile_step(attention_part_step(h, w, channels, memory_format), args.rounds)
        print(format_profile(f"the attention part alone, ours, {name} q, k, v (one loop)", result, ceiling, args.top))
        print()
    print(format_gemms(projection_gemms(h, w, channels), ceiling))
    print()
    print(format_gemms(column_products(h, w, channels), ceiling).replace("projection product", "one loop's product"))
    print()
    print(format_copies(layout_copies()))
    print()
    print(format_gemms(projection_backends(h, w, channels), ceiling).replace("projection product (alone)",
                                                                             "projections' product by backend"))


if __name__ == "__main__":
    main()
