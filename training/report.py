"""Regenerate docs/RESULTS.md and results/camvid/summary.json from the bundled checkpoints and records.

    python -m training.report --data-root ../shared/datasets/camvid
    python -m training.report --checkpoints checkpoints --records results/camvid \\
        --out docs/RESULTS.md --summary results/camvid/summary.json

Every number in the report comes from here: val mIoU and per-class IoU (this script's own evaluation,
full 360x480 frames, single scale), every model at R = 1, 2, 3 whatever its trained R, the learned
attention scale gamma (from the weights) and the class-balanced same-class lift at R = 1, 2, 3 (the same
cells `training.attention_quality` samples), the attention atlas (the class-to-class attention matrix over
every val cell at R = 1, 2, 3, from the same pass), parameters, FLOPs and memory increments of the attention
module; from the committed records (results/camvid/<name>_s<seed>/): training time and images/s, every
seed's best val mIoU and its last validation's lift and gamma, the paper-recipe comparison runs
(<name>_paper_s<seed>/) and the bfloat16 ones (<name>_bf16_s<seed>/); the earlier from-scratch set from
results/camvid/scratch_resnet18/summary.json.
The float32 reference for the float16 check is each checkpoint's own metadata (its run's val at the best
step). The paper's figures are the one constant PAPER_TABLE2 below.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

from ccnet.analysis import cell_centre_labels, class_attention_matrix, class_balanced_mean
from ccnet.checkpoint import CheckpointError, atomic_write, load_checkpoint, read_index
from ccnet.datasets import IGNORE_INDEX, DatasetError, SegmentationDataset, find_dataset
from ccnet.metrics import confusion_matrix, scores_from_confusion
from ccnet.model import build_model

from .attention_quality import DEFAULT_CELLS_PER_IMAGE, lifts_of_image, sample_cells
from .model_card import annotate_from_summary
from .run_folder import read_metrics
from .transforms import EvalTransform

REPO_ROOT = Path(__file__).resolve().parents[1]
LOOP_COUNTS = (1, 2, 3)  # every attention model is evaluated at each of these
COST_INPUTS = ((360, 480), (769, 769))  # CamVid frames, and the paper's 769x769 setting
COMMAND = "python -m training.report"

# The paper's numbers, from ../shared/docs/ccnet-brief.md, "Reported results" (the arXiv version's
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
PAPER_SOURCE = '../shared/docs/ccnet-brief.md, section "Reported results" (the paper\'s Table 2)'

# Issue #13's goals (val, full 360x480, single scale).
GOAL_R2_MIOU = 0.70  # the R = 2 model's mean val mIoU over its seeds
GOAL_LIFT = 3.0  # every attention model's class-balanced same-class lift at its trained R
BLIND_LIFT = 1.0  # a lift of 1 is attention blind to class
FLOAT16_BOUND = 0.001  # issue #13: bundle float16 only if val moves by less than 0.1 points
LIFT_SEED = 0  # the cells training's validation and `training.attention_quality` sample by default

SCRATCH_SUMMARY = Path("scratch_resnet18") / "summary.json"  # the earlier from-scratch set, under --records
PAPER_RECIPE = "_paper"  # <model>_paper_s<seed>: the same model trained with the paper's recipe
BF16_VARIANT = "_bf16"  # <model>_bf16_s<seed>: the same config trained under bfloat16 autocast (train.amp)
VARIANTS = (PAPER_RECIPE, BF16_VARIANT)  # records compared with a bundled model, never bundled themselves
NOISE_STDS = 2.0  # "within seed noise": |variant - float32 seed mean| <= this many float32 seed std
RUN_FOLDER = re.compile(r"^(?P<name>.+)_s(?P<seed>\d+)$")


class ReportError(Exception):
    """The report cannot be made as asked; the message says what to do."""


# -------------------------------------------------------------------------------------------------
# Inputs: checkpoints, records, the earlier set's summary
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


def _finite(value) -> float | None:
    """A float, or None for a missing, non-numeric or NaN value (JSON has no NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _gamma_of(record: dict) -> float | None:
    """The attention scale logged with a val record (`gamma/<parameter>`; a model has at most one RCCA)."""
    return next((_finite(v) for k, v in record.items() if k.startswith("gamma/")), None)


def read_run(folder: Path) -> RunRecord:
    """Best val mIoU, wall-clock training time, median images/s, last lift and gamma of one run folder."""
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
        name=RUN_FOLDER.match(folder.name)["name"],
        seed=int(run["seed"]),
        best_val_miou=float(max(r["mIoU"] for r in val)),
        train_seconds=float(records[-1]["time"] - started),  # wall clock, validation included
        images_per_s=float(statistics.median(r["images_per_s"] for r in train)),
        device=str(run["device"]),
        iterations=int(max(r["step"] for r in records)),
        final_lift=_finite(val[-1].get("lift")),
        final_gamma=_gamma_of(val[-1]),
        sessions=1 + len(run.get("resumed", [])),
        amp=_amp_of(folder, str(run["device"])),
        val_steps={
            int(r["step"]): {"mIoU": _finite(r.get("mIoU")), "lift": _finite(r.get("lift")), "gamma": _gamma_of(r)}
            for r in val
        },
    )


def _amp_of(folder: Path, device: str) -> str:
    """The precision a run trained in, from its own config.yaml: train.amp True means float16 on CUDA only."""
    config_file = folder / "config.yaml"
    if not config_file.is_file():
        return "float32"
    amp = (yaml.safe_load(config_file.read_text()).get("train") or {}).get("amp")
    if amp in ("bfloat16", "float16"):
        return amp
    return "float16" if amp is True and device.startswith("cuda") else "float32"


def read_runs(records: Path) -> list[RunRecord]:
    """Every <name>_s<seed> run folder directly under `records` (the earlier set lives in a subfolder)."""
    if not records.is_dir():
        raise ReportError(f"records folder {records} does not exist: pass --records FOLDER (e.g. results/camvid)")
    runs = [
        read_run(folder) for folder in sorted(records.iterdir()) if folder.is_dir() and RUN_FOLDER.match(folder.name)
    ]
    if not runs:
        raise ReportError(f"no run folders NAME_s<seed> in {records}")
    return runs


def is_paper_recipe(run: RunRecord) -> bool:
    return run.name.endswith(PAPER_RECIPE)


def is_variant(run: RunRecord) -> bool:
    """A comparison record (paper recipe, bfloat16) rather than a seed of a bundled model."""
    return run.name.endswith(VARIANTS)


def read_scratch_summary(path: Path) -> dict | None:
    """{"source", "models": [{name, trained_recurrence, ccl, mIoU}]} of the earlier set; None when absent."""
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


# -------------------------------------------------------------------------------------------------
# Evaluation: backbone once per image, the head at every loop count, the lift from the same pass
# -------------------------------------------------------------------------------------------------


class LiftSampler:
    """Same-class lift of sampled cells, image by image, sampled exactly as `attention_lift` samples them.

    Same seed and cells per image, the same cells at every R: the report's figure for a checkpoint is the
    one `python -m training.attention_quality` gives and the one training logged for those weights, while
    the attention maps come from the pass that also scores the predictions (no second pass over val).
    """

    def __init__(self, loop_counts: Sequence[int], cells_per_image: int = DEFAULT_CELLS_PER_IMAGE, seed: int = 0):
        self.cells_per_image, self.seed = cells_per_image, seed
        self.collected = {loops: ([], []) for loops in loop_counts if loops > 0}  # R -> (lifts, classes)
        self._image: tuple[int, list] | None = None  # (index, cells sampled on it), shared by every R

    def add(self, index: int, loops: int, attentions: Sequence[torch.Tensor], label: torch.Tensor) -> None:
        maps = [a[0].float().cpu() for a in attentions]  # R x (h, w, h+w)
        cells = cell_centre_labels(label.numpy(), maps[0].shape[:2])  # (h, w)
        if self._image is None or self._image[0] != index:
            self._image = (index, sample_cells(cells, self.cells_per_image, np.random.default_rng([self.seed, index])))
        positions = self._image[1]
        lifts, classes = self.collected[loops]
        lifts += lifts_of_image(maps, cells, positions)
        classes += [int(cells[y, x]) for y, x in positions]

    def results(self, class_names: Sequence[str]) -> dict[int, dict]:
        """{R: {"lift", "per_class", "cells"}} as `attention_lift` returns it; a NaN lift becomes None."""
        results = {}
        for loops, (lifts, classes) in self.collected.items():
            overall, per_class = class_balanced_mean(lifts, classes)
            results[loops] = {
                "lift": _finite(overall),
                "per_class": {class_names[c]: value for c, value in per_class.items()},
                "cells": len(lifts),
            }
        return results


class AtlasAccumulator:
    """The class-to-class attention matrix over a split, per loop count R (the attention atlas).

    Per image, `class_attention_matrix` after R loops (K + 1 influence maps' worth of work); over the split,
    each row is weighted by the image's count of class-i cells, so the atlas is the mean over every class-i
    cell of the split, not a mean of per-image means (a class with 3 cells in one frame weighs 3 cells).
    """

    def __init__(self, loop_counts: Sequence[int], num_classes: int):
        self.num_classes = num_classes
        self.sums = {loops: np.zeros((num_classes, num_classes)) for loops in loop_counts}  # R -> (K, K)
        self.counts = {loops: np.zeros(num_classes) for loops in loop_counts}  # R -> (K,) known cells per class

    def add(self, index: int, loops: int, attentions: Sequence[torch.Tensor], label: torch.Tensor) -> None:
        """Same signature as `LiftSampler.add`: fed by the same forward pass."""
        if loops not in self.sums:
            return  # a trained R outside LOOP_COUNTS: the atlas is for R = 1, 2, 3 only
        maps = [a[0].float().cpu() for a in attentions]  # R x (h, w, h+w)
        cells = cell_centre_labels(label.numpy(), maps[0].shape[:2])  # (h, w)
        matrix = class_attention_matrix(maps, torch.from_numpy(cells), self.num_classes, IGNORE_INDEX)[-1]  # (K, K)
        known = cells[cells != IGNORE_INDEX]  # (n,)
        count = np.bincount(known, minlength=self.num_classes)[: self.num_classes].astype(np.float64)  # (K,)
        # An absent class has a NaN row and a count of 0: it adds nothing to the sums.
        self.sums[loops] += count[:, None] * np.nan_to_num(matrix.numpy(), nan=0.0)  # (K, K)
        self.counts[loops] += count

    def results(self) -> dict[str, dict]:
        """{"R": {"shares": K x K, "lift": K x K}} as JSON lists, None where a class has no cells in the split."""
        atlas = {}
        for loops, sums in self.sums.items():
            counts = self.counts[loops]  # (K,)
            with np.errstate(invalid="ignore", divide="ignore"):
                shares = sums / counts[:, None]  # (K, K): NaN rows for classes absent from the split
                lift = shares / (counts / counts.sum())[None, :]  # (K, K): over class j's share of the split
            atlas[str(loops)] = {"shares": _json_matrix(shares), "lift": _json_matrix(lift)}
        return atlas


def _json_matrix(matrix: np.ndarray) -> list[list[float | None]]:
    return [[_finite(float(value)) for value in row] for row in matrix]


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
    lifts: LiftSampler | None = None,
    atlas: AtlasAccumulator | None = None,
) -> dict[int, torch.Tensor]:
    """{R: (K, K) confusion} over the dataset; the same logits as `ccnet.inference.predict` in whole mode.

    With `lifts` and `atlas`, every loop count's attention maps of the same forward pass feed them (the
    maps are a by-product of the loops: asking for them does not change the logits).
    """
    observers = [o for o in (lifts, atlas) if o is not None]
    confusions = {
        loops: torch.zeros(dataset.num_classes, dataset.num_classes, dtype=torch.int64) for loops in loop_counts
    }
    for index in range(len(dataset)):
        image, label = dataset[index]  # (3, H, W), (H, W)
        images = image.unsqueeze(0).to(device)  # (1, 3, H, W)
        features = model.encode(images)
        for loops in loop_counts:
            attend = bool(observers) and loops > 0
            output = model.decode(features, images.shape[-2:], recurrence=loops, return_attention=attend)
            prediction = output.logits.argmax(dim=1).cpu()  # (1, H, W)
            confusions[loops] += confusion_matrix(prediction, label.unsqueeze(0), dataset.num_classes, IGNORE_INDEX)
            for observer in observers if attend else ():
                observer.add(index, loops, output.attentions, label)
        advance()
    return confusions


def _none_if_nan(value: float) -> float | None:
    return None if value != value else float(value)  # JSON has no NaN: a class absent from labels and predictions


def evaluate_model(entry: dict, folder: Path, data_root, split: str, device, advance) -> dict:
    """One bundled checkpoint: its summary entry (mIoU at trained R, per class, at R = 1, 2, 3, gamma, lift)."""
    model, metadata = load_checkpoint(folder / entry["name"], device=device)
    model = model.float()  # float16 files are cast on load already; evaluation and lift are float32 either way
    spec = find_dataset(metadata["dataset"], data_root, split)
    if spec.num_classes != metadata["num_classes"]:
        raise ReportError(
            f"{entry['name']} predicts {metadata['num_classes']} classes, {spec.name} has {spec.num_classes}"
        )
    dataset = SegmentationDataset(spec, EvalTransform(metadata["mean"], metadata["std"]))
    trained = metadata["recurrence"]
    lifts = LiftSampler(loop_counts_for(trained), seed=LIFT_SEED)
    atlas = AtlasAccumulator(LOOP_COUNTS, dataset.num_classes) if trained else None
    confusions = evaluate_at_loop_counts(model, dataset, loop_counts_for(trained), device, advance, lifts, atlas)
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
        **attention_entry(model, lifts.results(metadata["class_names"]), trained),
        "atlas": {} if atlas is None else atlas.results(),  # the baseline has no attention to map
        "weights_dtype": str(metadata.get("weights_dtype", "float32")),
        # Training's own validation of these weights in float32, at the step they were saved (best on val).
        "float32_val_mIoU": _finite((metadata.get("metrics") or {}).get("mIoU")),
        "_attention_params": sum(p.numel() for p in model.attention.parameters()) if model.attention else 0,
        "_images": len(dataset),
        "_class_names": list(metadata["class_names"]),
        "_model_config": dict(metadata["model_config"]),
        "_train_config": dict(metadata.get("train_config") or {}),
    }


def attention_entry(model: torch.nn.Module, lifts: dict[int, dict], trained: int) -> dict:
    """gamma and the lifts of one model; None / {} for a baseline (no attention, so nothing to measure)."""
    if model.attention is None:
        return {"gamma": None, "lift": None, "lift_per_class": {}, "lift_at_recurrence": {}, "lift_cells": 0}
    return {
        "gamma": float(model.attention.cca.gamma.detach().reshape(-1)[0]),
        "lift": lifts[trained]["lift"],
        "lift_per_class": lifts[trained]["per_class"],
        "lift_at_recurrence": {str(r): lifts[r]["lift"] for r in LOOP_COUNTS},
        "lift_cells": lifts[trained]["cells"],
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
    default: str | None = None
    recipe_runs: list[RunRecord] = field(default_factory=list)  # the paper-recipe comparison records
    scratch: dict | None = None  # the earlier from-scratch set (read_scratch_summary)
    precision_runs: list[RunRecord] = field(default_factory=list)  # the bfloat16 comparison records


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


def build_summary(inputs: ReportInputs, generated: str) -> dict:
    runs = {(run.name, run.seed): run for run in inputs.runs}
    names = {model["name"] for model in inputs.models}
    seeds = [_seed_entry(run) for run in sorted(inputs.runs, key=lambda r: (r.name, r.seed)) if run.name in names]
    models = []
    for model in inputs.models:
        run = runs.get((model["name"], model["seed"]))
        if run is None:
            raise ReportError(f"no training record {model['name']}_s{model['seed']} for checkpoint {model['name']}")
        public = {key: value for key, value in model.items() if not key.startswith("_")}
        values = [s["best_val_mIoU"] for s in seeds if s["name"] == model["name"]]
        models.append({**public, "train_seconds": run.train_seconds, "images_per_s": run.images_per_s,
                       "train_device": run.device, "val_mIoU_seeds": seed_stats(values)})  # fmt: skip
    summary = {
        "dataset": "camvid",
        "split": "val",
        "generated": generated,
        "generated_by": COMMAND,
        "classes": inputs.models[0]["_class_names"],
        "models": models,
        "seeds": seeds,
        "costs": [{key: value for key, value in cost.items() if not key.startswith("_")} for cost in inputs.costs],
        "paper_table2": [dict(row) for row in PAPER_TABLE2],
        "recipe_comparison": recipe_rows(models, inputs.runs, inputs.recipe_runs),
        "mixed_precision": precision_comparison(models, inputs.runs, inputs.precision_runs),
        "from_scratch": inputs.scratch,
        "lift_sampling": {"cells_per_image": DEFAULT_CELLS_PER_IMAGE, "seed": LIFT_SEED, "blind": BLIND_LIFT},
    }
    summary["goals"] = judge_goals(summary)
    return summary


def _seed_entry(run: RunRecord) -> dict:
    return {"name": run.name, "seed": run.seed, "best_val_mIoU": run.best_val_miou, "lift": run.final_lift,
            "gamma": run.final_gamma, "iterations": run.iterations}  # fmt: skip


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


# -------------------------------------------------------------------------------------------------
# The issue's goals, judged from the numbers
# -------------------------------------------------------------------------------------------------

ORDER_LABELS = ("baseline (R = 0)", "RCCA R = 1", "RCCA R = 2", "RCCA R = 3")


def model_stats(summary: dict, model: dict) -> dict:
    """Seed statistics of a model's best val mIoU; the bundled value alone (n = 1) when it has no record."""
    values = list(_seed_values(summary, model["name"]).values())
    return seed_stats(values or [model["mIoU"]])


def judge_goals(summary: dict) -> list[dict]:
    """Issue #13's goals: each {"goal", "target", "value", "met" (None: not measured), "margin", ...}."""
    goals = []
    r2 = _r2_model(summary)
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


def _r2_model(summary: dict) -> dict | None:
    return next((m for m in summary["models"] if m["trained_recurrence"] == 2 and not m["ccl"]), None)


def _ordered_models(summary: dict) -> list[dict | None]:
    by_label = {_label(m): m for m in summary["models"]}
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


# -------------------------------------------------------------------------------------------------
# The Markdown report
# -------------------------------------------------------------------------------------------------


def pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f}"


def _num(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


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


def _seed_field(summary: dict, name: str, key: str) -> list[float]:
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


def headline_table(summary: dict) -> list[str]:
    lines = [
        "| model | ours: val mIoU, mean ± std over seeds | ours: bundled checkpoint | ours: lift at trained R "
        "| ours: GFLOPs incr. 769x769 | ours: memory incr. 769x769, fwd+bwd (MB) "
        "| paper setting (Cityscapes val, ResNet-101) | paper mIoU | paper GFLOPs incr. | paper memory incr. (MB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for model in summary["models"]:
        loops = model["trained_recurrence"]
        paper = _paper_row(loops) if not model["ccl"] else None
        paper_cells = ["–"] * 4
        if paper is not None:
            paper_cells = [paper["setting"], pct(paper["mIoU"]), _num(paper["gflops_increment"], "g"),
                           _num(paper["memory_mb_increment"], ".0f")]  # fmt: skip
        elif model["ccl"]:
            paper_cells = ["+ CCL (brief)", f"about +{100 * PAPER_CCL_GAIN:.1f} over R = 2", "–", "–"]
        ours_flops = _cost(summary, (769, 769), loops, "gflops_increment") if loops else 0.0
        ours_mem = _cost(summary, (769, 769), loops, "memory_mb_increment") if loops else 0.0
        lift = _num(model.get("lift"), ".2f") if loops else "n/a"
        cells = [_label(model), spread(model_stats(summary, model)), pct(model["mIoU"]), lift,
                 _num(ours_flops, ".2f"), _num(ours_mem, ".1f"), *paper_cells]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    non_local = _paper_row(None)
    lines.append(
        f"| non-local block (not trained here) | – | – | – | – | – | {non_local['setting']} | {pct(non_local['mIoU'])} "
        f"| {_num(non_local['gflops_increment'], 'g')} | {_num(non_local['memory_mb_increment'], '.0f')} |"
    )
    return lines


def goals_paragraph(summary: dict, recipe: dict | None = None) -> list[str]:
    """The issue's goals against the measurements, with the seed spread they have to be read against."""
    goals = judge_goals(summary)
    bullets = []
    r2 = next((g for g in goals if g["goal"] == "r2_mean_val_mIoU"), None)
    if r2 is not None:
        bullets.append(_r2_bullet(summary, r2))
    lifts = [g for g in goals if g["goal"] == "lift_at_trained_recurrence"]
    if lifts:
        bullets.append(_lift_bullet(summary, lifts))
    order = next(g for g in goals if g["goal"] == "ordering")
    bullets.append(_order_bullet(order))
    bullets += _noise_bullet(summary)
    quiet = [_label(m) for m in summary["models"] if m.get("gamma") is not None and abs(m["gamma"]) < 0.1]
    if quiet:
        bullets.append(
            f"- **Why.** In {', '.join(quiet)} the learned attention scale gamma is near 0: those networks barely "
            "use their attention and are close to the baseline."
        )
    verdicts = [g["met"] for g in goals]
    heading = "not met" if False in verdicts or not verdicts else "met" if all(verdicts) else "not all measured"
    return [f"## The issue's goals: {heading}", "", *bullets, "", *_what_was_tried(summary, recipe or {}), ""]


def _verdict(met: bool | None) -> str:
    return "not measured" if met is None else "met" if met else "not met"


def _r2_bullet(summary: dict, goal: dict) -> str:
    model = next(m for m in summary["models"] if m["name"] == goal["model"])
    sem = "" if goal["sem"] is None else f" ± {pct(goal['sem'])} (standard error)"
    seeds = "one seed (n = 1): no spread to read it against" if goal["n"] == 1 else f"n = {goal['n']} seeds"
    return (
        f"- **R = 2 reaches >= {100 * GOAL_R2_MIOU:.0f} % mean val mIoU: {_verdict(goal['met'])}.** {_label(model)}: "
        f"{pct(goal['value'])} %{sem}, best val of each run, {seeds} ({100 * goal['margin']:+.1f} points from the "
        f"goal); the bundled checkpoint scores {pct(model['mIoU'])} % in this report's evaluation."
    )


def _lift_bullet(summary: dict, goals: list[dict]) -> str:
    met = [g["met"] for g in goals]
    verdict = _verdict(False if False in met else None if None in met else True)
    by_name = {m["name"]: m for m in summary["models"]}
    parts = []
    for goal in goals:
        finals = _seed_field(summary, goal["model"], "lift")
        seeds = f"; seeds' last validation: {' / '.join(f'{v:.2f}' for v in finals)}" if finals else ""
        miss = f", {-goal['margin']:.2f} short" if goal["met"] is False else ""
        parts.append(
            f"{_label(by_name[goal['model']])} {_num(goal['value'], '.2f')} ({_verdict(goal['met'])}{miss}{seeds})"
        )
    return (
        f"- **Class-balanced same-class lift >= {GOAL_LIFT:g} at the trained R: {verdict}.** "
        + "; ".join(parts)
        + f". Measured by this report on each bundled checkpoint (val; {BLIND_LIFT:g} = blind to class)."
    )


def _points(fraction: float) -> str:
    """A difference of mIoU fractions in points: one decimal, two below 0.05 (so it never reads "0.0")."""
    points = 100 * fraction
    return f"{points:.1f}" if abs(points) >= 0.05 else f"{points:.2f}"


def _order_bullet(goal: dict) -> str:
    if goal["met"] is None:
        return f"- **Ordering baseline < R1 < R2 <= R3 in seed means: not measured.** No {', '.join(goal['missing'])}."
    cells = [
        f"{pct(mean)} ± {pct(sem)}" if sem is not None else f"{pct(mean)} (n = 1)"
        for mean, sem in zip(goal["means"], goal["sems"], strict=True)
    ]
    misses = "".join(
        f" {miss['higher']} would have to be {_points(miss['by'])} points higher to pass {miss['lower']}."
        for miss in goal["misses"]
    )
    return (
        f"- **Ordering baseline < R1 < R2 <= R3 in seed means: {_verdict(goal['met'])}.** Mean ± standard error "
        f"of the seeds' best val mIoU: {' / '.join(cells)} (n = {', '.join(map(str, goal['n']))}).{misses}"
    )


def _noise_bullet(summary: dict) -> list[str]:
    """Seed spread per model, and whether the models' seed means differ by more than two standard errors."""
    models = {_label(m): m for m in summary["models"]}
    per_model = {label: list(_seed_values(summary, m["name"]).values()) for label, m in models.items()}
    per_model = {label: values for label, values in per_model.items() if len(values) > 1}
    if not per_model:
        return ["- **Seed noise.** No model has two seeds yet: the spread between seeds is unknown."]
    spreads = {label: _range(values) for label, values in per_model.items()}
    seeds = min(len(values) for values in per_model.values())
    # Pooled seed-to-seed standard deviation; a difference of two n-seed means has SE = sd * sqrt(2 / n).
    pooled_sd = statistics.fmean(statistics.variance(values) for values in per_model.values()) ** 0.5
    noise = 2 * pooled_sd * (2 / seeds) ** 0.5
    # The ordering is a question about the loop count alone: CCL models are judged against their R, apart.
    mean_of = {label: statistics.fmean(values) for label, values in per_model.items()}
    plain = [label for label in per_model if not models[label]["ccl"]]
    means = _range([mean_of[label] for label in plain]) if plain else 0.0
    listed = ", ".join(f"{k}: {100 * v:.1f}" for k, v in spreads.items())
    verdict = (
        "the differences between the models are within seed noise: these runs neither confirm nor refute the "
        "paper's ordering"
        if means <= noise
        else "the models differ by more than seed noise"
    )
    ccl_lines = ""
    for label in per_model:
        same_r = [p for p in plain if models[p]["trained_recurrence"] == models[label]["trained_recurrence"]]
        if models[label]["ccl"] and same_r:
            gap = mean_of[label] - mean_of[same_r[0]]
            beyond = "more than seed noise" if abs(gap) > noise else "within seed noise"
            ccl_lines += f" {label} is {100 * gap:+.1f} points from {same_r[0]}: {beyond}."
    return [
        f"- **Seed noise.** One config trained with different seeds differs by {100 * min(spreads.values()):.1f} to "
        f"{100 * max(spreads.values()):.1f} points of best val mIoU ({listed}). Pooled, the seed-to-seed standard "
        f"deviation is {100 * pooled_sd:.1f} points, so two {seeds}-seed means differ by up to about "
        f"{100 * noise:.1f} points by chance (two standard errors); the {len(plain)} models without CCL with several "
        f"seeds have means spanning {100 * means:.1f} points: {verdict}.{ccl_lines} With {seeds} seeds the standard "
        "deviation itself is a rough estimate."
    ]


def _what_was_tried(summary: dict, recipe: dict) -> list[str]:
    params = max(m["params"] for m in summary["models"]) / 1e6
    counts = sorted({len(_seed_values(summary, m["name"])) for m in summary["models"]})
    seeds = " to ".join(map(str, counts)) if counts else "no"
    tried = " The paper's recipe for the same R = 2 model is compared below (\"Recipe\")." if summary.get(
        "recipe_comparison") else ""  # fmt: skip
    return [
        f"What was tried: one recipe for all {len(summary['models'])} models (`training/configs/camvid_*.yaml`; "
        f"{recipe_note(recipe)}), only the loop count and CCL differing; {seeds} seed(s) per model; the best "
        "checkpoint chosen on val mIoU (CamVid's test split was never used); docs/TRAINING.md has the recipe "
        f"search.{tried} The gap to the paper is expected in kind: the paper's numbers are Cityscapes val with an "
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
    scratch = {m["name"]: m["mIoU"] for m in (summary.get("from_scratch") or {}).get("models", [])}
    extra = " from scratch, earlier set (seed 0) |" if scratch else ""
    lines = [
        "| model | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std | standard error | n |" + extra,
        "| --- |" + " ---: |" * (len(seeds) + 3 + bool(scratch)),
    ]
    for model in summary["models"]:
        values, stats = _seed_values(summary, model["name"]), model_stats(summary, model)
        cells = [pct(values.get(s)) for s in seeds]
        mean = pct(stats["mean"]) if stats["std"] is None else f"{pct(stats['mean'])} ± {pct(stats['std'])}"
        cells += [mean, pct(stats["sem"]) if stats["sem"] is not None else "– (n = 1)", str(stats["n"])]
        cells += [pct(scratch.get(model["name"]))] if scratch else []
        lines.append(f"| {_label(model)} | " + " | ".join(cells) + " |")
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
            lines.append(f"| {_label(model)} | n/a | n/a | n/a | n/a | n/a | – | n/a | n/a |")
            continue
        at = model.get("lift_at_recurrence") or {}
        finals = [" / ".join(f"{v:{spec}}" for v in _seed_field(summary, model["name"], key)) or "–"
                  for key, spec in (("lift", ".2f"), ("gamma", ".3f"))]  # fmt: skip
        cells = [_label(model), _num(model.get("gamma"), ".3f"), *(_num(at.get(r), ".2f") for r in ("1", "2", "3")),
                 _num(model.get("lift"), ".2f"), str(model.get("lift_cells", "–")), *finals]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def lift_per_class_table(summary: dict) -> list[str]:
    classes = summary["classes"]
    attention = [m for m in summary["models"] if m["trained_recurrence"] and m.get("lift_per_class")]
    if not attention:
        return ["No lift per class: no model with attention was measured."]
    lines = ["| model | lift | " + " | ".join(classes) + " |", "| --- | ---: |" + " ---: |" * len(classes)]
    for model in attention:
        cells = [_num(model["lift_per_class"].get(name), ".2f") for name in classes]
        lines.append(f"| {_label(model)} | {_num(model.get('lift'), '.2f')} | " + " | ".join(cells) + " |")
    return lines


ATLAS_LOOPS = "2"  # the markdown shows the atlas of the R = 2 model at R = 2; the app's atlas page draws all


def atlas_table(summary: dict) -> list[str]:
    """The atlas's diagonal (each class's share of influence on its own class, and its lift) of the R = 2 model."""
    model = _r2_model(summary)
    atlas = ((model or {}).get("atlas") or {}).get(ATLAS_LOOPS)
    if atlas is None:
        return ["No attention atlas: no R = 2 model (without CCL) with one was measured."]
    classes = summary["classes"]
    own = [atlas["shares"][i][i] for i in range(len(classes))]
    lift = [atlas["lift"][i][i] for i in range(len(classes))]
    return [
        f"{_label(model)} at R = {ATLAS_LOOPS}:",
        "",
        "| | " + " | ".join(classes) + " |",
        "| --- |" + " ---: |" * len(classes),
        "| share of influence on its own class (%) | " + " | ".join(pct(v) for v in own) + " |",
        "| lift over the class's share of cells | " + " | ".join(_num(v, ".2f") for v in lift) + " |",
    ]


def per_class_table(summary: dict) -> list[str]:
    classes = summary["classes"]
    lines = ["| model | mIoU | " + " | ".join(classes) + " |", "| --- | ---: |" + " ---: |" * len(classes)]
    for model in summary["models"]:
        cells = [pct(model["per_class_iou"].get(name)) for name in classes]
        lines.append(f"| {_label(model)} | {pct(model['mIoU'])} | " + " | ".join(cells) + " |")
    return lines


INSENSITIVE_POINTS = 0.1  # a model whose mIoU moves less than this over R = 1..3 is called insensitive to R


def cross_evaluation(summary: dict) -> list[str]:
    lines = [
        "| model (trained R) | learned gamma | R = 1 | R = 2 | R = 3 | trained R -> R + 1 (points) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    notes = []
    for model in summary["models"]:
        at, gamma = model["mIoU_at_recurrence"], _num(model.get("gamma"), ".3f")
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
    lines += ["", " ".join(notes), "", *_gamma_paragraph(summary)]
    return lines


def _sensitivity_note(model: dict) -> str:
    at, label = model["mIoU_at_recurrence"], _label(model)
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
    listed = ", ".join(f"{_label(m)} {gammas[m['name']]:+.3f}" for m in quiet)
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
                 _num(row["gamma"], ".3f"), _num(row["lift"], ".2f")]  # fmt: skip
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
                         pct(seed["best_val_mIoU"]), _num(seed["lift"], ".2f"), _num(seed["gamma"], ".3f"),
                         f"{seed['images_per_s']:.2f}"]  # fmt: skip
                lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for comparison in comparisons:
        lines.append(_precision_verdict(comparison))
    lines += ["", "Records `results/camvid/<model>_bf16_s<seed>/` (`--set train.amp=bfloat16 --set "
              "train.channels_last=false`, otherwise the bundled config; bfloat16 with channels-last diverges on "
              "the CPU and is refused, `results/camvid/bf16_channels_last_diverged/`). images/s comes from the "
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
            f"{cost['_inference_memory_mb']:.1f}", _num(paper and paper["gflops_increment"], "g"),
            _num(paper and paper["memory_mb_increment"], ".0f"),
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
        cells = [_label(model), f"{model['params']:,}", f"{attention_params[model['name']]:,}", increment,
                 f"{model['train_seconds']:.0f}", f"{model['images_per_s']:.1f}", model["train_device"]]  # fmt: skip
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
        if model.get("weights_dtype") == "float16":
            worst = max(worst or 0.0, abs(difference))
        cells = [_label(model), model.get("weights_dtype", "?"), f"{100 * reference:.2f}", f"{100 * model['mIoU']:.2f}",
                 f"{difference:+.3f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    if len(lines) == 2:
        return ["No checkpoint records its own val mIoU (sidecar `metrics`): nothing to compare against."]
    if worst is None:
        return [*lines, "", "No bundled file is float16: the rows compare two float32 evaluations."]
    verdict = "below" if worst < 100 * FLOAT16_BOUND else "NOT below"
    return [*lines, "", f"Largest |float16 - float32| difference: {worst:.3f} points, {verdict} the "
            f"{100 * FLOAT16_BOUND:.1f}-point bound."]  # fmt: skip


def scratch_note(summary: dict) -> list[str]:
    scratch = summary.get("from_scratch")
    if not scratch:
        return ["The earlier from-scratch set's summary was not found: no comparison column."]
    return [
        f"The last column is the earlier set (ResNet-18 at half width, trained from scratch), seed 0 as bundled "
        f"then, from `{scratch['source']}`."
    ]


def render_markdown(summary: dict, inputs: ReportInputs, command: str) -> str:
    attention_params = {m["name"]: m["_attention_params"] for m in inputs.models}
    images = inputs.models[0]["_images"]
    recipe = inputs.models[0].get("_train_config") or {}
    dtypes = " / ".join(sorted({m.get("weights_dtype", "float32") for m in summary["models"]}))
    parts = [
        "# Results: CCNet on CamVid",
        "",
        f"_Generated file, do not edit: `{command}` rewrote it on {summary['generated']} from `checkpoints/` "
        "and the committed records in `results/camvid/` (machine-readable: `results/camvid/summary.json`)._",
        "",
        f"Ours: CamVid {summary['split']} ({images} frames at full resolution, single scale, void ignored), "
        f"evaluated by this script on the bundled {dtypes} checkpoints (seed 0 of each model); "
        f"{network_note(inputs.models[0]['_model_config'], recipe)}. Seed means are over the best val mIoU of "
        f"every training run recorded for the model. Paper: {PAPER_SOURCE}.",
        "",
        "## Headline: ours beside the paper's Table 2",
        "",
        *headline_table(summary),
        "",
        "The two are not comparable as scores (dataset, backbone, input size all differ); the cost "
        "columns are, in kind: ours are for our bundled network at 769x769 (a 97x97 map of "
        f"{_channels(inputs.costs)} channels), the paper's for ResNet-101's 512-channel head. A model with one "
        "seed shows its value with n = 1 and no spread.",
        "",
        *goals_paragraph(summary, recipe),
        "## Seeds (best val mIoU seen in training, %)",
        "",
        *seeds_table(summary),
        "",
        "Seed 0 is the bundled checkpoint; other seeds are the same config with `--seed N`, kept only as records. "
        "Standard deviation: sample (n - 1); standard error: std / sqrt(n). " + " ".join(scratch_note(summary)),
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
        "(`results/camvid/<model>_s<seed>/metrics.jsonl`).",
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
        "over 10-iteration windows, the time is wall clock from the run's start to its last validation"
        + _sessions_note(inputs.runs, summary)
        + ".",
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
        *[reproduce_command(m["name"], m["name"] == inputs.default) for m in summary["models"]],
        "python -m training.evaluate checkpoints/camvid_r2 --recurrence 3     # any model at any loop count",
        "python -m training.attention_quality checkpoints/camvid_r2           # its same-class lift at R = 1, 2, 3",
        f"{command}                 # this file and results/camvid/summary.json",
        "python -m training.figures --out figures/    # influence maps and mIoU-vs-R chart (not committed)",
        "```",
        "",
        "One line per model: train, then bundle the best-on-val checkpoint as float16. Add `--seed N` (and "
        "another `--out`) for the other seeds; each record's exact command is in its `run.json`. Training is not "
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
        lift = _num(model.get("lift"), ".2f") if model["trained_recurrence"] else "n/a"
        lines.append(f"| {_label(model)} | {spread(model_stats(summary, model))} | {pct(model['mIoU'])} | {lift} "
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
    """A resumed run's wall clock includes the pauses between its sessions: say which ones were resumed."""
    names = {(m["name"], m["seed"]) for m in summary["models"]}
    resumed = [
        f"{run.name} ({run.sessions} sessions)" for run in runs if (run.name, run.seed) in names and run.sessions > 1
    ]
    if not resumed:
        return ""
    return f"; resumed runs, whose time includes the pauses between sessions: {', '.join(resumed)}"


# -------------------------------------------------------------------------------------------------
# Command line
# -------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=COMMAND,
        description="Evaluate every bundled checkpoint (at its R and at R = 1, 2, 3, with gamma, the same-class "
        "lift and the class-to-class attention atlas), measure the attention's costs, read the training records, "
        "and write docs/RESULTS.md and results/camvid/summary.json.",
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


def _reused_models(path: Path) -> list[dict]:
    models = json.loads(path.read_text())["models"]
    if any("lift_at_recurrence" not in m for m in models):  # written before the lift was measured
        raise ReportError(f"{path} holds evaluations without the same-class lift: delete it to evaluate again")
    if any("atlas" not in m for m in models):  # written before the attention atlas was measured
        raise ReportError(
            f"{path} holds evaluations without the attention atlas (class-to-class matrices): delete it to evaluate "
            "again"
        )
    return models


def make_report(args: argparse.Namespace) -> dict:
    """Evaluate, measure, read; write both files; return the summary."""
    device = _device(args.device)
    entries = read_checkpoint_index(args.checkpoints)
    all_runs = read_runs(args.records)
    runs = [run for run in all_runs if not is_variant(run)]
    scratch = read_scratch_summary(args.records / SCRATCH_SUMMARY)
    spec = find_dataset("camvid", args.data_root, args.split)  # fail early on a missing root
    total = len(entries) * len(spec.samples) + len(COST_INPUTS)
    default = read_index(args.checkpoints).get("default")
    reuse = args.reuse is not None and args.reuse.is_file()  # re-render: evaluations of an earlier run
    with tqdm(total=total, desc="report", unit="step", disable=args.no_progress) as bar:
        if reuse:
            models = _reused_models(args.reuse)
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
    recipe_runs = [run for run in all_runs if is_paper_recipe(run)]
    precision_runs = [run for run in all_runs if run.name.endswith(BF16_VARIANT)]
    inputs = ReportInputs(models, runs, costs, default, recipe_runs, scratch, precision_runs)
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
        annotate_from_summary(summary, args.checkpoints)  # the app's model cards
    except (ReportError, DatasetError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} and {args.summary} ({len(summary['models'])} models)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
