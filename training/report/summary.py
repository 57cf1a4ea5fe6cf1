"""Building summary.json from the measurements and records: seed statistics, recipe and precision comparisons."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from ..attention_quality import DEFAULT_CELLS_PER_IMAGE
from .common import seed_stats
from .constants import BF16_VARIANT, BLIND_LIFT, COMMAND, LIFT_SEED, NOISE_STDS, PAPER_RECIPE, PAPER_TABLE2
from .family import QueueRecord, family_summary, is_end_to_end, recipe_of
from .goals import head_ordering, judge_goals
from .records import ReportError, RunRecord


@dataclass
class ReportInputs:
    models: list[dict]
    runs: list[RunRecord]
    costs: list[dict]
    default: str | None = None
    recipe_runs: list[RunRecord] = field(default_factory=list)  # the paper-recipe comparison records
    earlier: list[dict] = field(default_factory=list)  # earlier bundled sets (records.read_earlier_sets)
    precision_runs: list[RunRecord] = field(default_factory=list)  # the bfloat16 comparison records
    heads: list[dict] = field(default_factory=list)  # training.heads records (results/camvid/heads/)
    campaign: dict | None = None  # the campaign's learning curve (records.read_campaign)
    queue: list[QueueRecord] = field(default_factory=list)  # the campaign queue's runs (family.read_queue_records)
    campaign_folder: object = None  # Path of the default's campaign folder: its curve joins the family's
    campaign_member: str | None = None  # the bundled model the campaign trained (records.campaign_run)


def build_summary(inputs: ReportInputs, generated: str) -> dict:
    runs = {(run.name, run.seed): run for run in inputs.runs}
    names = {model["name"] for model in inputs.models if not (model.get("_head_only_on") or model.get("head_only_on"))}
    seeds = [_seed_entry(run) for run in sorted(inputs.runs, key=lambda r: (r.name, r.seed)) if run.name in names]
    models = []
    for model in inputs.models:
        run = runs.get((model["name"], model["seed"]))
        public = {key: value for key, value in model.items() if not key.startswith("_")}
        public["recipe"] = model.get("recipe") or recipe_of(model.get("_train_config") or {})
        public["trained"] = "end to end" if is_end_to_end(model) else "head"
        head_of = model.get("_head_only_on") or model.get("head_only_on")  # the latter from --reuse
        if head_of:  # a head on the campaign's backbone: its seeds are the heads' records, never a run folder's
            kind = model.get("_head_kind") or model.get("head_kind")
            records = [r for r in inputs.heads if kind is not None and r["kind"] == kind]
            seeds += [_head_seed_entry(model["name"], record) for record in records]
            own = next((r for r in records if r["seed"] == model["seed"]), None)
            values = [r["mIoU"] for r in records]
            models.append({**public, "head_only_on": head_of, "head_kind": kind,
                           "train_seconds": None if own is None else own.get("seconds"), "images_per_s": None,
                           "train_device": None, "val_mIoU_seeds": seed_stats(values)})  # fmt: skip
            continue
        if run is None:
            raise ReportError(f"no training record {model['name']}_s{model['seed']} for checkpoint {model['name']}")
        values = [s["best_val_mIoU"] for s in seeds if s["name"] == model["name"]]
        models.append({**public, "train_seconds": run.train_seconds, "images_per_s": run.images_per_s,
                       "train_device": run.device, "val_mIoU_seeds": seed_stats(values)})  # fmt: skip
    models.sort(key=_family_first)
    summary = {
        "dataset": "camvid",
        "split": "val",
        "default": inputs.default,
        "generated": generated,
        "generated_by": COMMAND,
        "classes": inputs.models[0]["_class_names"],
        "models": models,
        "seeds": seeds,
        "costs": [{key: value for key, value in cost.items() if not key.startswith("_")} for cost in inputs.costs],
        "paper_table2": [dict(row) for row in PAPER_TABLE2],
        "recipe_comparison": recipe_rows(models, inputs.runs, inputs.recipe_runs),
        "mixed_precision": precision_comparison(models, inputs.runs, inputs.precision_runs),
        "earlier_sets": inputs.earlier,
        "lift_sampling": {"cells_per_image": DEFAULT_CELLS_PER_IMAGE, "seed": LIFT_SEED, "blind": BLIND_LIFT},
        "family": family_summary(models, inputs.runs, inputs.costs, inputs.queue, inputs.campaign_folder,
                                 inputs.campaign_member),
    }
    if inputs.heads:
        summary["heads"] = head_summary(inputs.heads)
        summary["head_ordering"] = head_ordering(summary["heads"])
    if inputs.campaign is not None:
        summary["campaign"] = inputs.campaign
    summary["goals"] = judge_goals(summary)
    return summary


def _family_first(model: dict) -> tuple:
    """End-to-end models first (by R, the default's recipe before others), then the heads in the index's order."""
    if model["trained"] == "head":
        return (1, 0, 0, "")
    return (0, model["ccl"], model["recipe"] != "default", model["trained_recurrence"])


def _seed_entry(run: RunRecord) -> dict:
    return {"name": run.name, "seed": run.seed, "best_val_mIoU": run.best_val_miou, "lift": run.final_lift,
            "gamma": run.final_gamma, "iterations": run.iterations}  # fmt: skip


def _head_seed_entry(name: str, record: dict) -> dict:
    """A head's record as a seed of the bundled model of its kind (its val mIoU after its schedule)."""
    return {"name": name, "seed": record["seed"], "best_val_mIoU": record["mIoU"], "lift": record.get("lift"),
            "gamma": record.get("gamma"), "iterations": record.get("iterations"), "head": True}  # fmt: skip


def recipe_rows(models: list[dict], runs: list[RunRecord], recipe_runs: list[RunRecord]) -> list[dict]:
    """Paper recipe vs bundled recipe, per seed, for the model that has paper-recipe records ([] when none)."""
    rows = []
    for base in sorted({run.name[: -len(PAPER_RECIPE)] for run in recipe_runs}):
        if base not in {m["name"] for m in models}:
            continue  # a record of a model that is not bundled: nothing to compare it with
        paper = [r for r in recipe_runs if r.name == base + PAPER_RECIPE]
        bundled = [r for r in runs if r.name == base]
        step = _common_step(paper + bundled)
        for recipe, group in (("paper", paper), ("bundled", bundled)):
            rows += [
                {"recipe": recipe, "model": base, **_entry_at_step(run, step)}
                for run in sorted(group, key=lambda r: r.seed)
            ]
    return rows


def precision_comparison(models: list[dict], runs: list[RunRecord], bf16_runs: list[RunRecord]) -> list[dict]:
    """bfloat16-autocast training against the float32 seeds of the same model and schedule ([] when none).

    Within seed noise: |bfloat16 - float32 seed mean| <= NOISE_STDS float32 seed standard deviations (None
    with fewer than two float32 seeds). Speed: the runs' median images/s (training logs; load on the machine
    moves it, the clean ratio is benchmarks/bench_training_step.py's).
    """
    comparisons = []
    for base in sorted({run.name[: -len(BF16_VARIANT)] for run in bf16_runs}):
        if base not in {m["name"] for m in models}:
            continue
        reference = [r for r in runs if r.name == base and r.amp == "float32"]
        variant = [r for r in bf16_runs if r.name == base + BF16_VARIANT]
        stats = seed_stats([r.best_val_miou for r in reference])
        variant_mean = statistics.fmean(r.best_val_miou for r in variant)
        difference = None if stats["mean"] is None else variant_mean - stats["mean"]
        within = None if stats["std"] is None else abs(difference) <= NOISE_STDS * stats["std"]
        comparisons.append({
            "model": base,
            "float32": {"seeds": [_precision_entry(r) for r in sorted(reference, key=lambda r: r.seed)], **stats},
            "bfloat16": {"seeds": [_precision_entry(r) for r in sorted(variant, key=lambda r: r.seed)],
                         "mean": variant_mean},
            "difference": difference,
            "within_seed_noise": within,
            "noise_stds": NOISE_STDS,
            "images_per_s_ratio": _speed_ratio(variant, reference),
        })  # fmt: skip
    return comparisons


def _precision_entry(run: RunRecord) -> dict:
    return {"seed": run.seed, "amp": run.amp, "best_val_mIoU": run.best_val_miou, "iterations": run.iterations,
            "images_per_s": run.images_per_s, "train_seconds": run.train_seconds, "lift": run.final_lift,
            "gamma": run.final_gamma}  # fmt: skip


def _speed_ratio(variant: list[RunRecord], reference: list[RunRecord]) -> float | None:
    if not variant or not reference:
        return None
    return statistics.median(r.images_per_s for r in variant) / statistics.median(r.images_per_s for r in reference)


def _common_step(runs: list[RunRecord]) -> int | None:
    """The last validation step every run has: a paper-recipe run stopped early is compared at its own end."""
    shared = set.intersection(*(set(run.val_steps) for run in runs)) if runs else set()
    return max(shared) if shared else None


def _entry_at_step(run: RunRecord, step: int | None) -> dict:
    """The run at `step` (equal iterations); at its end when the runs share no validation step."""
    if step is None or step not in run.val_steps:
        return _seed_entry(run)
    at = run.val_steps[step]
    return {"name": run.name, "seed": run.seed, "best_val_mIoU": at["mIoU"], "lift": at["lift"],
            "gamma": at["gamma"], "iterations": step}  # fmt: skip


def _mean(values: list) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.fmean(kept) if kept else None


def _range(values: list) -> list[float] | None:
    known = [v for v in values if v is not None]
    return [min(known), max(known)] if known else None


def head_summary(records: list[dict]) -> list[dict]:
    """Per head kind over its seeds: val mIoU mean and 95% t-interval, mean lift, gamma and temporal shares."""
    from ..model_card import interval95

    kinds = list(dict.fromkeys(r["kind"] for r in records))
    out = []
    for kind in kinds:
        runs = [r for r in records if r["kind"] == kind]
        stats = interval95([r["mIoU"] for r in runs])
        classes = runs[0].get("per_class_iou", {})
        out.append({
            "kind": kind, "n": stats["n"], "mean": stats["mean"], "ci95": stats["ci95"],
            "seeds": {str(r["seed"]): r["mIoU"] for r in runs},
            "lift": _mean([r.get("lift") for r in runs]), "gamma": _mean([r.get("gamma") for r in runs]),
            "frames": runs[0].get("frames"),
            "temporal_share": _mean([r.get("temporal_share") for r in runs]),
            "temporal_share_uniform": _mean([r.get("temporal_share_uniform") for r in runs]),
            "per_class_iou": {c: _mean([r.get("per_class_iou", {}).get(c) for r in runs]) for c in classes},
            "seconds": _mean([r.get("seconds") for r in runs]),
            "seconds_range": _range([r.get("seconds") for r in runs]),
        })  # fmt: skip
    return out
