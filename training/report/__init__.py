"""Regenerate docs/RESULTS.md and results/camvid/summary.json from the bundled checkpoints and records.

The parts, one file each: `records` (reading what training left), `measure` (evaluating the bundled
checkpoints), `goals` (judging the issues' goals), `summary` (summary.json), `markdown` (RESULTS.md and the
README table), `cli` (the command line); `constants` and `common` hold what they share.

    python -m training.report --data-root ../shared/datasets/camvid
    python -m training.report --checkpoints checkpoints --records results/camvid \\
        --out docs/RESULTS.md --summary results/camvid/summary.json

Every number in the report comes from here: val mIoU and per-class IoU (this script's own evaluation,
full 360x480 frames, single scale), every model at R = 1, 2, 3 whatever its trained R, the learned
attention scale gamma (from the weights) and the class-balanced same-class lift at R = 1, 2, 3 (the same
cells `training.attention_quality` samples), the attention atlas (the class-to-class attention matrix over
every val cell at R = 1, 2, 3, from the same pass), parameters, FLOPs and memory increments of the attention
module; from the committed records: the default's own run (the campaign's folder, campaign/camvid_r2/: its
training time, images/s and learning curve), the heads' records (results/camvid/heads/<kind>_s<seed>.json:
every seed of each head, its interval), any end-to-end run folders (results/camvid/<name>_s<seed>/, with the
paper-recipe <name>_paper_s<seed>/ and bfloat16 <name>_bf16_s<seed>/ comparisons), and the earlier bundled
sets' frozen summaries (results/camvid/short_schedule/, results/camvid/scratch_resnet18/).
The float32 reference for the float16 check is each checkpoint's own metadata (its run's val at the best
step). The paper's figures are the one constant PAPER_TABLE2 below.
"""

from .cli import main, make_report, parse_args
from .common import model_stats, pct, seed_stats, spread
from .constants import COMMAND, COST_INPUTS, NOISE_STDS, PAPER_TABLE2
from .markdown import README_END, README_START, recipe_table, render_markdown
from .measure import evaluate_model
from .records import ReportError, read_run, read_runs
from .summary import build_summary

__all__ = [
    "COMMAND", "COST_INPUTS", "NOISE_STDS", "PAPER_TABLE2", "README_END", "README_START", "ReportError",
    "build_summary", "evaluate_model", "main", "make_report", "model_stats", "parse_args", "pct",
    "read_run", "read_runs", "recipe_table", "render_markdown", "seed_stats", "spread",
]
