"""Regenerate docs/RESULTS.md and results/camvid/summary.json from the bundled checkpoints and records.

    python -m training.report --data-root ../shared/datasets/camvid
    python -m training.report --checkpoints checkpoints --records results/camvid \\
        --out docs/RESULTS.md --summary results/camvid/summary.json

Every number in the report comes from here: val mIoU and per-class IoU (this script's own evaluation,
full 360x480 frames, single scale), every model at R = 1, 2, 3 whatever its trained R, parameters,
FLOPs and memory increments of the attention module, training time and images/s and the seed-1 runs
(from the committed records), the float32 vs float16 difference (from results/camvid/device_eval).
The paper's figures are the one constant PAPER_TABLE2 below.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from tqdm import tqdm

from ccnet.checkpoint import CheckpointError, atomic_write, load_checkpoint, read_index
from ccnet.model import build_model

from .datasets import IGNORE_INDEX, DatasetError, SegmentationDataset, find_dataset
from .metrics import confusion_matrix, scores_from_confusion
from .run_folder import read_metrics
from .transforms import EvalTransform

REPO_ROOT = Path(__file__).resolve().parents[1]
LOOP_COUNTS = (1, 2, 3)  # every attention model is evaluated at each of these
COST_INPUTS = ((360, 480), (769, 769))  # CamVid frames, and the paper's 769x769 setting
COMMAND = "python -m training.report"

# The paper's numbers, from /work/shared/docs/ccnet-brief.md, "Reported results" (the arXiv version's
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
PAPER_SOURCE = '/work/shared/docs/ccnet-brief.md, section "Reported results" (the paper\'s Table 2)'

# The same training command on the project's 2-core CPU machine (docs/TRAINING.md, "Measured on this machine").
CPU_TRAINING_NOTE = (
    "about 67 minutes per model (8.5-9.0 images/s at batch 8, plus validation) on the project's 2-core CPU "
    "machine, per docs/TRAINING.md"
)
GOAL_R2_MIOU = 0.60  # issue #4: the R = 2 model reaches at least 60 % val mIoU


class ReportError(Exception):
    """The report cannot be made as asked; the message says what to do."""


# -------------------------------------------------------------------------------------------------
# Inputs: checkpoints, records, device evaluations
# -------------------------------------------------------------------------------------------------


@dataclass
class RunRecord:
    """One committed training run (results/camvid/<name>_s<seed>/)."""

    name: str
    seed: int
    best_val_miou: float
    train_seconds: float
    images_per_s: float
    device: str


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


def read_run(folder: Path) -> RunRecord:
    """Best val mIoU, wall-clock training time and median images/s of one run folder."""
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
        name=re.sub(r"_s\d+$", "", folder.name),
        seed=int(run["seed"]),
        best_val_miou=float(max(r["mIoU"] for r in val)),
        train_seconds=float(records[-1]["time"] - started),  # wall clock, validation included
        images_per_s=float(statistics.median(r["images_per_s"] for r in train)),
        device=str(run["device"]),
    )


def read_runs(records: Path) -> list[RunRecord]:
    if not records.is_dir():
        raise ReportError(f"records folder {records} does not exist: pass --records FOLDER (e.g. results/camvid)")
    runs = [read_run(folder) for folder in sorted(records.iterdir()) if re.search(r"_s\d+$", folder.name)]
    if not runs:
        raise ReportError(f"no run folders NAME_s<seed> in {records}")
    return runs


def read_device_evals(folder: Path) -> dict[str, dict[str, float]]:
    """{model name: {"fp32": mIoU, "half": mIoU}} from device_eval/*_{fp32,half}.json (empty if absent)."""
    found: dict[str, dict[str, float]] = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        kind = path.stem.rsplit("_", 1)[-1]
        result = json.loads(path.read_text())
        checkpoint = Path(result["checkpoint"])
        # float32: runs/<name>_s<seed>/best.safetensors; float16: <folder>/<name>.safetensors
        name = re.sub(r"_s\d+$", "", checkpoint.parent.name) if checkpoint.stem == "best" else checkpoint.stem
        found.setdefault(name, {})[kind] = float(result["mIoU"])
    return found


# -------------------------------------------------------------------------------------------------
# Evaluation: backbone once per image, the head at every loop count
# -------------------------------------------------------------------------------------------------


def attention_gammas(folder: Path, entries: list[dict]) -> dict[str, float]:
    """The learned residual scale gamma of each model with attention (read from its weights)."""
    gammas = {}
    for entry in entries:
        model, _ = load_checkpoint(folder / entry["name"], device="cpu")
        if model.attention is not None:
            gammas[entry["name"]] = float(model.attention.cca.gamma.detach())
    return gammas


def loop_counts_for(trained_recurrence: int) -> list[int]:
    """A baseline runs 0 loops only; an attention model its own R and 1, 2, 3."""
    return [0] if trained_recurrence == 0 else sorted({trained_recurrence, *LOOP_COUNTS})


@torch.no_grad()
def evaluate_at_loop_counts(
    model: torch.nn.Module,
    dataset: SegmentationDataset,
    loop_counts: Sequence[int],
    device: torch.device,
    advance: Callable[[], None] = lambda: None,
) -> dict[int, torch.Tensor]:
    """{R: (K, K) confusion} over the dataset; the same logits as `ccnet.inference.predict` in whole mode."""
    confusions = {
        loops: torch.zeros(dataset.num_classes, dataset.num_classes, dtype=torch.int64) for loops in loop_counts
    }
    for index in range(len(dataset)):
        image, label = dataset[index]  # (3, H, W), (H, W)
        images = image.unsqueeze(0).to(device)  # (1, 3, H, W)
        features = model.encode(images)
        for loops in loop_counts:
            logits = model.decode(features, images.shape[-2:], recurrence=loops).logits  # (1, K, H, W)
            prediction = logits.argmax(dim=1).cpu()  # (1, H, W)
            confusions[loops] += confusion_matrix(prediction, label.unsqueeze(0), dataset.num_classes, IGNORE_INDEX)
        advance()
    return confusions


def _none_if_nan(value: float) -> float | None:
    return None if value != value else float(value)  # JSON has no NaN: a class absent from labels and predictions


def evaluate_model(entry: dict, folder: Path, data_root, split: str, device, advance) -> dict:
    """One bundled checkpoint: its summary entry (mIoU at trained R, per class, at R = 1, 2, 3, params)."""
    model, metadata = load_checkpoint(folder / entry["name"], device=device)
    spec = find_dataset(metadata["dataset"], data_root, split)
    if spec.num_classes != metadata["num_classes"]:
        raise ReportError(
            f"{entry['name']} predicts {metadata['num_classes']} classes, {spec.name} has {spec.num_classes}"
        )
    dataset = SegmentationDataset(spec, EvalTransform(metadata["mean"], metadata["std"]))
    trained = metadata["recurrence"]
    confusions = evaluate_at_loop_counts(model, dataset, loop_counts_for(trained), device, advance)
    scores = {loops: scores_from_confusion(c, metadata["class_names"]) for loops, c in confusions.items()}
    own = scores[trained]
    return {
        "name": entry["name"],
        "trained_recurrence": trained,
        "ccl": bool(metadata["model_config"].get("ccl_channels", 0)),
        "seed": int(metadata.get("seed", (metadata.get("train_config") or {}).get("seed", 0))),
        "mIoU": float(own.mean_iou),
        "per_class_iou": {n: _none_if_nan(v) for n, v in zip(own.class_names, own.iou, strict=True)},
        # R does not apply to a model without attention: {} for the baseline.
        "mIoU_at_recurrence": {} if trained == 0 else {str(r): float(scores[r].mean_iou) for r in LOOP_COUNTS},
        "params": sum(p.numel() for p in model.parameters()),
        "_attention_params": sum(p.numel() for p in model.attention.parameters()) if model.attention else 0,
        "_images": len(dataset),
        "_class_names": list(metadata["class_names"]),
        "_model_config": dict(metadata["model_config"]),
    }


# -------------------------------------------------------------------------------------------------
# Costs of the attention module (FLOPs, allocator-peak memory): the benchmarks' own measuring code
# -------------------------------------------------------------------------------------------------


def benchmark_tools():
    """(count_flops, measure_peak_allocated_mb) from benchmarks/ (imported, never copied)."""
    folder = REPO_ROOT / "benchmarks"
    if not (folder / "bench_costs.py").is_file():
        raise ReportError(f"{folder}/bench_costs.py not found: run the report from a checkout of the repository")
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))  # bench_costs imports its sibling `common`
    import bench_costs
    import common

    return bench_costs.count_flops, common.measure_peak_allocated_mb


def attention_costs(model_config: dict, device: torch.device, advance=lambda: None) -> list[dict]:
    """FLOPs and memory increments of RCCA (R = 1, 2, 3) over the same network with R = 0, per input size.

    Whole network, batch 1, float32, random weights (costs do not depend on them; gamma set non-zero so no
    path could be skipped), layers in eval mode. FLOPs: one forward. Memory: allocator peak
    (benchmarks/common.py) of forward + backward, where every loop's activations are kept for the backward
    pass (`memory_mb_increment`), and of a forward under no_grad (`_inference_memory_mb`).
    """
    count_flops, peak_mb = benchmark_tools()
    networks = {loops: _cost_network(model_config, loops, device) for loops in (0, *LOOP_COUNTS)}
    channels = networks[1].attention.cca.in_channels
    costs = []
    for size in COST_INPUTS:
        images = torch.randn(1, 3, *size, device=device)  # (1, 3, H, W)
        measured = {loops: _measure(net, images, count_flops, peak_mb) for loops, net in networks.items()}
        with torch.no_grad():
            feature = networks[0].encode(images).final.shape[-2:]  # (h, w) at output stride 8
        for loops in LOOP_COUNTS:
            costs.append(
                {
                    "input": list(size),
                    "feature": list(feature),
                    "recurrence": loops,
                    "channels": channels,
                    "gflops_increment": (measured[loops]["flops"] - measured[0]["flops"]) / 1e9,
                    "memory_mb_increment": measured[loops]["train_mb"] - measured[0]["train_mb"],
                    "_inference_memory_mb": measured[loops]["infer_mb"] - measured[0]["infer_mb"],
                }
            )
        advance()
    return costs


def _cost_network(model_config: dict, loops: int, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    network = build_model({**model_config, "recurrence": loops}).to(device).eval()
    if network.attention is not None:
        with torch.no_grad():
            network.attention.cca.gamma.fill_(0.5)
    return network


def _no_grad(call: Callable[[], object]) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad():
            call()

    return run


def _measure(network, images, count_flops, peak_mb) -> dict:
    forward = _no_grad(lambda: network(images))

    def forward_backward() -> None:
        network.zero_grad(set_to_none=True)
        network(images).logits.sum().backward()

    flops = count_flops(forward)
    forward()  # warm-up, as the benchmarks do
    infer_mb = peak_mb(forward)
    forward_backward()
    return {"flops": flops, "infer_mb": infer_mb, "train_mb": peak_mb(forward_backward)}


# -------------------------------------------------------------------------------------------------
# The summary (machine-readable; the app's ablation page reads exactly this schema)
# -------------------------------------------------------------------------------------------------


@dataclass
class ReportInputs:
    models: list[dict]
    runs: list[RunRecord]
    costs: list[dict]
    device_evals: dict[str, dict[str, float]]
    default: str | None = None
    gammas: dict[str, float] = field(default_factory=dict)  # learned RCCA gamma per attention model


def build_summary(inputs: ReportInputs, generated: str) -> dict:
    runs = {(run.name, run.seed): run for run in inputs.runs}
    models = []
    for model in inputs.models:
        run = runs.get((model["name"], model["seed"]))
        if run is None:
            raise ReportError(f"no training record {model['name']}_s{model['seed']} for checkpoint {model['name']}")
        public = {key: value for key, value in model.items() if not key.startswith("_")}
        models.append({**public, "train_seconds": run.train_seconds, "images_per_s": run.images_per_s,
                       "train_device": run.device})  # fmt: skip
    names = {model["name"] for model in inputs.models}
    return {
        "dataset": "camvid",
        "split": "val",
        "generated": generated,
        "generated_by": COMMAND,
        "classes": inputs.models[0]["_class_names"],
        "models": models,
        "seeds": [
            {"name": run.name, "seed": run.seed, "best_val_mIoU": run.best_val_miou}
            for run in sorted(inputs.runs, key=lambda r: (r.name, r.seed))
            if run.name in names
        ],
        "costs": [{key: value for key, value in cost.items() if not key.startswith("_")} for cost in inputs.costs],
        "paper_table2": [dict(row) for row in PAPER_TABLE2],
    }


# -------------------------------------------------------------------------------------------------
# The Markdown report
# -------------------------------------------------------------------------------------------------


def pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f}"


def _label(model: dict) -> str:
    if model["trained_recurrence"] == 0:
        return "baseline (R = 0)"
    return f"RCCA R = {model['trained_recurrence']}" + (" + CCL" if model["ccl"] else "")


def _paper_row(recurrence: int | None, source: str = "arXiv") -> dict | None:
    for row in PAPER_TABLE2:
        if row["recurrence"] == recurrence and f"({source})" in row["setting"] and "OHEM" not in row["setting"]:
            return row
    return None


def _cost(summary: dict, size: Sequence[int], loops: int, key: str) -> float | None:
    for cost in summary["costs"]:
        if cost["input"] == list(size) and cost["recurrence"] == loops:
            return cost[key]
    return None


def _seed_values(summary: dict, name: str) -> dict[int, float]:
    return {s["seed"]: s["best_val_mIoU"] for s in summary["seeds"] if s["name"] == name}


def headline_table(summary: dict) -> list[str]:
    lines = [
        "| model | ours: val mIoU (seed 0, bundled) | ours: seed 1 best val | ours: GFLOPs incr. 769x769 "
        "| ours: memory incr. 769x769, fwd+bwd (MB) | paper setting (Cityscapes val, ResNet-101) | paper mIoU "
        "| paper GFLOPs incr. | paper memory incr. (MB) |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for model in summary["models"]:
        loops = model["trained_recurrence"]
        seeds = _seed_values(summary, model["name"])
        paper = _paper_row(loops) if not model["ccl"] else None
        paper_cells = ["–"] * 4
        if paper is not None:
            paper_cells = [paper["setting"], pct(paper["mIoU"]), _num(paper["gflops_increment"], "g"),
                           _num(paper["memory_mb_increment"], ".0f")]  # fmt: skip
        elif model["ccl"]:
            paper_cells = ["+ CCL (brief)", f"about +{100 * PAPER_CCL_GAIN:.1f} over R = 2", "–", "–"]
        ours_flops = _cost(summary, (769, 769), loops, "gflops_increment") if loops else 0.0
        ours_mem = _cost(summary, (769, 769), loops, "memory_mb_increment") if loops else 0.0
        cells = [_label(model), pct(model["mIoU"]), pct(seeds.get(1)), _num(ours_flops, ".2f"),
                 _num(ours_mem, ".1f"), *paper_cells]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    non_local = _paper_row(None)
    lines.append(
        f"| non-local block (not trained here) | – | – | – | – | {non_local['setting']} | {pct(non_local['mIoU'])} "
        f"| {_num(non_local['gflops_increment'], 'g')} | {_num(non_local['memory_mb_increment'], '.0f')} |"
    )
    return lines


def _num(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def goals_paragraph(summary: dict, gammas: dict[str, float] | None = None) -> list[str]:
    """The issue's goals against the measurements, with the seed spread they have to be read against."""
    models = summary["models"]
    by_label = {_label(m): m for m in models}
    r2 = next((m for m in models if m["trained_recurrence"] == 2 and not m["ccl"]), None)
    order = [by_label.get(label) for label in ("baseline (R = 0)", "RCCA R = 1", "RCCA R = 2", "RCCA R = 3")]
    bullets, met = [], []
    if r2 is not None:
        met.append(r2["mIoU"] >= GOAL_R2_MIOU)
        above = [m for m in models if m["mIoU"] >= GOAL_R2_MIOU and m is not r2]
        bullets.append(
            f"- **R = 2 reaches >= {100 * GOAL_R2_MIOU:.0f} % val mIoU: {_verdict(met[-1])}.** The bundled R = 2 "
            f"model scores {pct(r2['mIoU'])} % ({100 * (r2['mIoU'] - GOAL_R2_MIOU):+.1f} points from the goal); its "
            f"seed-1 twin's best was {pct(_seed_values(summary, r2['name']).get(1))} %."
            + "".join(
                f" {_label(m)} reaches {pct(m['mIoU'])} %, but its seed-1 twin "
                f"{pct(_seed_values(summary, m['name']).get(1))} %."
                for m in above
            )
        )
    if all(order):
        values = [m["mIoU"] for m in order]
        met.append(values[0] < values[1] < values[2] <= values[3])
        bullets.append(
            f"- **Ordering baseline < R1 < R2 <= R3: {_verdict(met[-1])}.** Seed 0 (bundled): "
            + " / ".join(pct(v) for v in values)
            + "."
            + _seed_order(summary, order, 1, "Seed 1 (best val)")
            + _mean_order(summary, order)
        )
    bullets += _noise_bullet(summary)
    quiet = [_label(m) for m in models if abs((gammas or {}).get(m["name"], 1.0)) < 0.1]
    if quiet:
        bullets.append(
            f"- **Why.** In {', '.join(quiet)} the learned attention scale gamma stayed near 0: those networks barely "
            'use their attention and are close to the baseline (see "Why R hardly matters here" below).'
        )
    heading = "met" if met and all(met) else "not met"
    return [f"## The issue's goals: {heading}", "", *bullets, "", *_what_was_tried(summary), ""]


def _verdict(met: bool) -> str:
    return "met" if met else "not met"


def _noise_bullet(summary: dict) -> list[str]:
    """Seed spread per model, and whether the models' seed means differ by more than two standard errors."""
    per_model = {_label(m): list(_seed_values(summary, m["name"]).values()) for m in summary["models"]}
    per_model = {label: values for label, values in per_model.items() if len(values) > 1}
    if not per_model:
        return []
    spreads = {label: _range(values) for label, values in per_model.items()}
    seeds = min(len(values) for values in per_model.values())
    # Pooled seed-to-seed standard deviation; a difference of two n-seed means has SE = sd * sqrt(2 / n).
    pooled_sd = statistics.fmean(statistics.variance(values) for values in per_model.values()) ** 0.5
    noise = 2 * pooled_sd * (2 / seeds) ** 0.5
    means = _range([statistics.fmean(values) for values in per_model.values()])
    listed = ", ".join(f"{k}: {100 * v:.1f}" for k, v in spreads.items())
    verdict = (
        "the differences between the models are within seed noise: these runs neither confirm nor refute the "
        "paper's ordering"
        if means <= noise
        else "the models differ by more than seed noise"
    )
    return [
        f"- **Seed noise.** One config trained with different seeds differs by {100 * min(spreads.values()):.1f} to "
        f"{100 * max(spreads.values()):.1f} points of best val mIoU ({listed}). Pooled, the seed-to-seed standard "
        f"deviation is {100 * pooled_sd:.1f} points, so two {seeds}-seed means differ by up to about "
        f"{100 * noise:.1f} points by chance (two standard errors); the models' {seeds}-seed means span "
        f"{100 * means:.1f} points: {verdict}. With {seeds} seeds the standard deviation itself is a rough estimate."
    ]


def _what_was_tried(summary: dict) -> list[str]:
    params = max(m["params"] for m in summary["models"]) / 1e6
    return [
        f"What was tried: one recipe for all {len(summary['models'])} models (`training/configs/camvid_*.yaml`, "
        "after the calibration runs of `../shared/docs/calibration.md`: ResNet-18 at half width, output stride 8, "
        "128-channel head, from scratch, SGD + poly, batch 8 of 240x320 crops, 4000 iterations, ENet class "
        "weights), only the loop count and CCL differing; two seeds each; the best checkpoint chosen on val mIoU "
        "(CamVid's test split was never used). Running on a GPU changed nothing in the recipe (float32, same "
        "iterations and batch), only the wall-clock time. The gap to the paper is expected in kind: the paper's "
        "numbers are Cityscapes val with an ImageNet-pretrained ResNet-101 at 769x769 (its CamVid result, test "
        "79.1, uses 3D attention over 5 frames and Cityscapes pre-training); ours is a "
        f"{params:.1f} M-parameter network trained from scratch on the 367 CamVid train frames (about 87 epochs)."
    ]


def _mean_order(summary: dict, order: list[dict]) -> str:
    means = [_seed_mean(summary, m["name"]) for m in order]
    if any(v is None for v in means):
        return ""
    met = means[0] < means[1] < means[2] <= means[3]
    return f" Mean of the seeds' best val: {' / '.join(pct(v) for v in means)} ({_verdict(met)})."


def _seed_mean(summary: dict, name: str) -> float | None:
    values = list(_seed_values(summary, name).values())
    return statistics.fmean(values) if len(values) > 1 else None


def _seed_order(summary: dict, order: list[dict], seed: int, title: str) -> str:
    values = [_seed_values(summary, m["name"]).get(seed) for m in order]
    if any(v is None for v in values):
        return ""
    met = values[0] < values[1] < values[2] <= values[3]
    return f" {title}: {' / '.join(pct(v) for v in values)} ({_verdict(met)})."


def _range(values: Sequence[float]) -> float:
    return max(values) - min(values) if values else 0.0


def per_class_table(summary: dict) -> list[str]:
    classes = summary["classes"]
    lines = ["| model | mIoU | " + " | ".join(classes) + " |", "| --- | ---: |" + " ---: |" * len(classes)]
    for model in summary["models"]:
        cells = [pct(model["per_class_iou"].get(name)) for name in classes]
        lines.append(f"| {_label(model)} | {pct(model['mIoU'])} | " + " | ".join(cells) + " |")
    return lines


INSENSITIVE_POINTS = 0.1  # a model whose mIoU moves less than this over R = 1..3 is called insensitive to R


def cross_evaluation(summary: dict, gammas: dict[str, float]) -> list[str]:
    lines = [
        "| model (trained R) | learned gamma | R = 1 | R = 2 | R = 3 | trained R -> R + 1 (points) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    notes = []
    for model in summary["models"]:
        at, gamma = model["mIoU_at_recurrence"], _num(gammas.get(model["name"]), ".3f")
        if not at:
            lines.append(
                f"| {_label(model)} | – | n/a | n/a | n/a | n/a (no attention; {pct(model['mIoU'], 2)} at R = 0) |"
            )
            continue
        trained = model["trained_recurrence"]
        step = at.get(str(trained + 1))
        change = "–" if step is None else f"{100 * (step - at[str(trained)]):+.3f}"
        cells = " | ".join(pct(at[r], 2) for r in ("1", "2", "3"))
        lines.append(f"| {_label(model)} | {gamma} | {cells} | {change} |")
        notes.append(_sensitivity_note(model))
    lines += ["", "Values are val mIoU (%) with two decimals, so that differences of a few pixels show.", ""]
    for model in (m for m in summary["models"] if m["trained_recurrence"] == 2):
        at = model["mIoU_at_recurrence"]
        lines.append(
            f"- **Does an R = 2 model gain from R = 3?** {_label(model)} changes by {100 * (at['3'] - at['2']):+.3f} "
            f"points unrolled to R = 3 ({pct(at['2'], 2)} -> {pct(at['3'], 2)}) and by "
            f"{100 * (at['1'] - at['2']):+.3f} at R = 1."
        )
    lines += ["", " ".join(notes), "", *_gamma_paragraph(summary, gammas)]
    return lines


def _sensitivity_note(model: dict) -> str:
    at, label = model["mIoU_at_recurrence"], _label(model)
    spread = _range(list(at.values()))
    if spread < INSENSITIVE_POINTS / 100:
        return f"{label}: insensitive to R ({100 * spread:.3f} points between R = 1, 2, 3)."
    best = max(at, key=at.get)
    own = " (its own)" if best == str(model["trained_recurrence"]) else ""
    others = ", ".join(
        f"R = {r}: {100 * (at[r] - at[best]):+.1f}" for r in sorted(at) if r != best
    )  # fmt: skip
    return f"{label}: best at R = {best}{own}; {others} points."


def _gamma_paragraph(summary: dict, gammas: dict[str, float]) -> list[str]:
    """Why the loop count hardly matters for some models: the learned residual scale gamma stayed near 0."""
    quiet = [m for m in summary["models"] if m["name"] in gammas and abs(gammas[m["name"]]) < 0.1]
    if not quiet:
        return []
    listed = ", ".join(f"{_label(m)} {gammas[m['name']]:+.3f}" for m in quiet)
    active = [m for m in summary["models"] if m["name"] in gammas and abs(gammas[m["name"]]) >= 0.1]
    also = "".join(f" {_label(m)} learned gamma = {gammas[m['name']]:.2f} and does depend on R." for m in active)
    return [
        f"**Why R hardly matters here.** RCCA adds gamma x attention to its input, with gamma initialised to 0 "
        f"(the paper's choice). In {len(quiet)} of the models it stayed near 0 ({listed}), so their attention "
        "path contributes almost nothing and these networks are nearly the baseline: the headline comparison "
        f"between trained loop counts compares near-identical networks, so its differences are seed noise, not "
        f"effects of R.{also} The category "
        "consistent loss acts on the attention's output, which is the likely reason its gamma grew; with this "
        "short from-scratch recipe, the segmentation loss alone did not make the attention worth using."
    ]


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
            f"{cost['_inference_memory_mb']:.1f}", _num(paper and paper["gflops_increment"], "g"),
            _num(paper and paper["memory_mb_increment"], ".0f"),
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def params_and_time_table(summary: dict, attention_params: dict[str, int]) -> list[str]:
    baseline = next((m["params"] for m in summary["models"] if m["trained_recurrence"] == 0), None)
    lines = [
        "| model | parameters | of which attention | increment over baseline | training time (s, GPU) "
        "| images/s (GPU, median) | device |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for model in summary["models"]:
        increment = "–" if baseline is None else f"{model['params'] - baseline:+,}"
        cells = [_label(model), f"{model['params']:,}", f"{attention_params[model['name']]:,}", increment,
                 f"{model['train_seconds']:.0f}", f"{model['images_per_s']:.0f}", model["train_device"]]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def seeds_table(summary: dict) -> list[str]:
    seeds = sorted({s["seed"] for s in summary["seeds"]})
    lines = [
        "| model | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | spread |",
        "| --- |" + " ---: |" * (len(seeds) + 2),
    ]
    for model in summary["models"]:
        values = _seed_values(summary, model["name"])
        cells = [pct(values.get(s)) for s in seeds] + [pct(_seed_mean(summary, model["name"]))]
        lines.append(f"| {_label(model)} | " + " | ".join(cells) + f" | {100 * _range(list(values.values())):.1f} |")
    return lines


def precision_lines(summary: dict, device_evals: dict[str, dict[str, float]]) -> list[str]:
    lines = ["| model | float32 best (GPU) | float16 export (GPU) | difference (points) | float16 export here |",
             "| --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
    worst = 0.0
    for model in summary["models"]:
        pair = device_evals.get(model["name"], {})
        if "fp32" not in pair or "half" not in pair:
            continue
        difference = 100 * (pair["half"] - pair["fp32"])
        worst = max(worst, abs(difference))
        cells = [_label(model), f"{100 * pair['fp32']:.2f}", f"{100 * pair['half']:.2f}", f"{difference:+.3f}",
                 f"{100 * model['mIoU']:.2f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    if len(lines) == 2:
        return ["No device evaluations (`device_eval/`) were found beside the records."]
    verdict = "below" if worst < 0.1 else "NOT below"
    lines += ["", f"Largest |float16 - float32| difference: {worst:.3f} points, {verdict} the 0.1-point bound."]
    return lines


def render_markdown(summary: dict, inputs: ReportInputs, command: str) -> str:
    attention_params = {m["name"]: m["_attention_params"] for m in inputs.models}
    images = inputs.models[0]["_images"]
    config = inputs.models[0]["_model_config"]
    parts = [
        "# Results: CCNet on CamVid",
        "",
        f"_Generated file, do not edit: `{command}` rewrote it on {summary['generated']} from `checkpoints/` "
        "and the committed records in `results/camvid/` (machine-readable: `results/camvid/summary.json`)._",
        "",
        f"Ours: CamVid {summary['split']} ({images} frames at full resolution, single scale, void ignored), "
        "evaluated by this script on the bundled float16 checkpoints; "
        f"network `{config['backbone']}` at base width {config['base_width']}, output stride 8, "
        f"{config['head_channels']}-channel head, trained from scratch. Paper: {PAPER_SOURCE}.",
        "",
        "## Headline: ours beside the paper's Table 2",
        "",
        *headline_table(summary),
        "",
        "The two are not comparable as scores (dataset, backbone, pre-training, input size all differ); the cost "
        "columns are, in kind: ours are for our bundled network at 769x769 (a 97x97 map of "
        f"{_channels(inputs.costs)} channels), the paper's for ResNet-101's 512-channel head.",
        "",
        *goals_paragraph(summary, inputs.gammas),
        "## Per-class IoU (val, %, each model at its trained R)",
        "",
        *per_class_table(summary),
        "",
        "## Every model at R = 1, 2, 3 (val mIoU, %)",
        "",
        *cross_evaluation(summary, inputs.gammas),
        "",
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
        f"Training times are GPU numbers: {_device_note(inputs.runs)}; five runs shared one GPU at a time "
        "(results/README.md), so images/s is a shared-GPU rate (median over 10-iteration windows) and the "
        f"time is wall clock from start to the last validation. The same command takes {CPU_TRAINING_NOTE}.",
        "",
        "## Seeds (best val mIoU seen in training, %)",
        "",
        *seeds_table(summary),
        "",
        "Seed 0 is the bundled set; seed 1 is the same config with `--seed 1`, kept only as a record.",
        "",
        "## Float16 export against float32",
        "",
        *precision_lines(summary, inputs.device_evals),
        "",
        "The GPU columns are `results/camvid/device_eval/`; the last column is this report's CPU evaluation of "
        "the bundled float16 file.",
        "",
        "## Reproduce",
        "",
        "```bash",
        "export CAMVID_ROOT=../shared/datasets/camvid",
        *[reproduce_command(m["name"], m["name"] == inputs.default) for m in summary["models"]],
        "python -m training.evaluate checkpoints/camvid_r2 --recurrence 3     # any model at any loop count",
        f"{command}                 # this file and results/camvid/summary.json",
        "python -m training.figures --out figures/    # influence maps and mIoU-vs-R chart (not committed)",
        "```",
        "",
        "One line per model: train (float32; `train.amp=false` as the recorded GPU runs had it, a no-op on CPU), "
        "then bundle the best-on-val checkpoint as float16. Add `--seed 1` (and another `--out`) for the seed-1 "
        "runs. Training is not bit-reproducible across machines: expect numbers within the seed spread above, "
        "not the same digits. CamVid is for research and education use; the weights trained on it are too.",
        "",
    ]
    return "\n".join(parts)


README_START, README_END = "<!-- results:start (python -m training.report) -->", "<!-- results:end -->"


def readme_block(summary: dict) -> str:
    """The README's short results table (between the markers), pointing at docs/RESULTS.md."""
    lines = [
        README_START,
        "| model | val mIoU (seed 0) | seed 1 | at R = 1 / 2 / 3 | paper (Cityscapes val, ResNet-101) |",
        "| --- | ---: | ---: | --- | ---: |",
    ]
    for model in summary["models"]:
        at = model["mIoU_at_recurrence"]
        loops = " / ".join(pct(at[r]) for r in ("1", "2", "3")) if at else "n/a"
        paper = _paper_row(model["trained_recurrence"]) if not model["ccl"] else None
        paper_cell = pct(paper["mIoU"]) if paper else f"about +{100 * PAPER_CCL_GAIN:.1f} over R = 2"
        seed1 = pct(_seed_values(summary, model["name"]).get(1))
        lines.append(f"| {_label(model)} | {pct(model['mIoU'])} | {seed1} | {loops} | {paper_cell} |")
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


def reproduce_command(name: str, default: bool) -> str:
    """Train one bundled model from its config and bundle it as float16, as the records were made."""
    return (
        f"python -m training.train --config training/configs/{name}.yaml --out runs/{name} --set train.amp=false"
        f" && python -m training.export runs/{name} checkpoints/{name} --half" + (" --default" if default else "")
    )


def _channels(costs: list[dict]) -> str:
    return str(costs[0]["channels"]) if costs else "?"


def _device_note(runs: list[RunRecord]) -> str:
    devices = sorted({run.device for run in runs})
    return f"device {', '.join(devices)} (an NVIDIA H200 per results/README.md)"


# -------------------------------------------------------------------------------------------------
# Command line
# -------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=COMMAND,
        description="Evaluate every bundled checkpoint (at its R and at R = 1, 2, 3), measure the attention's "
        "costs, read the training records, and write docs/RESULTS.md and results/camvid/summary.json.",
    )
    parser.add_argument("--checkpoints", type=Path, default=Path("checkpoints"), help="folder with index.json")
    parser.add_argument("--records", type=Path, default=Path("results/camvid"), help="training run records")
    parser.add_argument("--data-root", help="CamVid root (default: $CAMVID_ROOT)")
    parser.add_argument("--split", default="val", help="split to evaluate (default: val)")
    parser.add_argument("--out", type=Path, default=Path("docs/RESULTS.md"), help="Markdown report to write")
    parser.add_argument("--summary", type=Path, default=Path("results/camvid/summary.json"), help="JSON summary")
    parser.add_argument(
        "--readme",
        type=Path,
        default=Path("README.md"),
        help="README whose results block (between its markers) is rewritten; skipped without the markers",
    )
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto (default: cpu, ~10 s per model and R)")
    parser.add_argument(
        "--reuse",
        type=Path,
        help="save the val evaluations to this JSON; when it already exists, take them from it instead of "
        "evaluating again (for editing the report's text; costs and records are always measured and read)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def _device(option: str) -> torch.device:
    if option == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(option)


def make_report(args: argparse.Namespace) -> dict:
    """Evaluate, measure, read; write both files; return the summary."""
    device = _device(args.device)
    entries = read_checkpoint_index(args.checkpoints)
    runs = read_runs(args.records)
    spec = find_dataset("camvid", args.data_root, args.split)  # fail early on a missing root
    total = len(entries) * len(spec.samples) + len(COST_INPUTS)
    default = read_index(args.checkpoints).get("default")
    reuse = args.reuse is not None and args.reuse.is_file()  # re-render: evaluations of an earlier run
    with tqdm(total=total, desc="report", unit="step", disable=args.no_progress) as bar:
        if reuse:
            models = json.loads(args.reuse.read_text())["models"]
            bar.update(total - len(COST_INPUTS))
        else:
            models = [
                evaluate_model(e, args.checkpoints, args.data_root, args.split, device, bar.update) for e in entries
            ]
        if args.reuse is not None and not reuse:
            atomic_write(args.reuse, lambda tmp: Path(tmp).write_text(json.dumps({"models": models})))
        reference = next((m for m in models if m["name"] == default and m["trained_recurrence"] > 0), None)
        reference = reference or next((m for m in models if m["trained_recurrence"] > 0), models[0])
        costs = attention_costs(reference["_model_config"], device, bar.update)
    gammas = attention_gammas(args.checkpoints, entries)
    inputs = ReportInputs(models, runs, costs, read_device_evals(args.records / "device_eval"), default, gammas)
    summary = build_summary(inputs, datetime.now(timezone.utc).isoformat(timespec="seconds"))
    markdown = render_markdown(summary, inputs, _command_line(args))
    atomic_write(args.summary, lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2) + "\n"))
    atomic_write(args.out, lambda tmp: Path(tmp).write_text(markdown))
    if args.readme and not update_readme(args.readme, summary):
        print(f"note: {args.readme} has no results markers; its table was left alone", file=sys.stderr)
    return summary


def _command_line(args: argparse.Namespace) -> str:
    defaults = parse_args([])
    hidden = ("data_root", "no_progress", "readme", "reuse")
    options = [
        f"--{key.replace('_', '-')} {value}"
        for key, value in vars(args).items()
        if key not in hidden and value != getattr(defaults, key)
    ]
    return " ".join([COMMAND, *options])


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        summary = make_report(args)
    except (ReportError, DatasetError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} and {args.summary} ({len(summary['models'])} models)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
