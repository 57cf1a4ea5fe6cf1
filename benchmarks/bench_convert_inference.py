"""Time and memory of one Cityscapes-size frame through a converted paper-scale CCNet (ResNet-101) on CPU.

The model is the official code's Cityscapes layout (tests/data/official_ccnet_keys.json) with random
weights, converted by ``ccnet.convert`` (time and memory do not depend on the values; mmsegmentation's
R-101-D8 differs only in a narrower stem and auxiliary head, which eval mode does not run). Frames go
through ``ccnet.inference.predict`` in one of two ways:

- sliding: 769x769 windows, stride 513 (mmsegmentation's Cityscapes test setting): 2 x 4 = 8 windows for
  1024x2048, logits summed and divided by the overlap count;
- whole: the frame in one pass.

Each (mode, size) runs in a fresh subprocess, so its peak resident memory (``ru_maxrss``) is its own; the
increment over the loaded model is what the frame costs. Whole-frame increments at several sizes give the
memory per pixel from which ``ccnet.inference.DEFAULT_MAX_WHOLE_PIXELS`` was chosen (docs/CONVERT.md).

    python benchmarks/bench_convert_inference.py                        # the default sweep, a markdown table
    python benchmarks/bench_convert_inference.py --runs whole:1024x2048 sliding:1024x2048
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
from tqdm import tqdm

from ccnet.convert import build_converted_model, convert_state_dict
from ccnet.inference import predict

KEYS = Path(__file__).resolve().parent.parent / "tests" / "data" / "official_ccnet_keys.json"
CROP = (769, 769)
STRIDE = (513, 513)
DEFAULT_RUNS = ["whole:512x1024", "whole:768x1536", "whole:1024x2048", "sliding:1024x2048"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--runs", nargs="+", default=DEFAULT_RUNS, help="MODE:HxW, MODE whole or sliding (default: %(default)s)"
    )
    parser.add_argument("--recurrence", type=int, default=2)
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: measure one MODE:HxW
    return parser.parse_args(argv)


def parse_run(text: str) -> tuple[str, tuple[int, int]]:
    mode, _, size = text.partition(":")
    height, _, width = size.partition("x")
    if mode not in ("whole", "sliding") or not (height.isdigit() and width.isdigit()):
        raise SystemExit(f"--runs takes MODE:HxW with MODE whole or sliding, e.g. whole:1024x2048; got {text!r}")
    return mode, (int(height), int(width))


def converted_r101() -> torch.nn.Module:
    keys = json.loads(KEYS.read_text())
    torch.manual_seed(0)
    state = {key: torch.randn(shape) * 0.01 for key, shape in keys.items()}
    for key in state:
        if key.endswith("running_var"):
            state[key] = state[key].abs() + 1  # a valid variance
    return build_converted_model(convert_state_dict("official", state))


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure(run: str, recurrence: int) -> dict:
    mode, size = parse_run(run)
    model = converted_r101()
    images = torch.randn(1, 3, *size)  # (1, 3, H, W)
    with torch.inference_mode():
        model(torch.randn(1, 3, 129, 129), recurrence=recurrence)  # warm-up (allocator, kernels)
    before = peak_mb()
    load_before = os.getloadavg()[0]
    bar = tqdm(desc=f"{mode} {size[0]}x{size[1]}", unit="pass", file=sys.stderr, leave=False)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    start = time.perf_counter()
    logits = predict(model, images, recurrence, mode=mode, crop_size=CROP, stride=STRIDE, progress=progress)
    seconds = time.perf_counter() - start
    bar.close()
    assert logits.shape == (1, 19, *size) and torch.isfinite(logits).all()
    return {
        "mode": mode,
        "size": list(size),
        "passes": bar.total,
        "seconds": seconds,
        "peak_mb": peak_mb(),
        "model_mb": before,
        "increment_mb": peak_mb() - before,
        "load": (load_before, os.getloadavg()[0]),  # 1-minute load average: others sharing the CPU
    }


def whole_mb_per_megapixel(rows: list[dict]) -> float | None:
    """Least-squares slope of the whole-frame increment against megapixels (through the measured points)."""
    points = [(row["size"][0] * row["size"][1] / 1e6, row["increment_mb"]) for row in rows if row["mode"] == "whole"]
    if len(points) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x, _ in points)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(measure(args.worker, args.recurrence)))
        return
    for run in args.runs:
        parse_run(run)  # refuse a typo before minutes of work
    rows = []
    for run in tqdm(args.runs, desc="runs", unit="run"):
        command = [sys.executable, __file__, "--worker", run, "--recurrence", str(args.recurrence)]
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    print(
        f"CCNet ResNet-101 (converted, official layout, random weights), R = {args.recurrence}, batch 1, float32; "
        f"cpu ({platform.machine()}, {torch.get_num_threads()} threads); torch {torch.__version__}.\n"
    )
    print(
        "| mode | frame | forward passes | time (s) | peak memory (MB) | increment over the loaded model (MB) "
        "| load average before / after |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        label = "sliding 769x769, stride 513" if row["mode"] == "sliding" else "whole frame"
        print(
            f"| {label} | {row['size'][0]}x{row['size'][1]} | {row['passes']} | {row['seconds']:.1f} "
            f"| {row['peak_mb']:.0f} | {row['increment_mb']:.0f} | {row['load'][0]:.1f} / {row['load'][1]:.1f} |"
        )
    slope = whole_mb_per_megapixel(rows)
    if slope is not None:
        print(f"\nwhole frame: about {slope:.0f} MB per megapixel over the loaded model")


if __name__ == "__main__":
    main()
