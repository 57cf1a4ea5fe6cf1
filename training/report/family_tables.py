"""The end-to-end family in docs/RESULTS.md: the paper's Table 2 in kind, R2 - R0 against the seed spread, the two
recipes side by side, and every run's learning curve (the numbers from summary.json's `family`)."""

from __future__ import annotations

from .common import member_label, num, pct, points

RECIPES = {"paper": "paper's losses (γ from 0, no affinity loss)", "default": "default (γ from 1, affinity loss)"}
CURVE_EVERY = 500  # the learning-curve table lists every this many iterations (the figure has every validation)


def _seeds_cell(member: dict) -> str:
    seeds = member["seeds"]
    if not seeds:
        return "–"
    each = " / ".join(f"{100 * v:.1f}" for v in seeds.values())
    return each if len(seeds) == 1 else f"{each} (mean {pct(member['seed_mean'])})"


def _attention_cell(member: dict) -> str:
    if member["recurrence"] == 0:
        return "n/a"
    if member["attention_used"] is None:
        return "–"
    return "used" if member["attention_used"] else "**not used**"


def family_table(family: dict) -> list[str]:
    """One row per member (and per member not trained yet): ours beside the paper's Table 2."""
    lines = [
        "| R | model | val mIoU (bundled) | final val mIoU per seed | γ | lift at its R | attention "
        "| GFLOPs incr. 769x769 | memory incr. 769x769 (MB) | paper mIoU (Cityscapes val, ResNet-101) "
        "| paper GFLOPs incr. | paper memory incr. (MB) |",
        "| ---: | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    rows = [(m["recurrence"], m["recipe"], m) for m in family["members"]]
    rows += [(m["recurrence"], m["recipe"], m) for m in family["missing"]]
    for loops, recipe, member in sorted(rows, key=lambda row: (row[1] != "default", row[0])):
        label = member_label(loops, recipe)
        if "name" not in member:  # not trained yet
            where = _where(member)
            state = "trained, not bundled" if member.get("finished") else "not trained yet"
            lines.append(f"| {loops} | {label} | {state} ({where}) |" + " – |" * 9)
            continue
        lift, paper = "n/a" if loops == 0 else num(member["lift"], ".2f"), member["paper"]
        gamma = "n/a" if loops == 0 else num(member["gamma"], ".3f")
        cells = [str(loops), f"{label} (`{member['name']}`)", pct(member["mIoU"]), _seeds_cell(member), gamma, lift,
                 _attention_cell(member), num(member["gflops_increment"], ".2f"),
                 num(member["memory_mb_increment"], ".1f"), pct(paper["mIoU"]), num(paper["gflops_increment"], "g"),
                 num(paper["memory_mb_increment"], ".0f")]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _where(member: dict) -> str:
    """Where a missing member stands in the campaign queue."""
    if member["run"] is None:
        return "not queued"
    if member.get("finished"):
        why = member.get("not_bundled_because")
        return f"queue run `{member['run']}` finished" + (f"; {why}; its curve is below" if why else "")
    if not member["step"]:
        return f"queue run `{member['run']}`, not started"
    return f"queue run `{member['run']}` at iteration {member['step']}"


def spread_sentence(family: dict) -> str:
    """The seed spread in words: the yardstick of every difference below."""
    if family["seed_std"] is None:
        return (
            "**Seed spread: not measured yet.** The second seeds (the queue's `seed_of` runs) are not finished, "
            "so no difference between members can be told from seed noise yet."
        )
    return (
        f"**Seed spread:** σ = {100 * family['seed_std']:.2f} points, pooled over the members with two or more "
        f"seeds ({family['seed_dof']} degree(s) of freedom: a rough yardstick). A difference of seed means is "
        f"called real when it exceeds {family['noise_stds']:g} σ of a difference of means, "
        f"{family['noise_stds']:g} σ √(1/n₁ + 1/n₂)."
    )


def _judged(pair: dict | None) -> str:
    if pair is None:
        return "not measured (a member is missing)"
    said = {"above": "beyond the seed spread", "below": "beyond the seed spread, the other way",
            "within": "within the seed spread", None: "not judged (no seed spread yet)"}[pair["verdict"]]  # fmt: skip
    noise = "" if pair["noise"] is None else f", yardstick ± {100 * pair['noise']:.1f}"
    return f"{points(pair['difference'])} points (n = {pair['n'][0]} and {pair['n'][1]}{noise}): {said}"


def differences_lines(family: dict) -> list[str]:
    """R2 - R0 (the issue's headline), each step of R, and the recipes, each judged against the seed spread."""
    paper = 100 * family["paper_r2_minus_r0"]
    lines = [
        f"- **R = 2 minus R = 0, end to end: {_judged(family['r2_minus_r0'])}.** The paper: +{paper:.1f} "
        "(Cityscapes val, ResNet-101).",
    ]
    for pair, (low, high) in zip(family["steps"], ((0, 1), (1, 2), (2, 3)), strict=True):
        if pair is not None:
            lines.append(f"- R = {high} minus R = {low}: {_judged(pair)}.")
    if family["recipes"] is not None:
        lines.append(f"- The default's recipe minus the paper's losses, R = 2: {_judged(family['recipes'])}.")
    return lines


def recipes_table(family: dict, classes: list[str]) -> list[str]:
    """Supervised (affinity loss, γ from 1) against the paper's losses, both end to end: does attention emerge?"""
    pair = [m for m in family["members"] if m["recurrence"] == 2]
    record = next((m for m in family["missing"] if m["recurrence"] == 2 and m["recipe"] == "paper"
                   and m.get("last_validation")), None)  # fmt: skip
    if len(pair) < 2 and (not pair or record is None):
        return ["The paper-recipe twin trained end to end is not bundled yet: no comparison."]
    lines = [
        "| recipe | val mIoU | γ | lift | attention | " + " | ".join(classes) + " |",
        "| --- | ---: | ---: | ---: | --- |" + " ---: |" * len(classes),
    ]
    for member in pair:
        name = RECIPES[member["recipe"]]
        diagonal = member["atlas_diagonal"] or [None] * len(classes)
        cells = [name, pct(member["mIoU"]), num(member["gamma"], ".3f"), num(member["lift"], ".2f"),
                 _attention_cell(member), *(pct(v) for v in diagonal)]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    notes = []
    if len(pair) < 2:  # the twin trained but kept out of checkpoints/: its own last validation in training
        last = record["last_validation"]
        used = None if last["lift"] is None else last["lift"] >= family["unused_lift"]
        cells = [f"{RECIPES['paper']}, trained, not bundled", pct(last["mIoU"]), num(last["gamma"], ".3f"),
                 num(last["lift"], ".2f"), "–" if used is None else "used" if used else "**not used**",
                 *(["–"] * len(classes))]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
        notes = [f"The paper-recipe row is its run's last validation in training (iteration {last['step']}; the "
                 f"trainer's sampled lift), not this report's evaluation: it is not bundled "
                 f"({record['not_bundled_because']}), so it has no atlas here."]  # fmt: skip
    return [
        *lines,
        "",
        *(notes + [""] if notes else []),
        "Class columns: the attention atlas's diagonal at R = 2, each class's share of its influence on its own "
        f'class (%). Attention "not used": a same-class lift under {family["unused_lift"]:g} '
        f"({family['blind_lift']:g} = blind to class); the model card says so too.",
    ]


def curves_table(family: dict) -> list[str]:
    """Val mIoU of every end-to-end run every CURVE_EVERY iterations (docs/queue_curves.png draws all of them)."""
    runs = family["curves"]
    if not runs:
        return []
    steps = sorted({p["step"] for run in runs for p in run["points"] if p["step"] % CURVE_EVERY == 0})
    heading = [f"{run['member']} s{run['seed']}" + ("" if run["finished"] else " (training)") for run in runs]
    lines = ["| iteration | " + " | ".join(heading) + " |", "| ---: |" + " ---: |" * len(runs)]
    for step in steps:
        values = [next((p["mIoU"] for p in run["points"] if p["step"] == step), None) for run in runs]
        lines.append(f"| {step} | " + " | ".join(pct(v) for v in values) + " |")
    return lines
