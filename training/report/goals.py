"""Judging the issue's goals against the summary."""

from __future__ import annotations

from collections.abc import Sequence

from .common import ORDER_LABELS, label_of, model_stats
from .constants import GOAL_LIFT, GOAL_R2_MIOU


def judge_goals(summary: dict) -> list[dict]:
    """Issue #13's goals: each {"goal", "target", "value", "met" (None: not measured), "margin", ...}."""
    goals = []
    r2 = r2_model(summary)
    if r2 is not None:
        stats = model_stats(summary, r2)
        goals.append({"goal": "r2_mean_val_mIoU", "model": r2["name"], "target": GOAL_R2_MIOU, "value": stats["mean"],
                      "n": stats["n"], "sem": stats["sem"], "met": stats["mean"] >= GOAL_R2_MIOU,
                      "margin": stats["mean"] - GOAL_R2_MIOU})  # fmt: skip
    for model in (m for m in summary["models"] if m["trained_recurrence"] > 0):
        lift = model.get("lift")
        goals.append({"goal": "lift_at_trained_recurrence", "model": model["name"], "target": GOAL_LIFT,
                      "value": lift, "met": None if lift is None else lift >= GOAL_LIFT,
                      "margin": None if lift is None else lift - GOAL_LIFT})  # fmt: skip
    order = _ordered_models(summary)
    if not all(order):  # the ordering needs all four models: say which are missing rather than drop the goal
        missing = [label for label, m in zip(ORDER_LABELS, order, strict=True) if m is None]
        goals.append({"goal": "ordering", "met": None, "missing": missing})
    else:
        stats = [model_stats(summary, m) for m in order]
        means = [s["mean"] for s in stats]
        goals.append({"goal": "ordering", "models": [m["name"] for m in order], "means": means,
                      "sems": [s["sem"] for s in stats], "n": [s["n"] for s in stats], "met": _in_order(means),
                      "misses": _order_misses(means)})  # fmt: skip
    return goals


def r2_model(summary: dict) -> dict | None:
    return next((m for m in summary["models"] if m["trained_recurrence"] == 2 and not m["ccl"]), None)


def _ordered_models(summary: dict) -> list[dict | None]:
    by_label = {label_of(m): m for m in summary["models"]}
    return [by_label.get(label) for label in ORDER_LABELS]


def _in_order(values: Sequence[float]) -> bool:
    return values[0] < values[1] < values[2] <= values[3]


def _order_misses(means: Sequence[float]) -> list[dict]:
    """Each step of baseline < R1 < R2 <= R3 that fails, with the shortfall (how much higher it had to be)."""
    misses = []
    for index, strict in ((1, True), (2, True), (3, False)):
        below, above = means[index - 1], means[index]
        if above < below or (strict and above == below):
            misses.append({"lower": ORDER_LABELS[index - 1], "higher": ORDER_LABELS[index], "by": below - above})
    return misses


# Pairs the issue judges from the heads' intervals: (lower kind, higher kind, "<" or "<=").
HEAD_ORDER = (
    ("r0", "r1", "<"),
    ("r1", "r2", "<"),
    ("r2", "r3", "<="),
    ("r0", "r2", "<"),
    ("video_t1", "video_t5", "<"),
)


def head_ordering(heads: list[dict]) -> list[dict]:
    """Each pair of HEAD_ORDER: "above" when the higher kind's interval lies wholly above the lower's, "below"
    when wholly below, "overlap" otherwise (the intervals cannot tell them apart); the means' difference."""
    by_kind = {h["kind"]: h for h in heads}
    verdicts = []
    for low, high, relation in HEAD_ORDER:
        a, b = by_kind.get(low), by_kind.get(high)
        if a is None or b is None or a["ci95"] is None or b["ci95"] is None:
            continue
        if b["mean"] - b["ci95"] > a["mean"] + a["ci95"]:
            verdict = "above"
        elif b["mean"] + b["ci95"] < a["mean"] - a["ci95"]:
            verdict = "below"
        else:
            verdict = "overlap"
        verdicts.append({"lower": low, "higher": high, "relation": relation, "verdict": verdict,
                         "difference": b["mean"] - a["mean"]})  # fmt: skip
    return verdicts
