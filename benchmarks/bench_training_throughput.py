"""Training images/s of a real training run, per precision and memory format (the issue's goal, end to end).

`bench_training_step.py` times one step on a fixed random batch. This script times what a training run does:
the real `training.train.Trainer` of a config (its CamVid loader with one worker process, augmentation,
ENet class weights, the pretrained backbone, the affinity loss, SGD), one trainer per variant, all built in
one process and timed in alternating rounds of a few steps each, so that the ratios come from the same run:

  float32                 train.amp false, train.channels_last false (the eager baseline)
  float32 channels-last   the bundled configs' setting
  bfloat16 autocast       train.amp bfloat16 (contiguous: the trainer refuses bfloat16 + channels-last on the
                          CPU, whose depthwise weight gradients are wrong in torch 2.13; see training/train.py)

Wall clock per step includes waiting for the loader. Validation and saving are switched off; nothing is
written outside a temporary folder.

    python benchmarks/bench_training_throughput.py --data-root ../shared/datasets/camvid   # about 5 minutes
    python benchmarks/bench_training_throughput.py --rounds 2 --steps 3 --config training/configs/camvid_r1.yaml
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import bench_training_step
import common

from training.train import Trainer, resolve_config
from training.train import parse_args as train_args

VARIANTS = {  # name -> config overrides
    "float32": ["train.amp=false", "train.channels_last=false"],
    "float32 channels-last": ["train.amp=false", "train.channels_last=true"],
    "bfloat16 autocast": ["train.amp=bfloat16", "train.channels_last=false"],
}
BASELINE = "float32"
NEVER = 10**9  # no validation or saving inside the timed steps


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(common.REPO_ROOT / "training/configs/camvid_r2.yaml"))
    parser.add_argument("--data-root", default=os.environ.get("CAMVID_ROOT"), help="CamVid root ($CAMVID_ROOT)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per variant")
    parser.add_argument("--steps", type=int, default=4, help="training steps per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    args = parser.parse_args(argv)
    if not args.data_root:
        parser.error("no CamVid: pass --data-root or set CAMVID_ROOT")
    return args


class Run:
    """One variant's trainer and its loader, stepping as `Trainer.run` does (without validation or saving)."""

    def __init__(self, args, overrides: list[str], folder: Path):
        argv = ["--config", args.config, "--out", str(folder), "--data-root", args.data_root,
                "--set", f"optim.iterations={NEVER}", "--set", f"train.val_every={NEVER}",
                "--set", f"train.save_every={NEVER}"]  # fmt: skip
        for override in overrides:
            argv += ["--set", override]
        config = resolve_config(train_args(argv))
        pretrained = config["model"].get("pretrained")
        if pretrained and not Path(pretrained).is_absolute():
            config["model"]["pretrained"] = str(common.REPO_ROOT / pretrained)
        self.trainer = Trainer(config, folder, show_progress=False)
        self.batches = iter(self.trainer._train_loader(0))
        self.batch = config["optim"]["batch_size"]

    def steps(self, count: int) -> None:
        for _ in range(count):
            self.trainer._set_lr()
            images, labels = next(self.batches)
            self.trainer.train_step(images, labels)
            self.trainer.step += 1


def run(args, log=print) -> dict:
    common.wait_until_quiet(log=log)
    results = {"machine": common.describe_machine(), "config": args.config, "samples": {}}
    with tempfile.TemporaryDirectory() as tmp:
        runs = {
            name: Run(args, overrides, Path(tmp) / f"run{i}") for i, (name, overrides) in enumerate(VARIANTS.items())
        }
        results["batch"] = next(iter(runs.values())).batch
        for name, one in runs.items():
            log(f"warm-up: {name}")
            one.steps(args.warmup)
        samples = {name: [] for name in runs}
        for round_index in range(args.rounds):
            for name, one in runs.items():
                start = time.perf_counter()
                one.steps(args.steps)
                samples[name].append((time.perf_counter() - start) / args.steps)
                log(f"round {round_index + 1}/{args.rounds} {name}: {samples[name][-1]:.2f} s/step")
        results["samples"] = samples
    results["flags"] = bench_training_step.cpu_flags()
    results["load"] = common.load_note()
    return results


def format_table(results: dict) -> str:
    batch = results["batch"]
    base = statistics.median(results["samples"][BASELINE])
    lines = [f"Machine: {results['machine']}. CPU flags: {results['flags']}.", "",
             f"Config `{Path(results['config']).name}`, batch {batch}, real CamVid loader (one worker):", "",
             "| variant | s/step (median of rounds) | images/s | vs float32 eager |",
             "| --- | ---: | ---: | ---: |"]  # fmt: skip
    for name, times in results["samples"].items():
        median = statistics.median(times)
        lines.append(f"| {name} | {median:.2f} | {batch / median:.2f} | {base / median:.2f}x |")
    lines += ["", f"_{results['load']}_"]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    print(format_table(run(args, log=lambda m: print(m, file=sys.stderr))))


if __name__ == "__main__":
    main()
