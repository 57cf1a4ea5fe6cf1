"""How close criss-cross attention runs to the machine's matrix-product speed: a roofline in numbers.

The ceiling: a large float32 matrix product (`torch.mm`, 2048^3 by default) on this process's threads, in GFLOP/s.
Against it, the attention part alone (energies, the joint softmax, the aggregation; no 1x1 projections), forward
and backward of one loop on projected q, k, v, for ours (`ccnet.attention.criss_cross_attention`, the fast path)
and the common einsum formulation, at three sizes:

  app         45 x 60, C = 128, batch 1: the explorer's feature grid for a 360 x 480 image
  training    36 x 48, C = 128, batch 8: the default model's training crop (288 x 384 at stride 8)
  paper       97 x 97, C = 512, batch 1: the paper's setting (769 x 769 at stride 8)

The FLOPs counted are the products' multiply-adds: forward 2 B h w (h + w) (C' + C) (energies with C' = C / 8
channels, aggregation with C), backward twice that (two products for each), so one loop costs
6 B h w (h + w) (C' + C). Times are the median of interleaved rounds (ours, einsum, ours, ...), after a warm-up.

Each method runs on q, k, v in two layouts: contiguous NCHW (the usual PyTorch tensor; ours pays four layout
transposes: q, k, v in, the output out, its gradient in, their gradients out) and channels-last (ours stacks q, k,
v with a plain copy and answers channels-last: no transpose when the output's gradient is channels-last too; the
RCCA module has no stacking copy either, its projections write the stacked q, k, v). A shared host's speed can
drift by 10-30% between minutes, so every round also times the ceiling's product (the order of the methods rotates
each round): "of the ceiling" is the median over rounds of the method's rate over the ceiling's rate in that same
round, with the rounds' range beside it.

A second table times the whole RCCA module (the 1x1 projections too, R = 2, forward + backward) at the paper's
size, for ours and einsum, with the ceiling again timed in every round, and its floor: all of its FLOPs at the
ceiling. The 1x1 projections are most of those
FLOPs and both formulations do them alike, so einsum's time over that floor is about the largest speed-up over
einsum that any exact formulation with the same FLOPs could reach on this machine (about: a product of another
shape may run a little faster than the 2048^3 one that sets the ceiling).

    python benchmarks/bench_roofline.py            # about 3 minutes on 2 cores; pause training first
    python benchmarks/bench_roofline.py --rounds 5 --sizes paper
"""

from __future__ import annotations

import argparse
import statistics
import time

import common
import torch

from ccnet.attention import criss_cross_attention, criss_cross_attention_einsum

SIZES = {  # name -> (batch, h, w, C)
    "app": (1, 45, 60, 128),
    "training": (8, 36, 48, 128),
    "paper": (1, 97, 97, 512),
}
METHODS = {"ours": criss_cross_attention, "einsum": criss_cross_attention_einsum}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timed rounds per method")
    parser.add_argument("--gemm", type=int, default=2048, help="side of the square matrix product (the ceiling)")
    parser.add_argument("--module-size", choices=list(SIZES), default="paper",
                        help="size of the whole-module table (default: the paper's)")  # fmt: skip
    return parser.parse_args(argv)


def gemm_gflops(side: int, rounds: int = 5) -> float:
    """The machine's float32 matrix-product throughput on this process's threads (median of rounds)."""
    a, b = torch.randn(side, side), torch.randn(side, side)
    out = torch.empty(side, side)
    return _median_gflops(lambda: torch.mm(a, b, out=out), 2 * side**3, rounds)


def convolution_gflops(side: int, rounds: int = 5) -> float:
    """The same product (side^3 multiply-adds) as a channels-last 1x1 convolution, which PyTorch runs on oneDNN:
    on some CPUs faster than `torch.mm`'s MKL (an AMD EPYC with AVX-512: about 2x). The fast path's projections
    take whichever is faster (ccnet.projections), so this is the second ceiling beside `torch.mm`'s."""
    rows = max(1, side // 32)
    x = torch.randn(1, side, rows, side // rows).contiguous(memory_format=torch.channels_last)  # (1, C, h, w)
    kernel = torch.randn(side, side, 1, 1)
    flops = 2 * side * side * rows * (side // rows)
    return _median_gflops(lambda: torch.nn.functional.conv2d(x, kernel), flops, rounds)


def _median_gflops(call, flops: float, rounds: int) -> float:
    """GFLOP/s of `call` at its median time over `rounds` runs, after one warm-up (oneDNN builds its kernel)."""
    seconds = common.time_interleaved({"call": call}, rounds)["call"]["median"]
    return flops / seconds / 1e9


def attention_flops(batch: int, h: int, w: int, channels: int) -> float:
    """Multiply-adds x 2 of one loop's attention part, forward and backward (see the module docstring)."""
    return 6.0 * batch * h * w * (h + w) * (channels // 8 + channels)


LAYOUTS = {"NCHW": torch.contiguous_format, "channels-last": torch.channels_last}


def time_attention(method, batch: int, h: int, w: int, channels: int, generator: torch.Generator,
                   layout: str = "NCHW") -> float:  # fmt: skip
    """Seconds for one forward + backward of the attention part on fresh random q, k, v in ``layout``."""
    qk = channels // 8
    memory_format = LAYOUTS[layout]
    q = torch.randn(batch, qk, h, w, generator=generator).contiguous(memory_format=memory_format).requires_grad_()
    k = torch.randn(batch, qk, h, w, generator=generator).contiguous(memory_format=memory_format).requires_grad_()
    v = torch.randn(batch, channels, h, w, generator=generator).contiguous(memory_format=memory_format)
    v.requires_grad_()  # (B, C, h, w)
    grad = torch.randn(batch, channels, h, w, generator=generator).contiguous(memory_format=memory_format)
    start = time.perf_counter()
    out, _ = method(q, k, v)
    out.backward(grad)
    return time.perf_counter() - start


def _gemm_call(side: int):
    """One `side`^3 float32 `torch.mm` (the ceiling's product), as a call."""
    a, b = torch.randn(side, side), torch.randn(side, side)
    out = torch.empty(side, side)
    return lambda: torch.mm(a, b, out=out)


def _gemm_seconds(side: int):
    """A call that times the ceiling's product once: sampled in every round."""
    product = _gemm_call(side)
    return lambda: common.time_once(product)


def measure(sizes: list[str], rounds: int, gemm_side: int, log=print) -> dict:
    generator = torch.Generator().manual_seed(0)
    results = {"gemm_gflops": gemm_gflops(gemm_side), "convolution_gflops": convolution_gflops(gemm_side),
               "gemm_side": gemm_side, "sizes": {}}  # fmt: skip
    log(f"GEMM {gemm_side}^3: torch.mm {results['gemm_gflops']:.1f} GFLOP/s, "
        f"1x1 convolution {results['convolution_gflops']:.1f} GFLOP/s")
    ceiling = _gemm_seconds(gemm_side)
    ceiling()  # warm-up
    for name in sizes:
        shape = SIZES[name]
        samples = {(method, layout): [] for layout in LAYOUTS for method in METHODS}
        ceiling_samples = []
        for method, layout in samples:  # warm-up
            time_attention(METHODS[method], *shape, generator, layout)
        order = list(samples)
        for turn in range(rounds):
            ceiling_samples.append(ceiling())
            # rotated each round, so no method always follows the ceiling's large product
            for method, layout in order[turn % len(order):] + order[: turn % len(order)]:
                samples[(method, layout)].append(time_attention(METHODS[method], *shape, generator, layout))
        results["sizes"][name] = {"shape": shape, "flops": attention_flops(*shape), "ceiling_seconds": ceiling_samples,
                                  "seconds": {f"{m}|{layout}": t for (m, layout), t in samples.items()}}  # fmt: skip
        log(f"{name}: " + ", ".join(f"{m} {layout} {1000 * statistics.median(t):.1f} ms"
                                    for (m, layout), t in samples.items()))  # fmt: skip
    return results


def ceiling_fractions(entry: dict, gemm_side: int, key: str) -> list[float]:
    """Per round: the method's rate over the ceiling's rate measured in the same round."""
    gemm_flops = 2.0 * gemm_side**3
    return [(entry["flops"] / t) / (gemm_flops / c) for t, c in zip(entry["seconds"][key], entry["ceiling_seconds"],
                                                                     strict=True)]  # fmt: skip


def _percent_range(fractions: list[float]) -> str:
    """'**54%** (51-58%)': the median of per-round fractions, then their range."""
    percents = [100 * f for f in fractions]
    return f"**{statistics.median(percents):.0f}%** ({min(percents):.0f}-{max(percents):.0f}%)"


MODULE_METHODS = {"ours": "ours (fused, default)", "einsum": "einsum (common)"}  # bench_attention's names


def module_flops(batch: int, h: int, w: int, channels: int, loops: int) -> float:
    """2 x multiply-adds of RCCA forward + backward: per loop the stacked projections (C -> 2C' + C; forward, the
    input's and the weight's gradients) and the attention part."""
    projections = 3 * 2.0 * batch * h * w * channels * (2 * (channels // 8) + channels)
    return loops * (projections + attention_flops(batch, h, w, channels))


def measure_module(size: str, rounds: int, loops: int = 2, gemm_side: int = 2048, log=print) -> dict:
    """Seconds of one RCCA forward + backward for ours and einsum, and of the ceiling's product (interleaved rounds)."""
    from bench_attention import build_step

    batch, h, w, channels = SIZES[size]
    steps = {name: build_step(method, h, w, channels, loops, "train", "cpu") for name, method in MODULE_METHODS.items()}
    steps["ceiling"] = _gemm_call(gemm_side)  # timed in every round too: the host's speed drifts
    samples = {name: t["all"] for name, t in common.time_interleaved(steps, rounds).items()}  # after one warm-up
    ceiling_seconds = samples.pop("ceiling")
    log(f"module at {size}: " + ", ".join(f"{m} {1000 * statistics.median(t):.1f} ms" for m, t in samples.items()))
    return {"size": size, "shape": (batch, h, w, channels), "loops": loops, "gemm_side": gemm_side,
            "flops": module_flops(batch, h, w, channels, loops), "seconds": samples,
            "ceiling_seconds": ceiling_seconds}  # fmt: skip


def format_module(results: dict) -> str:
    module = results["module"]
    peak = 2.0 * module["gemm_side"] ** 3 / statistics.median(module["ceiling_seconds"]) / 1e9  # this table's ceiling
    medians = {m: statistics.median(t) for m, t in module["seconds"].items()}
    floor = module["flops"] / (peak * 1e9)
    lines = [f"Whole RCCA module, R = {module['loops']}, forward + backward, {' x '.join(map(str, module['shape']))} "
             f"({module['flops'] / 1e9:.1f} GFLOP, projections included); ceiling: `torch.mm` "
             f"{module['gemm_side']}^3 timed in every round, {peak:.1f} GFLOP/s by its median:", "",
             "| method | ms (median) | GFLOP/s | of the ceiling, same round (median; range) | vs einsum |",
             "| --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for method, seconds in medians.items():
        fractions = ceiling_fractions(module, module["gemm_side"], method)
        lines.append(f"| {method} | {1000 * seconds:.1f} | {module['flops'] / seconds / 1e9:.1f} | "
                     f"{_percent_range(fractions)} | {medians['einsum'] / seconds:.2f}x |")  # fmt: skip
    lines.append(f"| floor: every FLOP at the ceiling | {1000 * floor:.1f} | {peak:.1f} | 100% | "
                 f"{medians['einsum'] / floor:.2f}x |")  # fmt: skip
    convolution = results.get("convolution_gflops", 0.0) * peak / results["gemm_gflops"]  # scaled to this table's
    best_peak = max(peak, convolution)
    best_floor = module["flops"] / (best_peak * 1e9)
    if best_peak > peak:
        lines.append(f"| floor: every FLOP at the 1x1 convolution's rate | {1000 * best_floor:.1f} | {best_peak:.1f} | "
                     f"{100 * best_peak / peak:.0f}% | {medians['einsum'] / best_floor:.2f}x |")  # fmt: skip
    best = medians["einsum"] / best_floor
    lines += ["", f"An exact formulation with these FLOPs runs at best about as fast as the lower floor here, so about "
              f"**{best:.2f}x** is the most any could gain over einsum on this machine."]  # fmt: skip
    return "\n".join(lines)


def format_table(results: dict) -> str:
    peak = results["gemm_gflops"]
    lines = [f"Machine: {common.describe_machine()}. CPU flags: {common.cpu_flags()}. {common.load_note()}.",
             f"Threads: {torch.get_num_threads()}. Ceiling: float32 `torch.mm` {results['gemm_side']}^3 = "
             f"**{peak:.1f} GFLOP/s** before the rounds (and timed again in every round); the same product as a "
             f"channels-last 1x1 convolution (oneDNN): {results.get('convolution_gflops', float('nan')):.1f} GFLOP/s.",
             "",
             "| size | B x h x w x C | GFLOP (1 loop, fwd + bwd) | q, k, v | method | ms (median) | GFLOP/s | "
             "of the ceiling, same round (median; range) | ours vs einsum |",
             "| --- | --- | ---: | --- | --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for name, entry in results["sizes"].items():
        medians = {key: statistics.median(t) for key, t in entry["seconds"].items()}
        gflop = entry["flops"] / 1e9
        for key, seconds in medians.items():
            method, layout = key.split("|")
            fractions = ceiling_fractions(entry, results["gemm_side"], key)
            ratio = f"{medians[f'einsum|{layout}'] / seconds:.2f}x" if method == "ours" else ""
            shape = " x ".join(map(str, entry["shape"]))
            lines.append(f"| {name} | {shape} | {gflop:.2f} | {layout} | {method} | {1000 * seconds:.1f} | "
                         f"{gflop / seconds:.1f} | {_percent_range(fractions)} | {ratio} |")  # fmt: skip
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    common.wait_until_quiet(log=print)
    results = measure(args.sizes, args.rounds, args.gemm)
    results["module"] = measure_module(args.module_size, args.rounds, gemm_side=args.gemm)
    print(format_table(results))
    print()
    print(format_module(results))


if __name__ == "__main__":
    main()
