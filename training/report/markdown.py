"""Writing docs/RESULTS.md and the README's results table from the summary."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ccnet.checkpoint import atomic_write

from ..attention_quality import DEFAULT_CELLS_PER_IMAGE
from .common import HEAD_LABELS, label_of, model_stats, num, pct, points, seed_field, seed_values, spread
from .constants import (
    BLIND_LIFT,
    FLOAT16_BOUND,
    GOAL_CLASS_IOU,
    GOAL_DEFAULT_MIOU,
    GOAL_GAMMA,
    GOAL_LIFT,
    LIFT_SEED,
    PAPER_CCL_GAIN,
    PAPER_SOURCE,
    PAPER_TABLE2,
)
from .family_tables import curves_table, differences_lines, family_table, recipes_table, spread_sentence
from .goals import default_model, judge_goals
from .records import RunRecord
from .summary import ReportInputs


def _paper_row(recurrence: int | None, source: str = "arXiv") -> dict | None:
    for row in PAPER_TABLE2:
        if row["recurrence"] == recurrence and f"({source})" in row["setting"] and "OHEM" not in row["setting"]:
            return row
    return None


def network_note(model_config: dict, train_config: dict) -> str:
    """The bundled network in words, from the checkpoint's own configs (ResNet-only keys are None otherwise)."""
    model = train_config.get("model") or {}
    width = f" at base width {model_config['base_width']}" if model_config.get("base_width") else ""
    start = "from an ImageNet-pretrained backbone" if model.get("pretrained") else "from scratch"
    gamma = model.get("gamma_init", 0.0)  # configs before gamma_init had the paper's 0
    return (
        f"network `{model_config['backbone']}`{width}, output stride 8, {model_config['head_channels']}-channel "
        f"head, trained {start}, attention scale gamma starting at {gamma:g}"
    )


def goals_paragraph(summary: dict, recipe: dict | None = None) -> list[str]:
    """The issues' goals against the measurements: the default model's, the heads', the video heads'."""
    goals = {g["goal"]: g for g in judge_goals(summary)}
    bullets = [*_default_bullets(summary, goals), *_family_bullets(goals), _seeds_bullet(goals["head_seeds"]),
               _r2_over_r0_bullet(goals["head_r2_above_r0"]), _video_bullet(goals["video_t5_above_t1"])]  # fmt: skip
    verdicts = [g["met"] for g in goals.values()]
    heading = "not met" if False in verdicts else "met" if all(verdicts) else "not all measured"
    return [f"## The issues' goals: {heading}", "", *bullets, "", *_what_was_tried(summary, recipe or {}), ""]


def _verdict(met: bool | None) -> str:
    return "not measured" if met is None else "met" if met else "not met"


def _default_bullets(summary: dict, goals: dict) -> list[str]:
    if "default" in goals:
        return [f"- **The default model's goals: not measured.** {goals['default']['missing']}."]
    miou, classes = goals["default_val_mIoU"], goals["default_every_class"]
    gamma, lift = goals["default_gamma"], goals["default_lift"]
    model = next(m for m in summary["models"] if m["name"] == miou["model"])
    below = ", ".join(f"{name} {pct(value)}" for name, value in sorted(classes["below"].items(), key=lambda i: i[1]))
    lowest = "–" if classes["class"] is None else f"{classes['class']} {pct(classes['value'])}"
    return [
        f"- **Default ({miou['model']}, {label_of(model)}): val mIoU >= {100 * GOAL_DEFAULT_MIOU:.0f}: "
        f"{_verdict(miou['met'])}.** {pct(miou['value'])} ({points(miou['margin'])} points from the goal; this "
        "report's evaluation of the bundled file, single scale, 360 x 480).",
        f"- **No class under {100 * GOAL_CLASS_IOU:.0f}% IoU: {_verdict(classes['met'])}.** Lowest: {lowest}"
        + (
            f"; under the goal: {below} (why a class misses: `python -m training.class_errors "
            f"checkpoints/{miou['model']} --class NAME`, docs/TRAINING.md)."
            if below
            else "."
        ),
        f"- **γ >= {GOAL_GAMMA:g} (attention used): {_verdict(gamma['met'])}.** γ = {num(gamma['value'], '.3f')}.",
        f"- **Class-balanced same-class lift >= {GOAL_LIFT:g} at R = 2: {_verdict(lift['met'])}.** "
        f"{num(lift['value'], '.2f')} ({BLIND_LIFT:g} = blind to class; val, sampled cells as below).",
    ]


def _family_bullets(goals: dict) -> list[str]:
    goal = goals.get("family_members")
    if goal is None:
        return []
    missing = "" if goal["met"] else f" Missing: {', '.join(goal['missing'])} (the campaign queue)."
    return [f"- **The end-to-end family: R = 0, 1, 2, 3 and the paper's losses at R = 2, all bundled: "
            f"{_verdict(goal['met'])}.** {goal['value']} bundled.{missing}"]  # fmt: skip


def _seeds_bullet(goal: dict) -> str:
    counts = ", ".join(f"{kind} {n}" for kind, n in goal["value"].items())
    return f"- **Heads: {goal['target']} seeds per kind: {_verdict(goal['met'])}.** Seeds recorded: {counts}."


def _r2_over_r0_bullet(goal: dict) -> str:
    if goal["met"] is None:
        return (
            "- **The R = 2 head above the R = 0 head, outside the 95% intervals: not measured** (needs >= 2 "
            "seeds of each)."
        )
    said = {"above": "Its interval lies wholly above", "overlap": "The intervals overlap: the seeds cannot tell "
            "them apart", "below": "Its interval lies wholly below"}[goal["verdict"]]  # fmt: skip
    return (
        f"- **The R = 2 head above the R = 0 head, outside the 95% intervals: {_verdict(goal['met'])}.** "
        f'{said} ({points(goal["difference"])} points between the means; "Heads" below).'
    )


def _video_bullet(goal: dict) -> str:
    if goal["met"] is None:
        return "- **Video: T = 5 above T = 1 in the mean over seeds: not measured** (no video head records)."
    return (
        f"- **Video: T = 5 above T = 1 in the mean over seeds: {_verdict(goal['met'])}.** "
        f"{points(goal['difference'])} points (n = {goal['n'][0]} and {goal['n'][1]}; the paper: +1.2 on CamVid "
        "test, with Cityscapes pre-training)."
    )




def _what_was_tried(summary: dict, recipe: dict) -> list[str]:
    params = max(m["params"] for m in summary["models"]) / 1e6
    campaign = summary.get("campaign")
    trained = (
        f"the default was trained end to end for {campaign['step']} iterations in {campaign['hours']:.1f} hours "
        "(the campaign, below)"
        if campaign
        else "the default was trained end to end"
    )
    heads = [m for m in summary["models"] if m.get("head_kind")]
    end_to_end = len(summary["models"]) - len(heads) - 1  # the default is one of the models trained end to end
    others = f"; {end_to_end} other bundled models were trained end to end the same way" if end_to_end > 0 else ""
    others += f'; {len(heads)} are heads on its frozen backbone ("Heads" below)' if heads else ""
    return [
        f"What was tried: {recipe_note(recipe)}; {trained}{others}. The checkpoint bundled is the schedule's last, "
        "not the best on val (CamVid's test split was never used); docs/TRAINING.md has the recipe search and the "
        "campaign. The gap to the paper is expected in kind: the paper's numbers are Cityscapes val with an "
        "ImageNet-pretrained ResNet-101 at 769x769 (its CamVid result, test 79.1, uses 3D attention over 5 frames "
        f"and Cityscapes pre-training); ours is a {params:.1f} M-parameter network trained on the 367 CamVid "
        "train frames."
    ]


def recipe_note(train_config: dict) -> str:
    """The recipe's key settings from a checkpoint's train_config (empty: the tests' synthetic checkpoints)."""
    if not train_config:
        return "recipe not recorded in the checkpoints"
    model, optim = train_config.get("model") or {}, train_config.get("optim") or {}
    data, loss = train_config.get("data") or {}, train_config.get("loss") or {}
    crop = "x".join(map(str, data.get("crop_size") or [])) or "whole-image"
    parts = [
        f"{model.get('backbone')} {'ImageNet-pretrained' if model.get('pretrained') else 'from scratch'}",
        f"SGD + poly from lr {optim.get('lr')}, batch {optim.get('batch_size')} of {crop} crops, "
        f"{optim.get('iterations')} iterations",
        f"gamma starting at {model.get('gamma_init', 0.0):g}",
    ]
    if loss.get("attention_weight"):
        parts.append(f"attention affinity loss x {loss['attention_weight']:g}")
    if loss.get("class_weights"):
        parts.append(f"{loss['class_weights']} class weights")
    return ", ".join(parts)


def _range(values: Sequence[float]) -> float:
    return max(values) - min(values) if values else 0.0


def seeds_table(summary: dict) -> list[str]:
    seeds = sorted({s["seed"] for s in summary["seeds"]})
    earlier = summary.get("earlier_sets") or []
    columns = [{m["name"]: m["mIoU"] for m in group["models"]} for group in earlier]
    lines = [
        "| model | "
        + " | ".join(f"seed {s}" for s in seeds)
        + " | mean ± std | standard error | n |"
        + "".join(f" {group['heading']} |" for group in earlier),
        "| --- |" + " ---: |" * (len(seeds) + 3 + len(earlier)),
    ]
    for model in summary["models"]:
        values, stats = seed_values(summary, model["name"]), model_stats(summary, model)
        cells = [pct(values.get(s)) for s in seeds]
        mean = pct(stats["mean"]) if stats["std"] is None else f"{pct(stats['mean'])} ± {pct(stats['std'])}"
        cells += [mean, pct(stats["sem"]) if stats["sem"] is not None else "– (n = 1)", str(stats["n"])]
        cells += [pct(column.get(model["name"])) for column in columns]
        lines.append(f"| {label_of(model)} | " + " | ".join(cells) + " |")
    return lines


def attention_table(summary: dict) -> list[str]:
    """gamma and lift per model and per R, the bundled checkpoint beside its seeds' last validations."""
    lines = [
        "| model | gamma | lift R = 1 | lift R = 2 | lift R = 3 | lift at trained R | cells "
        "| seeds' last val: lift | seeds' last val: gamma |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for model in summary["models"]:
        if not model["trained_recurrence"]:
            lines.append(f"| {label_of(model)} | n/a | n/a | n/a | n/a | n/a | – | n/a | n/a |")
            continue
        at = model.get("lift_at_recurrence") or {}
        finals = [" / ".join(f"{v:{spec}}" for v in seed_field(summary, model["name"], key)) or "–"
                  for key, spec in (("lift", ".2f"), ("gamma", ".3f"))]  # fmt: skip
        cells = [label_of(model), num(model.get("gamma"), ".3f"), *(num(at.get(r), ".2f") for r in ("1", "2", "3")),
                 num(model.get("lift"), ".2f"), str(model.get("lift_cells", "–")), *finals]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def lift_per_class_table(summary: dict) -> list[str]:
    classes = summary["classes"]
    attention = [m for m in summary["models"] if m["trained_recurrence"] and m.get("lift_per_class")]
    if not attention:
        return ["No lift per class: no model with attention was measured."]
    lines = ["| model | lift | " + " | ".join(classes) + " |", "| --- | ---: |" + " ---: |" * len(classes)]
    for model in attention:
        cells = [num(model["lift_per_class"].get(name), ".2f") for name in classes]
        lines.append(f"| {label_of(model)} | {num(model.get('lift'), '.2f')} | " + " | ".join(cells) + " |")
    return lines


ATLAS_LOOPS = "2"  # the markdown shows the atlas of the R = 2 model at R = 2; the app's atlas page draws all


def atlas_table(summary: dict) -> list[str]:
    """The atlas's diagonal (each class's share of influence on its own class, and its lift) of the R = 2 model."""
    model = default_model(summary)
    atlas = ((model or {}).get("atlas") or {}).get(ATLAS_LOOPS)
    if atlas is None:
        return ["No attention atlas: no R = 2 model (without CCL) with one was measured."]
    classes = summary["classes"]
    own = [atlas["shares"][i][i] for i in range(len(classes))]
    lift = [atlas["lift"][i][i] for i in range(len(classes))]
    return [
        f"{label_of(model)} at R = {ATLAS_LOOPS}:",
        "",
        "| | " + " | ".join(classes) + " |",
        "| --- |" + " ---: |" * len(classes),
        "| share of influence on its own class (%) | " + " | ".join(pct(v) for v in own) + " |",
        "| lift over the class's share of cells | " + " | ".join(num(v, ".2f") for v in lift) + " |",
    ]


def per_class_table(summary: dict) -> list[str]:
    classes = summary["classes"]
    lines = ["| model | mIoU | " + " | ".join(classes) + " |", "| --- | ---: |" + " ---: |" * len(classes)]
    for model in summary["models"]:
        cells = [pct(model["per_class_iou"].get(name)) for name in classes]
        lines.append(f"| {label_of(model)} | {pct(model['mIoU'])} | " + " | ".join(cells) + " |")
    return lines


INSENSITIVE_POINTS = 0.1  # a model whose mIoU moves less than this over R = 1..3 is called insensitive to R


def cross_evaluation(summary: dict) -> list[str]:
    lines = [
        "| model (trained R) | learned gamma | R = 1 | R = 2 | R = 3 | trained R -> R + 1 (points) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    notes = []
    for model in summary["models"]:
        at, gamma = model["mIoU_at_recurrence"], num(model.get("gamma"), ".3f")
        if not at:
            lines.append(
                f"| {label_of(model)} | – | n/a | n/a | n/a | n/a (no attention; {pct(model['mIoU'], 2)} at R = 0) |"
            )
            continue
        trained = model["trained_recurrence"]
        step = at.get(str(trained + 1))
        change = "–" if step is None else f"{100 * (step - at[str(trained)]):+.3f}"
        cells = " | ".join(pct(at[r], 2) for r in ("1", "2", "3"))
        lines.append(f"| {label_of(model)} | {gamma} | {cells} | {change} |")
        notes.append(_sensitivity_note(model))
    lines += ["", "Values are val mIoU (%) with two decimals, so that differences of a few pixels show.", ""]
    for model in (m for m in summary["models"] if m["trained_recurrence"] == 2):
        at = model["mIoU_at_recurrence"]
        lines.append(
            f"- **Does an R = 2 model gain from R = 3?** {label_of(model)} changes by {100 * (at['3'] - at['2']):+.3f} "
            f"points unrolled to R = 3 ({pct(at['2'], 2)} -> {pct(at['3'], 2)}) and by "
            f"{100 * (at['1'] - at['2']):+.3f} at R = 1."
        )
    lines += ["", " ".join(notes), "", *_gamma_paragraph(summary)]
    return lines


def _sensitivity_note(model: dict) -> str:
    at, label = model["mIoU_at_recurrence"], label_of(model)
    spread_ = _range(list(at.values()))
    if spread_ < INSENSITIVE_POINTS / 100:
        return f"{label}: insensitive to R ({100 * spread_:.3f} points between R = 1, 2, 3)."
    best = max(at, key=at.get)
    own = " (its own)" if best == str(model["trained_recurrence"]) else ""
    others = ", ".join(
        f"R = {r}: {100 * (at[r] - at[best]):+.1f}" for r in sorted(at) if r != best
    )  # fmt: skip
    return f"{label}: best at R = {best}{own}; {others} points."


def _gamma_paragraph(summary: dict) -> list[str]:
    """Why the loop count hardly matters for some models: their learned residual scale gamma is near 0."""
    gammas = {m["name"]: m["gamma"] for m in summary["models"] if m.get("gamma") is not None}
    quiet = [m for m in summary["models"] if m["name"] in gammas and abs(gammas[m["name"]]) < 0.1]
    if not quiet:
        return []
    listed = ", ".join(f"{label_of(m)} {gammas[m['name']]:+.3f}" for m in quiet)
    return [
        f"**Why R hardly matters for some models.** RCCA adds gamma x attention to its input. In {len(quiet)} of "
        f"the models gamma is near 0 ({listed}), so their attention path contributes almost nothing and they are "
        "nearly the baseline: differences between their loop counts are seed noise, not effects of R."
    ]


def recipe_table(summary: dict) -> list[str]:
    """Paper recipe (gamma from 0, no affinity loss) against the bundled recipe, per seed; [] without records."""
    rows = summary.get("recipe_comparison") or []
    if not rows:
        return []
    lines = [
        "## Recipe: the paper's against the bundled one (R = 2, equal iterations)",
        "",
        "| recipe | model | seed | iterations | val mIoU | gamma | lift |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        name = "paper (gamma from 0, no affinity loss)" if row["recipe"] == "paper" else "bundled"
        cells = [name, row["model"], str(row["seed"]), str(row["iterations"]), pct(row["best_val_mIoU"]),
                 num(row["gamma"], ".3f"), num(row["lift"], ".2f")]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    iterations = {row["iterations"] for row in rows}
    same = "the same number of iterations" if len(iterations) == 1 else "DIFFERENT iteration counts (see the table)"
    lines += ["", f"From the records `results/camvid/<model>_paper_s<seed>/` and `<model>_s<seed>/`: {same}, "
              f"each run's validation at that step (val mIoU, gamma, lift; {BLIND_LIFT:g} = blind to class, "
              "– = not logged).", ""]  # fmt: skip
    return lines


def mixed_precision_table(summary: dict) -> list[str]:
    """bfloat16-autocast training beside the float32 seeds (issue: accuracy within seed noise); [] without records."""
    comparisons = summary.get("mixed_precision") or []
    if not comparisons:
        return []
    lines = [
        "## Training in bfloat16 against float32 (same config and schedule)",
        "",
        "| model | precision | seed | iterations | best val mIoU | lift | gamma | images/s (median) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for comparison in comparisons:
        for precision in ("float32", "bfloat16"):
            for seed in comparison[precision]["seeds"]:
                cells = [comparison["model"], seed["amp"], str(seed["seed"]), str(seed["iterations"]),
                         pct(seed["best_val_mIoU"]), num(seed["lift"], ".2f"), num(seed["gamma"], ".3f"),
                         f"{seed['images_per_s']:.2f}"]  # fmt: skip
                lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for comparison in comparisons:
        lines.append(_precision_verdict(comparison))
    lines += ["", "Records `results/camvid/<model>_bf16_s<seed>/` (`--set train.amp=bfloat16 --set "
              "train.channels_last=false`, otherwise the bundled config; bfloat16 with channels-last diverged on "
              "a CPU whose depthwise kernels get it wrong, where the trainer now refuses it after a probe, "
              "`results/camvid/short_schedule/bf16_channels_last_diverged/`). images/s comes from the "
              "training logs of runs that shared the machine with other work; the controlled speed ratio is "
              "`benchmarks/bench_training_throughput.py`'s (docs/BENCHMARKS.md, section 7).", ""]  # fmt: skip
    return lines


def _precision_verdict(comparison: dict) -> str:
    reference = comparison["float32"]
    if reference["std"] is None:
        return (f"- {comparison['model']}: bfloat16 {pct(comparison['bfloat16']['mean'], 2)} against "
                f"{reference['n']} float32 seed(s) ({pct(reference['mean'], 2)}): "
                "no seed spread to judge noise by.")  # fmt: skip
    verdict = "within" if comparison["within_seed_noise"] else "NOT within"
    ratio = comparison["images_per_s_ratio"]
    return (
        f"- {comparison['model']}: bfloat16 {pct(comparison['bfloat16']['mean'], 2)} against float32 "
        f"{pct(reference['mean'], 2)} ± {100 * reference['std']:.2f} (n = {reference['n']}): a difference of "
        f"{100 * comparison['difference']:+.2f} points, {verdict} seed noise ({comparison['noise_stds']:g} std = "
        f"{comparison['noise_stds'] * 100 * reference['std']:.2f} points)"
        + ("" if ratio is None else f"; logged images/s ratio {ratio:.2f}x")
        + "."
    )


def costs_table(summary: dict, costs: list[dict]) -> list[str]:
    lines = [
        "| input | feature map | R | GFLOPs incr. | memory incr., forward + backward (MB) "
        "| memory incr., inference (MB) | paper GFLOPs incr. (769x769, 512 ch) | paper memory incr. (MB) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for cost in costs:
        paper = _paper_row(cost["recurrence"]) if cost["input"] == [769, 769] else None
        cells = [
            "x".join(map(str, cost["input"])), "x".join(map(str, cost["feature"])) + f"x{cost['channels']}",
            str(cost["recurrence"]), f"{cost['gflops_increment']:.3f}", f"{cost['memory_mb_increment']:.1f}",
            f"{cost['_inference_memory_mb']:.1f}", num(paper and paper["gflops_increment"], "g"),
            num(paper and paper["memory_mb_increment"], ".0f"),
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def params_and_time_table(summary: dict, attention_params: dict[str, int]) -> list[str]:
    baseline = next((m["params"] for m in summary["models"] if m["trained_recurrence"] == 0), None)
    lines = [
        "| model | parameters | of which attention | increment over baseline | training time (s) "
        "| images/s (median) | device |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for model in summary["models"]:
        increment = "–" if baseline is None else f"{model['params'] - baseline:+,}"
        cells = [label_of(model), f"{model['params']:,}", f"{attention_params[model['name']]:,}", increment,
                 num(model["train_seconds"], ".0f"), num(model["images_per_s"], ".1f"),
                 model["train_device"] or "–"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def precision_lines(summary: dict) -> list[str]:
    """Training's float32 val of each bundled checkpoint's weights against this report's evaluation of the file."""
    lines = ["| model | bundled weights | float32: the run's val at the best step | this report: bundled file "
             "| difference (points) |", "| --- | --- | ---: | ---: | ---: |"]  # fmt: skip
    worst = None
    for model in summary["models"]:
        reference = model.get("float32_val_mIoU")
        if reference is None:
            continue
        difference = 100 * (model["mIoU"] - reference)
        if model.get("weights_dtype") == "float16" and not model.get("head_kind"):
            worst = max(worst or 0.0, abs(difference))
        cells = [label_of(model), model.get("weights_dtype", "?"), f"{100 * reference:.2f}",
                 f"{100 * model['mIoU']:.2f}",
                 f"{difference:+.3f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    if len(lines) == 2:
        return ["No checkpoint records its own val mIoU (sidecar `metrics`): nothing to compare against."]
    if worst is None:
        return [*lines, "", "No bundled file is float16: the rows compare two float32 evaluations."]
    verdict = "below" if worst < 100 * FLOAT16_BOUND else "NOT below"
    heads = (
        " A head's float32 value is its own evaluation on the cached (float16) backbone features, so its row also "
        "holds the features' rounding; heads are left out of the bound."
        if any(m.get("head_kind") for m in summary["models"])
        else ""
    )
    return [*lines, "", f"Largest |float16 - float32| difference of the end-to-end models: {worst:.3f} points, "
            f"{verdict} the {100 * FLOAT16_BOUND:.1f}-point bound.{heads}"]  # fmt: skip


def earlier_sets_note(summary: dict) -> list[str]:
    earlier = summary.get("earlier_sets") or []
    if not earlier:
        return ["No earlier set's summary was found: no comparison columns."]
    return [f'Column "{group["heading"]}": {group["about"]}, from `{group["source"]}`.' for group in earlier]


def render_markdown(summary: dict, inputs: ReportInputs, command: str) -> str:
    attention_params = {m["name"]: m["_attention_params"] for m in inputs.models}
    images = inputs.models[0]["_images"]
    reference = next((m for m in inputs.models if m["name"] == inputs.default), inputs.models[0])
    recipe = reference.get("_train_config") or {}
    dtypes = " / ".join(sorted({m.get("weights_dtype", "float32") for m in summary["models"]}))
    parts = [
        "# Results: CCNet on CamVid",
        "",
        f"_Generated file, do not edit: `{command}` rewrote it on {summary['generated']} from `checkpoints/` "
        "and the committed records in `results/camvid/` (machine-readable: `results/camvid/summary.json`)._",
        "",
        f"Ours: CamVid {summary['split']} ({images} frames at full resolution, single scale, void ignored), "
        f"evaluated by this script on the bundled {dtypes} checkpoints (seed 0 of each model); "
        f"{network_note(reference['_model_config'], recipe)}. Seed means are over every training run recorded "
        "for the model: an end-to-end run's best val mIoU, a head's val mIoU after its schedule "
        f"(results/camvid/heads/). Paper: {PAPER_SOURCE}.",
        "",
        *family_section(summary, _channels(inputs.costs)),
        *goals_paragraph(summary, recipe),
        "## Seeds (best val mIoU seen in training, %)",
        "",
        *seeds_table(summary),
        "",
        "Seed 0 is the bundled checkpoint; other seeds are the same config (or head kind) with another seed, kept "
        "only as records. "
        "Standard deviation: sample (n - 1); standard error: std / sqrt(n). " + " ".join(earlier_sets_note(summary)),
        "",
        "## Does the attention follow the classes? (gamma and same-class lift)",
        "",
        *attention_table(summary),
        "",
        "Lift: for sampled feature cells of each val frame (ground truth at the cell centres, "
        f"{DEFAULT_CELLS_PER_IMAGE} cells per frame, seed {LIFT_SEED}, the same cells at every R), the share of "
        "the cell's influence map that lies on its own class over the share of cells of that class, on the cross "
        "at R = 1 and off it from R = 2 on (`ccnet.analysis.same_class_lift`); averaged per class, then over "
        f"classes. {BLIND_LIFT:g} = blind to class. gamma: the learned residual scale read from the bundled "
        "weights. The last two columns are each seed's last validation during training "
        "(`results/camvid/<model>_s<seed>/metrics.jsonl`, the campaign's `campaign/camvid_r2/metrics.jsonl`) or "
        "each head's record.",
        "",
        "### Lift per class (each model at its trained R)",
        "",
        *lift_per_class_table(summary),
        "",
        "### Attention atlas: how much each class draws from itself",
        "",
        *atlas_table(summary),
        "",
        "The class-to-class matrix over val (`ccnet.analysis.class_attention_matrix` per frame, ground truth at "
        "the cell centres, void ignored): entry (i, j) is the share of the influence after R loops of the class-i "
        "cells that lies on class-j cells, averaged over every class-i cell of the split (weighted by cells, not "
        "by frame); the lift divides it by class j's share of the split's cells "
        f"({BLIND_LIFT:g} = blind to class). Unlike the sampled lift above it covers every cell and includes "
        "the cell's own row and column. Only the diagonal is listed here; every model's full matrices at "
        "R = 1, 2, 3 are in `results/camvid/summary.json` (`atlas`) and drawn by the app's Attention atlas page.",
        "",
        "## Per-class IoU (val, %, each model at its trained R)",
        "",
        *per_class_table(summary),
        "",
        "## Every model at R = 1, 2, 3 (val mIoU, %)",
        "",
        *cross_evaluation(summary),
        "",
        *recipe_table(summary),
        *mixed_precision_table(summary),
        *_section(campaign_section(summary)),
        *_section(heads_section(summary)),
        "## Costs of the attention module",
        "",
        "Increments of RCCA at R loops over the same network with R = 0 (our bundled architecture, batch 1, "
        "float32, layers in eval mode). FLOPs: one forward, `torch.utils.flop_counter.FlopCounterMode` with "
        "the in-place GEMM formulas of `benchmarks/bench_costs.py` (2 per multiply-add). Memory: allocator peak "
        "(`benchmarks/common.py`, `measure_peak_allocated_mb`: the largest sum of live tensor bytes during the "
        "call) of the whole network, as the increment over R = 0 for forward + backward (every loop's "
        "activations are kept for the backward pass, so it grows with R; `memory_mb_increment` in the summary) "
        "and for a forward without gradients (each loop's tensors are freed before the next, so it does not). "
        "The paper does not say which of the two its figures are; their growth with R matches the first. "
        "A peak is a maximum, not a sum: on small inputs the backbone's own peak can hide the attention's "
        "tensors entirely (the tests' tiny networks show increments around 0).",
        "",
        *costs_table(summary, inputs.costs),
        "",
        "## Parameters and training time",
        "",
        *params_and_time_table(summary, attention_params),
        "",
        f"Training time and images/s are the seed-0 records' ({_device_note(inputs.runs)}): images/s is the median "
        "over 10-iteration windows, the time is wall clock from the run's start to its last validation, pauses "
        "between sessions (gaps over 10 minutes between log lines) left out"
        + _sessions_note(inputs.runs, summary)
        + ". A head's time is its own training loop and evaluation on cached features (the backbone's features "
        "are computed once for every head and not counted).",
        "",
        "## Float16 export against float32",
        "",
        *precision_lines(summary),
        "",
        "The float32 column is training's own validation of the same weights at the step they were saved (the "
        "checkpoint's `metrics`, whole 360x480 frames); the next is this report's evaluation of the bundled file.",
        "",
        "## Reproduce",
        "",
        "```bash",
        "export CAMVID_ROOT=../shared/datasets/camvid",
        *reproduce_lines(summary, inputs.default),
        "python -m training.evaluate checkpoints/camvid_r2 --recurrence 3     # any model at any loop count",
        "python -m training.attention_quality checkpoints/camvid_r2           # its same-class lift at R = 1, 2, 3",
        f"{command}                 # this file and results/camvid/summary.json",
        "python -m training.figures --out figures/    # influence maps and mIoU-vs-R chart (not committed)",
        "```",
        "",
        "The campaign trains the default across sessions and `finish` bundles its last checkpoint as float16, "
        "caches its backbone's features and trains every head kind x 5 seeds on them (seed 0 bundled); any other "
        "line trains one model end to end and bundles its best-on-val checkpoint. Each record's exact command is "
        "in its `run.json`. Training is not "
        "bit-reproducible across machines: expect numbers within the seed spread above, not the same digits. "
        "CamVid is for research and education use; the weights trained on it are too.",
        "",
    ]
    return "\n".join(parts)


README_START, README_END = "<!-- results:start (python -m training.report) -->", "<!-- results:end -->"


def readme_block(summary: dict) -> str:
    """The README's short results table (between the markers), pointing at docs/RESULTS.md."""
    lines = [
        README_START,
        "| model | val mIoU, mean ± std over seeds | bundled (seed 0) | lift at trained R | at R = 1 / 2 / 3 "
        "| paper (Cityscapes val, ResNet-101) |",
        "| --- | ---: | ---: | ---: | --- | ---: |",
    ]
    for model in summary["models"]:
        at = model["mIoU_at_recurrence"]
        loops = " / ".join(pct(at[r]) for r in ("1", "2", "3")) if at else "n/a"
        paper = _paper_row(model["trained_recurrence"]) if not model["ccl"] else None
        paper_cell = pct(paper["mIoU"]) if paper else f"about +{100 * PAPER_CCL_GAIN:.1f} over R = 2"
        lift = num(model.get("lift"), ".2f") if model["trained_recurrence"] else "n/a"
        lines.append(f"| {label_of(model)} | {spread(model_stats(summary, model))} | {pct(model['mIoU'])} | {lift} "
                     f"| {loops} | {paper_cell} |")  # fmt: skip
    lines.append(README_END)
    return "\n".join(lines)


def update_readme(path: Path, summary: dict) -> bool:
    """Replace the marked block of the README; False (file untouched) when it has no markers."""
    if not path.is_file():
        return False
    text = path.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        return False
    updated = text[:start] + readme_block(summary) + text[end + len(README_END) :]
    atomic_write(path, lambda tmp: Path(tmp).write_text(updated))
    return True


def reproduce_lines(summary: dict, default: str | None) -> list[str]:
    """The commands that made the bundled models: the campaign and its heads, and any model trained alone."""
    lines = []
    for model in summary["models"]:
        if model.get("head_kind"):
            continue
        if model["name"] == default and summary.get("campaign"):
            lines += ["python -m training.campaign start --max-minutes 120    # the default "
                      "(training/configs/camvid_r2_campaign.yaml; a new campaign: delete campaign/camvid_r2/ first)",
                      "python -m training.campaign resume --max-minutes 120   # each later session, until the "
                      "schedule ends"]  # fmt: skip
            continue
        lines.append(reproduce_command(model["name"], model["name"] == default))
    if any(model.get("head_kind") for model in summary["models"]):
        lines.append("python -m training.campaign finish --data-root $CAMVID_ROOT   # bundle it; every head x 5 seeds")
    return lines


def reproduce_command(name: str, default: bool) -> str:
    """Train one bundled model from its config and bundle it as float16, as the records were made."""
    return (
        f"python -m training.train --config training/configs/{name}.yaml --out runs/{name}"
        f" && python -m training.export runs/{name} checkpoints/{name} --half" + (" --default" if default else "")
    )


def _channels(costs: list[dict]) -> str:
    return str(costs[0]["channels"]) if costs else "?"


def _device_note(runs: list[RunRecord]) -> str:
    devices = sorted({run.device for run in runs if run.seed == 0} or {run.device for run in runs})
    return f"device {', '.join(devices)} as recorded in run.json"


def _sessions_note(runs: list[RunRecord], summary: dict) -> str:
    """Which runs were resumed across sessions (and so on which machines their time was spent)."""
    names = {(m["name"], m["seed"]) for m in summary["models"]}
    resumed = [
        f"{run.name} ({run.sessions} sessions)" for run in runs if (run.name, run.seed) in names and run.sessions > 1
    ]
    if not resumed:
        return ""
    return f"; runs resumed across sessions: {', '.join(resumed)}"


PAPER_HEADS = {"r0": "75.1", "r1": "78.0", "r2": "79.8", "r3": "80.2", "r2_ccl": "about +0.7 over R = 2",
               "video_t1": "T = 1 (CamVid test)", "video_t5": "+1.2 over T = 1 (CamVid test 79.1)"}  # fmt: skip


def _seconds(head: dict) -> str:
    """A head's training-loop time over its seeds, min-max (the records' `seconds`)."""
    span = head.get("seconds_range")
    return "–" if not span else f"{span[0]:.0f}-{span[1]:.0f}"


def heads_section(summary: dict) -> list[str]:
    """Heads on the campaign's backbone: mean and 95% interval per kind, the ordering read from the intervals."""
    heads = summary.get("heads") or []
    if not heads:
        return []
    lines = [
        "## Heads on the campaign's backbone: the many-seeds study (not end to end)",
        "",
        "A study of its own, not the family above: every kind is the campaign's backbone, frozen, with its own "
        "head trained from a fresh seeded "
        "initialisation on cached features (`python -m training.heads`). Val mIoU over seeds: mean and the 95% "
        "t-interval of the mean. Training time: the training loop of one head (no evaluation), min-max over its "
        "seeds, on the machine each ran on.",
        "",
        "| head | seeds | val mIoU | 95% interval | lift | γ | temporal share (uniform) | training time (s) | paper |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for head in heads:
        interval = "–" if head["ci95"] is None else f"± {pct(head['ci95'])}"
        share = "–"
        if head.get("temporal_share") is not None:
            share = f"{pct(head['temporal_share'])} ({pct(head['temporal_share_uniform'])})"
        label, paper = HEAD_LABELS.get(head["kind"], head["kind"]), PAPER_HEADS.get(head["kind"], "–")
        lines.append(
            f"| {label} | {head['n']} | {pct(head['mean'])} | {interval} | "
            f"{num(head['lift'], '.2f')} | {num(head['gamma'], '.3f')} | {share} | {_seconds(head)} | {paper} |"
        )
    ordering = summary.get("head_ordering") or []
    if ordering:
        lines += ["", "Read from the intervals (\"above\": the whole interval above the other's; \"overlap\": the "
                  "seeds cannot tell them apart). Paired (2D kinds): the same question asked of the seed-by-seed "
                  "differences; a seed draws the same batches for every 2D kind, so its batch luck cancels (the "
                  "heads' initialisation still differs): \"above\" when the difference's 95% interval lies "
                  "above 0.", ""]  # fmt: skip
        for pair in ordering:
            a, b = HEAD_LABELS.get(pair["lower"], pair["lower"]), HEAD_LABELS.get(pair["higher"], pair["higher"])
            line = f"- {b} against {a}: **{pair['verdict']}** ({100 * pair['difference']:+.2f} points)"
            paired = pair.get("paired")
            if paired is not None:
                line += (f"; paired over {paired['n']} seeds: **{paired['verdict']}** "
                         f"({100 * paired['mean']:+.2f} ± {100 * paired['ci95']:.2f})")  # fmt: skip
            lines.append(line + ".")
    return lines


def campaign_section(summary: dict) -> list[str]:
    """The campaign's learning curve: val mIoU, lift and γ at each validation, and the hours it took."""
    campaign = summary.get("campaign")
    if not campaign or not campaign["curve"]:
        return []
    lines = [
        "## The campaign: the default model's learning curve",
        "",
        f"Iteration {campaign['step']} of {campaign['iterations']}, {campaign['hours']:.1f} hours of training "
        '(docs/TRAINING.md, "The campaign"; figure: `python -m training.figures`).',
        "",
        "| iteration | val mIoU | lift | γ | Pole | SignSymbol | Pedestrian |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for point in campaign["curve"]:
        classes = point.get("per_class_iou") or {}
        small = " | ".join(pct(classes.get(name)) for name in ("Pole", "SignSymbol", "Pedestrian"))
        lines.append(f"| {point['step']} | {pct(point['mIoU'])} | {num(point['lift'], '.2f')} | "
                     f"{num(point['gamma'], '.3f')} | {small} |")  # fmt: skip
    return lines


def family_section(summary: dict, channels: str) -> list[str]:
    """The headline: the end-to-end family as the paper's Table 2, the differences judged, curves and recipes."""
    family = summary["family"]
    return [
        "## Table 2 in kind: the end-to-end family",
        "",
        "One network per loop count, each trained end to end with the default's recipe and schedule (the campaign "
        "and the campaign queue, `training/configs/campaign_queue.yaml`): the same ImageNet MobileNetV2, crops, "
        "class weights, batches and schedule (`training/configs/camvid_r2_campaign.yaml`), seed 0 (a second seed "
        "differs in its seed alone), so that the rows differ in R alone (and the paper-recipe row in its losses "
        "alone). Val mIoU (bundled): this report's evaluation of the bundled float16 file, the "
        "schedule's last weights. Final val mIoU per seed: each run's last validation in training (seed 0 is the "
        'bundled one). Heads on a frozen backbone are a separate study ("Heads" below), never mixed in here.',
        "",
        *family_table(family),
        "",
        "Not comparable as scores with the paper (dataset, backbone, input size all differ); compare the trend "
        f"across R. The cost columns are, in kind: ours for our network at 769x769 (a 97x97 map of {channels} "
        "channels), the paper's for ResNet-101's 512-channel head. The paper's rows are its own recipe (γ from 0, "
        "no affinity loss).",
        "",
        spread_sentence(family),
        "",
        *differences_lines(family),
        "",
        "### Learning curves (val mIoU, %)",
        "",
        *curves_table(family),
        "",
        "Every validation of every run: `python -m training.queue curves` draws them (docs/queue_curves.png).",
        "",
        "### Does the attention learn to follow the classes from the segmentation loss alone?",
        "",
        *recipes_table(family, summary["classes"]),
        "",
    ]


def _section(lines: list[str]) -> list[str]:
    """A section and the blank line after it; nothing when the section is empty."""
    return [*lines, ""] if lines else []
