"""Measuring the bundled checkpoints: val mIoU at R = 1, 2, 3, the same-class lift, the attention atlas, costs."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from ccnet.analysis import cell_centre_labels, class_attention_matrix, class_balanced_mean
from ccnet.checkpoint import load_checkpoint
from ccnet.datasets import IGNORE_INDEX, SegmentationDataset, find_dataset
from ccnet.factory import build_model
from ccnet.metrics import confusion_matrix, scores_from_confusion

from ..attention_quality import DEFAULT_CELLS_PER_IMAGE, lifts_of_image, sample_cells
from ..transforms import EvalTransform
from . import constants
from .constants import LIFT_SEED, LOOP_COUNTS, REPO_ROOT
from .records import ReportError, finite


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
                "lift": finite(overall),
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
    return [[finite(float(value)) for value in row] for row in matrix]


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
        "float32_val_mIoU": finite((metadata.get("metrics") or {}).get("mIoU")),
        "_attention_params": sum(p.numel() for p in model.attention.parameters()) if model.attention else 0,
        "_images": len(dataset),
        "_class_names": list(metadata["class_names"]),
        "_model_config": dict(metadata["model_config"]),
        "_train_config": dict(metadata.get("train_config") or {}),
        "_head_only_on": (metadata.get("training") or {}).get("head_only_on"),
        "_head_kind": head_kind(entry["name"], metadata),
        "_run_id": (metadata.get("training") or {}).get("run_id"),
    }


def head_kind(name: str, metadata: dict) -> str | None:
    """Which head kind (training.heads.KINDS) a bundled head is: its card says so; heads bundled before it did
    are known by their bundled name. None for a model trained end to end."""
    training = metadata.get("training") or {}
    if not training.get("head_only_on"):
        return None
    from ..campaign import BUNDLED_HEADS

    by_name = {bundled: kind for kind, bundled in BUNDLED_HEADS.items()}
    return training.get("head_kind") or by_name.get(name)


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
    for size in constants.COST_INPUTS:
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
