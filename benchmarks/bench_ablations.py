"""Design choices of the fast path, each measured against its alternative (97x97x512, batch 1).

  layout copy        NHWC -> NCHW: ``permute(0, 3, 1, 2).contiguous()`` against the blocked copy
                     (``copy_between_layouts``, 256 pixels at a time; the fast path times both once and
                     keeps the faster)
  column accumulate  adding (w, h, h) @ (w, h, C) into a column view of an NHWC tensor: in-place
                     ``baddbmm_`` on the strided view, ``bmm`` into a whole buffer + ``add_``, and
                     ``product_into`` (used: a small buffer, chunk by chunk)
  projections        the three 1x1 projections, forward + backward: three ``Conv2d`` (NCHW) against
                     one stacked GEMM on channels-last, by ``torch.mm`` (MKL) and by a 1x1 convolution
                     (oneDNN); the fast path times the last two once per shape and keeps the faster
  C heap settings    ours and einsum, R = 2 forward + backward, in fresh processes with glibc's
                     default malloc against MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_/MALLOC_TOP_PAD_
                     raised (freed blocks reused instead of returned to the OS and faulted in again)

Times: minimum (median) of --rounds interleaved rounds; waits for a quiet machine.

    python benchmarks/bench_ablations.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import bench_attention
import common
import torch
import torch.nn.functional as F
from torch import nn

from ccnet.fast_attention import copy_between_layouts, product_into

SIDE, CHANNELS = 97, 512
BIG_HEAP_ENV = {"MALLOC_MMAP_THRESHOLD_": str(2**32), "MALLOC_TRIM_THRESHOLD_": str(2**32),
                "MALLOC_TOP_PAD_": str(2**29)}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def layout_copy_calls() -> dict:
    source = torch.randn(1, SIDE, SIDE, CHANNELS)  # (B, h, w, C)

    def blocked():
        target = torch.empty(1, CHANNELS, SIDE, SIDE)
        copy_between_layouts(target.permute(0, 2, 3, 1), source, method="blocked")

    return {"permute(0, 3, 1, 2).contiguous()": lambda: source.permute(0, 3, 1, 2).contiguous(),
            "blocked copy, 256 pixels (used where faster)": blocked}


def column_accumulate_calls() -> dict:
    v = torch.randn(SIDE, SIDE, CHANNELS + 128)[..., 128:]  # (h, w, C) slice of a qkv buffer
    attn = torch.softmax(torch.randn(SIDE, SIDE, SIDE), -1)  # (w, h, h)
    out = torch.randn(SIDE, SIDE, CHANNELS)  # (h, w, C)
    buffer = torch.empty(SIDE, SIDE, CHANNELS)  # (w, h, C)

    def via_buffer():
        torch.bmm(attn, v.transpose(0, 1), out=buffer)
        out.transpose(0, 1).add_(buffer)

    def via_fresh():
        out.transpose(0, 1).add_(torch.bmm(attn, v.transpose(0, 1)))

    def in_place():
        out.transpose(0, 1).baddbmm_(attn, v.transpose(0, 1))

    def in_chunks():
        product_into(out.transpose(0, 1), attn, v.transpose(0, 1), accumulate=True)

    return {"in-place baddbmm_ on the strided view": in_place,
            "product_into: a small buffer, chunk by chunk (used)": in_chunks,
            "bmm into a reused buffer + add_": via_buffer,
            "bmm into a fresh tensor + add_": via_fresh}


def projection_calls() -> dict:
    torch.manual_seed(0)
    convs = nn.ModuleList(nn.Conv2d(CHANNELS, c, 1) for c in (CHANNELS // 8, CHANNELS // 8, CHANNELS))
    weight = torch.cat([c.weight.flatten(1) for c in convs]).detach().requires_grad_()  # (2C'+C, C)
    bias = torch.cat([c.bias for c in convs]).detach().requires_grad_()
    x = torch.randn(1, CHANNELS, SIDE, SIDE, requires_grad=True)
    x_nhwc = torch.randn(1, SIDE, SIDE, CHANNELS, requires_grad=True)

    def three_convs():
        x.grad = None
        convs.zero_grad(set_to_none=True)
        sum(conv(x).sum() for conv in convs).backward()

    def one_gemm():
        x_nhwc.grad = weight.grad = bias.grad = None
        F.linear(x_nhwc, weight, bias).sum().backward()

    def one_convolution():
        x_nhwc.grad = weight.grad = bias.grad = None
        F.conv2d(x_nhwc.permute(0, 3, 1, 2), weight[:, :, None, None], bias).sum().backward()

    return {"three Conv2d 1x1, NCHW": three_convs,
            "one stacked GEMM, channels-last, torch.mm (MKL; used where faster)": one_gemm,
            "one stacked GEMM, channels-last, 1x1 convolution (oneDNN; used where faster)": one_convolution}


def heap_worker(spec: dict) -> dict:
    steps = {method: bench_attention.build_step(method, SIDE, SIDE, CHANNELS, 2, "train", "cpu")
             for method in (bench_attention.BASELINE, bench_attention.OURS)}
    times = common.time_interleaved(steps, spec["rounds"])
    return {method: t["min"] * 1e3 for method, t in times.items()}


def heap_rows(rounds: int) -> list[str]:
    rows = []
    for label, extra in (("glibc defaults", {}), ("large heap settings", BIG_HEAP_ENV)):
        env = dict(os.environ, **extra,
                   PYTHONPATH=os.pathsep.join([str(common.REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
        cmd = [sys.executable, __file__, "--worker", json.dumps({"rounds": rounds})]
        common.wait_until_quiet()
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if done.returncode:
            rows.append(f"| C heap: {label} | failed | |")
            continue
        times = json.loads(done.stdout.strip().splitlines()[-1])
        cells = " / ".join(f"{times[m]:.0f}" for m in (bench_attention.BASELINE, bench_attention.OURS))
        ratio = times[bench_attention.BASELINE] / times[bench_attention.OURS]
        rows.append(f"| C heap: {label} | einsum / ours: {cells} ms | ours {ratio:.2f}x faster |")
    return rows


def run(args, log=print) -> str:
    lines = [f"97x97x512, batch 1, float32; {common.describe_machine()}. Minimum (median) of {args.rounds} "
             "interleaved rounds.", "", "| choice | time (ms) | |", "| --- | ---: | --- |"]
    for title, calls in (("layout copy NHWC -> NCHW", layout_copy_calls()),
                         ("column accumulate", column_accumulate_calls()),
                         ("projections fwd+bwd", projection_calls())):
        log(f"ablation: {title}")
        common.wait_until_quiet(log=log)
        times = common.time_interleaved(calls, args.rounds)
        best = min(t["min"] for t in times.values())
        for name, t in times.items():
            lines.append(f"| {title}: {name} | {t['min'] * 1e3:.2f} ({t['median'] * 1e3:.2f}) "
                         f"| {t['min'] / best:.2f}x the fastest |")
    log("ablation: C heap settings")
    lines += heap_rows(max(3, args.rounds // 2))
    return "\n".join(lines + ["", f"Load: {common.load_note()}."])


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(heap_worker(json.loads(args.worker))))
        return
    print(run(args, log=lambda message: print(message, file=sys.stderr)))


if __name__ == "__main__":
    main()
