"""The end-to-end family (issue 29): one network per loop count, each trained end to end with the default's recipe
and schedule, so that comparing them compares R and nothing else. The paper's Table 2 in kind.

Members are the bundled models trained end to end (not heads, not video models). Their training records are the
campaign's folder (the default) and the campaign queue's (training/configs/campaign_queue.yaml, `campaign/<run>/`);
a queue run with `seed_of: MODEL` is another seed of MODEL, recorded and never bundled. The seed spread those
second seeds give is the yardstick every difference between members is judged by.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

import yaml

from ccnet.analysis import UNUSED_LIFT
from ccnet.checkpoint import recipe_name

from ..run_folder import read_metrics
from .constants import BLIND_LIFT, NOISE_STDS, PAPER_TABLE2
from .records import ReportError, RunRecord, read_run

# The members the issue asks for: (trained R, recipe). "paper": gamma from 0 and no affinity loss.
EXPECTED_MEMBERS = ((0, "default"), (1, "default"), (2, "default"), (3, "default"), (2, "paper"))


@dataclass(frozen=True)
class QueueRecord:
    """One run of the campaign queue as the report sees it: where its curve is and whose seed it is."""

    name: str  # the queue's run name (the bundled checkpoint's, unless seed_of)
    member: str  # the bundled model it trained (itself, or seed_of)
    folder: Path  # campaign/<name>/: its committed curve and run record
    started: bool  # it has a committed curve
    finished: bool
    recurrence: int  # from the run's config (the queue's config when not started)
    recipe: str
    not_bundled_because: str | None = None  # finished.json's reason a finished model was kept out of checkpoints/


def recipe_of(train_config: dict) -> str:
    """ "paper" or "default" (ccnet.checkpoint.recipe_name) from a training config; configs from before gamma_init
    had the paper's 0."""
    model, loss = train_config.get("model") or {}, train_config.get("loss") or {}
    return recipe_name(model.get("recurrence", 0), model.get("gamma_init", 0.0), loss.get("attention_weight"))


def read_queue_records(queue_file: Path, saved_root: Path) -> list[QueueRecord]:
    """Every run of the queue, started or not (R and recipe from its own config once started, else from the queue's
    base config and its keys); [] without a queue file."""
    if not queue_file.is_file():
        return []
    from ..config import ConfigError, load_config
    from ..queue import load_queue

    try:
        queue = load_queue(queue_file)
    except (ValueError, OSError) as error:
        raise ReportError(f"{queue_file}: {error}") from error
    records = []
    for entry in queue:
        folder = saved_root / entry.name
        started = (folder / "config.yaml").is_file() and (folder / "metrics.jsonl").is_file()
        try:
            config = _config(folder) if started else load_config(entry.base, list(entry.overrides))
        except ConfigError as error:
            raise ReportError(f"{queue_file}: run {entry.name}: {error}") from error
        records.append(QueueRecord(
            name=entry.name, member=entry.seed_of or entry.name, folder=folder, started=started,
            finished=(folder / "finished.json").is_file(),
            recurrence=int((config.get("model") or {}).get("recurrence", 0)), recipe=recipe_of(config),
            not_bundled_because=_finished_record(folder).get("not_bundled_because"),
        ))  # fmt: skip
    return records


def _finished_record(folder: Path) -> dict:
    path = folder / "finished.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def finished_runs(queue: list[QueueRecord], others: list[RunRecord] = ()) -> list[RunRecord]:
    """The finished queue runs as training records of the model each trained (a seed run as its model's seed).

    A second seed that trained its model's own seed again (a `seed_of` run without its `seed` key) would replace
    that seed's record: refused, with the runs named (`others`: the records already known, e.g. the campaign's).
    """
    runs = [read_run(record.folder, name=record.member) for record in queue if record.finished]
    seen = {(run.name, run.seed) for run in others}
    for record, run in zip([r for r in queue if r.finished], runs, strict=True):
        if record.member != record.name and (run.name, run.seed) in seen:
            raise ReportError(
                f"queue run {record.name} (seed_of {record.member}) trained seed {run.seed}, which {record.member} "
                "already has: give it another `seed` in the queue file"
            )
        seen.add((run.name, run.seed))
    return runs


def is_end_to_end(model: dict) -> bool:
    return not (model.get("head_only_on") or model.get("_head_only_on") or model.get("frames"))


def _final_values(runs: list[RunRecord], name: str) -> dict[int, float]:
    """seed -> the last validation's mIoU (the schedule's end: what is bundled, never chosen on val)."""
    values = {}
    for run in runs:
        if run.name == name and run.val_steps:
            last = run.val_steps[max(run.val_steps)]["mIoU"]
            if last is not None:
                values[run.seed] = last
    return values


def pooled_std(groups: list[list[float]]) -> tuple[float | None, int]:
    """The seed standard deviation pooled over configs with two or more seeds, and its degrees of freedom."""
    squares = sum(sum((v - statistics.fmean(g)) ** 2 for v in g) for g in groups if len(g) >= 2)
    dof = sum(len(g) - 1 for g in groups if len(g) >= 2)
    return (math.sqrt(squares / dof), dof) if dof else (None, 0)


def _cost(costs: list[dict], loops: int, key: str) -> float | None:
    if loops == 0:
        return 0.0
    return next((c[key] for c in costs if c["input"] == [769, 769] and c["recurrence"] == loops), None)


def paper_row(loops: int) -> dict:
    """The paper's Table 2 (arXiv) at this R: mIoU and the attention's increments (None where not reported)."""
    row = next((r for r in PAPER_TABLE2 if r["recurrence"] == loops and "(arXiv)" in r["setting"]), {})
    return {key: row.get(key) for key in ("setting", "mIoU", "gflops_increment", "memory_mb_increment")}


def member_entry(model: dict, runs: list[RunRecord], costs: list[dict]) -> dict:
    loops = model["trained_recurrence"]
    recipe = model.get("recipe", "default")
    finals = _final_values(runs, model["name"])
    values = list(finals.values())
    lift = model.get("lift")
    return {
        "name": model["name"], "recurrence": loops, "recipe": recipe, "mIoU": model["mIoU"],
        "per_class_iou": model["per_class_iou"], "mIoU_at_recurrence": model.get("mIoU_at_recurrence") or {},
        "gamma": model.get("gamma"), "lift": lift,
        "attention_used": None if not loops or lift is None else lift >= UNUSED_LIFT,
        "seeds": {str(seed): value for seed, value in sorted(finals.items())},
        "seed_mean": statistics.fmean(values) if values else None,
        "gflops_increment": _cost(costs, loops, "gflops_increment"),
        "memory_mb_increment": _cost(costs, loops, "memory_mb_increment"),
        "paper": paper_row(loops),
        "atlas_diagonal": _atlas_diagonal(model),
    }  # fmt: skip


def _atlas_diagonal(model: dict) -> list[float | None] | None:
    """Each class's share of its influence on its own class at the model's trained R (None: no attention)."""
    atlas = (model.get("atlas") or {}).get(str(model["trained_recurrence"]))
    return None if atlas is None else [row[i] for i, row in enumerate(atlas["shares"])]


def difference(high: dict | None, low: dict | None, std: float | None) -> dict | None:
    """high - low in seed means, judged against the seed spread: "above" / "below" when the gap exceeds
    NOISE_STDS standard deviations of a difference of means, "within" otherwise, None without a spread."""
    if high is None or low is None or high["seed_mean"] is None or low["seed_mean"] is None:
        return None
    gap = high["seed_mean"] - low["seed_mean"]
    n_high, n_low = len(high["seeds"]), len(low["seeds"])
    noise = None if std is None else NOISE_STDS * std * math.sqrt(1 / n_high + 1 / n_low)
    verdict = None if noise is None else "above" if gap > noise else "below" if gap < -noise else "within"
    return {"high": high["name"], "low": low["name"], "difference": gap, "n": [n_high, n_low], "noise": noise,
            "verdict": verdict}  # fmt: skip


def curves(queue: list[QueueRecord], campaign: Path | None, campaign_member: str | None) -> list[dict]:
    """Every end-to-end run's validation curve: the default's campaign and each queue run, finished or not."""
    folders = [(campaign, campaign_member, True, "campaign")] if campaign and campaign_member else []
    folders += [(r.folder, r.member, r.finished, r.name) for r in queue if r.started]
    out = []
    for folder, member, finished, run in folders:
        try:
            record = read_run(folder, name=member)
        except ReportError:  # started but not yet validated: no curve to draw
            continue
        points = [{"step": step, **values} for step, values in sorted(record.val_steps.items())]
        config = _config(folder)
        out.append({"run": run, "member": member, "seed": record.seed, "finished": finished,
                    "recurrence": (config.get("model") or {}).get("recurrence"), "recipe": recipe_of(config),
                    "iterations": (config.get("optim") or {}).get("iterations"), "points": points})  # fmt: skip
    return out


def _config(folder: Path) -> dict:
    return (yaml.safe_load((folder / "config.yaml").read_text()) or {}) if (folder / "config.yaml").is_file() else {}


def family_summary(models: list[dict], runs: list[RunRecord], costs: list[dict], queue: list[QueueRecord],
                   campaign: Path | None = None, campaign_member: str | None = None) -> dict:  # fmt: skip
    """The family block of summary.json: members, what is missing, the seed spread, R2 - R0, the recipes."""
    members = [member_entry(m, runs, costs) for m in models if is_end_to_end(m) and not m["ccl"]]
    members.sort(key=lambda m: (m["recipe"] != "default", m["recurrence"]))
    have = {(m["recurrence"], m["recipe"]) for m in members}
    in_queue = {(r.recurrence, r.recipe): r for r in queue if r.member == r.name}
    missing = [
        {"recurrence": loops, "recipe": recipe, "run": getattr(in_queue.get((loops, recipe)), "name", None),
         "finished": getattr(in_queue.get((loops, recipe)), "finished", False),
         "not_bundled_because": getattr(in_queue.get((loops, recipe)), "not_bundled_because", None),
         "step": _last_step(in_queue.get((loops, recipe))),
         "last_validation": _last_validation(in_queue.get((loops, recipe)))}
        for loops, recipe in EXPECTED_MEMBERS if (loops, recipe) not in have
    ]  # fmt: skip
    std, dof = pooled_std([list(m["seeds"].values()) for m in members])
    by_key = {(m["recurrence"], m["recipe"]): m for m in members}
    default_r2 = by_key.get((2, "default"))
    return {
        "members": members,
        "missing": missing,
        "seed_std": std,
        "seed_dof": dof,
        "noise_stds": NOISE_STDS,
        "r2_minus_r0": difference(default_r2, by_key.get((0, "default")), std),
        "paper_r2_minus_r0": paper_row(2)["mIoU"] - paper_row(0)["mIoU"],
        "steps": [difference(by_key.get((r + 1, "default")), by_key.get((r, "default")), std) for r in range(3)],
        "recipes": difference(default_r2, by_key.get((2, "paper")), std),
        "blind_lift": BLIND_LIFT,
        "unused_lift": UNUSED_LIFT,
        "curves": curves(queue, campaign, campaign_member),
    }


def _last_validation(record: QueueRecord | None) -> dict | None:
    """A finished run's last validation in training (step, mIoU, gamma, lift): what the report can say of a model
    that was trained but not bundled (None for a run not finished or never validated)."""
    if record is None or not record.finished:
        return None
    last = next((line for line in reversed(read_metrics(record.folder)) if line.get("kind") == "val"), None)
    if last is None:
        return None
    gamma = next((value for key, value in last.items() if key.startswith("gamma/")), None)
    return {"step": last["step"], "mIoU": last.get("mIoU"), "gamma": gamma, "lift": last.get("lift")}


def _last_step(record: QueueRecord | None) -> int | None:
    """The last logged iteration of a queue run (None: not queued; 0: queued, not started)."""
    if record is None:
        return None
    if not record.started:
        return 0
    return max((line["step"] for line in read_metrics(record.folder)), default=0)
