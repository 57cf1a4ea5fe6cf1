"""How fast a config trains on this machine in each precision, compiled or not: the campaign queue's probe.

One real `Trainer` per variant (its CamVid loader, augmentation, class weights, pretrained backbone, losses,
SGD), all built in one process and timed in alternating rounds of a few steps, so the ratios come from the same
run. Compilation happens in the untimed warm-up steps. Validation and saving are off; nothing is written outside
a temporary folder. `benchmarks/bench_training_throughput.py` prints the same measurement as a table.

    python -m training.speed_probe --config training/configs/camvid_r2_campaign.yaml --json runs/probe.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from .precision import describe_machine, has_fast_bf16

VARIANTS = {  # name -> config overrides
    "float32": ["train.amp=false", "train.channels_last=false"],
    "float32 channels-last": ["train.amp=false", "train.channels_last=true"],
    # contiguous: bfloat16 + channels-last is refused where the depthwise weight gradient is wrong (precision.py)
    "bfloat16 autocast": ["train.amp=bfloat16", "train.channels_last=false"],
    "float32 + compile": ["train.amp=false", "train.channels_last=false", "train.compile=true"],
    "bfloat16 + compile": ["train.amp=bfloat16", "train.channels_last=false", "train.compile=true"],
}
BASELINE = "float32"
NEVER = 10**9  # no validation or saving inside the timed steps
ROOT = Path(__file__).resolve().parents[1]


def settings_of(variant: str) -> dict:
    """A variant's train.* settings, e.g. {"amp": "bfloat16", "channels_last": False, "compile": True}."""
    settings = {"compile": False}
    for override in VARIANTS[variant]:
        key, value = override.split("=", 1)
        settings[key.split(".", 1)[1]] = {"true": True, "false": False}.get(value, value)
    return settings


def probe_device() -> str:
    """The device a trainer with train.device auto uses here: what the probe measures and is keyed by."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def candidate_variants() -> list[str]:
    """What is worth timing here: on a CPU, bfloat16 only where it runs natively (emulated it is always slower)."""
    names = ["float32", "float32 + compile"]
    fast_bf16 = probe_device() == "cuda" or has_fast_bf16()
    return [*names, "bfloat16 autocast", "bfloat16 + compile"] if fast_bf16 else names


class Run:
    """One variant's trainer and its loader, stepping as `Trainer.run` does (without validation or saving)."""

    def __init__(self, config_path: str, overrides: list[str], data_root: str, folder: Path):
        from .train import Trainer, parse_args, resolve_config

        argv = ["--config", config_path, "--out", str(folder), "--data-root", data_root,
                "--set", f"optim.iterations={NEVER}", "--set", f"train.val_every={NEVER}",
                "--set", f"train.save_every={NEVER}"]  # fmt: skip
        for override in overrides:
            argv += ["--set", override]
        config = resolve_config(parse_args(argv))
        pretrained = config["model"].get("pretrained")
        if pretrained and not Path(pretrained).is_absolute():
            config["model"]["pretrained"] = str(ROOT / pretrained)
        self.trainer = Trainer(config, folder, show_progress=False)
        self.batches = iter(self.trainer._train_loader(0))
        self.batch = config["optim"]["batch_size"]

    def steps(self, count: int) -> None:
        for _ in range(count):
            self.trainer._set_lr()
            images, labels = next(self.batches)
            self.trainer.train_step(images, labels)
            self.trainer.step += 1


def measure(config_path: str, data_root: str, variants: list[str], rounds: int = 3, steps: int = 4,
            warmup: int = 2, extra: list[str] = (), log=print) -> dict:  # fmt: skip
    """Seconds per training step of each variant (a list of one value per round), with the machine. A variant
    that fails here (a non-finite loss, a compiler error) is left out of the timing and listed with the reason."""
    from .errors import NonFiniteLossError

    samples, failed = {name: [] for name in variants}, {}
    with tempfile.TemporaryDirectory() as tmp:
        runs = {name: Run(config_path, [*extra, *VARIANTS[name]], data_root, Path(tmp) / f"run{i}")
                for i, name in enumerate(variants)}  # fmt: skip
        batch = next(iter(runs.values())).batch

        def step(name: str, count: int) -> None:
            try:
                runs[name].steps(count)
            except (NonFiniteLossError, RuntimeError) as error:  # torch.compile's errors are RuntimeErrors
                failed[name] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
                log(f"{name} failed and is left out: {failed[name]}")
                del runs[name], samples[name]

        for name in list(runs):
            log(f"warm-up: {name}")
            step(name, warmup)
        for round_index in range(rounds):
            for name in list(runs):
                start = time.perf_counter()
                step(name, steps)
                if name in samples:
                    samples[name].append((time.perf_counter() - start) / steps)
                    log(f"round {round_index + 1}/{rounds} {name}: {samples[name][-1]:.2f} s/step")
    if not samples:
        raise RuntimeError(f"every variant failed: {failed}")
    return {"machine": describe_machine(probe_device()), "config": config_path, "batch": batch, "samples": samples,
            "failed": failed}  # fmt: skip


def fastest(result: dict) -> str:
    """The variant with the lowest median seconds per step."""
    return min(result["samples"], key=lambda name: statistics.median(result["samples"][name]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="the YAML config to time")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config overrides applied to every variant (e.g. model.recurrence=0)")  # fmt: skip
    parser.add_argument("--data-root", default=os.environ.get("CAMVID_ROOT"), help="CamVid root ($CAMVID_ROOT)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), metavar="NAME",
                        help=f"default: those worth timing here, of {', '.join(VARIANTS)}")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per variant")
    parser.add_argument("--steps", type=int, default=4, help="training steps per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first (compiles)")
    parser.add_argument("--json", type=Path, help="write the measurement and the fastest variant here")
    args = parser.parse_args(argv)
    if not args.data_root:
        parser.error("no CamVid: pass --data-root or set CAMVID_ROOT")
    variants = args.variants or candidate_variants()
    result = measure(args.config, args.data_root, variants, args.rounds, args.steps, args.warmup, args.overrides,
                     log=lambda message: print(message, file=sys.stderr))  # fmt: skip
    result["choice"] = fastest(result)
    result["settings"] = settings_of(result["choice"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    medians = {name: round(statistics.median(times), 3) for name, times in result["samples"].items()}
    print(json.dumps({"machine": result["machine"], "s_per_step": medians, "choice": result["choice"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
