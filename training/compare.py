"""Compare training runs step by step: val mIoU, the attention scale gamma and the same-class lift at each
validation (the lift: 1 = blind to class; "-" where a run did not log it).

    python -m training.compare runs/camvid_r2 runs/camvid_r2_paper
    python -m training.compare runs/a runs/b --every 500

Reads each run folder's metrics.jsonl (a live run too) and prints one markdown table: a row per validation
step, a column per run. Runs on the same schedule are compared at equal steps, which is the fair comparison
when one of them is still running or was stopped early.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .run_folder import METRICS_FILE, read_metrics


class CompareError(Exception):
    """A run folder that cannot be compared; the message says which and why."""


def validations(run: Path) -> dict[int, dict]:
    """step -> the validation record logged at that step (the last one, if a resumed run logged it twice)."""
    if not (run / METRICS_FILE).is_file():
        raise CompareError(f"{run} has no {METRICS_FILE}: give a training run folder (runs/NAME or results/...)")
    return {record["step"]: record for record in read_metrics(run) if record.get("kind") == "val"}


def gamma_of(record: dict) -> float | None:
    """The first attention scale logged in a validation record (None for runs without attention or older logs)."""
    values = [value for key, value in record.items() if key.startswith("gamma/")]
    return values[0] if values else None


def comparison_table(runs: Sequence[Path], every: int = 1) -> str:
    per_run = [validations(run) for run in runs]
    steps = sorted({step for records in per_run for step in records if step % every == 0})
    if not steps:
        raise CompareError("no validation records in these runs yet")
    header = "| step | " + " | ".join(f"{run.name}: mIoU (%) | gamma | lift" for run in runs) + " |"
    lines = [header, "| ---: |" + " ---: | ---: | ---: |" * len(runs)]
    for step in steps:
        cells = []
        for records in per_run:
            record = records.get(step)
            gamma = gamma_of(record) if record else None
            lift = record.get("lift") if record else None
            cells.append(f"{100 * record['mIoU']:.1f}" if record else "-")
            cells.append("-" if gamma is None else f"{gamma:.3f}")
            cells.append("-" if lift is None else f"{lift:.2f}")
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    best_cells = []
    for records in per_run:
        best = max(records.values(), key=lambda r: r["mIoU"]) if records else None
        best_cells += [f"{100 * best['mIoU']:.1f} (step {best['step']})" if best else "-", "", ""]
    lines.append("| best | " + " | ".join(best_cells) + " |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m training.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("runs", nargs="+", type=Path, help="training run folders (each holds metrics.jsonl)")
    parser.add_argument("--every", type=int, default=1, help="only validation steps that are multiples of N")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        print(comparison_table(args.runs, args.every))
    except CompareError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
