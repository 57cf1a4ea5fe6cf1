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

    python benchmarks/bench_roofline.py            # about 2 minutes on 2 cores; pause training first
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
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timed rounds per method")
    parser.add_argument("--gemm", type=int, default=2048, help="side of the square matrix product (the ceiling)")
    return parser.parse_args(argv)


def gemm_gflops(side: int, rounds: int = 5) -> float:
    """The machine's float32 matrix-product throughput on this process's threads (median of rounds)."""
    a, b = torch.randn(side, side), torch.randn(side, side)
    out = torch.empty(side, side)
    torch.mm(a, b, out=out)  # warm-up
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        times.append(time.perf_counter() - start)
    return 2 * side**3 / statistics.median(times) / 1e9


def attention_flops(batch: int, h: int, w: int, channels: int) -> float:
    """Multiply-adds x 2 of one loop's attention part, forward and backward (see the module docstring)."""
    return 6.0 * batch * h * w * (h + w) * (channels // 8 + channels)


def time_attention(method, batch: int, h: int, w: int, channels: int, generator: torch.Generator) -> float:
    """Seconds for one forward + backward of the attention part on fresh random q, k, v."""
    qk = channels // 8
    q = torch.randn(batch, qk, h, w, generator=generator).requires_grad_()  # (B, C', h, w)
    k = torch.randn(batch, qk, h, w, generator=generator).requires_grad_()
    v = torch.randn(batch, channels, h, w, generator=generator).requires_grad_()  # (B, C, h, w)
    grad = torch.randn(batch, channels, h, w, generator=generator)
    start = time.perf_counter()
    out, _ = method(q, k, v)
    out.backward(grad)
    return time.perf_counter() - start


def measure(sizes: list[str], rounds: int, gemm_side: int, log=print) -> dict:
    generator = torch.Generator().manual_seed(0)
    results = {"gemm_gflops": gemm_gflops(gemm_side), "gemm_side": gemm_side, "sizes": {}}
    log(f"GEMM {gemm_side}^3: {results['gemm_gflops']:.1f} GFLOP/s")
    for name in sizes:
        shape = SIZES[name]
        samples = {method: [] for method in METHODS}
        for method in METHODS.values():  # warm-up
            time_attention(method, *shape, generator)
        for _ in range(rounds):
            for method_name, method in METHODS.items():
                samples[method_name].append(time_attention(method, *shape, generator))
        results["sizes"][name] = {"shape": shape, "flops": attention_flops(*shape), "seconds": samples}
        log(f"{name}: " + ", ".join(f"{m} {1000 * statistics.median(t):.1f} ms" for m, t in samples.items()))
    return results


def format_table(results: dict) -> str:
    peak = results["gemm_gflops"]
    lines = [f"Machine: {common.describe_machine()}. {common.load_note()}.",
             f"Threads: {torch.get_num_threads()}. Ceiling: float32 `torch.mm` {results['gemm_side']}^3 = "
             f"**{peak:.1f} GFLOP/s**.", "",
             "| size | B x h x w x C | GFLOP (1 loop, fwd + bwd) | method | ms (median) | GFLOP/s | of the ceiling |"
             " ours vs einsum |",
             "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for name, entry in results["sizes"].items():
        medians = {m: statistics.median(t) for m, t in entry["seconds"].items()}
        gflop = entry["flops"] / 1e9
        for method, seconds in medians.items():
            rate = gflop / seconds
            ratio = f"{medians['einsum'] / medians['ours']:.2f}x" if method == "ours" else ""
            lines.append(f"| {name} | {' x '.join(map(str, entry['shape']))} | {gflop:.2f} | {method} | "
                         f"{1000 * seconds:.1f} | {rate:.1f} | {100 * rate / peak:.0f}% | {ratio} |")  # fmt: skip
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    common.wait_until_quiet(log=print)
    print(format_table(measure(args.sizes, args.rounds, args.gemm)))


if __name__ == "__main__":
    main()
