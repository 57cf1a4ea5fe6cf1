"""Run the whole benchmark set and rewrite docs/BENCHMARKS.md (and docs/growth.png).

Sections (each a script of its own in benchmarks/, runnable alone):
  attention   bench_attention.py: R = 2 forward + backward at 97x97 and 45x60, all formulations,
              torch.compile variants with their compile time; then forward-only (inference)
  ablations   bench_ablations.py: the fast path's design choices against their alternatives
  costs       bench_costs.py: the paper's FLOPs / memory table at 769x769, ours beside the paper's
  growth      bench_growth.py: time and memory against map size 16x16 .. 128x128, fitted exponents,
              the plot docs/growth.png
  models      bench_models.py: inference latency at 360x480 and training images/s of the bundled
              checkpoints (pending until checkpoints/index.json exists)
  training    bench_training_step.py: one training step's parts, float32 / channels-last / bfloat16
  throughput  bench_training_throughput.py: images/s of real trainers (CamVid loader) per precision
              (needs $CAMVID_ROOT)

Each section's markdown is kept in benchmarks/results/<section>.md, so ``--only`` re-runs some
sections and the document is rebuilt from the rest as last measured. The document's text around
the tables is benchmarks/BENCHMARKS.template.md. Nothing is timed while a training run is flagged
(see common.py); the scripts wait for a quiet machine.

    python benchmarks/run_all.py                 # everything (about 15 minutes on 2 cores)
    python benchmarks/run_all.py --only costs    # one section, the others from their last run
    python benchmarks/run_all.py --quick         # a smoke run: fewer rounds and sizes
    python benchmarks/run_all.py --render        # rebuild the document after editing the template
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

import bench_ablations
import bench_attention
import bench_costs
import bench_growth
import bench_models
import bench_training_step
import bench_training_throughput
import common

SECTIONS = ["attention", "ablations", "costs", "growth", "models", "training", "throughput"]
RESULTS = Path(__file__).resolve().parent / "results"
TEMPLATE = Path(__file__).resolve().parent / "BENCHMARKS.template.md"
OUTPUT = common.DOCS / "BENCHMARKS.md"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="sections to re-run (default: all)")
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer rounds and sizes")
    parser.add_argument("--render", action="store_true", help="only rebuild the document from the last results")
    parser.add_argument("--output", default=str(OUTPUT), help="markdown file to write")
    parser.add_argument("--device", default="cuda" if common.torch.cuda.is_available() else "cpu")
    return parser.parse_args(argv)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_attention(args) -> str:
    rounds = "2" if args.quick else "7"
    train = bench_attention.parse_args(["--rounds", rounds, "--device", args.device]
                                       + ([] if args.quick else ["--compile"]))
    infer = bench_attention.parse_args(["--rounds", rounds, "--mode", "infer", "--device", args.device,
                                        "--methods", "einsum (common)", "first bmm (v0)",
                                        "ours (fused, default)", "non-local (1 block)"])
    return (
        "### Training step (forward + backward)\n\n" + bench_attention.format_table(bench_attention.run(train, log))
        + "\n\n### Inference (forward only)\n\n" + bench_attention.format_table(bench_attention.run(infer, log))
    )


def run_ablations(args) -> str:
    return bench_ablations.run(bench_ablations.parse_args(["--rounds", "3" if args.quick else "11"]), log)


def run_costs(args) -> str:
    return bench_costs.format_table(bench_costs.run(bench_costs.parse_args(["--device", args.device]), log))


def run_growth(args) -> str:
    options = ["--device", args.device, "--plot", str(common.DOCS / "growth.png")]
    if args.quick:
        options += ["--sizes", "16", "32", "64", "--rounds", "1"]
    return bench_growth.format_table(bench_growth.run(bench_growth.parse_args(options), log))


def run_models(args) -> str:
    options = ["--device", args.device] + (["--rounds", "2"] if args.quick else [])
    return bench_models.format_table(bench_models.run(bench_models.parse_args(options), log))


def run_training(args) -> str:
    options = ["--rounds", "1" if args.quick else "3"]
    return bench_training_step.format_table(bench_training_step.run(bench_training_step.parse_args(options), log))


def run_throughput(args) -> str:
    if not os.environ.get("CAMVID_ROOT"):
        return "_Not measured: set CAMVID_ROOT (the real CamVid train split feeds the trainers)._"
    options = ["--rounds", "1", "--steps", "2"] if args.quick else []
    throughput = bench_training_throughput
    return throughput.format_table(throughput.run(throughput.parse_args(options), log))


RUNNERS = {
    "training": run_training,
    "throughput": run_throughput,
    "attention": run_attention,
    "ablations": run_ablations,
    "costs": run_costs,
    "growth": run_growth,
    "models": run_models,
}


def result_file(name: str, device: str) -> str:
    """CUDA results are kept beside the CPU ones (the document shows both; a GPU is only sometimes lent)."""
    return f"{name}_cuda.md" if device.startswith("cuda") else f"{name}.md"


def section_text(name: str) -> str:
    path = RESULTS / f"{name}.md"
    return path.read_text().strip() if path.is_file() else "_Not measured yet: `python benchmarks/run_all.py`._"


def render(output: Path) -> None:
    text = TEMPLATE.read_text()
    for name in SECTIONS:
        for key in (name, f"{name}_cuda"):
            text = text.replace("{{" + key + "}}", section_text(key))
    output.write_text(text)
    log(f"wrote {output}")


def main(argv=None):
    args = parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    for name in [] if args.render else args.only or SECTIONS:
        log(f"== {name}")
        quick = " (quick smoke run: fewer rounds and sizes, not for quoting)" if args.quick else ""
        stamp = f"_Measured {datetime.date.today().isoformat()} by `python benchmarks/run_all.py`{quick}._"
        (RESULTS / result_file(name, args.device)).write_text(stamp + "\n\n" + RUNNERS[name](args) + "\n")
    render(Path(args.output))


if __name__ == "__main__":
    main()
