"""The command line: `python -m training.report` measures, writes and annotates the model cards."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import torch
from tqdm import tqdm

from ccnet.checkpoint import CheckpointError, atomic_write, read_index, write_json
from ccnet.datasets import DatasetError, find_dataset

from ..campaign import INTERIM
from ..model_card import annotate_from_summary
from . import constants
from .constants import BF16_VARIANT, COMMAND
from .family import finished_runs, read_queue_records
from .markdown import render_markdown, update_readme
from .measure import attention_costs, evaluate_model
from .records import (
    ReportError,
    campaign_run,
    heads_on_bundled_backbone,
    is_paper_recipe,
    is_variant,
    read_campaign,
    read_checkpoint_index,
    read_earlier_sets,
    read_head_records,
    read_runs,
)
from .summary import ReportInputs, build_summary


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=COMMAND,
        description="Evaluate every bundled checkpoint (at its R and at R = 1, 2, 3, with gamma, the same-class "
        "lift and the class-to-class attention atlas), measure the attention's costs, read the training records, "
        "and write docs/RESULTS.md and results/camvid/summary.json.",
    )
    parser.add_argument("--checkpoints", type=Path, default=Path("checkpoints"), help="folder with index.json")
    parser.add_argument("--records", type=Path, default=Path("results/camvid"), help="training run records")
    parser.add_argument(
        "--campaign", type=Path, default=Path("campaign/camvid_r2"), help="the campaign's state folder (its curve)"
    )
    parser.add_argument(
        "--queue", type=Path, default=Path("training/configs/campaign_queue.yaml"),
        help="the campaign queue (the end-to-end family's runs and which are second seeds)",
    )  # fmt: skip
    parser.add_argument(
        "--queue-folder", type=Path, default=Path("campaign"), help="the queue's committed run folders (their curves)"
    )
    parser.add_argument("--data-root", help="CamVid root (default: $CAMVID_ROOT)")
    parser.add_argument("--split", default="val", help="split to evaluate (default: val)")
    parser.add_argument("--out", type=Path, default=Path("docs/RESULTS.md"), help="Markdown report to write")
    parser.add_argument("--summary", type=Path, default=Path("results/camvid/summary.json"), help="JSON summary")
    parser.add_argument(
        "--readme",
        type=Path,
        default=Path("README.md"),
        help="README whose results block (between its markers) is rewritten; skipped without the markers",
    )
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto (default: cpu, ~10 s per model and R)")
    parser.add_argument(
        "--reuse",
        type=Path,
        help="save the val evaluations to this JSON; when it already exists, take them from it instead of "
        "evaluating again (for editing the report's text; costs and records are always measured and read)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def _device(option: str) -> torch.device:
    if option == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(option)


def _reused_models(path: Path) -> list[dict]:
    models = json.loads(path.read_text())["models"]
    if any("lift_at_recurrence" not in m for m in models):  # written before the lift was measured
        raise ReportError(f"{path} holds evaluations without the same-class lift: delete it to evaluate again")
    if any("atlas" not in m for m in models):  # written before the attention atlas was measured
        raise ReportError(
            f"{path} holds evaluations without the attention atlas (class-to-class matrices): delete it to evaluate "
            "again"
        )
    if any("_head_kind" not in m or "_run_id" not in m for m in models):  # written before heads were bundled
        raise ReportError(f"{path} holds evaluations from before heads were bundled: delete it to evaluate again")
    return models


def make_report(args: argparse.Namespace) -> dict:
    """Evaluate, measure, read; write both files; return the summary."""
    device = _device(args.device)
    # Video models are reported from their head records; the campaign's interim checkpoint is not reported.
    entries = [e for e in read_checkpoint_index(args.checkpoints) if not e.get("frames") and e["name"] != INTERIM]
    all_runs = read_runs(args.records)
    runs = [run for run in all_runs if not is_variant(run)]
    earlier = read_earlier_sets(args.records)
    spec = find_dataset("camvid", args.data_root, args.split)  # fail early on a missing root
    total = len(entries) * len(spec.samples) + len(constants.COST_INPUTS)
    default = read_index(args.checkpoints).get("default")
    reuse = args.reuse is not None and args.reuse.is_file()  # re-render: evaluations of an earlier run
    with tqdm(total=total, desc="report", unit="step", disable=args.no_progress) as bar:
        if reuse:
            models = _reused_models(args.reuse)
            bar.update(total - len(constants.COST_INPUTS))
        else:
            models = [
                evaluate_model(e, args.checkpoints, args.data_root, args.split, device, bar.update) for e in entries
            ]
        if args.reuse is not None and not reuse:
            atomic_write(args.reuse, lambda tmp: Path(tmp).write_text(json.dumps({"models": models})))
        reference = next((m for m in models if m["name"] == default and m["trained_recurrence"] > 0), None)
        reference = reference or next((m for m in models if m["trained_recurrence"] > 0), models[0])
        costs = attention_costs(reference["_model_config"], device, bar.update)
    campaign_record = campaign_run(args.campaign, models)
    queue = read_queue_records(args.queue, args.queue_folder)
    # The default's own campaign and the queue's finished runs: their folders, in place of older records.
    known = [r for r in [campaign_record] if r is not None]
    for record in known + finished_runs(queue, others=known):
        runs = [run for run in runs if (run.name, run.seed) != (record.name, record.seed)] + [record]
    recipe_runs = [run for run in all_runs if is_paper_recipe(run)]
    precision_runs = [run for run in all_runs if run.name.endswith(BF16_VARIANT)]
    heads = heads_on_bundled_backbone(read_head_records(args.records / "heads"), models)
    campaign = read_campaign(args.campaign)
    inputs = ReportInputs(models, runs, costs, default, recipe_runs, earlier, precision_runs, heads, campaign, queue,
                          *((args.campaign, campaign_record.name) if campaign_record is not None else (None, None)))
    summary = build_summary(inputs, datetime.now(timezone.utc).isoformat(timespec="seconds"))
    markdown = render_markdown(summary, inputs, _command_line(args))
    write_json(args.summary, summary)
    atomic_write(args.out, lambda tmp: Path(tmp).write_text(markdown))
    if args.readme and not update_readme(args.readme, summary):
        print(f"note: {args.readme} has no results markers; its table was left alone", file=sys.stderr)
    return summary


def _command_line(args: argparse.Namespace) -> str:
    defaults = parse_args([])
    hidden = ("data_root", "no_progress", "readme", "reuse")
    options = [
        f"--{key.replace('_', '-')} {value}"
        for key, value in vars(args).items()
        if key not in hidden and value != getattr(defaults, key)
    ]
    return " ".join([COMMAND, *options])


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        summary = make_report(args)
        annotate_from_summary(summary, args.checkpoints)  # the app's model cards
    except (ReportError, DatasetError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} and {args.summary} ({len(summary['models'])} models)")
    return 0
