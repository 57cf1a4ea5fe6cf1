"""Segmentation metrics from a confusion matrix: IoU per class, mean IoU, pixel accuracy."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch


def confusion_matrix(
    predictions: torch.Tensor, labels: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """Counts (K, K) int64 with rows = true class, columns = predicted class; ignored pixels skipped."""
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions {tuple(predictions.shape)} and labels {tuple(labels.shape)} differ in shape")
    valid = labels != ignore_index
    truth = labels[valid].long()
    predicted = predictions[valid].long()
    if truth.numel() and (truth.min() < 0 or truth.max() >= num_classes):
        raise ValueError(f"labels hold values outside 0..{num_classes - 1} other than ignore {ignore_index}")
    flat = truth * num_classes + predicted.clamp(0, num_classes - 1)
    counts = torch.bincount(flat, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).cpu()


@dataclass
class SegmentationScores:
    """What evaluation reports; IoU is NaN for a class absent from both labels and predictions."""

    iou: list[float]
    mean_iou: float
    pixel_accuracy: float
    mean_accuracy: float
    class_names: list[str]

    def to_dict(self) -> dict:
        def clean(value: float) -> float | None:  # JSON has no NaN
            return None if math.isnan(value) else value

        return {
            "mIoU": clean(self.mean_iou),
            "pixel_accuracy": clean(self.pixel_accuracy),
            "mean_accuracy": clean(self.mean_accuracy),
            "per_class_iou": {name: clean(value) for name, value in zip(self.class_names, self.iou, strict=True)},
        }


def scores_from_confusion(confusion: torch.Tensor, class_names: Sequence[str]) -> SegmentationScores:
    """IoU_c = TP / (TP + FP + FN); mIoU averages the classes that occur in labels or predictions."""
    confusion = confusion.double()
    true_positive = confusion.diag()
    per_class_truth = confusion.sum(dim=1)
    per_class_predicted = confusion.sum(dim=0)
    union = per_class_truth + per_class_predicted - true_positive
    iou = torch.where(union > 0, true_positive / union.clamp(min=1), torch.tensor(float("nan"), dtype=torch.float64))
    accuracy = torch.where(
        per_class_truth > 0,
        true_positive / per_class_truth.clamp(min=1),
        torch.tensor(float("nan"), dtype=torch.float64),
    )
    total = confusion.sum()
    return SegmentationScores(
        iou=iou.tolist(),
        mean_iou=_nanmean(iou),
        pixel_accuracy=float(true_positive.sum() / total) if total > 0 else float("nan"),
        mean_accuracy=_nanmean(accuracy),
        class_names=list(class_names),
    )


def _nanmean(values: torch.Tensor) -> float:
    present = values[~values.isnan()]
    return float(present.mean()) if present.numel() else float("nan")


def format_scores_table(scores: SegmentationScores) -> str:
    """A plain-text table: one row per class with its IoU (%), then the summary rows."""
    width = max([len("pixel accuracy")] + [len(name) for name in scores.class_names])

    def row(name: str, value: float) -> str:
        shown = "   n/a" if math.isnan(value) else f"{100 * value:6.2f}"
        return f"{name:<{width}}  {shown}"

    lines = [f"{'class':<{width}}  IoU (%)", "-" * (width + 9)]
    lines += [row(name, value) for name, value in zip(scores.class_names, scores.iou, strict=True)]
    lines += ["-" * (width + 9), row("mIoU", scores.mean_iou), row("pixel accuracy", scores.pixel_accuracy)]
    lines.append(row("mean accuracy", scores.mean_accuracy))
    return "\n".join(lines)
