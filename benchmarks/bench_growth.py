"""How cost grows with the feature map: criss-cross attention (R = 2) against a non-local block.

Square maps from 16x16 to 128x128 with 512 channels (N = h*w positions, batch 1, float32),
forward + backward. Four measurements per size:
  CCA R=2 (module)         ``RecurrentCrissCrossAttention``: projections + 2 attention loops
  non-local (module)       ``NonLocalBlock``: the same projections + dense attention
  CCA (attention only)     ``criss_cross_attention`` on given q, k, v: O(N * sqrt(N))
  non-local (attention)    ``non_local_attention`` on given q, k, v: O(N^2)
The modules are what a network pays; the projections (O(N)) dominate CCA at these sizes, so the
attention-only rows show the asymptotic terms. Growth exponents are least-squares slopes of
log(time) and log(memory) against log(N) over all sizes and over the largest four; the analytic
FLOP count's slope is given beside them.

Time: minimum of --rounds interleaved rounds, each repeating a call until it lasts >= 50 ms.
Memory: allocator peak in a fresh process per point (``common.MEMORY_METHOD_ALLOCATOR``: live tensor
bytes, steadier than the peak RSS for small maps; CUDA allocator statistics on CUDA).
Plot: ``docs/growth.png`` (needs matplotlib; skipped with a message without it).

    python benchmarks/bench_growth.py
    python benchmarks/bench_growth.py --sizes 16 32 64 --rounds 3 --no-plot
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import common
import torch

from ccnet.attention import (
    NonLocalBlock,
    RecurrentCrissCrossAttention,
    criss_cross_attention,
    non_local_attention,
)

METHODS = ["CCA R=2 (module)", "non-local (module)", "CCA (attention only)", "non-local (attention only)"]
DEFAULT_SIZES = [16, 24, 32, 48, 64, 96, 128]
PLOT_PATH = common.DOCS / "growth.png"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", type=int, default=DEFAULT_SIZES, help="square map sides")
    parser.add_argument("--channels", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--plot", default=str(PLOT_PATH), help="PNG path")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def build_step(method: str, side: int, channels: int, device: str):
    """A zero-argument forward + backward of ``method`` on a side x side x channels map."""
    torch.manual_seed(0)
    if "module" in method:
        cca = method.startswith("CCA")
        module = (RecurrentCrissCrossAttention(channels, 2) if cca else NonLocalBlock(channels)).to(device)
        with torch.no_grad():
            for name, parameter in module.named_parameters():
                if name.endswith("gamma"):
                    parameter.fill_(0.5)
        x = torch.randn(1, channels, side, side, device=device, requires_grad=True)

        def step():
            x.grad = None
            module.zero_grad(set_to_none=True)
            module(x).sum().backward()
        return step
    attention = criss_cross_attention if method.startswith("CCA") else non_local_attention
    qk = channels // 8
    q, k = (torch.randn(1, qk, side, side, device=device, requires_grad=True) for _ in range(2))
    v = torch.randn(1, channels, side, side, device=device, requires_grad=True)

    def step():
        for tensor in (q, k, v):
            tensor.grad = None
        attention(q, k, v)[0].sum().backward()
    return step


def analytic_flops(method: str, side: int, channels: int) -> float:
    """Forward + backward GEMM FLOPs (3x the forward's: each product has two gradient products)."""
    n, qk = side * side, channels // 8
    projections = 2 * n * channels * (2 * qk + channels)
    if method.startswith("CCA"):
        attention = 2 * n * (2 * side) * (qk + channels)
        forward = 2 * (projections + attention) if "module" in method else attention
    else:
        attention = 2 * n * n * (qk + channels)
        forward = projections + attention if "module" in method else attention
    return 3.0 * forward


def _repeated(step, device: str, target_s: float = 0.05):
    """Wrap step so that one call lasts at least target_s (small maps are otherwise timer noise)."""
    start = time.perf_counter()
    step()
    if device == "cuda":
        torch.cuda.synchronize()
    number = max(1, math.ceil(target_s / max(time.perf_counter() - start, 1e-6)))

    def repeated():
        for _ in range(number):
            step()
    return repeated, number


def measure_times(args, side: int, log) -> dict:
    steps, numbers = {}, {}
    for method in METHODS:
        step = build_step(method, side, args.channels, args.device)
        steps[method], numbers[method] = _repeated(step, args.device)
    common.wait_until_quiet(log=log)
    times = common.time_interleaved(steps, args.rounds, args.device, warmup=0)
    return {method: times[method]["min"] / numbers[method] for method in METHODS}


def worker(spec: dict) -> dict:
    step = build_step(spec["method"], spec["side"], spec["channels"], spec["device"])
    step()
    if spec["device"] == "cuda":
        return {"peak_mb": common.measure_peak_mb(step, "cuda")}
    return {"peak_mb": common.measure_peak_allocated_mb(step)}


def fit_exponent(ns: list[float], values: list[float]) -> float:
    """Least-squares slope of log(value) against log(N)."""
    xs, ys = [math.log(n) for n in ns], [math.log(max(v, 1e-12)) for v in values]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def run(args, log=print) -> dict:
    rows = []
    for side in args.sizes:
        log(f"{side}x{side}: timing")
        times = measure_times(args, side, log)
        for method in METHODS:
            row = {"side": side, "n": side * side, "method": method, "time_ms": times[method] * 1e3,
                   "gflops": analytic_flops(method, side, args.channels) / 1e9}
            if not args.no_memory:
                spec = dict(method=method, side=side, channels=args.channels, device=args.device)
                row.update(common.run_worker(Path(__file__), spec))
            rows.append(row)
            log(f"  {json.dumps(row)}")
    result = {"rows": rows, "machine": common.describe_machine(args.device), "args": vars(args),
              "load": common.load_note(), "fits": fits(rows)}
    if not args.no_plot:
        result["plot"] = plot(result, Path(args.plot), log)
    return result


def fits(rows) -> dict:
    """Growth exponents per method and quantity, over all sizes and over the largest four."""
    out = {}
    for method in METHODS:
        mine = sorted((r for r in rows if r["method"] == method and "error" not in r), key=lambda r: r["n"])
        for key in ("time_ms", "peak_mb", "gflops"):
            points = [(r["n"], r[key]) for r in mine if r.get(key) is not None]
            if len(points) >= 2:
                ns, values = zip(*points, strict=True)
                out[(method, key, "all")] = fit_exponent(ns, values)
                out[(method, key, "large")] = fit_exponent(ns[-4:], values[-4:])
    return out


def plot(result: dict, path: Path, log) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib not installed: no plot (pip install matplotlib)")
        return None
    rows = result["rows"]
    keys = [("time_ms", "forward + backward time (ms)"), ("peak_mb", "peak memory increment (MB, allocator)")]
    keys = [(k, label) for k, label in keys if any(r.get(k) is not None for r in rows)]
    figure, axes = plt.subplots(1, len(keys), figsize=(6.5 * len(keys), 5))
    axes = [axes] if len(keys) == 1 else axes
    for axis, (key, label) in zip(axes, keys, strict=True):
        for method in METHODS:
            points = _points(rows, method, key)
            if not points:
                continue
            ns, values = zip(*points, strict=True)
            slope = result["fits"].get((method, key, "large"), float("nan"))
            style = "-o" if "module" in method else "--s"
            axis.plot(ns, values, style, label=f"{method} (slope {slope:.2f}, largest 4)")
        _reference_slopes(axis, rows, key)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("N = h x w positions (square maps 16x16 .. 128x128, C = 512)")
        axis.set_ylabel(label)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(f"Cost growth, batch 1, float32 - {result['machine']}", fontsize=9)
    figure.text(0.5, 0.01, "time: min of interleaved rounds; memory: allocator peak (live tensor bytes) "
                "in a fresh process",
                ha="center", fontsize=8)
    figure.tight_layout(rect=(0, 0.03, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    log(f"plot written to {path}")
    return str(path)


def _points(rows, method, key) -> list[tuple[int, float]]:
    return sorted((r["n"], r[key]) for r in rows if r["method"] == method and r.get(key) is not None)


def _reference_slopes(axis, rows, key) -> None:
    """Dotted N^1.5 and N^2 guides through the attention-only curves' largest point."""
    for method, exponent in (("CCA (attention only)", 1.5), ("non-local (attention only)", 2.0)):
        points = _points(rows, method, key)
        if len(points) < 2:
            continue
        (n0, _), (n1, v1) = points[0], points[-1]
        axis.plot([n0, n1], [v1 * (n0 / n1) ** exponent, v1], ":", color="gray")
        axis.annotate(f"O(N^{exponent:g})", (n0, v1 * (n0 / n1) ** exponent), fontsize=8, color="gray")


def format_table(result: dict) -> str:
    rows, fitted = result["rows"], result["fits"]
    sides = sorted({r["side"] for r in rows})
    lines = [
        f"C = {result['args']['channels']}, batch 1, float32, forward + backward; {result['machine']}. "
        f"Time: minimum of {result['args']['rounds']} interleaved rounds (each call repeated to >= 50 ms); "
        f"memory: allocator peak (live tensor bytes) in a fresh process. Load: {result['load']}.",
        "",
        "| map | N | " + " | ".join(f"{m} ms / MB" for m in METHODS) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in METHODS) + " |",
    ]
    for side in sides:
        cells = []
        for method in METHODS:
            row = next((r for r in rows if r["side"] == side and r["method"] == method), {})
            memory = f"{row['peak_mb']:.0f}" if row.get("peak_mb") is not None else "-"
            cells.append(f"{row.get('time_ms', float('nan')):.1f} / {memory}")
        lines.append(f"| {side}x{side} | {side * side} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Fitted growth exponents (slope of log cost against log N; all sizes / largest four sizes):",
        "",
        "| method | time | memory | analytic FLOPs | theory (attention term) |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for method in METHODS:
        theory = "N^1.5" if method.startswith("CCA") else "N^2"
        cells = [
            " / ".join(f"{fitted[(method, key, span)]:.2f}" if (method, key, span) in fitted else "-"
                       for span in ("all", "large"))
            for key in ("time_ms", "peak_mb", "gflops")
        ]
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {theory} |")
    if result.get("plot"):
        lines += ["", f"![growth]({Path(result['plot']).name})"]
    return "\n".join(lines)


def main(argv=None):
    common.worker_or_table_main(parse_args(argv), worker, run, format_table)


if __name__ == "__main__":
    main()
