"""Evaluate a checkpoint on a dataset split: confusion-matrix mIoU, per-class IoU, pixel accuracy.

    python -m training.evaluate checkpoints/camvid_r2 --data-root ../shared/datasets/camvid --split val
    python -m training.evaluate runs/camvid_r2/best --recurrence 3 --scales 0.75 1 1.25 --flip

Any checkpoint runs at any loop count (--recurrence). Prints a table and writes JSON (--json).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from ccnet.checkpoint import load_checkpoint, write_json
from ccnet.datasets import IGNORE_INDEX, SegmentationDataset, find_dataset
from ccnet.inference import DEFAULT_CROP_SIZE, predict
from ccnet.metrics import confusion_matrix, format_scores_table, scores_from_confusion

from .errors import USER_ERRORS, EvaluationError
from .transforms import EvalTransform


def shard_indices(size: int, rank: int = 0, world_size: int = 1, max_images: int | None = None) -> list[int]:
    """This process's share of the first `max_images` samples (all of them on one process)."""
    count = size if max_images is None else min(size, max_images)
    return list(range(rank, count, world_size))


@torch.no_grad()
def confusion_over_dataset(
    model: torch.nn.Module,
    dataset: SegmentationDataset,
    device: torch.device,
    indices: Sequence[int] | None = None,
    recurrence: int | None = None,
    inference: dict | None = None,
    num_workers: int = 0,
    show_progress: bool = True,
) -> torch.Tensor:
    """(K, K) confusion of the model's argmax predictions over the given samples (batch 1, any size)."""
    was_training = model.training
    model.eval()
    subset = Subset(dataset, list(range(len(dataset)) if indices is None else indices))
    # An own generator: evaluating must not consume the global RNG (a resumed run must match).
    loader = DataLoader(
        subset,
        batch_size=1,
        shuffle=False,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(0),
    )
    confusion = torch.zeros(dataset.num_classes, dataset.num_classes, dtype=torch.int64)
    for image, label in tqdm(loader, desc="evaluating", disable=not show_progress, leave=False):
        logits = predict(model, image.to(device), recurrence=recurrence, **(inference or {}))  # (1, K, H, W)
        prediction = logits.argmax(dim=1).cpu()  # (1, H, W)
        confusion += confusion_matrix(prediction, label, dataset.num_classes, IGNORE_INDEX)
    model.train(was_training)
    return confusion


def reduce_confusion(confusion: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Sum of every process's confusion matrix (itself when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return confusion
    total = confusion.to(device)
    dist.all_reduce(total)
    return total.cpu()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description="Evaluate a CCNet checkpoint on a dataset split (mIoU, per-class IoU, pixel accuracy).",
    )
    parser.add_argument("checkpoint", help="checkpoint stem, .safetensors or .json path (or a .pt/.pth state dict)")
    parser.add_argument("--dataset", help="camvid | cityscapes | ade20k | folder (default: the one it was trained on)")
    parser.add_argument("--data-root", help="dataset root (default: $CAMVID_ROOT, $CITYSCAPES_ROOT, ...)")
    parser.add_argument("--split", default="val", help="split to evaluate (default: val)")
    parser.add_argument("--recurrence", type=int, help="loop count to run (default: the trained one)")
    parser.add_argument(
        "--mode",
        choices=["auto", "whole", "sliding"],
        default="auto",
        help="whole image, sliding windows, or auto (sliding only above --max-whole-pixels)",
    )
    parser.add_argument(
        "--scales", type=float, nargs="+", default=[1.0], help="image scales to average (e.g. 0.75 1 1.25)"
    )
    parser.add_argument("--flip", action="store_true", help="also average horizontally flipped predictions")
    parser.add_argument(
        "--crop-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        default=list(DEFAULT_CROP_SIZE),
        help="sliding-window size (default: 769 769)",
    )
    parser.add_argument(
        "--stride",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="sliding-window stride (default: 2/3 of the window)",
    )
    parser.add_argument(
        "--max-whole-pixels",
        type=int,
        default=None,
        help="auto mode: images with more pixels use sliding windows (default: 1024x2048, lowered when free "
        "memory would not hold a whole image; see ccnet.inference)",
    )
    parser.add_argument("--max-images", type=int, help="evaluate the first N images only")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: CUDA when available)")
    parser.add_argument("--num-workers", type=int, default=2, help="data-loading worker processes")
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    return parser.parse_args(argv)


def _device(option: str) -> torch.device:
    if option == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(option)


def trained_dataset_name(metadata: dict, requested: str | None) -> str:
    """The dataset asked for, else the one the checkpoint was trained on."""
    if requested:
        return requested
    train_data = (metadata.get("train_config") or {}).get("data") or {}
    return train_data.get("dataset") or metadata["dataset"]


def evaluate_checkpoint(args: argparse.Namespace) -> dict:
    """Load, check the label spaces agree, run, and return the JSON-ready results."""
    device = _device(args.device)
    model, metadata = load_checkpoint(args.checkpoint, device=device)
    spec = find_dataset(trained_dataset_name(metadata, args.dataset), args.data_root, args.split)
    if spec.num_classes != metadata["num_classes"]:
        raise EvaluationError(
            f"checkpoint {args.checkpoint} predicts {metadata['num_classes']} classes (trained on "
            f"{metadata['dataset']!r}) but dataset {spec.name} has {spec.num_classes}: "
            "evaluate it on the dataset it was trained on"
        )
    recurrence = metadata["recurrence"] if args.recurrence is None else args.recurrence
    if recurrence > 0 and model.attention is None:
        raise EvaluationError(f"checkpoint {args.checkpoint} is a baseline without attention: only --recurrence 0 runs")
    dataset = SegmentationDataset(spec, EvalTransform(metadata["mean"], metadata["std"]))
    inference = {
        "mode": args.mode,
        "scales": args.scales,
        "flip": args.flip,
        "crop_size": args.crop_size,
        "stride": args.stride,
        "max_whole_pixels": args.max_whole_pixels,
    }
    indices = shard_indices(len(dataset), max_images=args.max_images)
    started = time.perf_counter()
    confusion = confusion_over_dataset(model, dataset, device, indices, recurrence, inference, args.num_workers)
    seconds = time.perf_counter() - started
    scores = scores_from_confusion(confusion, metadata["class_names"])
    print(format_scores_table(scores))
    print(
        f"{len(indices)} images in {seconds:.1f} s ({seconds / max(len(indices), 1):.3f} s per image), "
        f"recurrence {recurrence}, {args.mode} mode, scales {args.scales}{', flip' if args.flip else ''}"
    )
    return {
        "checkpoint": str(args.checkpoint),
        "dataset": spec.name,
        "root": str(spec.root),
        "split": spec.split,
        "images": len(indices),
        "recurrence": recurrence,
        "trained_recurrence": metadata["recurrence"],
        "inference": inference,
        "device": str(device),
        "seconds": seconds,
        **scores.to_dict(),
        "confusion": confusion.tolist(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        results = evaluate_checkpoint(args)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json is not None:
        write_json(args.json, results)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
