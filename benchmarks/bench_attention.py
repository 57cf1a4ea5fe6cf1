"""Forward + backward time and peak memory of criss-cross attention (R = 2) against its alternatives.

Compares, at the paper's 97x97x512 feature map (769x769 input) and CamVid's 45x60x512 (360x480):
the dense masked reference, the common einsum formulation, ours (``ccnet.attention``), and a
non-local block with the same projections. Ratios are against the einsum formulation, measured
in the same run.

Peak memory: each (method, size) runs in a fresh subprocess; the increment is the process's peak
resident set size (``ru_maxrss``) after one forward + backward minus its peak before it (inputs and
module already allocated). On CUDA the allocator's ``max_memory_allocated`` increment is used.

    python benchmarks/bench_attention.py                 # prints a markdown table
    python benchmarks/bench_attention.py --sizes 45x60 --repeats 3 --markdown docs/ATTENTION_BENCH.md
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch

from ccnet.attention import (
    CrissCrossAttention,
    criss_cross_attention,
    criss_cross_attention_einsum,
    criss_cross_attention_reference,
    non_local_attention,
)

METHODS = {
    "dense masked reference": criss_cross_attention_reference,
    "einsum (common)": criss_cross_attention_einsum,
    "ours": criss_cross_attention,
    "non-local": non_local_attention,
}
BASELINE = "einsum (common)"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["97x97", "45x60"], help="feature maps HxW")
    parser.add_argument("--channels", type=int, default=512)
    parser.add_argument("--recurrence", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method (median reported)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--markdown", help="also write the table to this markdown file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run one measurement
    return parser.parse_args(argv)


def run_loops(module: CrissCrossAttention, x: torch.Tensor, method, loops: int) -> torch.Tensor:
    """R applications of one shared CCA module, with the chosen attention formulation."""
    for _ in range(loops):
        aggregated, _ = method(*module.project(x))  # (B, C, h, w)
        x = module.gamma * aggregated + x
    return x


def measure_one(method_name: str, h: int, w: int, channels: int, loops: int, repeats: int, device: str):
    """Runs in a fresh process: time of forward + backward, and its peak memory increment (MB)."""
    torch.manual_seed(0)
    module = CrissCrossAttention(channels).to(device)
    with torch.no_grad():
        module.gamma.fill_(0.5)
    x = torch.randn(1, channels, h, w, device=device, requires_grad=True)
    method = METHODS[method_name]

    def step():
        out = run_loops(module, x, method, loops)
        out.sum().backward()
        if device == "cuda":
            torch.cuda.synchronize()

    peak_mb = _peak_increment_mb(step, device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"time_s": statistics.median(times), "peak_mb": peak_mb}


def _peak_increment_mb(step, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    step()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024


def measure_in_subprocess(args, method_name: str, h: int, w: int) -> dict:
    spec = json.dumps(dict(method=method_name, h=h, w=w))
    cmd = [sys.executable, __file__, "--worker", spec, "--channels", str(args.channels),
           "--recurrence", str(args.recurrence), "--repeats", str(args.repeats), "--device", args.device]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def format_table(rows: list[dict], args) -> str:
    lines = [
        f"R = {args.recurrence}, C = {args.channels}, batch 1, forward + backward; "
        f"device {args.device} ({describe_machine(args.device)}); torch {torch.__version__}; "
        f"median of {args.repeats}. Ratios against the einsum formulation, same run.",
        "",
        "| feature map | method | time (ms) | speed-up vs einsum | peak memory increment (MB) | memory vs einsum |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['size']} | {row['method']} | failed: {row['error']} | | | |")
            continue
        lines.append(
            f"| {row['size']} | {row['method']} | {row['time_s'] * 1000:.0f} | {row['speedup']:.2f}x "
            f"| {row['peak_mb']:.0f} | {row['memory_ratio']:.2f}x |"
        )
    return "\n".join(lines)


def describe_machine(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        result = measure_one(spec["method"], spec["h"], spec["w"], args.channels, args.recurrence,
                             args.repeats, args.device)
        print(json.dumps(result))
        return
    rows = []
    for size in args.sizes:
        h, w = (int(n) for n in size.lower().split("x"))
        results = {name: measure_in_subprocess(args, name, h, w) for name in args.methods}
        base = results.get(BASELINE, {})
        for name, result in results.items():
            row = {"size": f"{h}x{w}x{args.channels}", "method": name, **result}
            if "error" not in result and "time_s" in base:
                row["speedup"] = base["time_s"] / result["time_s"]
                row["memory_ratio"] = result["peak_mb"] / max(base["peak_mb"], 1e-9)
            elif "error" not in result:
                row["speedup"] = row["memory_ratio"] = float("nan")
            rows.append(row)
            print(f"{row['size']:>12} {name:>24}: {result}", file=sys.stderr)
    table = format_table(rows, args)
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as handle:
            handle.write("# Criss-cross attention: time and memory\n\n")
            handle.write("Made by `python benchmarks/bench_attention.py`.\n\n" + table + "\n")


if __name__ == "__main__":
    main()
