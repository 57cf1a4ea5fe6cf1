"""Criss-cross attention (R loops, shared weights): time and peak memory of each formulation.

Compares, at the paper's 97x97x512 feature map (769x769 input) and CamVid's 45x60x512 (360x480),
forward + backward (training) or forward only under ``torch.no_grad`` (inference):
  dense masked reference   the definition: dense (hw x hw) attention masked to the cross
  einsum (common)          the formulation most public CCNet code uses (1x1 convs + einsum)
  first bmm (v0)           our first version: batched products over permuted copies
  ours (fused, default)    ``RecurrentCrissCrossAttention`` as the model runs it (ccnet.fast_attention)
  ours, attention recomputed in backward   the same with ``recompute=True`` (less memory kept)
  ours, projections on MKL   the same with its 1x1 projections forced onto ``torch.mm`` (MKL); the default
                           runs them on MKL or oneDNN, whichever ``ccnet.projections`` timed faster here
  einsum + torch.compile   with --compile; compile time reported apart
  ours + torch.compile     with --compile
  non-local (1 block)      a non-local block with the same projections (dense attention, once)

Time: methods are timed in alternating rounds in one process (minimum and median of --rounds);
ratios are against the einsum formulation from the same run. Memory: each (method, size) in a
fresh process, see ``common.MEMORY_METHOD_CPU``. Waits for a quiet machine before timing.

    python benchmarks/bench_attention.py                      # markdown table on stdout
    python benchmarks/bench_attention.py --mode infer --sizes 45x60 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import common
import torch

from ccnet.attention import (
    RecurrentCrissCrossAttention,
    criss_cross_attention_bmm,
    criss_cross_attention_einsum,
    criss_cross_attention_reference,
    non_local_attention,
)
from ccnet.fast_attention import channels_last_view, criss_cross_step, from_channels_last
from ccnet.projections import forced_method

BASELINE = "einsum (common)"
OURS = "ours (fused, default)"
RECOMPUTE = "ours, attention recomputed in backward"
MKL_PROJECTIONS = "ours, projections on MKL"
METHODS = [
    "dense masked reference",
    BASELINE,
    "first bmm (v0)",
    OURS,
    RECOMPUTE,
    MKL_PROJECTIONS,
    "non-local (1 block)",
]
COMPILED = ["einsum + torch.compile", "ours + torch.compile"]
LOOP_FUNCTIONS = {
    "dense masked reference": criss_cross_attention_reference,
    BASELINE: criss_cross_attention_einsum,
    "first bmm (v0)": criss_cross_attention_bmm,
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", default=["97x97", "45x60"], help="feature maps HxW")
    parser.add_argument("--channels", type=int, default=512)
    parser.add_argument("--recurrence", type=int, default=2)
    parser.add_argument("--mode", choices=["train", "infer"], default="train",
                        help="train: forward + backward; infer: forward under no_grad")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per method")
    parser.add_argument("--methods", nargs="+", choices=METHODS + COMPILED, help="default: all but compiled")
    parser.add_argument("--compile", action="store_true", help="also time the torch.compile variants")
    parser.add_argument("--no-memory", action="store_true", help="skip the fresh-process memory runs")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one memory measurement
    return parser.parse_args(argv)


# -------------------------------------------------------------------------------------------------
# The methods, each as a step() closure over its module and input
# -------------------------------------------------------------------------------------------------


def build_step(method: str, h: int, w: int, channels: int, loops: int, mode: str, device: str):
    """A zero-argument callable running one forward (+ backward) of ``method``."""
    torch.manual_seed(0)
    rcca = RecurrentCrissCrossAttention(channels, recurrence=loops).to(device)
    cca = rcca.cca
    with torch.no_grad():
        cca.gamma.fill_(0.5)  # a trained gamma; 0 would let autograd skip work
    x = torch.randn(1, channels, h, w, device=device, requires_grad=mode == "train")
    forward = _forward_function(method, rcca, loops)
    projections_way = "matmul" if method == MKL_PROJECTIONS else None
    if mode == "infer":
        def step():
            with torch.no_grad(), forced_method(projections_way):
                forward(x)
        return step

    def step():
        x.grad = None
        rcca.zero_grad(set_to_none=True)
        with forced_method(projections_way):
            forward(x).sum().backward()
    return step


def _forward_function(method: str, rcca, loops: int):
    cca = rcca.cca
    base = method.replace(" + torch.compile", "")
    if base == "ours":
        base = OURS
    if base == "einsum":
        base = BASELINE
    if base in (OURS, MKL_PROJECTIONS):
        forward = rcca
    elif base == RECOMPUTE:
        def forward(x):
            weight, bias = cca.fused_weights()
            state = channels_last_view(x)  # (B, h, w, C)
            for _ in range(loops):
                state, _ = criss_cross_step(state, weight, bias, cca.qk_channels, recompute=True)
            return from_channels_last(state, like=x)
    elif base == "non-local (1 block)":
        def forward(x):
            aggregated, _ = non_local_attention(*cca.project(x))  # (B, C, h, w)
            return cca.gamma * aggregated + x
    else:
        attention = LOOP_FUNCTIONS[base]

        def forward(x):
            for _ in range(loops):
                aggregated, _ = attention(*cca.project(x))  # (B, C, h, w)
                x = cca.gamma * aggregated + x
            return x
    if method.endswith("torch.compile"):
        import torch._inductor.config as inductor_config

        inductor_config.force_disable_caches = True  # the first call then measures a cold compile
        forward = torch.compile(forward)
    return forward


# -------------------------------------------------------------------------------------------------
# Measurement
# -------------------------------------------------------------------------------------------------


def measure_times(args, methods, h, w, log) -> dict:
    """Interleaved timing of every method at one size, plus compile times of compiled variants."""
    steps, compile_s, errors = {}, {}, {}
    for method in methods:
        try:
            step = build_step(method, h, w, args.channels, args.recurrence, args.mode, args.device)
            start = time.perf_counter()
            step()  # first call: compile for compiled variants, warm-up for the rest
            compile_s[method] = time.perf_counter() - start
            steps[method] = step
        except Exception as error:  # a failing variant (e.g. torch.compile) must not stop the run
            errors[method] = f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"
            log(f"  {method}: failed: {errors[method]}")
    common.wait_until_quiet(log=log)
    times = common.time_interleaved(steps, args.rounds, args.device)
    return {"times": times, "first_call_s": compile_s, "errors": errors, "load": common.load_note()}


def worker(spec: dict) -> dict:
    step = build_step(spec["method"], spec["h"], spec["w"], spec["channels"], spec["loops"], spec["mode"],
                      spec["device"])
    step()  # warm-up: thread pools, library buffers
    result = {"peak_mb": common.measure_peak_mb(step, spec["device"])}
    if spec["device"] == "cpu":
        result["alloc_mb"] = common.measure_peak_allocated_mb(step)
    return result


def measure_memory(args, method, h, w) -> dict:
    spec = dict(method=method, h=h, w=w, channels=args.channels, loops=args.recurrence, mode=args.mode,
                device=args.device)
    return common.run_worker(Path(__file__), spec)


def run(args, log=print) -> dict:
    """All sizes and methods; returns the rows and run notes (for run_all.py)."""
    methods = args.methods or (METHODS + (COMPILED if args.compile else []))
    rows = []
    for size in args.sizes:
        h, w = common.parse_size(size)
        log(f"{size}: timing {len(methods)} methods, {args.rounds} rounds ({args.mode})")
        timing = measure_times(args, methods, h, w, log)
        base = timing["times"].get(BASELINE)
        for method in methods:
            row = {"size": f"{h}x{w}x{args.channels}", "method": method}
            if method in timing["errors"]:
                row["error"] = timing["errors"][method]
            else:
                t = timing["times"][method]
                row.update(time_ms=t["min"] * 1e3, median_ms=t["median"] * 1e3)
                row["speedup"] = base["min"] / t["min"] if base else float("nan")
                if "compile" in method:
                    row["compile_s"] = timing["first_call_s"][method]
                if not args.no_memory:
                    row.update(measure_memory(args, method, h, w))
            rows.append(row)
            log(f"  {json.dumps(row)}")
        _add_memory_ratios(rows)
        rows[-1]["load"] = timing["load"]
    return {"rows": rows, "machine": common.describe_machine(args.device), "args": vars(args)}


def _add_memory_ratios(rows):
    for key in ("peak_mb", "alloc_mb"):
        base = {r["size"]: r.get(key) for r in rows if r["method"] == BASELINE}
        for row in rows:
            if row.get(key) is not None and base.get(row["size"]):
                row[key.replace("_mb", "_ratio")] = row[key] / base[row["size"]]


def format_table(result: dict) -> str:
    args = result["args"]
    what = "forward + backward" if args["mode"] == "train" else "forward only (no_grad)"
    loads = sorted({r["load"] for r in result["rows"] if "load" in r})
    memory_how = "CUDA allocator" if args["device"] == "cuda" else "peak RSS"
    peak_name = "CUDA peak" if args["device"] == "cuda" else "peak RSS"
    lines = [
        f"R = {args['recurrence']}, C = {args['channels']}, batch 1, {what}, float32; {result['machine']}. "
        f"Time: minimum (median) of {args['rounds']} interleaved rounds; speed-up = einsum time / time, "
        f"same run. Memory: peak increment in a fresh process ({memory_how}; allocator peak = live tensor bytes). "
        f"Machine load while timing: {'; '.join(loads)}.",
        "",
        f"| feature map | method | time (ms) | speed-up vs einsum | {peak_name} (MB) | vs einsum "
        "| allocator peak (MB) | vs einsum |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result["rows"]:
        if "error" in row:
            lines.append(f"| {row['size']} | {row['method']} | failed: {row['error']} | | | | | |")
            continue
        compile_note = f" (first call {row['compile_s']:.0f} s)" if "compile_s" in row else ""
        memory = [common.format_or_dash(row.get(key), spec) for key, spec in
                  (("peak_mb", ".0f"), ("peak_ratio", ".2f"), ("alloc_mb", ".0f"), ("alloc_ratio", ".2f"))]
        memory[1] += "x" if memory[1] != "-" else ""
        memory[3] += "x" if memory[3] != "-" else ""
        time_ms = f"{_ms(row['time_ms'])} ({_ms(row['median_ms'])})"
        lines.append(
            f"| {row['size']} | {row['method']}{compile_note} | {time_ms} "
            f"| **{row['speedup']:.2f}x** | " + " | ".join(memory) + " |"
        )
    return "\n".join(lines + target_lines(result))


TARGETS = {  # issue 6, training step at R = 2: minimum speed-up over einsum, and peak memory no higher
    "97x97x512": (1.5, True),
    "45x60x512": (1.0, False),
}


def target_lines(result: dict) -> list[str]:
    """The issue's targets, checked against this run's ratios (training mode only)."""
    if result["args"]["mode"] != "train":
        return []
    lines = []
    for size, (min_speedup, memory_too) in TARGETS.items():
        row = next((r for r in result["rows"] if r["size"] == size and r["method"] == OURS), None)
        if row is None or "error" in row:
            continue
        met = row["speedup"] >= min_speedup
        text = f"{size}: {row['speedup']:.2f}x the einsum speed (target >= {min_speedup:g}x)"
        if memory_too and "peak_ratio" in row:
            met = met and row["peak_ratio"] <= 1.0
            text += f", peak {row['peak_ratio']:.2f}x"
            if "alloc_ratio" in row:  # the CPU's second memory measure; CUDA has one (its allocator)
                text += f" and allocator peak {row['alloc_ratio']:.2f}x"
            text += " of einsum's"
            text += " (target <= 1x)"
        lines.append(f"- {'met' if met else 'NOT met'}: {text}.")
    return ["", "Targets (issue 6):", ""] + lines if lines else []


def _ms(value: float) -> str:
    """Milliseconds to three significant digits: GPU timings are fractions of a millisecond."""
    return f"{value:.0f}" if value >= 100 else f"{value:#.3g}"


def main(argv=None):
    common.worker_or_table_main(parse_args(argv), worker, run, format_table)


if __name__ == "__main__":
    main()
