"""The README's speed claim on this CPU, in one command: issue 31's two numbers, each as the median of three runs.

1. Ours against the einsum formulation: RCCA R = 2, forward + backward at the paper's 97 x 97 x 512
   (`bench_attention.py`'s comparison: the fastest of interleaved rounds, ratio within one run), three runs.
   Memory of both in fresh processes, once.
2. The attention part's share of the machine's GEMM rate at the same size (`bench_roofline.py`: the ceiling timed in
   every round, the median of per-round ratios), for channels-last and NCHW q, k, v, three runs.

Prints one table with the CPU's model and flags, each number's median and range, and the goals (1.5x einsum; 50% of
the ceiling). Run it whenever a session lands on a CPU the README does not list yet, with training paused:

    python benchmarks/bench_cpu_claim.py            # about 2-3 minutes on 2 cores
    python benchmarks/bench_cpu_claim.py --runs 5
"""

from __future__ import annotations

import argparse
import datetime
import statistics

import bench_attention
import bench_roofline
import common

OURS, EINSUM = "ours (fused, default)", "einsum (common)"
SPEED_GOAL, CEILING_GOAL = 1.5, 0.5  # issue 31
SIZE, CHANNELS = "97x97", 512  # the paper's feature map; the roofline's "paper" size is the same


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="repeats of each measurement (the median is reported)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds inside each run")
    parser.add_argument("--no-memory", action="store_true", help="skip the fresh-process memory measurement")
    return parser.parse_args(argv)


def speed_runs(args, log) -> dict:
    """Ours against einsum, `args.runs` separate runs of interleaved rounds: per-run ratios and times."""
    attention_args = bench_attention.parse_args(["--sizes", SIZE, "--channels", str(CHANNELS), "--no-memory",
                                                 "--rounds", str(args.rounds), "--methods", EINSUM, OURS])  # fmt: skip
    runs = []
    for _ in range(args.runs):
        rows = {row["method"]: row for row in bench_attention.run(attention_args, log)["rows"]}
        runs.append({"ours_ms": rows[OURS]["time_ms"], "einsum_ms": rows[EINSUM]["time_ms"],
                     "ratio": rows[OURS]["speedup"]})  # fmt: skip
    return {"runs": runs}


def memory(args) -> dict:
    """Allocator peak (MB) of one forward + backward of each, in fresh processes."""
    attention_args = bench_attention.parse_args(["--sizes", SIZE, "--channels", str(CHANNELS)])
    h, w = common.parse_size(SIZE)
    return {method: bench_attention.measure_memory(attention_args, method, h, w) for method in (OURS, EINSUM)}


def ceiling_runs(args, log, size_name: str = "paper") -> dict:
    """The attention part's fraction of the same-round GEMM rate, per run and layout (each run's median)."""
    runs = []
    for _ in range(args.runs):
        results = bench_roofline.measure([size_name], args.rounds, gemm_side=2048, log=log)
        entry = results["sizes"][size_name]
        runs.append({key: statistics.median(bench_roofline.ceiling_fractions(entry, results["gemm_side"], key))
                     for key in entry["seconds"]})  # fmt: skip
    return {"runs": runs}


def _median_range(values: list[float], fmt: str, unit: str = "") -> str:
    """'**1.97x** (1.86-1.99x)'."""
    low, mid, high = (format(v, fmt) for v in (min(values), statistics.median(values), max(values)))
    return f"**{mid}{unit}** ({low}-{high}{unit})"


def _verdict(value: float, goal: float) -> str:
    return "met" if value >= goal else "not met"


def format_table(result: dict) -> str:
    speed, ceiling = result["speed"]["runs"], result["ceiling"]["runs"]
    ratios = [run["ratio"] for run in speed]
    lines = [f"Machine: {result['machine']}. CPU flags: {result['flags']}. {result['date']}; "
             f"{len(speed)} runs each, training paused.", "",
             "| measure | median (range) | goal | |", "| --- | ---: | ---: | --- |",
             f"| ours vs einsum, RCCA R = 2 fwd + bwd, {result['size']} | {_median_range(ratios, '.2f', 'x')} | "
             f"{SPEED_GOAL}x | {_verdict(statistics.median(ratios), SPEED_GOAL)} |",
             f"| ours (ms) | {_median_range([run['ours_ms'] for run in speed], '.0f')} | | |",
             f"| einsum (ms) | {_median_range([run['einsum_ms'] for run in speed], '.0f')} | | |"]  # fmt: skip
    for layout in bench_roofline.LAYOUTS:
        for method in bench_roofline.METHODS:
            share = [100 * run[f"{method}|{layout}"] for run in ceiling]
            goal = f"{100 * CEILING_GOAL:.0f}%" if method == "ours" else ""
            verdict = _verdict(statistics.median(share), 100 * CEILING_GOAL) if method == "ours" else ""
            lines.append(f"| attention part of the GEMM ceiling, {method}, {layout} q, k, v | "
                         f"{_median_range(share, '.0f', '%')} | {goal} | {verdict} |")  # fmt: skip
    for method, peak in result.get("memory", {}).items():
        lines.append(f"| allocator peak, {method} (MB) | {peak['alloc_mb']:.0f} | | |")
    return "\n".join(lines)


def run(args, log=print) -> dict:
    common.wait_until_quiet(log=log)
    result = {"machine": common.describe_machine(), "flags": common.cpu_flags(), "size": f"{SIZE}x{CHANNELS}",
              "date": datetime.date.today().isoformat(), "speed": speed_runs(args, log),
              "ceiling": ceiling_runs(args, log)}  # fmt: skip
    if not args.no_memory:
        result["memory"] = memory(args)
    return result


def main(argv=None):
    args = parse_args(argv)
    print(format_table(run(args)))


if __name__ == "__main__":
    main()
