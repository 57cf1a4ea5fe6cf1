"""The `training` record a bundled checkpoint's sidecar carries for the app's model card (app/model_card.py).

Built from a run folder (or a results/ record folder holding its run.json, config.yaml and metrics.jsonl):
train images, hours of training, the machines and precisions it ran on, and the val lift and gamma logged at
the exported step. `python -m training.export` writes it; `--annotate` adds it to a bundled sidecar afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from .run_folder import CONFIG_FILE, METRICS_FILE, RUN_FILE, read_metrics

PAUSE_S = 600  # a gap between log lines longer than this is a pause (between sessions), not training


def training_hours(records: list[dict]) -> float:
    """Hours of training from the train log lines' wall times, pauses left out."""
    times = [r["time"] for r in records if r["kind"] == "train"]
    return sum(b - a for a, b in zip(times, times[1:], strict=False) if 0 < b - a < PAUSE_S) / 3600


def _precision_name(amp, device: str) -> str:
    if amp in ("bfloat16", "float16"):
        return amp
    return "float16" if amp is True and device.startswith("cuda") else "float32"


def _segments(run: dict, config: dict) -> list[dict]:
    """The run's start and every resume: device, machine and precision (older runs recorded only the device)."""
    segments = [run, *run.get("resumed", [])]
    amp = (config.get("train") or {}).get("amp")
    return [
        {
            "machine": s.get("machine") or s.get("device") or run.get("device", "unknown"),
            "precision": (s.get("precision") or {}).get("amp") or _precision_name(amp, str(run.get("device", ""))),
        }
        for s in segments
    ]


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def training_record(folder: str | Path, step: int | None = None, train_images: int | None = None) -> dict:
    """What the model card needs from a run (or record) folder; `step` picks the validation (default: last)."""
    folder = Path(folder)
    run = json.loads((folder / RUN_FILE).read_text())
    config = yaml.safe_load((folder / CONFIG_FILE).read_text()) or {}
    records = read_metrics(folder) if (folder / METRICS_FILE).is_file() else []
    vals = [r for r in records if r["kind"] == "val" and (step is None or r["step"] == step)]
    val = vals[-1] if vals else {}
    gammas = [v for k, v in val.items() if k.startswith("gamma/")]
    segments = _segments(run, config)
    record = {
        "hours": round(training_hours(records), 2),
        "machines": _unique([s["machine"] for s in segments]),
        "precisions": _unique([s["precision"] for s in segments]),
        "val_lift": val.get("lift"),
        "gamma": gammas[0] if gammas else None,
        "run_id": run.get("run_id"),
    }
    if train_images:
        record["train_images"] = int(train_images)
    return {k: v for k, v in record.items() if v is not None}


# Student's t at 97.5% by degrees of freedom (n - 1): the 95% interval of a mean over n seeds.
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def interval95(values: list[float]) -> dict:
    """n, mean and the half-width of the 95% t-interval of the mean (None for n < 2 or n > 11)."""
    n = len(values)
    mean = sum(values) / n
    half = None
    if 2 <= n <= len(T_975) + 1:
        std = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5
        half = T_975[n - 1] * std / n**0.5
    return {"n": n, "mean": mean, "ci95": half}


def annotate_from_summary(summary: dict, checkpoints: str | Path) -> None:
    """Write the report's measured val lift and the seed interval into each bundled checkpoint's card."""
    from ccnet.checkpoint import read_metadata, update_sidecar

    for model in summary["models"]:
        stem = Path(checkpoints) / model["name"]
        if not stem.with_suffix(".json").is_file():
            continue
        record = dict(read_metadata(stem).get("training") or {})
        if model.get("lift") is not None:
            record["val_lift"] = model["lift"]
        values = [s["best_val_mIoU"] for s in summary.get("seeds", []) if s["name"] == model["name"]]
        if len(values) >= 2:
            record["seeds"] = interval95(values)
        update_sidecar(stem, {"training": record})
    _annotate_other_heads(summary, Path(checkpoints), {model["name"] for model in summary["models"]})


def _annotate_other_heads(summary: dict, checkpoints: Path, done: set[str]) -> None:
    """Bundled heads the 2D table leaves out (the video models) get their kind's seed interval too."""
    from ccnet.checkpoint import read_metadata, update_sidecar

    heads = {head["kind"]: head for head in summary.get("heads") or []}
    for weights in sorted(checkpoints.glob("*.safetensors")):
        stem = weights.with_suffix("")
        if stem.name in done or not stem.with_suffix(".json").is_file():
            continue
        record = dict(read_metadata(stem).get("training") or {})
        head = heads.get(record.get("head_kind"))
        if head is not None and head.get("ci95") is not None:
            record["seeds"] = {"n": head["n"], "mean": head["mean"], "ci95": head["ci95"]}
            update_sidecar(stem, {"training": record})
