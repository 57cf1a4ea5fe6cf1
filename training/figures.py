"""Figures for docs/RESULTS.md, drawn from CamVid frames and the bundled models (never committed).

    python -m training.figures --data-root ../shared/datasets/camvid --out figures/

Needs matplotlib (pip install -r requirements-dev.txt). Writes into --out (ignored by git):
  influence_<frame>.png   one val frame, a pixel on it, and that pixel's influence map after each loop
                          (ccnet.propagation.influence_maps on the model's own attention), for each model
  miou_vs_r.png           val mIoU of every bundled model run at R = 1, 2, 3 (from the report's summary.json)
CamVid is for research and education use: keep these figures out of the repository.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ccnet.checkpoint import CheckpointError, load_checkpoint, read_index
from ccnet.datasets import DatasetError, find_dataset, load_sample
from ccnet.preprocess import to_tensor
from ccnet.propagation import influence_maps

COMMAND = "python -m training.figures"


class FigureError(Exception):
    """The figures cannot be drawn as asked; the message says what to do."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=COMMAND,
        description="Draw per-loop influence maps on CamVid val frames and the mIoU-vs-R chart "
        "(needs matplotlib: pip install -r requirements-dev.txt). The figures show CamVid images: never commit them.",
    )
    parser.add_argument("--checkpoints", type=Path, default=Path("checkpoints"), help="folder with index.json")
    parser.add_argument("--models", nargs="+", help="model names (default: every indexed model with attention)")
    parser.add_argument("--data-root", help="CamVid root (default: $CAMVID_ROOT)")
    parser.add_argument("--split", default="val", help="split to draw frames from (default: val)")
    parser.add_argument("--frames", type=int, default=3, help="how many frames, evenly spread over the split")
    parser.add_argument("--recurrence", type=int, default=3, help="loops to unroll for the maps (default: 3)")
    parser.add_argument(
        "--pixel", type=float, nargs=2, metavar=("Y", "X"), default=(0.55, 0.5),
        help="the pixel whose influence is drawn, as fractions of the frame's height and width",
    )  # fmt: skip
    parser.add_argument(
        "--mode",
        choices=["attention", "rollout"],
        default="attention",
        help="attention: compose the attention alone; rollout: |gamma| A + I per loop, with the model's gamma",
    )
    parser.add_argument("--summary", type=Path, default=Path("results/camvid/summary.json"), help="report summary")
    parser.add_argument("--out", type=Path, default=Path("figures"), help="output folder (git-ignored)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise FigureError("matplotlib is missing: pip install -r requirements-dev.txt") from error
    return plt


def attention_models(folder: Path, wanted: Sequence[str] | None) -> list[str]:
    models = read_index(folder)["models"]
    names = [m["name"] for m in models if wanted or m["recurrence"] > 0]
    if wanted:
        missing = sorted(set(wanted) - set(names))
        if missing:
            raise FigureError(f"no checkpoint {', '.join(missing)} in {folder}: choose from {', '.join(names)}")
        return list(wanted)
    if not names:
        raise FigureError(f"no checkpoint with attention in {folder}: export one first (docs/TRAINING.md)")
    return names


@torch.no_grad()
def loop_influence(
    model, image_rgb: np.ndarray, metadata: dict, pixel, recurrence: int, mode: str = "attention"
) -> np.ndarray:
    """(R, H, W) influence on the chosen pixel after 1..R loops, upsampled to the frame for drawing."""
    if model.attention is None:
        raise FigureError("a baseline (R = 0) has no attention to draw: pick a model with R >= 1")
    images = to_tensor(image_rgb, metadata["mean"], metadata["std"])  # (1, 3, H, W)
    output = model(images, recurrence=recurrence, return_attention=True)
    h, w = output.attentions[0].shape[1:3]
    y, x = min(int(pixel[0] * h), h - 1), min(int(pixel[1] * w), w - 1)  # feature position of the pixel
    gamma = float(model.attention.cca.gamma.detach())  # the residual scale rollout uses
    maps = influence_maps(output.attentions, y, x, mode=mode, gammas=gamma)  # (1, R, h, w)
    upsampled = F.interpolate(maps, size=image_rgb.shape[:2], mode="nearest")  # (1, R, H, W)
    return upsampled[0].numpy()


def draw_influence(plt, image_rgb: np.ndarray, rows: dict[str, np.ndarray], pixel, path: Path) -> None:
    loops = next(iter(rows.values())).shape[0]
    figure, axes = plt.subplots(len(rows), loops + 1, figsize=(3.2 * (loops + 1), 2.6 * len(rows)), squeeze=False)
    height, width = image_rgb.shape[:2]
    for row, (name, maps) in enumerate(rows.items()):
        axes[row, 0].imshow(image_rgb)
        axes[row, 0].plot(pixel[1] * width, pixel[0] * height, "r+", markersize=14, markeredgewidth=2)
        axes[row, 0].set_title(name, fontsize=9)
        for loop in range(loops):
            axes[row, loop + 1].imshow(image_rgb, alpha=0.45)
            axes[row, loop + 1].imshow(maps[loop] / maps[loop].max(), cmap="inferno", alpha=0.65)
            axes[row, loop + 1].set_title(f"influence after {loop + 1} loop{'s' if loop else ''}", fontsize=9)
    for axis in axes.flat:
        axis.set_axis_off()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def draw_miou_vs_r(plt, summary: dict, path: Path) -> None:
    figure, axis = plt.subplots(figsize=(6, 4))
    for model in summary["models"]:
        at = model["mIoU_at_recurrence"]
        if not at:  # the baseline has no attention: one line across
            axis.axhline(100 * model["mIoU"], color="grey", linestyle="--", label=f"{model['name']} (no attention)")
            continue
        loops = sorted(at, key=int)
        axis.plot([int(r) for r in loops], [100 * at[r] for r in loops], marker="o", label=model["name"])
        axis.plot(model["trained_recurrence"], 100 * at[str(model["trained_recurrence"])], "k*", markersize=10)
    axis.set_xticks([1, 2, 3])
    axis.set_xlabel("loops run at evaluation (R); * = trained R")
    axis.set_ylabel(f"{summary['split']} mIoU (%)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def frame_indices(count: int, frames: int) -> list[int]:
    return sorted({round(i * (count - 1) / max(frames - 1, 1)) for i in range(min(frames, count))})


def make_figures(args: argparse.Namespace) -> list[Path]:
    plt = _pyplot()
    names = attention_models(args.checkpoints, args.models)
    spec = find_dataset("camvid", args.data_root, args.split)
    loaded = {name: load_checkpoint(args.checkpoints / name, device="cpu") for name in names}
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    indices = frame_indices(len(spec.samples), args.frames)
    for index in tqdm(indices, desc="influence maps", disable=args.no_progress):
        sample = spec.samples[index]
        image_rgb, _ = load_sample(sample, spec)  # (H, W, 3) uint8
        rows = {
            name: loop_influence(m, image_rgb, meta, args.pixel, args.recurrence, args.mode)
            for name, (m, meta) in loaded.items()
        }
        path = args.out / f"influence_{Path(sample.image).stem}.png"
        draw_influence(plt, image_rgb, rows, args.pixel, path)
        written.append(path)
    if args.summary.is_file():
        path = args.out / "miou_vs_r.png"
        draw_miou_vs_r(plt, json.loads(args.summary.read_text()), path)
        written.append(path)
    else:
        print(f"no {args.summary}: run python -m training.report first for the mIoU-vs-R chart", file=sys.stderr)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        written = make_figures(args)
    except (FigureError, DatasetError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} figures to {args.out} (CamVid images: do not commit them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
