"""Is the attention used, and does it follow the classes? The split-level same-class lift of a model.

For every image of a split, a fixed-seed sample of feature cells with a known class; for each cell its
influence map after R loops (``ccnet.propagation.influence_maps``) and its same-class lift
(``ccnet.analysis.same_class_lift``: "cross" at R = 1, "off_cross" from R = 2 on), the ground truth sampled
at the cell centres. Lifts are averaged per ground-truth class, then over classes (class-balanced).
1.0 means blind to class.

    python -m training.attention_quality checkpoints/camvid_r2 --data-root ../shared/datasets/camvid
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ccnet.analysis import cell_centre_labels, class_balanced_mean, same_class_lift
from ccnet.datasets import IGNORE_INDEX, SegmentationDataset
from ccnet.propagation import influence_maps

DEFAULT_CELLS_PER_IMAGE = 16


def sample_cells(cells: np.ndarray, count: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Up to ``count`` distinct (y, x) cells with a known class, drawn uniformly."""
    known = np.argwhere(cells != IGNORE_INDEX)  # (n, 2)
    if len(known) == 0:
        return []
    chosen = rng.choice(len(known), size=min(count, len(known)), replace=False)
    return [tuple(int(v) for v in known[i]) for i in chosen]


def lifts_of_image(attentions: Sequence[torch.Tensor], cells: np.ndarray, positions) -> list[float]:
    """Same-class lift of each position's influence after all the loops given; attentions (h, w, h+w) each."""
    region = "cross" if len(attentions) == 1 else "off_cross"
    lifts = []
    for y, x in positions:
        final = influence_maps(attentions, y, x)[-1]  # (h, w): after all loops
        lifts.append(same_class_lift(final.double().numpy(), y, x, cells, IGNORE_INDEX, region))
    return lifts


@torch.no_grad()
def attention_lift(
    model: torch.nn.Module,
    dataset: SegmentationDataset,
    device: torch.device,
    recurrences: Sequence[int] | None = None,
    cells_per_image: int = DEFAULT_CELLS_PER_IMAGE,
    max_images: int | None = None,
    seed: int = 0,
    show_progress: bool = False,
) -> dict[int, dict]:
    """{R: {"lift": class-balanced lift, "per_class": {name: lift}, "cells": n}} at each loop count R.

    Whole images at batch 1; the same cells at every R. A model without attention gives {}.
    """
    if model.attention is None:
        return {}
    recurrences = [model.recurrence] if recurrences is None else list(recurrences)
    was_training = model.training
    model.eval()
    names = list(dataset.spec.classes.names)
    collected = {r: ([], []) for r in recurrences}  # R -> (lifts, classes)
    count = len(dataset) if max_images is None else min(len(dataset), max_images)
    for index in tqdm(range(count), desc="attention lift", disable=not show_progress, dynamic_ncols=True):
        image, label = dataset[index]  # (3, H, W), (H, W)
        features = model.encode(image.unsqueeze(0).to(device))
        rng = np.random.default_rng([seed, index])
        positions = None
        for r in recurrences:
            output = model.decode(features, image.shape[-2:], r, return_attention=True)
            attentions = [a[0].float().cpu() for a in output.attentions]  # R x (h, w, h+w)
            cells = cell_centre_labels(label.numpy(), attentions[0].shape[:2])  # (h, w)
            positions = sample_cells(cells, cells_per_image, rng) if positions is None else positions
            lifts, classes = collected[r]
            lifts += lifts_of_image(attentions, cells, positions)
            classes += [int(cells[y, x]) for y, x in positions]
    model.train(was_training)
    results = {}
    for r, (lifts, classes) in collected.items():
        overall, per_class = class_balanced_mean(lifts, classes)
        results[r] = {
            "lift": overall,
            "per_class": {names[c]: value for c, value in per_class.items()},
            "cells": len(lifts),
        }
    return results


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m training.attention_quality",
        description="Class-balanced same-class lift of a checkpoint's attention on a dataset split.",
    )
    parser.add_argument("checkpoint", type=Path, help="checkpoint folder or weights file")
    parser.add_argument("--data-root", type=Path, default=None, help="dataset root (default: $CAMVID_ROOT)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--recurrence", type=int, nargs="+", default=[1, 2, 3], help="loop counts to measure")
    parser.add_argument("--cells", type=int, default=DEFAULT_CELLS_PER_IMAGE, help="cells sampled per image")
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    from ccnet.checkpoint import CheckpointError, load_checkpoint
    from ccnet.datasets import find_dataset

    from .transforms import EvalTransform

    args = parse_args(argv)
    try:
        model, metadata = load_checkpoint(args.checkpoint)
        spec = find_dataset(metadata.get("dataset", "camvid"), args.data_root, args.split)
    except (CheckpointError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    model = model.float()
    dataset = SegmentationDataset(spec, EvalTransform(metadata["mean"], metadata["std"]))
    results = attention_lift(
        model, dataset, torch.device("cpu"), args.recurrence, args.cells, args.max_images, args.seed, True
    )
    if not results:
        print(f"{args.checkpoint} has no attention (a baseline): no lift to measure")
        return 0
    gamma = float(model.attention.cca.gamma.detach().reshape(-1)[0])
    print(f"gamma {gamma:.3f}; class-balanced same-class lift on {args.split} (1.0 = blind to class):")
    for r, result in results.items():
        print(f"  R = {r}: {result['lift']:.2f}  ({result['cells']} cells)")
    if args.json:
        args.json.write_text(json.dumps({"gamma": gamma, "lift": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
