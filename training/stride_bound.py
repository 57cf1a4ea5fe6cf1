"""How well can a predictor at output stride s draw each class at all? An upper bound from the labels alone.

A head that predicts one class per s x s cell cannot draw anything thinner than a cell. Here the ideal such
predictor is the label itself at the cells (the majority class of each s x s block, void left out), upsampled
back to full resolution (nearest); its IoU against the full labels is the best any stride-s output can reach
without sub-cell detail. A class whose bound is low at stride 8 but high at stride 4 needs a finer output
(the campaign's skip decoder, docs/TRAINING.md) more than more training.

    python -m training.stride_bound --data-root ../shared/datasets/camvid --split val
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from ccnet.datasets import IGNORE_INDEX, find_dataset, load_sample
from ccnet.metrics import confusion_matrix, scores_from_confusion


def block_majority(label: np.ndarray, stride: int, num_classes: int) -> np.ndarray:
    """(H, W) labels -> (ceil(H/s), ceil(W/s)) majority class per s x s block (void where the block is all void)."""
    h, w = label.shape
    hh, ww = -(-h // stride), -(-w // stride)
    padded = np.full((hh * stride, ww * stride), IGNORE_INDEX, np.int64)
    padded[:h, :w] = label
    blocks = padded.reshape(hh, stride, ww, stride).transpose(0, 2, 1, 3).reshape(hh, ww, -1)  # (hh, ww, s*s)
    counts = np.stack([(blocks == c).sum(-1) for c in range(num_classes)], axis=-1)  # (hh, ww, K)
    majority = counts.argmax(-1)
    majority[counts.max(-1) == 0] = IGNORE_INDEX
    return majority


def stride_bound(labels: list[np.ndarray], stride: int, class_names: list[str]):
    k = len(class_names)
    confusion = torch.zeros(k, k, dtype=torch.int64)
    for label in labels:
        cells = block_majority(label, stride, k)
        drawn = np.repeat(np.repeat(cells, stride, 0), stride, 1)[: label.shape[0], : label.shape[1]]
        drawn = np.where(drawn == IGNORE_INDEX, 0, drawn)  # a void-only block: any class (void is not scored)
        confusion += confusion_matrix(torch.from_numpy(drawn)[None], torch.from_numpy(label.astype(np.int64))[None],
                                      k, IGNORE_INDEX)  # fmt: skip
    return scores_from_confusion(confusion, class_names)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", help="dataset root ($CAMVID_ROOT)")
    parser.add_argument("--dataset", default="camvid")
    parser.add_argument("--split", default="val")
    parser.add_argument("--strides", type=int, nargs="+", default=[4, 8, 16])
    args = parser.parse_args(argv)
    spec = find_dataset(args.dataset, args.data_root, args.split)
    labels = [load_sample(sample, spec)[1] for sample in spec.samples]
    names = list(spec.classes.names)
    results = {s: stride_bound(labels, s, names) for s in args.strides}
    print(f"Best IoU (%) a stride-s output can reach on {args.dataset} {args.split} ({len(labels)} frames, "
          "majority class per block, nearest upsampling):\n")  # fmt: skip
    print("| class | " + " | ".join(f"stride {s}" for s in args.strides) + " |")
    print("| --- | " + " | ".join("---:" for _ in args.strides) + " |")
    for index, name in enumerate(names):
        print(f"| {name} | " + " | ".join(f"{100 * results[s].iou[index]:.1f}" for s in args.strides) + " |")
    print("| **mean** | " + " | ".join(f"**{100 * results[s].mean_iou:.1f}**" for s in args.strides) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
