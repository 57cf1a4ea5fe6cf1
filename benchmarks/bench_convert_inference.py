"""Time one 1024x2048 Cityscapes frame through a converted paper-scale CCNet (ResNet-101, R = 2) on CPU.

The model is the official code's Cityscapes layout (tests/data/official_ccnet_keys.json) with random
weights, converted by ``ccnet.convert`` (timing does not depend on the values; mmsegmentation's R-101-D8
differs only in a narrower stem and auxiliary head, which eval mode does not run). Two ways to run a frame:

- sliding: 769x769 windows, stride 513 (mmsegmentation's Cityscapes test setting): 2 x 4 = 8 windows,
  logits summed and divided by the overlap count;
- whole: the frame in one pass.

Each mode runs in a fresh subprocess, so its peak resident memory (``ru_maxrss``) is its own.

    python benchmarks/bench_convert_inference.py                    # both modes, prints a markdown table
    python benchmarks/bench_convert_inference.py --modes sliding --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from ccnet.convert import build_converted_model, convert_state_dict

KEYS = Path(__file__).resolve().parent.parent / "tests" / "data" / "official_ccnet_keys.json"
FRAME = (1024, 2048)
CROP = (769, 769)
STRIDE = (513, 513)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", nargs="+", default=["sliding", "whole"], choices=["sliding", "whole"])
    parser.add_argument("--repeats", type=int, default=1, help="timed frames per mode (after one warm-up window)")
    parser.add_argument("--recurrence", type=int, default=2)
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: measure one mode
    return parser.parse_args(argv)


def converted_r101() -> torch.nn.Module:
    keys = json.loads(KEYS.read_text())
    torch.manual_seed(0)
    state = {key: torch.randn(shape) * 0.01 for key, shape in keys.items()}
    for key in state:
        if key.endswith("running_var"):
            state[key] = state[key].abs() + 1  # a valid variance
    return build_converted_model(convert_state_dict("official", state))


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Regular steps, the last window flush with the end (mmsegmentation's slide_inference grid)."""
    if length <= window:
        return [0]
    count = -(-(length - window) // stride) + 1  # ceil division
    return [min(index * stride, length - window) for index in range(count)]


@torch.inference_mode()
def sliding_logits(model, images: torch.Tensor, recurrence: int) -> tuple[torch.Tensor, int]:
    """(B, 3, H, W) -> (B, K, H, W): windows' logits summed, divided by how many windows cover a pixel."""
    height, width = images.shape[-2:]
    total, count, windows = None, images.new_zeros(1, 1, height, width), 0
    for top in window_starts(height, CROP[0], STRIDE[0]):
        for left in window_starts(width, CROP[1], STRIDE[1]):
            crop = images[..., top : top + CROP[0], left : left + CROP[1]]  # (B, 3, 769, 769)
            logits = model(crop, recurrence=recurrence).logits  # (B, K, 769, 769)
            if total is None:
                total = images.new_zeros(images.shape[0], logits.shape[1], height, width)
            total[..., top : top + CROP[0], left : left + CROP[1]] += logits
            count[..., top : top + CROP[0], left : left + CROP[1]] += 1
            windows += 1
    return total / count, windows


@torch.inference_mode()
def whole_logits(model, images: torch.Tensor, recurrence: int) -> tuple[torch.Tensor, int]:
    return model(images, recurrence=recurrence).logits, 1


def measure(mode: str, repeats: int, recurrence: int) -> dict:
    model = converted_r101()
    images = torch.randn(1, 3, *FRAME)
    run = sliding_logits if mode == "sliding" else whole_logits
    with torch.inference_mode():
        model(torch.randn(1, 3, 129, 129), recurrence=recurrence)  # warm-up (allocator, kernels)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    load_before = os.getloadavg()[0]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        logits, windows = run(model, images, recurrence)
        times.append(time.perf_counter() - start)
    assert logits.shape == (1, 19, *FRAME) and torch.isfinite(logits).all()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "mode": mode,
        "windows": windows,
        "seconds": min(times),
        "peak_mb": peak / 1024,
        "increment_mb": (peak - before) / 1024,
        "load": (load_before, os.getloadavg()[0]),  # 1-minute load average: others sharing the CPU
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(measure(args.worker, args.repeats, args.recurrence)))
        return
    rows = []
    for mode in args.modes:
        command = [sys.executable, __file__, "--worker", mode, "--repeats", str(args.repeats)]
        command += ["--recurrence", str(args.recurrence)]
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    print(
        f"CCNet ResNet-101 (converted, official layout), R = {args.recurrence}, one {FRAME[0]}x{FRAME[1]} frame; "
        f"cpu ({platform.machine()}, {torch.get_num_threads()} threads); torch {torch.__version__}; "
        f"best of {args.repeats}.\n"
    )
    print(
        "| mode | forward passes | time per frame (s) | peak memory (MB) | increment over the loaded model (MB) "
        "| load average before / after |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        label = "sliding 769x769, stride 513" if row["mode"] == "sliding" else "whole frame"
        print(
            f"| {label} | {row['windows']} | {row['seconds']:.1f} | {row['peak_mb']:.0f} | {row['increment_mb']:.0f} "
            f"| {row['load'][0]:.1f} / {row['load'][1]:.1f} |"
        )


if __name__ == "__main__":
    main()
