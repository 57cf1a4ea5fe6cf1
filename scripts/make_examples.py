"""Write the bundled examples (examples/) from a CamVid copy: a few train frames and one val clip, with labels.

The frames were chosen by their labels for the classes a newcomer should see attention on (cars,
pedestrians, bicyclists, poles, signs, sidewalk): `--suggest` prints that ranking again. Photos are written as
JPEG (quality 90) to keep the folder small; the label PNGs are copied byte for byte. Never the test split.

    python scripts/make_examples.py --camvid ../shared/datasets/camvid            # (re)write examples/
    python scripts/make_examples.py --camvid ../shared/datasets/camvid --suggest  # the ranking behind the choice
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "examples"
# split -> frames. The val frames are five consecutive labelled frames of sequence 0016E5: the video page's clip.
FRAMES = {
    "train": ["0001TP_006870", "0001TP_007110", "0016E5_07320", "0006R0_f03780"],
    "val": ["0016E5_08085", "0016E5_08087", "0016E5_08089", "0016E5_08091", "0016E5_08093"],
}
CLASSES = ("Sky", "Building", "Pole", "Road", "Sidewalk", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian",
           "Bicyclist")  # fmt: skip
# capped class shares, weighted so that a frame scores for showing each of the small classes at all
WANTED = {"Car": (0.05, 4), "Pedestrian": (0.02, 20), "Pole": (0.02, 20), "Sidewalk": (0.05, 4),
          "Bicyclist": (0.01, 20), "SignSymbol": (0.01, 10)}  # fmt: skip
JPEG_QUALITY = 90
MAX_BYTES = 2 * 2**20  # the limit for the whole folder


def class_shares(label_path: Path) -> np.ndarray:
    labels = cv2.imread(str(label_path), cv2.IMREAD_UNCHANGED)
    return np.bincount(labels.ravel(), minlength=256)[: len(CLASSES)] / labels.size  # (11,)


def score(shares: np.ndarray) -> float:
    return sum(min(shares[CLASSES.index(name)], cap) * weight for name, (cap, weight) in WANTED.items())


def suggest(camvid: Path, top: int = 12) -> None:
    rows = [
        (score(class_shares(p)), split, p.stem)
        for split in FRAMES
        for p in sorted((camvid / f"{split}annot").glob("*.png"))
    ]
    for value, split, stem in sorted(rows, reverse=True)[:top]:
        print(f"{value:.3f}  {split}/{stem}")


def write(camvid: Path, out: Path) -> int:
    """Write every chosen frame (JPEG) and its label (PNG, as it is); the folder's size in bytes."""
    for split, stems in FRAMES.items():
        for folder in (out / split, out / f"{split}annot"):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
        for stem in stems:
            image = cv2.imread(str(camvid / split / f"{stem}.png"), cv2.IMREAD_COLOR)
            if image is None:
                raise FileNotFoundError(f"{camvid / split / stem}.png is missing: is --camvid a CamVid root?")
            cv2.imwrite(str(out / split / f"{stem}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            shutil.copyfile(camvid / f"{split}annot" / f"{stem}.png", out / f"{split}annot" / f"{stem}.png")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    if total > MAX_BYTES:
        raise ValueError(f"examples/ holds {total / 2**20:.2f} MB, over the {MAX_BYTES / 2**20:.0f} MB limit")
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--camvid", type=Path, default=os.environ.get("CAMVID_ROOT"), help="CamVid root ($CAMVID_ROOT)")
    parser.add_argument("--out", type=Path, default=OUT, help="where to write (default: examples/)")
    parser.add_argument("--suggest", action="store_true", help="print the frames ranked by the wanted classes")
    args = parser.parse_args(argv)
    if args.camvid is None:
        parser.error("no CamVid: pass --camvid or set CAMVID_ROOT")
    if args.suggest:
        suggest(args.camvid)
        return 0
    print(f"wrote {args.out} ({write(args.camvid, args.out) / 2**20:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
