"""The paper's cost table: FLOPs and memory added by RCCA (R = 1, 2, 3) and by a non-local block.

Setting (paper, Table "GFLOPs and memory"): one 1x3x769x769 image through a ResNet-101 backbone at
output stride 8, so the attention sees a 97x97x512 map. The increment is over the same network
without attention.

Scopes:
  head   the attention module alone on a 1x512x97x97 map against the identity: exactly the
         network's increment in FLOPs, and the memory the attention adds at its own point.
  model  ``ccnet.model.CCNet(num_classes=19, backbone="resnet101", recurrence=R)`` on 1x3x769x769
         against ``recurrence=0``; the non-local variant swaps the RCCA module for a non-local
         block. Memory is then the increment of the whole forward pass's peak.
  auto   both when ``ccnet.model`` exists, else head.

FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` (matrix products and convolutions, 2 per
multiply-add, no bias/softmax/elementwise; in-place ``baddbmm_``/``addmm_`` registered with the same
formula as their out-of-place forms), checked against the analytic count. Memory: forward under
``torch.no_grad`` (and forward + backward for the head), each variant in a fresh process, see
``common.MEMORY_METHOD_CPU``.

    python benchmarks/bench_costs.py
    python benchmarks/bench_costs.py --scope head --no-time
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import common
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ccnet.attention import NonLocalBlock, RecurrentCrissCrossAttention

VARIANTS = ["baseline", "RCCA R=1", "RCCA R=2", "RCCA R=3", "non-local"]
PAPER = {  # arXiv version: GFLOPs increment, memory increment (MB), for one 769x769 input
    "RCCA R=1": (8.3, 53),
    "RCCA R=2": (16.5, 127),
    "RCCA R=3": (24.7, 208),
    "non-local": (108.0, 1411),
}
IMAGE, FEATURE, CHANNELS, CLASSES = 769, 97, 512, 19


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scope", choices=["auto", "head", "model"], default="auto")
    parser.add_argument("--no-time", action="store_true", help="skip the head's forward timing")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one variant in a fresh process
    return parser.parse_args(argv)


# -------------------------------------------------------------------------------------------------
# Counting
# -------------------------------------------------------------------------------------------------


def _inplace_bmm_flops(self_shape, a_shape, b_shape, out_shape=None, **kwargs) -> int:
    return 2 * a_shape[0] * a_shape[1] * a_shape[2] * b_shape[2]


def _inplace_mm_flops(self_shape, a_shape, b_shape, out_shape=None, **kwargs) -> int:
    return 2 * a_shape[0] * a_shape[1] * b_shape[1]


# FlopCounterMode knows baddbmm and addmm but not their in-place forms, which the fast path uses.
INPLACE_FORMULAS = {torch.ops.aten.baddbmm_: _inplace_bmm_flops, torch.ops.aten.addmm_: _inplace_mm_flops}


def count_flops(call) -> int:
    with FlopCounterMode(display=False, custom_mapping=INPLACE_FORMULAS) as counter:
        call()
    return counter.get_total_flops()


def analytic_flops(variant: str, h: int = FEATURE, w: int = FEATURE, c: int = CHANNELS) -> int:
    """GEMM FLOPs (2 per multiply-add) of the attention on an h x w x c map, C' = c / 8.

    Per CCA loop: projections 2*hw*c*(2C' + c); affinities and aggregation over the h + w entries
    each pixel's cross is computed with (its own column entry is computed, then masked), so
    2*hw*(h + w)*(C' + c). Non-local: the same projections plus 2*(hw)^2*(C' + c).
    """
    n, qk = h * w, c // 8
    projections = 2 * n * c * (2 * qk + c)
    if variant == "baseline":
        return 0
    if variant == "non-local":
        return projections + 2 * n * n * (qk + c)
    loops = int(variant.split("R=")[1])
    return loops * (projections + 2 * n * (h + w) * (qk + c))


# -------------------------------------------------------------------------------------------------
# What is measured
# -------------------------------------------------------------------------------------------------


class NonLocalInHead(nn.Module):
    """A non-local block with RCCA's call signature, to drop into the model's head."""

    def __init__(self, channels: int):
        super().__init__()
        self.block = NonLocalBlock(channels)

    def forward(self, x, recurrence=None, return_attention=False):
        out = self.block(x)
        return (out, []) if return_attention else out


def build_head(variant: str, device: str):
    """The attention module alone (identity for the baseline) and its 1x512x97x97 input."""
    if variant == "baseline":
        module = nn.Identity()
    elif variant == "non-local":
        module = NonLocalBlock(CHANNELS)
    else:
        module = RecurrentCrissCrossAttention(CHANNELS, recurrence=int(variant.split("R=")[1]))
    _set_gamma(module)
    return module.to(device).eval(), torch.randn(1, CHANNELS, FEATURE, FEATURE, device=device)


def build_model(variant: str, device: str):
    """The full CCNet (ResNet-101, output stride 8) and its 1x3x769x769 input."""
    from ccnet.model import CCNet

    loops = 0 if variant == "baseline" else 1 if variant == "non-local" else int(variant.split("R=")[1])
    model = CCNet(num_classes=CLASSES, backbone="resnet101", recurrence=loops)
    if variant == "non-local":
        model.head.attention = NonLocalInHead(model.head.attention.cca.in_channels)
    _set_gamma(model)
    return model.to(device).eval(), torch.randn(1, 3, IMAGE, IMAGE, device=device)


def _set_gamma(module: nn.Module) -> None:
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if name.endswith("gamma"):
                parameter.fill_(0.5)  # a trained gamma, so no path is skipped


def model_available() -> bool:
    try:
        from ccnet.model import CCNet  # noqa: F401
    except ImportError:
        return False
    return True


def worker(spec: dict) -> dict:
    """One variant in a fresh process: FLOPs, inference peak memory, (head) training peak and time."""
    device = spec["device"]
    build = build_model if spec["scope"] == "model" else build_head
    module, x = build(spec["variant"], device)

    def infer():
        with torch.no_grad():
            module(x)

    result = {"flops": count_flops(infer)}
    infer()  # warm-up
    result["infer_alloc_mb"] = common.measure_peak_allocated_mb(infer)
    if spec["scope"] == "head":  # a whole network's RSS peak mostly measures the C heap's reuse
        result["infer_rss_mb"] = common.measure_peak_mb(infer, device)
    if spec["scope"] == "head" and spec["variant"] != "baseline":
        x.requires_grad_(True)

        def train():
            x.grad = None
            module.zero_grad(set_to_none=True)
            module(x).sum().backward()

        train()
        result["train_alloc_mb"] = common.measure_peak_allocated_mb(train)
        result["train_rss_mb"] = common.measure_peak_mb(train, device)
        x.requires_grad_(False)
    if spec["time"]:
        common.wait_until_quiet(log=lambda m: print(m, file=sys.stderr))
        timing = common.time_interleaved({"infer": infer}, rounds=5, device=device)
        result["infer_ms"] = timing["infer"]["min"] * 1e3
    return result


# -------------------------------------------------------------------------------------------------
# Table
# -------------------------------------------------------------------------------------------------


def run(args, log=print) -> dict:
    scopes = [args.scope] if args.scope != "auto" else (["head", "model"] if model_available() else ["head"])
    results = {}
    for scope in scopes:
        for variant in VARIANTS:
            spec = dict(variant=variant, scope=scope, device=args.device,
                        time=scope == "head" and not args.no_time)
            results[(scope, variant)] = common.run_worker(Path(__file__), spec)
            log(f"{scope} {variant}: {json.dumps(results[(scope, variant)])}")
    return {"scopes": scopes, "results": results, "machine": common.describe_machine(args.device),
            "device": args.device, "load": common.load_note()}


def _increment(results, scope, variant, key):
    value, base = results[(scope, variant)].get(key), results[(scope, "baseline")].get(key)
    return None if value is None else value - (base or 0.0)


def format_table(run_result: dict) -> str:
    results, device = run_result["results"], run_result["device"]
    rss_method = common.MEMORY_METHOD_CUDA if device == "cuda" else common.MEMORY_METHOD_CPU
    lines = [
        f"One 1x3x769x769 image (97x97x512 at the attention), float32, batch 1; {run_result['machine']}.",
        "FLOPs: `torch.utils.flop_counter.FlopCounterMode` (GEMMs and convolutions, 2 per multiply-add); "
        "analytic: `bench_costs.analytic_flops`. Memory, main columns: " + common.MEMORY_METHOD_ALLOCATOR
        + ". Peak RSS columns: " + rss_method + ". Increments are over the same network without "
        "attention (head scope: over the identity); each variant runs in its own process.",
        "",
    ]
    for scope in run_result["scopes"]:
        lines += _scope_table(results, scope)
        lines += _ratio_lines(results, scope)
    failed = [f"{scope} {variant}: {r['error']}" for (scope, variant), r in results.items() if "error" in r]
    if failed:
        lines += ["", "Failed: " + "; ".join(failed)]
    return "\n".join(lines)


def _scope_table(results, scope) -> list[str]:
    what = ("attention module alone on the 97x97x512 map" if scope == "head"
            else "whole CCNet ResNet-101 (output stride 8) on the 769x769 image, forward")
    lines = [
        f"**Scope: {scope}** ({what}).",
        "",
        "| variant | GFLOPs (counter) | GFLOPs (analytic) | paper GFLOPs | memory, inference (MB) "
        "| paper memory (MB) | inference, peak RSS (MB) | training fwd+bwd (MB) | training, peak RSS (MB) "
        "| forward time (ms) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for variant in VARIANTS[1:]:
        if "error" in results[(scope, variant)] or "error" in results[(scope, "baseline")]:
            continue
        flops = _increment(results, scope, variant, "flops") / 1e9
        analytic = analytic_flops(variant) / 1e9
        paper_flops, paper_mb = PAPER[variant]
        cells = [
            f"{flops:.1f}", f"{analytic:.1f}", f"{paper_flops:g}",
            common.format_or_dash(_increment(results, scope, variant, "infer_alloc_mb"), ".0f"), f"{paper_mb}",
            common.format_or_dash(_increment(results, scope, variant, "infer_rss_mb"), ".0f"),
            common.format_or_dash(results[(scope, variant)].get("train_alloc_mb"), ".0f"),
            common.format_or_dash(results[(scope, variant)].get("train_rss_mb"), ".0f"),
            common.format_or_dash(_increment(results, scope, variant, "infer_ms"), ".0f"),
        ]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return lines + [""]


def _ratio_lines(results, scope) -> list[str]:
    lines = ["| ratio | FLOPs (ours) | FLOPs (paper) | memory, inference (ours) | memory, training (ours) "
             "| memory (paper) |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for loops in (1, 2, 3):
        rcca = f"RCCA R={loops}"
        if any("error" in results[(scope, v)] for v in ("baseline", rcca, "non-local")):
            continue
        flops = _increment(results, scope, "non-local", "flops") / _increment(results, scope, rcca, "flops")
        cells = [f"{flops:.1f}x", f"{PAPER['non-local'][0] / PAPER[rcca][0]:.1f}x"]
        for key in ("infer_alloc_mb", "train_alloc_mb"):
            ours, theirs = _increment(results, scope, rcca, key), _increment(results, scope, "non-local", key)
            cells.append(f"{theirs / ours:.1f}x" if ours and theirs and ours > 0.5 else "-")
        cells.append(f"{PAPER['non-local'][1] / PAPER[rcca][1]:.1f}x")
        lines.append(f"| non-local / {rcca} | " + " | ".join(cells) + " |")
    return lines + [""]


def main(argv=None):
    common.worker_or_table_main(parse_args(argv), worker, run, format_table)


if __name__ == "__main__":
    main()
