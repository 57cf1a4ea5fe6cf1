"""One training step of a head on cached features (training/heads.py), per precision, memory format and compile.

Every CamVid model other than the default is a head trained on the campaign's frozen backbone features, 5 seeds
per kind, so the head step sets how long the heads take. This times `training.heads.head_step` (forward from
the cached features, the campaign's losses, backward, SGD) on a random batch of the heads' shape (8 crops of
32 x 44 stride-8 cells: final (8, 320, 32, 44), aux (8, 96, 32, 44), low (8, 24, 64, 88), labels 256 x 352),
for the R = 2 head with the affinity loss and the R = 0 head without attention. Speed does not depend on the
weights, so the model is the campaign's architecture with random weights. Variants, timed in alternating
rounds in one process so the ratios come from one run:

  float32                  the eager baseline
  float32 channels-last    model and features in channels-last
  bfloat16 autocast        what `resolve_precision("auto")` picks on a CPU with native bfloat16
  bfloat16 + torch.compile (--compile) the same step compiled by inductor; its compile time is reported apart

    python benchmarks/bench_head_step.py                    # about 2 minutes on 2 cores
    python benchmarks/bench_head_step.py --compile --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).absolute().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks import common  # noqa: E402
from ccnet.backbones import BackboneFeatures  # noqa: E402
from ccnet.factory import build_model  # noqa: E402
from training.heads import DEFAULTS, KINDS, head_optimizer, head_step, loss_config  # noqa: E402
from training.objective import SegmentationObjective  # noqa: E402

CAMPAIGN = {"num_classes": 11, "backbone": "mobilenet_v2", "head_channels": 128, "decoder_channels": 64}
OPTIM = {"lr": 0.01, "momentum": 0.9, "weight_decay": 4e-5}
CHANNELS = {"final": 320, "aux": 96, "low": 24}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of --steps steps per variant")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--kinds", nargs="+", default=["r2", "r0"], choices=[k for k in KINDS if "video" not in k])
    parser.add_argument("--compile", action="store_true", help="add bfloat16 + torch.compile (compiles first)")
    return parser.parse_args(argv)


def random_batch(batch: int, cells: tuple[int, int], channels_last: bool) -> tuple[BackboneFeatures, torch.Tensor]:
    h, w = cells
    generator = torch.Generator().manual_seed(0)
    memory = torch.channels_last if channels_last else torch.contiguous_format

    def features(name, size):
        return torch.randn(batch, CHANNELS[name], *size, generator=generator).contiguous(memory_format=memory)

    final, aux, low = features("final", (h, w)), features("aux", (h, w)), features("low", (2 * h, 2 * w))
    labels = torch.randint(0, CAMPAIGN["num_classes"], (batch, 8 * h, 8 * w), generator=generator)  # (B, H, W)
    return BackboneFeatures(aux=aux, final=final, low=low), labels


def make_step(kind: str, amp_dtype, channels_last: bool, compiled: bool):
    """A closure running `steps` head steps of one variant on its own model and optimiser."""
    torch.manual_seed(0)
    recipe = KINDS[kind]
    model = build_model(CAMPAIGN | {"recurrence": recipe["recurrence"], "ccl_channels": 16 if recipe["ccl"] else 0})
    model.backbone.requires_grad_(False)
    model.train()
    model.backbone.eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    metadata = {"train_config": {"loss": {"aux_weight": 0.4, "attention_weight": 0.4, "class_weights": "enet"}}}
    objective = SegmentationObjective(loss_config(metadata, kind))
    optimizer = head_optimizer(model, OPTIM)
    batch, labels = random_batch(DEFAULTS["batch_size"], DEFAULTS["crop_cells"], channels_last)
    if compiled:
        model.decode = torch.compile(model.decode)

    def run(steps: int):
        for _ in range(steps):
            head_step(model, objective, optimizer, batch, labels, amp_dtype)

    return run


def variants(compile_too: bool) -> dict[str, tuple]:
    names = {
        "float32": (None, False, False),
        "float32 channels-last": (None, True, False),
        "bfloat16 autocast": (torch.bfloat16, False, False),
    }
    if compile_too:
        names["bfloat16 + torch.compile"] = (torch.bfloat16, False, True)
    return names


def run(args, log=print) -> dict:
    common.wait_until_quiet(log=log)
    results = {"machine": common.describe_machine(), "kinds": {}, "compile_s": {}}
    for kind in args.kinds:
        calls = {}
        for name, (amp, channels_last, compiled) in variants(args.compile).items():
            step = make_step(kind, amp, channels_last, compiled)
            if compiled:
                start = time.perf_counter()
                step(2)  # compiles forward and backward
                results["compile_s"][kind] = time.perf_counter() - start
                log(f"{kind}: compiled in {results['compile_s'][kind]:.0f} s")
            calls[name] = lambda step=step: step(args.steps)
        timed = common.time_interleaved(calls, args.rounds)
        results["kinds"][kind] = {name: [t / args.steps for t in r["all"]] for name, r in timed.items()}
        for name, times in results["kinds"][kind].items():
            log(f"{kind} {name}: {statistics.median(times):.3f} s/step")
    results["load"] = common.load_note()
    return results


def format_table(results: dict) -> str:
    lines = [f"Machine: {results['machine']}.", "",
             "| head | variant | s/step (median) | vs float32 | 1000 iterations (min) |",
             "| --- | --- | ---: | ---: | ---: |"]  # fmt: skip
    for kind, samples in results["kinds"].items():
        base = statistics.median(samples["float32"])
        for name, times in samples.items():
            median = statistics.median(times)
            lines.append(f"| {kind} | {name} | {median:.3f} | {base / median:.2f}x | {1000 * median / 60:.1f} |")
    for kind, seconds in results["compile_s"].items():
        lines.append(f"\n{kind}: torch.compile's first two steps (compiling) took {seconds:.0f} s.")
    lines += ["", f"_{results['load']}_"]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    print(format_table(run(args, log=lambda m: print(m, file=sys.stderr))))


if __name__ == "__main__":
    main()
