"""Judging the issues' goals against the summary: the default model's (issue #22), the heads' (#22) and the
video heads' (#23)."""

from __future__ import annotations

from .constants import GOAL_CLASS_IOU, GOAL_DEFAULT_MIOU, GOAL_GAMMA, GOAL_HEAD_SEEDS, GOAL_LIFT

# Head kinds the issues ask for (training.heads.KINDS); each needs GOAL_HEAD_SEEDS seeds.
HEAD_KINDS = ("r0", "r1", "r2", "r3", "r2_ccl", "r2_paper", "video_t5", "video_t1")


def judge_goals(summary: dict) -> list[dict]:
    """Each goal: {"goal", "target", "value", "met" (None: not measured), "margin", ...}."""
    goals = _default_goals(summary)
    family = summary.get("family")
    if family is not None:
        missing = [f"R = {m['recurrence']}" + (" (paper's losses)" if m["recipe"] == "paper" else "")
                   + (f" (trained, not bundled: {m['not_bundled_because']})" if m.get("not_bundled_because") else "")
                   for m in family["missing"]]  # fmt: skip
        goals.append({"goal": "family_members", "value": len(family["members"]), "missing": missing,
                      "met": not missing})  # fmt: skip
    heads = summary.get("heads") or []
    counts = {kind: next((h["n"] for h in heads if h["kind"] == kind), 0) for kind in HEAD_KINDS}
    goals.append({"goal": "head_seeds", "target": GOAL_HEAD_SEEDS, "value": counts,
                  "met": None if not heads else all(n >= GOAL_HEAD_SEEDS for n in counts.values())})  # fmt: skip
    pair = next((p for p in summary.get("head_ordering") or [] if (p["lower"], p["higher"]) == ("r0", "r2")), None)
    goals.append({"goal": "head_r2_above_r0", "verdict": None if pair is None else pair["verdict"],
                  "difference": None if pair is None else pair["difference"],
                  "met": None if pair is None else pair["verdict"] == "above"})  # fmt: skip
    by_kind = {h["kind"]: h for h in heads}
    t5, t1 = by_kind.get("video_t5"), by_kind.get("video_t1")
    difference = None if t5 is None or t1 is None else t5["mean"] - t1["mean"]
    goals.append({"goal": "video_t5_above_t1", "difference": difference,
                  "n": None if difference is None else [t5["n"], t1["n"]],
                  "met": None if difference is None else difference > 0})  # fmt: skip
    return goals


def default_model(summary: dict) -> dict | None:
    """The bundled default if it is an R = 2 model trained end to end; else the first such model."""
    candidates = [m for m in summary["models"] if m["trained_recurrence"] == 2 and not m["ccl"]]
    candidates = [m for m in candidates if not m.get("head_only_on")] or candidates
    return next((m for m in candidates if m["name"] == summary.get("default")), candidates[0] if candidates else None)


def _default_goals(summary: dict) -> list[dict]:
    model = default_model(summary)
    if model is None:
        return [{"goal": "default", "met": None, "missing": "no R = 2 model is bundled"}]
    name = model["name"]
    ious = {k: v for k, v in model["per_class_iou"].items() if v is not None}
    lowest = min(ious, key=ious.get) if ious else None
    below = {k: v for k, v in ious.items() if v < GOAL_CLASS_IOU}
    gamma, lift = model.get("gamma"), model.get("lift")
    return [
        {"goal": "default_val_mIoU", "model": name, "target": GOAL_DEFAULT_MIOU, "value": model["mIoU"],
         "met": model["mIoU"] >= GOAL_DEFAULT_MIOU, "margin": model["mIoU"] - GOAL_DEFAULT_MIOU},
        {"goal": "default_every_class", "model": name, "target": GOAL_CLASS_IOU,
         "value": None if lowest is None else ious[lowest], "class": lowest, "below": below,
         "met": None if lowest is None else not below},
        {"goal": "default_gamma", "model": name, "target": GOAL_GAMMA, "value": gamma,
         "met": None if gamma is None else gamma >= GOAL_GAMMA},
        {"goal": "default_lift", "model": name, "target": GOAL_LIFT, "value": lift,
         "met": None if lift is None else lift >= GOAL_LIFT},
    ]  # fmt: skip


# Pairs the issue judges from the heads' intervals: (lower kind, higher kind, "<" or "<=").
HEAD_ORDER = (
    ("r0", "r1", "<"),
    ("r1", "r2", "<"),
    ("r2", "r3", "<="),
    ("r0", "r2", "<"),
    ("video_t1", "video_t5", "<"),
)


def paired_difference(low: dict, high: dict) -> dict | None:
    """Seed by seed, high minus low, over the seeds both kinds have: n, mean, 95% half-width and a verdict
    ("above" when the interval lies above 0, "below" under it, "overlap" when it holds 0); None under 2 seeds
    or where the t-table ends. Asked only of 2D kinds (head_ordering): there a seed draws the same batches of
    crops for every kind (training.heads, same cache, iterations and batch size), so the seed's batch luck
    cancels in the difference; head initialisation and dropout still differ."""
    from ..model_card import interval95

    seeds = [s for s in high.get("seeds") or {} if s in (low.get("seeds") or {})]
    if len(seeds) < 2:
        return None
    stats = interval95([high["seeds"][s] - low["seeds"][s] for s in seeds])
    if stats["ci95"] is None:
        return None
    lower, upper = stats["mean"] - stats["ci95"], stats["mean"] + stats["ci95"]
    verdict = "above" if lower > 0 else "below" if upper < 0 else "overlap"
    return stats | {"verdict": verdict}


def head_ordering(heads: list[dict]) -> list[dict]:
    """Each pair of HEAD_ORDER: "above" when the higher kind's interval lies wholly above the lower's, "below"
    when wholly below, "overlap" otherwise (the intervals cannot tell them apart); the means' difference; and
    the same question asked of the seed-by-seed differences (`paired`, 2D kinds only: a video kind draws clips)."""
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
        paired = None if a.get("frames") or b.get("frames") else paired_difference(a, b)
        verdicts.append({"lower": low, "higher": high, "relation": relation, "verdict": verdict,
                         "difference": b["mean"] - a["mean"], "paired": paired})  # fmt: skip
    return verdicts
