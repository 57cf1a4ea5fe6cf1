"""Why does a model miss one class? Where its pixels go, what it takes from others, and a logit-offset sweep.

A class can score a low IoU for two different reasons. Under-prediction (the model is right where it says the
class, but says it too rarely) is a calibration miss: adding an offset to the class's logit raises its IoU.
Misplacement (the model draws the class about as often as it occurs, but on the wrong pixels) is not: an offset
either way lowers the IoU. The sweep below tells the two apart; the recall row says which classes take the
class's pixels; the near-miss table says how far off the misplaced pixels are (a pole drawn two pixels beside
the true one is a resolution problem, a pole never drawn is a recognition one). The offsets are scored on the
split itself, so this is a diagnosis, not a tuned model.

    python -m training.class_errors checkpoints/camvid_r2 --data-root ../shared/datasets/camvid --class Pole
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ccnet.checkpoint import load_checkpoint, write_json
from ccnet.datasets import IGNORE_INDEX, SegmentationDataset, find_dataset
from ccnet.inference import predict
from ccnet.metrics import confusion_matrix, scores_from_confusion

from .errors import USER_ERRORS, EvaluationError
from .evaluate import trained_dataset_name
from .transforms import EvalTransform

DEFAULT_OFFSETS = (-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0, 2.0)
DEFAULT_TOLERANCES = (0, 1, 2, 4, 8)  # pixels at full resolution


def _dilate(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """(H, W) bool -> (H, W) bool: every pixel within `pixels` (square neighbourhood) of a True one."""
    if pixels == 0:
        return mask
    pooled = F.max_pool2d(mask[None, None].float(), 2 * pixels + 1, stride=1, padding=pixels)  # (1, 1, H, W)
    return pooled[0, 0] > 0


def near_miss_counts(prediction: torch.Tensor, label: torch.Tensor, class_index: int, tolerances) -> torch.Tensor:
    """(H, W) predicted and true classes -> (len(tolerances), 4) int64: per tolerance d, the predicted pixels of
    the class within d px of a true one, all its predicted pixels, its true pixels within d px of a predicted
    one, all its true pixels. Void pixels are neither predicted nor true."""
    valid = label != IGNORE_INDEX  # (H, W)
    predicted, truth = (prediction == class_index) & valid, label == class_index  # (H, W) each
    rows = []
    for pixels in tolerances:
        near_truth, near_prediction = _dilate(truth, pixels), _dilate(predicted, pixels)
        rows.append([int((predicted & near_truth).sum()), int(predicted.sum()),
                     int((truth & near_prediction).sum()), int(truth.sum())])  # fmt: skip
    return torch.tensor(rows, dtype=torch.int64)


def near_miss_table(counts: torch.Tensor, tolerances) -> list[dict]:
    """Summed near_miss_counts -> per tolerance the share of predicted pixels near a true one and vice versa."""
    return [
        {"pixels": pixels, "precision": float(c[0] / c[1]) if c[1] else None,
         "recall": float(c[2] / c[3]) if c[3] else None}
        for pixels, c in zip(tolerances, counts.double(), strict=True)
    ]  # fmt: skip


def offset_confusions(
    logits: torch.Tensor, label: torch.Tensor, class_index: int, offsets: Sequence[float]
) -> list[torch.Tensor]:
    """(1, K, H, W) logits, (1, H, W) labels -> one (K, K) confusion per offset added to the class's logit."""
    k = logits.shape[1]
    confusions = []
    for offset in offsets:
        shifted = logits.clone()
        shifted[:, class_index] += offset  # (1, K, H, W)
        confusions.append(confusion_matrix(shifted.argmax(1), label, k, IGNORE_INDEX))
    return confusions


def class_report(confusions: list[torch.Tensor], offsets: Sequence[float], class_index: int, names: list[str]):
    """JSON-ready: per offset the class's IoU, mIoU and predicted/true pixel ratio; at offset 0 where its pixels
    go (each class's share of the class's true pixels) and what it takes (share of its predicted pixels).
    A score with nothing to score (the class absent from the labels and the predictions) is None."""
    if 0.0 not in offsets:
        raise ValueError("the offsets must include 0 (the model as it is)")
    sweep = []
    for offset, confusion in zip(offsets, confusions, strict=True):
        scores = scores_from_confusion(confusion, names)
        truth = int(confusion[class_index].sum())
        predicted = int(confusion[:, class_index].sum())
        sweep.append(
            {
                "offset": offset,
                "iou": _finite(scores.iou[class_index]),
                "mIoU": _finite(scores.mean_iou),
                "predicted_over_true": predicted / truth if truth else None,
            }
        )
    base = confusions[list(offsets).index(0.0)].double()
    row, column = base[class_index], base[:, class_index]
    return {
        "class": names[class_index],
        "sweep": sweep,
        "recall_to": {name: float(row[j] / row.sum()) if row.sum() else None for j, name in enumerate(names)},
        "precision_from": {
            name: float(column[j] / column.sum()) if column.sum() else None for j, name in enumerate(names)
        },
    }


def _finite(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


UNDER_PREDICTED = 0.5  # predicted pixels per true one under which "no offset helps" means "not drawn enough"


def verdict(report: dict) -> str:
    """One sentence: does an offset on the class's logit fix it (calibration) or not (placement, recognition)?"""
    name, sweep = report["class"], report["sweep"]
    base = next(row for row in sweep if row["offset"] == 0.0)
    if base["predicted_over_true"] is None:
        return f"{name}: not in this split's labels: nothing to diagnose."
    best = max((row for row in sweep if row["iou"] is not None), key=lambda row: row["iou"])
    gain = 100 * (best["iou"] - base["iou"])
    if best["offset"] != base["offset"] and gain >= 1.0:
        return (
            f"{name}: an offset of {best['offset']:+g} on its logit lifts its IoU from {100 * base['iou']:.1f} to "
            f"{100 * best['iou']:.1f} (scored on this split): partly a calibration miss."
        )
    swept = f"no offset from {sweep[0]['offset']:+g} to {sweep[-1]['offset']:+g} lifts its IoU by a point"
    ratio = base["predicted_over_true"]
    if ratio < UNDER_PREDICTED:
        return (
            f"{name}: drawn on {ratio:.2f} pixels per true one and {swept} (best {100 * best['iou']:.1f} at "
            f"{best['offset']:+g}): not recognised, or under-predicted beyond the swept offsets (try larger ones)."
        )
    return (
        f"{name}: drawn on {ratio:.2f} pixels per true one, about as often as it occurs, and {swept} (best "
        f"{100 * best['iou']:.1f} at {best['offset']:+g}, {100 * base['iou']:.1f} without): its errors are "
        "misplaced pixels, not a calibration miss."
    )


def format_report(report: dict) -> str:
    lines = [
        f"Offset on {report['class']}'s logit (scored on the split itself):",
        "",
        f"| offset | {report['class']} IoU | mIoU | predicted / true pixels |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for row in report["sweep"]:
        ratio = "n/a" if row["predicted_over_true"] is None else f"{row['predicted_over_true']:.2f}"
        iou = _percent(row["iou"])
        miou = "n/a" if row["mIoU"] is None else f"{100 * row['mIoU']:.2f}"
        lines.append(f"| {row['offset']:+g} | {iou} | {miou} | {ratio} |")
    lines += [
        "",
        f"Where {report['class']}'s true pixels go, and where its predicted pixels come from (offset 0):",
        "",
        "| class | share of its true pixels (%) | share of its predicted pixels (%) |",
        "| --- | ---: | ---: |",
    ]
    for name, share in report["recall_to"].items():
        taken = report["precision_from"][name]
        lines.append(f"| {name} | {_percent(share)} | {_percent(taken)} |")
    if report.get("near_miss"):
        lines += [
            "",
            f"Near misses (offset 0): how much of {report['class']} is found within d pixels (square neighbourhood):",
            "",
            "| d (px) | predicted pixels within d of a true one (%) | true pixels within d of a predicted one (%) |",
            "| ---: | ---: | ---: |",
        ]
        for row in report["near_miss"]:
            lines.append(f"| {row['pixels']} | {_percent(row['precision'])} | {_percent(row['recall'])} |")
    return "\n".join(lines + ["", verdict(report)])


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


@torch.no_grad()
def sweep_checkpoint(args: argparse.Namespace) -> dict:
    model, metadata = load_checkpoint(args.checkpoint, device="cpu")
    names = list(metadata["class_names"])
    if args.class_name not in names:
        raise EvaluationError(f"class {args.class_name!r} is not one of the checkpoint's classes: {', '.join(names)}")
    spec = find_dataset(trained_dataset_name(metadata, args.dataset), args.data_root, args.split)
    if spec.num_classes != len(names):
        raise EvaluationError(
            f"checkpoint predicts {len(names)} classes but dataset {spec.name} has {spec.num_classes}"
        )
    dataset = SegmentationDataset(spec, EvalTransform(metadata["mean"], metadata["std"]))
    class_index = names.index(args.class_name)
    offsets = sorted(set(args.offsets) | {0.0})
    totals = [torch.zeros(len(names), len(names), dtype=torch.int64) for _ in offsets]
    tolerances = sorted(set(args.tolerances))
    near = torch.zeros(len(tolerances), 4, dtype=torch.int64)
    model.eval()
    count = len(dataset) if args.max_images is None else min(len(dataset), args.max_images)
    for index in tqdm(range(count), desc="predicting", disable=args.no_progress):
        image, label = dataset[index]
        logits = predict(model, image[None])  # (1, K, H, W)
        for total, confusion in zip(totals, offset_confusions(logits, label[None], class_index, offsets), strict=True):
            total += confusion
        near += near_miss_counts(logits[0].argmax(0), label, class_index, tolerances)
    report = class_report(totals, offsets, class_index, names)
    report["near_miss"] = near_miss_table(near, tolerances)
    return report | {"checkpoint": str(args.checkpoint), "split": spec.split, "images": count}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="checkpoint stem or .safetensors/.json path")
    parser.add_argument("--class", dest="class_name", required=True, help="the class to diagnose, e.g. Pole")
    parser.add_argument("--dataset", help="dataset name (default: the one it was trained on)")
    parser.add_argument("--data-root", help="dataset root (default: $CAMVID_ROOT, ...)")
    parser.add_argument("--split", default="val", help="split (default: val)")
    parser.add_argument(
        "--offsets",
        type=float,
        nargs="+",
        default=list(DEFAULT_OFFSETS),
        help="offsets added to the class's logit (0 is always included)",
    )
    parser.add_argument("--tolerances", type=int, nargs="+", default=list(DEFAULT_TOLERANCES),
                        help="distances in pixels for the near-miss table (default: 0 1 2 4 8)")  # fmt: skip
    parser.add_argument("--max-images", type=int, help="the first N images only")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if min(args.tolerances) < 0:
        parser.error(f"--tolerances must be 0 or more pixels (got {min(args.tolerances)})")
    if args.max_images is not None and args.max_images < 1:
        parser.error(f"--max-images must be 1 or more (got {args.max_images})")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = sweep_checkpoint(args)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.json is not None:
        write_json(args.json, report)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
