"""Backbone features of a trained model, computed once and kept on disk, so heads train in minutes.

Every other CamVid model is a head on the campaign's frozen backbone (docs/TRAINING.md, "Heads"). Its
backbone runs once per train frame at a fixed set of scales x flips and once per val frame (scale 1, no flip);
each result is one safetensors file holding the backbone's three outputs in float16 and the label at that
scale:

    final (320, h, w), aux (96, h, w), low (24, H'/4, W'/4: 2h x 2w or a row / column less), label (H', W') uint8

The folder (outside the repository: ``$CCNET_CACHE_DIR/features/<save_id>``) is keyed by the backbone's
checkpoint save, so features of another backbone are never mixed in. ``manifest.json`` says what is there.

    python -m training.feature_cache runs/camvid_r2_campaign/last --data-root ../shared/datasets/camvid
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from ccnet.checkpoint import load_checkpoint
from ccnet.datasets import find_dataset, load_sample
from ccnet.preprocess import normalize_image

TRAIN_SCALES = (0.75, 1.0, 1.25)
FLIPS = (False, True)
MANIFEST = "manifest.json"


def default_cache_root() -> Path:
    return Path(os.environ.get("CCNET_CACHE_DIR", Path.home() / ".cache" / "ccnet")) / "features"


@dataclass(frozen=True)
class Variant:
    scale: float
    flip: bool

    @property
    def tag(self) -> str:
        return f"s{int(round(100 * self.scale))}{'f' if self.flip else ''}"


def variants(split: str, scales=TRAIN_SCALES, flips=FLIPS) -> list[Variant]:
    if split == "train":
        return [Variant(s, f) for s in scales for f in flips]
    return [Variant(1.0, False)]


def prepare(image: np.ndarray, label: np.ndarray, variant: Variant) -> tuple[np.ndarray, np.ndarray]:
    """The frame and its label at a variant's scale and flip: (H', W', 3) uint8, (H', W') uint8."""
    if variant.scale != 1.0:
        size = (round(image.shape[1] * variant.scale), round(image.shape[0] * variant.scale))  # (W', H')
        image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        label = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)
    if variant.flip:
        image, label = image[:, ::-1], label[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(label)


@torch.no_grad()
def encode_file(model, image: np.ndarray, label: np.ndarray, mean, std, path: Path) -> None:
    batch = normalize_image(image, mean, std).unsqueeze(0)  # (1, 3, H', W')
    features = model.encode(batch)
    tensors = {name: getattr(features, name)[0].to(torch.float16).contiguous() for name in ("final", "aux", "low")}
    tensors["label"] = torch.from_numpy(label)  # (H', W') uint8
    temporary = path.with_suffix(".tmp")
    save_file(tensors, str(temporary))
    temporary.replace(path)


def cache_features(
    checkpoint: str | Path,
    data_root: str | Path | None,
    out: str | Path | None = None,
    splits=("train", "val"),
    scales=TRAIN_SCALES,
    show_progress: bool = True,
    max_images: int | None = None,
) -> Path:
    """Write (or complete) the feature cache of a checkpoint's backbone; returns its folder."""
    model, metadata = load_checkpoint(checkpoint, device="cpu")
    if getattr(model, "decoder", None) is None:
        print("note: this model has no skip decoder; heads will still get its stride-4 features", file=sys.stderr)
    model.eval()
    folder = Path(out) if out else default_cache_root() / metadata["save_id"]
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {
        "checkpoint": str(checkpoint),
        "save_id": metadata["save_id"],
        "model_config": metadata["model_config"],
        "mean": metadata["mean"],
        "std": metadata["std"],
        "class_names": metadata["class_names"],
        "splits": {},
    }
    dataset = metadata.get("dataset") or "camvid"
    for split in splits:
        spec = find_dataset(dataset, data_root, split)
        samples = spec.samples[:max_images] if max_images else spec.samples
        entries = []
        jobs = [(i, s, v) for i, s in enumerate(samples) for v in variants(split, scales)]
        for index, sample, variant in tqdm(jobs, desc=f"features {split}", disable=not show_progress):
            path = folder / f"{split}_{index:04d}_{variant.tag}.safetensors"
            if not path.is_file():
                image, label = prepare(*load_sample(sample, spec), variant)
                encode_file(model, image, label, metadata["mean"], metadata["std"], path)
            entry = {"file": path.name, "frame": sample.image.name, "scale": variant.scale, "flip": variant.flip}
            entries.append(entry)
        manifest["splits"][split] = entries
        manifest["frame_order"] = spec.frame_order  # how training.heads orders frames into clips
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return folder


def read_manifest(folder: str | Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no feature cache in {folder} (no {MANIFEST}): run python -m training.feature_cache")
    return json.loads(path.read_text())


def load_entry(folder: str | Path, entry: dict) -> dict[str, torch.Tensor]:
    return load_file(str(Path(folder) / entry["file"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="the backbone's checkpoint (stem, .safetensors or .json)")
    parser.add_argument("--data-root", help="dataset root ($CAMVID_ROOT)")
    parser.add_argument("--out", help="cache folder (default $CCNET_CACHE_DIR/features/<save_id>)")
    parser.add_argument("--max-images", type=int, help="first N frames of each split only (a quick look)")
    args = parser.parse_args(argv)
    folder = cache_features(args.checkpoint, args.data_root, args.out, max_images=args.max_images)
    print(f"features in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
