"""Paths, the paper's numbers, the goals and the record naming rules the report uses."""

from __future__ import annotations

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


LOOP_COUNTS = (1, 2, 3)  # every attention model is evaluated at each of these


COST_INPUTS = ((360, 480), (769, 769))  # CamVid frames, and the paper's 769x769 setting


COMMAND = "python -m training.report"


# The paper's numbers, from ../shared/docs/ccnet-brief.md, "Reported results" (the arXiv version's
# Table 2: ResNet-101, Cityscapes val; FLOPs and memory increments for one 1x3x769x769 input, a
# 97x97 feature map; and the official code's best-of-3 runs). mIoU as a fraction; None = not reported.
PAPER_TABLE2 = (
    {"setting": "ResNet-101 baseline, Cityscapes val (arXiv)", "recurrence": 0, "mIoU": 0.751,
     "gflops_increment": None, "memory_mb_increment": None},
    {"setting": "+ RCCA R=1 (arXiv)", "recurrence": 1, "mIoU": 0.780, "gflops_increment": 8.3,
     "memory_mb_increment": 53.0},
    {"setting": "+ RCCA R=2 (arXiv)", "recurrence": 2, "mIoU": 0.798, "gflops_increment": 16.5,
     "memory_mb_increment": 127.0},
    {"setting": "+ RCCA R=3 (arXiv)", "recurrence": 3, "mIoU": 0.802, "gflops_increment": 24.7,
     "memory_mb_increment": 208.0},
    {"setting": "+ Non-local (arXiv)", "recurrence": None, "mIoU": 0.791, "gflops_increment": 108.0,
     "memory_mb_increment": 1411.0},
    {"setting": "R=1, best of 3 runs (code)", "recurrence": 1, "mIoU": 0.7791, "gflops_increment": None,
     "memory_mb_increment": None},
    {"setting": "R=2, best of 3 runs (code)", "recurrence": 2, "mIoU": 0.7974, "gflops_increment": None,
     "memory_mb_increment": None},
    {"setting": "R=2 + OHEM, best of 3 runs (code)", "recurrence": 2, "mIoU": 0.8000, "gflops_increment": None,
     "memory_mb_increment": None},
)  # fmt: skip


PAPER_CCL_GAIN = 0.007  # brief: "+ CCL: about +0.7" (points of mIoU over the same network without it)


PAPER_SOURCE = '../shared/docs/ccnet-brief.md, section "Reported results" (the paper\'s Table 2)'


# The default model's goals (issue #22; val, full 360x480, single scale), judged on the bundled file.
GOAL_DEFAULT_MIOU = 0.68  # val mIoU


GOAL_CLASS_IOU = 0.20  # no class under this IoU


GOAL_GAMMA = 0.3  # the learned attention scale: attention used


GOAL_LIFT = 3.0  # class-balanced same-class lift at the trained R: attention that follows the classes


GOAL_HEAD_SEEDS = 5  # seeds per head kind


BLIND_LIFT = 1.0  # a lift of 1 is attention blind to class


FLOAT16_BOUND = 0.001  # issue #13: bundle float16 only if val moves by less than 0.1 points


LIFT_SEED = 0  # the cells training's validation and `training.attention_quality` sample by default


# Earlier bundled sets, each frozen as its report's summary.json (and its run records) in a subfolder of
# --records: (subfolder, column heading, what it was). Newest first.
EARLIER_SETS = (
    ("short_schedule", "250-iteration set",
     "the set bundled before the campaign: every model trained end to end from the ImageNet MobileNetV2 for 250 "
     "iterations, seed 0"),
    ("scratch_resnet18", "from scratch (ResNet-18)",
     "the first set: ResNet-18 at half width trained from scratch, seed 0"),
)  # fmt: skip


PAPER_RECIPE = "_paper"  # <model>_paper_s<seed>: the same model trained with the paper's recipe


BF16_VARIANT = "_bf16"  # <model>_bf16_s<seed>: the same config trained under bfloat16 autocast (train.amp)


VARIANTS = (PAPER_RECIPE, BF16_VARIANT)  # records compared with a bundled model, never bundled themselves


NOISE_STDS = 2.0  # "within seed noise": |variant - float32 seed mean| <= this many float32 seed std


RUN_FOLDER = re.compile(r"^(?P<name>.+)_s(?P<seed>\d+)$")
