"""Small helpers shared by the report's parts: seed statistics and number formats."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def seed_stats(values: Sequence[float]) -> dict:
    """n, mean, sample standard deviation and standard error of the mean; spread None for n < 2."""
    n = len(values)
    std = statistics.stdev(values) if n >= 2 else None
    return {
        "n": n,
        "mean": statistics.fmean(values) if n else None,
        "std": std,
        "sem": None if std is None else std / math.sqrt(n),
    }


HEAD_LABELS = {
    "r0": "baseline (R = 0)", "r1": "RCCA R = 1", "r2": "RCCA R = 2", "r3": "RCCA R = 3",
    "r2_ccl": "RCCA R = 2 + CCL", "r2_paper": "R = 2, the paper's losses (γ from 0, no affinity loss)",
    "video_t5": "video, T = 5 (3D RCCA, R = 3)", "video_t1": "video, T = 1 (R = 3)",
}  # fmt: skip


def model_stats(summary: dict, model: dict) -> dict:
    """Seed statistics of a model's best val mIoU; the bundled value alone (n = 1) when it has no record."""
    values = list(seed_values(summary, model["name"]).values())
    return seed_stats(values or [model["mIoU"]])


def pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f}"


def points(fraction: float | None) -> str:
    """A difference of mIoU fractions in points, signed: one decimal, two below 0.05 (so it never reads "0.0")."""
    if fraction is None:
        return "–"
    value = 100 * fraction
    return f"{value:+.1f}" if abs(value) >= 0.05 else f"{value:+.2f}"


def num(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def label_of(model: dict) -> str:
    """The model in words, saying how it was trained: "…, head" (on the campaign's frozen backbone) or
    "…, end to end" (the whole network trained with that R: the family)."""
    kind = model.get("head_kind")
    if kind is not None:
        return f"{HEAD_LABELS.get(kind, kind)}, head"
    return f"{member_label(model['trained_recurrence'], model.get('recipe', 'default'), model['ccl'])}, end to end"


def member_label(loops: int, recipe: str = "default", ccl: bool = False) -> str:
    """A loop count and recipe in words, as the heads' labels say them."""
    if loops == 0:
        return HEAD_LABELS["r0"]
    if recipe == "paper":
        return HEAD_LABELS["r2_paper"].replace("R = 2", f"R = {loops}" + (" + CCL" if ccl else ""))
    return f"RCCA R = {loops}" + (" + CCL" if ccl else "")


def seed_values(summary: dict, name: str) -> dict[int, float]:
    return {s["seed"]: s["best_val_mIoU"] for s in summary["seeds"] if s["name"] == name}


def seed_field(summary: dict, name: str, key: str) -> list[float]:
    return [
        s[key]
        for s in sorted(summary["seeds"], key=lambda s: s["seed"])
        if s["name"] == name and s.get(key) is not None
    ]


def spread(stats: dict, spread_key: str = "std") -> str:
    """Mean ± spread in points, "72.1 ± 0.4 (n = 3)"; one seed has no spread to show: "72.1 (n = 1)"."""
    if not stats["n"]:
        return "–"
    if stats[spread_key] is None:
        return f"{pct(stats['mean'])} (n = {stats['n']})"
    return f"{pct(stats['mean'])} ± {pct(stats[spread_key])} (n = {stats['n']})"
