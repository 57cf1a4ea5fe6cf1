"""Where a training step's time goes on this machine, and what mixed precision and channels-last buy.

Two configurations, both R = 2 with a 128-channel head, batch 8, SGD with momentum:
  mobilenet_v2   the bundled recipe: dilated MobileNetV2, 288x384 crops, affinity loss (0.4) on the attention
  resnet18/2     the earlier bundled recipe: ResNet-18 at half width, from scratch, 240x320 crops
Variants of one step (forward, loss, backward, optimiser): float32; float32 channels-last; bfloat16 autocast;
bfloat16 autocast + channels-last. All variants are timed in alternating rounds in one process (time_interleaved),
so the ratios to float32 come from the same run. Then one step of the default and of the fastest variant
is split into its parts (the data pipeline's cost per batch, backbone forward, head forward with the
attention, attention alone, loss, backward, optimiser step).

    python benchmarks/bench_training_step.py                 # about 4 minutes on 2 cores
    python benchmarks/bench_training_step.py --rounds 2 --only mobilenet_v2
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import common
import torch
import torch.nn.functional as F

from ccnet.losses import AttentionAffinityLoss
from ccnet.model import CCNet

CONFIGS = {
    "mobilenet_v2": {"model": {"backbone": "mobilenet_v2"}, "crop": (288, 384), "affinity": 0.4},
    "resnet18/2": {"model": {"backbone": "resnet18", "base_width": 32}, "crop": (240, 320), "affinity": 0.0},
}
VARIANTS = {  # name -> (autocast dtype or None, channels-last)
    "float32": (None, False),
    "float32 channels-last": (None, True),
    "bfloat16 autocast": (torch.bfloat16, False),
    "bfloat16 + channels-last": (torch.bfloat16, True),
}
NUM_CLASSES, BATCH = 11, 8


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per variant (after one warm-up)")
    parser.add_argument("--only", nargs="+", choices=sorted(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--data-root", default=os.environ.get("CAMVID_ROOT"), help="CamVid root (data cost)")
    return parser.parse_args(argv)


class Step:
    """One training step of a configuration in one variant, on fixed random data."""

    def __init__(self, config: dict, dtype, channels_last: bool, batch: int):
        torch.manual_seed(0)
        self.model = CCNet(NUM_CLASSES, recurrence=2, head_channels=128, **config["model"]).train()
        with torch.no_grad():
            self.model.attention.cca.gamma.fill_(1.0)  # the bundled recipe's start; all paths get gradient
        self.dtype, self.channels_last = dtype, channels_last
        memory = torch.channels_last if channels_last else torch.contiguous_format
        self.model.to(memory_format=memory)
        self.images = torch.randn(batch, 3, *config["crop"]).contiguous(memory_format=memory)  # (B, 3, H, W)
        self.labels = torch.randint(0, NUM_CLASSES, (batch, *config["crop"]))  # (B, H, W)
        self.affinity_weight = config["affinity"]
        self.affinity = AttentionAffinityLoss()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-4, momentum=0.9)

    def autocast(self):
        return torch.autocast("cpu", dtype=self.dtype) if self.dtype is not None else nullcontext()

    def loss(self, output):
        loss = F.cross_entropy(output.logits.float(), self.labels) + 0.4 * F.cross_entropy(
            output.aux_logits.float(), self.labels
        )
        if self.affinity_weight:
            loss = loss + self.affinity_weight * self.affinity(output.attentions, self.labels)
        return loss

    def __call__(self):
        with self.autocast():
            output = self.model(self.images, return_attention=bool(self.affinity_weight))
            loss = self.loss(output)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def parts(self) -> dict[str, float]:
        """Seconds of each part of one step (forward parts timed alone, backward as a whole)."""
        times = {}
        start = time.perf_counter()
        with self.autocast():
            features = self.model.encode(self.images)
            times["backbone forward"] = time.perf_counter() - start
            mark = time.perf_counter()
            output = self.model.decode(features, self.images.shape[-2:], return_attention=bool(self.affinity_weight))
            times["heads forward (with attention)"] = time.perf_counter() - mark
            mark = time.perf_counter()
            loss = self.loss(output)
            times["loss"] = time.perf_counter() - mark
        mark = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        times["backward"] = time.perf_counter() - mark
        mark = time.perf_counter()
        self.optimizer.step()
        times["optimiser step"] = time.perf_counter() - mark
        times["attention alone (forward + backward)"] = self.attention_alone()
        return times

    def attention_alone(self) -> float:
        reduced = self.model.head.reduce(self.model.encode(self.images).final).detach().requires_grad_()
        start = time.perf_counter()
        with self.autocast():
            out = self.model.attention(reduced.to(self.dtype) if self.dtype else reduced)
        out.float().sum().backward()
        return time.perf_counter() - start


def data_seconds_per_batch(crop, batch: int, root: str | None) -> float | None:
    """In-process cost of decoding and augmenting one batch of real CamVid frames (one loader worker's work)."""
    if not root or not Path(root).is_dir():
        return None
    sys.path.insert(0, str(common.REPO_ROOT))
    from ccnet.datasets import SegmentationDataset, find_dataset
    from training.transforms import TrainTransform

    dataset = SegmentationDataset(find_dataset("camvid", root, "train"), TrainTransform(list(crop), (0.5, 1.5), True))
    dataset[0]  # warm-up: file cache
    start = time.perf_counter()
    for index in range(batch):
        dataset[(index, index)]
    return time.perf_counter() - start


def run(args, log=print) -> dict:
    common.wait_until_quiet(log=log)
    results = {"machine": common.describe_machine(), "flags": common.cpu_flags(), "batch": args.batch, "configs": {}}
    for name in args.only:
        config = CONFIGS[name]
        log(f"{name}: timing {len(VARIANTS)} variants x {args.rounds} rounds ...")
        steps = {variant: Step(config, *VARIANTS[variant], args.batch) for variant in VARIANTS}
        timed = common.time_interleaved(steps, args.rounds)
        fastest = min(timed, key=lambda v: timed[v]["min"])
        parts = {variant: steps[variant].parts() for variant in ("float32", fastest)}
        data = data_seconds_per_batch(config["crop"], args.batch, args.data_root)
        results["configs"][name] = {"timed": timed, "fastest": fastest, "parts": parts, "data": data}
    results["load"] = common.load_note()
    return results


def format_table(results: dict) -> str:
    lines = [f"Machine: {results['machine']}. CPU flags: {results['flags']}.", ""]
    batch = results["batch"]
    for name, result in results["configs"].items():
        crop = "x".join(map(str, CONFIGS[name]["crop"]))
        base = result["timed"]["float32"]["min"]
        lines += [f"**{name}**, batch {batch} of {crop}:", "",
                  "| variant | step (min / median s) | images/s | vs float32 |",
                  "| --- | ---: | ---: | ---: |"]  # fmt: skip
        for variant, timing in result["timed"].items():
            lines.append(
                f"| {variant} | {timing['min']:.2f} / {timing['median']:.2f} | {batch / timing['min']:.2f} | "
                f"{base / timing['min']:.2f}x |"
            )
        fastest = result["fastest"]
        lines += ["", f"Parts of one step (s), float32 against the fastest ({fastest}):", "",
                  f"| part | float32 | {fastest} |", "| --- | ---: | ---: |"]  # fmt: skip
        for part in result["parts"]["float32"]:
            float32, best = result["parts"]["float32"][part], result["parts"][fastest][part]
            lines.append(f"| {part} | {float32:.3f} | {best:.3f} |")
        if result["data"] is not None:
            lines.append(f"| data: decode + augment {batch} CamVid frames (one worker) | {result['data']:.3f} | same |")
        lines.append("")
    lines.append(f"_{results['load']}_")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    print(format_table(run(args, log=lambda m: print(m, file=sys.stderr))))


if __name__ == "__main__":
    main()
