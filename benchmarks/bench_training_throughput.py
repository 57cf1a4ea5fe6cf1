"""Training images/s of a real training run, per precision and memory format (the issue's goal, end to end).

`bench_training_step.py` times one step on a fixed random batch. This script times what a training run does
(training/speed_probe.py, the campaign queue's probe):
the real `training.train.Trainer` of a config (its CamVid loader with one worker process, augmentation,
ENet class weights, the pretrained backbone, the affinity loss, SGD), one trainer per variant, all built in
one process and timed in alternating rounds of a few steps each, so that the ratios come from the same run:

  float32                 train.amp false, train.channels_last false (the eager baseline)
  float32 channels-last   the bundled configs' setting
  bfloat16 autocast       train.amp bfloat16 (contiguous: the trainer refuses bfloat16 + channels-last on the
                          CPU, whose depthwise weight gradients are wrong in torch 2.13; see training/train.py)
  ... + compile           the same with train.compile true (torch.compile, inductor); its compilation happens in
                          the untimed warm-up steps

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
from pathlib import Path

import common

from training.speed_probe import BASELINE, VARIANTS, measure


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(common.REPO_ROOT / "training/configs/camvid_r2.yaml"))
    parser.add_argument("--data-root", default=os.environ.get("CAMVID_ROOT"), help="CamVid root ($CAMVID_ROOT)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per variant")
    parser.add_argument("--steps", type=int, default=4, help="training steps per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), metavar="NAME",
                        default=["float32", "float32 channels-last", "bfloat16 autocast"],
                        help=f"which variants to time, of {', '.join(VARIANTS)}")  # fmt: skip
    args = parser.parse_args(argv)
    if not args.data_root:
        parser.error("no CamVid: pass --data-root or set CAMVID_ROOT")
    if BASELINE not in args.variants:
        args.variants.insert(0, BASELINE)  # every ratio is to float32 eager
    return args


def run(args, log=print) -> dict:
    common.wait_until_quiet(log=log)
    results = measure(args.config, args.data_root, args.variants, args.rounds, args.steps, args.warmup, log=log)
    results["flags"] = common.cpu_flags()
    results["load"] = common.load_note()
    return results


def format_table(results: dict) -> str:
    batch = results["batch"]
    if BASELINE not in results["samples"]:
        raise ValueError(f"the baseline {BASELINE} failed here: {(results.get('failed') or {}).get(BASELINE)}")
    base = statistics.median(results["samples"][BASELINE])
    lines = [f"Machine: {results['machine']}. CPU flags: {results['flags']}.", "",
             f"Config `{Path(results['config']).name}`, batch {batch}, real CamVid loader (one worker):", "",
             "| variant | s/step (median of rounds) | images/s | vs float32 eager |",
             "| --- | ---: | ---: | ---: |"]  # fmt: skip
    for name, times in results["samples"].items():
        median = statistics.median(times)
        lines.append(f"| {name} | {median:.2f} | {batch / median:.2f} | {base / median:.2f}x |")
    for name, reason in (results.get("failed") or {}).items():  # left out of the timing, with why
        lines.append(f"| {name} | failed: {reason} | – | – |")
    lines += ["", f"_{results['load']}_"]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    print(format_table(run(args, log=lambda m: print(m, file=sys.stderr))))


if __name__ == "__main__":
    main()
