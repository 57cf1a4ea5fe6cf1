"""Reading what training left: the checkpoint index, run records (config, run.json, metrics), older summaries."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml

from ccnet.checkpoint import CheckpointError, read_index

from ..model_card import PAUSE_S
from ..run_folder import read_metrics
from .constants import EARLIER_SETS, PAPER_RECIPE, RUN_FOLDER, VARIANTS


class ReportError(Exception):
    """The report cannot be made as asked; the message says what to do."""


@dataclass
class RunRecord:
    """One committed training run (results/camvid/<name>_s<seed>/)."""

    name: str
    seed: int
    best_val_miou: float
    train_seconds: float
    images_per_s: float
    device: str
    iterations: int = 0  # the last step logged
    final_lift: float | None = None  # the last validation's class-balanced lift (None: not logged)
    final_gamma: float | None = None  # the last validation's attention scale (None: no attention)
    sessions: int = 1  # 1 + the times the run was resumed (its wall clock then includes the pauses)
    amp: str = "float32"  # the run's train.amp as it applied on its device ("float32" when off)
    val_steps: dict = field(default_factory=dict)  # step -> {"mIoU", "lift", "gamma"} of each validation


def read_checkpoint_index(folder: Path) -> list[dict]:
    """The indexed models of a checkpoint folder; a clear error when there are none."""
    if not folder.is_dir():
        raise ReportError(f"checkpoint folder {folder} does not exist: pass --checkpoints FOLDER (e.g. checkpoints)")
    try:
        models = read_index(folder)["models"]
    except CheckpointError as error:
        raise ReportError(str(error)) from error
    if not models:
        raise ReportError(f"no checkpoints in {folder}: train and export one first (docs/TRAINING.md)")
    return models


def finite(value) -> float | None:
    """A float, or None for a missing, non-numeric or NaN value (JSON has no NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _gamma_of(record: dict) -> float | None:
    """The attention scale logged with a val record (`gamma/<parameter>`; a model has at most one RCCA)."""
    return next((finite(v) for k, v in record.items() if k.startswith("gamma/")), None)


def active_seconds(started: float, times: list[float]) -> float:
    """Wall clock from the start to the last log line, pauses between sessions left out (one session: all of it)."""
    points = [started, *times]
    return float(sum(b - a for a, b in zip(points, points[1:], strict=False) if 0 < b - a < PAUSE_S))


def read_run(folder: Path, name: str | None = None) -> RunRecord:
    """Best val mIoU, training time (wall clock, validation included, pauses between sessions left out), median
    images/s, last lift and gamma of one run folder; `name` for a folder not named <name>_s<seed> (the campaign)."""
    run_file = folder / "run.json"
    records = read_metrics(folder)
    if not run_file.is_file() or not records:
        raise ReportError(f"{folder} lacks run.json or metrics.jsonl: expected a training run folder")
    run = json.loads(run_file.read_text())
    train = [r for r in records if r.get("kind") == "train"]
    val = [r for r in records if r.get("kind") == "val"]
    if not train or not val:
        raise ReportError(f"{folder}/metrics.jsonl has no train or no val records: was the run finished?")
    started = datetime.fromisoformat(run["created"]).timestamp()
    return RunRecord(
        name=name or RUN_FOLDER.match(folder.name)["name"],
        seed=int(run["seed"]),
        best_val_miou=float(max(r["mIoU"] for r in val)),
        train_seconds=active_seconds(started, [r["time"] for r in records]),
        images_per_s=float(statistics.median(r["images_per_s"] for r in train)),
        device=str(run["device"]),
        iterations=int(max(r["step"] for r in records)),
        final_lift=finite(val[-1].get("lift")),
        final_gamma=_gamma_of(val[-1]),
        sessions=1 + len(run.get("resumed", [])),
        amp=_amp_of(folder, str(run["device"])),
        val_steps={
            int(r["step"]): {"mIoU": finite(r.get("mIoU")), "lift": finite(r.get("lift")), "gamma": _gamma_of(r)}
            for r in val
        },
    )


def _amp_of(folder: Path, device: str) -> str:
    """The precision a run trained in: run.json's `precision` (what "auto" chose), else its config.yaml's
    train.amp (True means float16 on CUDA only)."""
    run_file = folder / "run.json"
    if run_file.is_file():
        chosen = (json.loads(run_file.read_text()).get("precision") or {}).get("amp")
        if chosen:
            return str(chosen)
    config_file = folder / "config.yaml"
    if not config_file.is_file():
        return "float32"
    amp = (yaml.safe_load(config_file.read_text()).get("train") or {}).get("amp")
    if amp in ("bfloat16", "float16"):
        return amp
    return "float16" if amp is True and device.startswith("cuda") else "float32"


def read_runs(records: Path) -> list[RunRecord]:
    """Every <name>_s<seed> run folder directly under `records` (earlier sets live in subfolders; the campaign's
    run is read from its own folder, heads from records/heads/)."""
    if not records.is_dir():
        raise ReportError(f"records folder {records} does not exist: pass --records FOLDER (e.g. results/camvid)")
    return [
        read_run(folder) for folder in sorted(records.iterdir()) if folder.is_dir() and RUN_FOLDER.match(folder.name)
    ]


def campaign_run(folder: Path, models: list[dict]) -> RunRecord | None:
    """The campaign's run record, named after the bundled model whose weights it trained (its run id), or None
    when no bundled model came from it (an interim checkpoint is left out of the report)."""
    run_file = folder / "run.json"
    if not run_file.is_file() or not (folder / "metrics.jsonl").is_file():
        return None
    run_id = json.loads(run_file.read_text()).get("run_id")
    model = next((m for m in models if run_id and m.get("_run_id") == run_id and not m.get("_head_only_on")), None)
    return None if model is None else read_run(folder, name=model["name"])


def is_paper_recipe(run: RunRecord) -> bool:
    return run.name.endswith(PAPER_RECIPE)


def is_variant(run: RunRecord) -> bool:
    """A comparison record (paper recipe, bfloat16) rather than a seed of a bundled model."""
    return run.name.endswith(VARIANTS)


def read_earlier_set(path: Path) -> dict | None:
    """{"source", "models": [{name, trained_recurrence, ccl, mIoU}]} of an earlier set's summary; None when absent."""
    if not path.is_file():
        return None  # optional: a checkout without the earlier records still gets its report
    try:
        document = json.loads(path.read_text())
        models = [
            {key: m[key] for key in ("name", "trained_recurrence", "ccl", "mIoU")} for m in document["models"]
        ]  # fmt: skip
    except (ValueError, KeyError, TypeError) as error:
        raise ReportError(f"{path} is not a report summary ({error}): restore it or remove it") from error
    return {"source": str(path), "models": models}


def read_earlier_sets(records: Path) -> list[dict]:
    """Every earlier set of EARLIER_SETS found under `records`: {"folder", "heading", "about", "source", "models"}."""
    sets = []
    for folder, heading, about in EARLIER_SETS:
        found = read_earlier_set(records / folder / "summary.json")
        if found is not None:
            sets.append({"folder": folder, "heading": heading, "about": about, **found})
    return sets


def read_head_records(folder: Path) -> list[dict]:
    """Every head run's record (training.heads: RUN/<kind>_s<seed>.json), sorted by kind and seed."""
    if not folder.is_dir():
        return []
    records = []
    for path in sorted(folder.glob("*.json")):
        record = json.loads(path.read_text())
        if not isinstance(record, dict) or "kind" not in record or "mIoU" not in record:
            raise ReportError(f"{path} is not a head record (python -m training.heads writes them)")
        records.append(record)
    return sorted(records, key=lambda r: (r["kind"], r["seed"]))


def heads_on_bundled_backbone(records: list[dict], models: list[dict]) -> list[dict]:
    """The head records trained on the backbone the bundled heads share (records of an earlier backbone are
    not seeds of today's heads); all of them when no bundled model is a head."""
    backbones = {m["_head_only_on"] for m in models if m.get("_head_only_on")}
    return [r for r in records if r.get("backbone_save_id") in backbones] if backbones else records


def read_campaign(folder: Path) -> dict | None:
    """The campaign's learning curve from its committed state folder (training.campaign), or None."""
    if not (folder / "metrics.jsonl").is_file():
        return None
    from ..campaign import summary as campaign_summary

    summary = campaign_summary(folder)
    return {
        "iterations": summary["iterations"],
        "step": summary["step"],
        "hours": summary["hours"],
        "curve": [
            {"step": v["step"], "mIoU": v.get("mIoU"), "lift": v.get("lift"),
             "gamma": next((x for k, x in v.items() if k.startswith("gamma")), None),
             "per_class_iou": v.get("per_class_iou", {})}
            for v in summary["validations"]
        ],
    }  # fmt: skip
