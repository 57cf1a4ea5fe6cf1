"""Segmentation datasets on disk: CamVid (SegNet layout), Cityscapes, ADE20K and a generic folder.

Each layout is found by a small function that lists (image, label) pairs and says how raw label values
map to training labels (a 256-entry lookup table, -1 marking values that must not occur). Every problem
with the data on disk raises `DatasetError` naming the file and what to do about it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image, UnidentifiedImageError

from ccnet.classes import (
    ADE20K,
    CAMVID,
    CITYSCAPES,
    CITYSCAPES_LABEL_TO_TRAIN_ID,
    CITYSCAPES_NUM_LABEL_IDS,
    DatasetClasses,
    voc_colormap,
)

IGNORE_INDEX = 255
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
ROOT_ENV_VARS = {
    "camvid": "CAMVID_ROOT",
    "cityscapes": "CITYSCAPES_ROOT",
    "ade20k": "ADE20K_ROOT",
    "folder": "SEGMENTATION_ROOT",
}
FOLDER_CLASS_FILE = "classes.yaml"


class DatasetError(Exception):
    """A problem with the data on disk, worded for the person who has to fix it."""


@dataclass(frozen=True)
class Sample:
    image: Path
    label: Path


@dataclass
class DatasetSpec:
    """What a layout resolved to: the files of one split and how to read their labels."""

    name: str
    root: Path
    split: str
    samples: list[Sample]
    classes: DatasetClasses
    label_lut: np.ndarray  # (256,) int16: raw label value -> class index, 255 (ignore) or -1 (invalid)
    # How file names order frames into sequences (ccnet.sequences): a regex with groups seq and num, or None
    # for a dataset of unrelated images. CamVid's names are SEQUENCE_NUMBER; a folder dataset may give its own.
    frame_order: str | None = None

    @property
    def num_classes(self) -> int:
        return self.classes.num_classes


# --- finding the root and the files -------------------------------------------------------------------


def resolve_root(dataset: str, root: str | os.PathLike | None) -> Path:
    """The dataset root from the argument, else from the dataset's environment variable."""
    env_var = ROOT_ENV_VARS.get(dataset)
    if root is None or str(root) == "":
        root = os.environ.get(env_var) if env_var else None
    if not root:
        raise DatasetError(
            f"no root folder given for dataset {dataset!r}: "
            "pass --data-root PATH (or data.root in the config)"
            + (f" or set the environment variable {env_var}" if env_var else "")
        )
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DatasetError(f"dataset root {path} does not exist or is not a folder: check --data-root / {env_var}")
    return path


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _require_folders(root: Path, folders: list[str], layout: str) -> None:
    missing = [name for name in folders if not (root / name).is_dir()]
    if missing:
        raise DatasetError(
            f"{root} does not look like a {layout.splitlines()[0]} dataset: missing folder(s) "
            f"{', '.join(missing)}. Expected layout:\n{layout}"
        )


def _pair_by_stem(images: list[Path], label_folder: Path, label_name: Callable[[Path], str]) -> list[Sample]:
    samples = []
    for image in images:
        label = label_folder / label_name(image)
        if not label.is_file():
            raise DatasetError(f"image {image} has no label: expected {label}. Add the label or remove the image.")
        samples.append(Sample(image, label))
    return samples


def _lut(mapping: dict[int, int]) -> np.ndarray:
    table = np.full(256, -1, dtype=np.int16)
    for raw, mapped in mapping.items():
        table[raw] = mapped
    return table


CAMVID_LAYOUT = """CamVid (SegNet 11-class release)
  ROOT/train/*.png       ROOT/trainannot/*.png   (labels 0-10, 11 = void; photos may be JPEG)
  ROOT/val/*.png         ROOT/valannot/*.png
  ROOT/test/*.png        ROOT/testannot/*.png    (optional)"""


CAMVID_FRAME_ORDER = r"^(?P<seq>[^_]+)_f?(?P<num>\d+)$"  # 0016E5_07959, 0006R0_f00930


def find_camvid(root: Path, split: str) -> DatasetSpec:
    _require_folders(root, [split, f"{split}annot"], CAMVID_LAYOUT)
    # Labels are PNGs of the image's name; a JPEG photo (the bundled examples) pairs with its stem's PNG.
    samples = _pair_by_stem(_list_images(root / split), root / f"{split}annot", lambda image: f"{image.stem}.png")
    lut = _lut({index: index for index in range(CAMVID.num_classes)} | {11: IGNORE_INDEX, 255: IGNORE_INDEX})
    return DatasetSpec("camvid", root, split, samples, CAMVID, lut, CAMVID_FRAME_ORDER)


CITYSCAPES_LAYOUT = """Cityscapes
  ROOT/leftImg8bit/{train,val,test}/CITY/*_leftImg8bit.png
  ROOT/gtFine/{train,val,test}/CITY/*_gtFine_labelIds.png"""


def find_cityscapes(root: Path, split: str) -> DatasetSpec:
    _require_folders(root, [f"leftImg8bit/{split}", f"gtFine/{split}"], CITYSCAPES_LAYOUT)
    images = sorted((root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))
    samples = []
    for image in images:
        stem = image.name[: -len("_leftImg8bit.png")]
        label = root / "gtFine" / split / image.parent.name / f"{stem}_gtFine_labelIds.png"
        if not label.is_file():
            raise DatasetError(f"image {image} has no label: expected {label}. Add the label or remove the image.")
        samples.append(Sample(image, label))
    mapping = {label_id: IGNORE_INDEX for label_id in range(CITYSCAPES_NUM_LABEL_IDS)}
    mapping |= CITYSCAPES_LABEL_TO_TRAIN_ID
    mapping[255] = IGNORE_INDEX  # some tools write 255 for "unlabelled"
    return DatasetSpec("cityscapes", root, split, samples, CITYSCAPES, _lut(mapping))


ADE20K_LAYOUT = """ADE20K (ADEChallengeData2016; ROOT may be that folder or its parent)
  ROOT/images/{training,validation}/*.jpg
  ROOT/annotations/{training,validation}/*.png   (0 = void, 1-150 = classes)"""
ADE20K_SPLITS = {"train": "training", "val": "validation", "training": "training", "validation": "validation"}


def find_ade20k(root: Path, split: str) -> DatasetSpec:
    if (root / "ADEChallengeData2016").is_dir():
        root = root / "ADEChallengeData2016"
    if split not in ADE20K_SPLITS:
        raise DatasetError(f"ADE20K has splits train/val (training/validation), not {split!r}")
    folder = ADE20K_SPLITS[split]
    _require_folders(root, [f"images/{folder}", f"annotations/{folder}"], ADE20K_LAYOUT)
    samples = _pair_by_stem(
        _list_images(root / "images" / folder),
        root / "annotations" / folder,
        lambda image: image.stem + ".png",
    )
    # Stored labels are shifted by one so that 0 can mean void.
    lut = _lut({0: IGNORE_INDEX, 255: IGNORE_INDEX} | {raw: raw - 1 for raw in range(1, ADE20K.num_classes + 1)})
    return DatasetSpec("ade20k", root, split, samples, ADE20K, lut)


FOLDER_LAYOUT = f"""generic folder of image/mask pairs
  ROOT/{FOLDER_CLASS_FILE}          names: [class0, class1, ...]; optional palette: [[r, g, b], ...],
                                optional ignore_index: 255
  ROOT/images/SPLIT/NAME.png|jpg
  ROOT/masks/SPLIT/NAME.png     (single channel, class indices 0..K-1 or the ignore index)"""


def read_folder_classes(root: Path) -> tuple[DatasetClasses, int]:
    """The class file of a generic folder dataset: its classes and the mask value meaning 'ignore'."""
    classes, ignore_index, _ = _read_folder_file(root)
    return classes, ignore_index


def _read_folder_file(root: Path) -> tuple[DatasetClasses, int, str | None]:
    path = root / FOLDER_CLASS_FILE
    if not path.is_file():
        raise DatasetError(f"{path} is missing. Expected layout:\n{FOLDER_LAYOUT}")
    try:
        content = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise DatasetError(f"{path} is not valid YAML: {error}") from error
    names = content.get("names") if isinstance(content, dict) else None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names) or len(names) > 255:
        raise DatasetError(f"{path}: 'names' must be a list of 1 to 255 class names (strings)")
    palette = content.get("palette") or [list(c) for c in voc_colormap(len(names))]
    if len(palette) != len(names) or not all(
        isinstance(c, list) and len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c) for c in palette
    ):
        raise DatasetError(f"{path}: 'palette' must hold one [r, g, b] (0-255 integers) per class name")
    ignore_index = content.get("ignore_index", IGNORE_INDEX)
    if not isinstance(ignore_index, int) or not len(names) <= ignore_index <= 255:
        raise DatasetError(f"{path}: 'ignore_index' must be an integer from {len(names)} to 255")
    classes = DatasetClasses(str(content.get("dataset", root.name)), tuple(names), tuple(tuple(c) for c in palette))
    order = content.get("frame_order")
    if order is not None:
        try:
            groups = re.compile(order).groupindex if isinstance(order, str) else {}
        except re.error as error:
            raise DatasetError(f"{path}: 'frame_order' is not a regular expression ({error})") from error
        if not {"seq", "num"} <= set(groups):
            raise DatasetError(
                f"{path}: 'frame_order' must have the named groups seq and num, e.g. {CAMVID_FRAME_ORDER!r}"
            )
    return classes, ignore_index, order


def find_folder(root: Path, split: str) -> DatasetSpec:
    classes, ignore_index, order = _read_folder_file(root)
    _require_folders(root, [f"images/{split}", f"masks/{split}"], FOLDER_LAYOUT)
    samples = _pair_by_stem(
        _list_images(root / "images" / split), root / "masks" / split, lambda image: image.stem + ".png"
    )
    lut = _lut({index: index for index in range(classes.num_classes)} | {ignore_index: IGNORE_INDEX})
    return DatasetSpec("folder", root, split, samples, classes, lut, order)


LAYOUTS: dict[str, Callable[[Path, str], DatasetSpec]] = {
    "camvid": find_camvid,
    "cityscapes": find_cityscapes,
    "ade20k": find_ade20k,
    "folder": find_folder,
}


def find_dataset(name: str, root: str | os.PathLike | None, split: str) -> DatasetSpec:
    """Resolve a dataset by layout name, root (or its environment variable) and split."""
    if name not in LAYOUTS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(LAYOUTS)}")
    spec = LAYOUTS[name](resolve_root(name, root), split)
    if not spec.samples:
        raise DatasetError(f"no images found for split {split!r} of {name} under {spec.root}")
    return spec


# --- reading and checking one sample ------------------------------------------------------------------


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB; unreadable files raise DatasetError."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise DatasetError(
            f"cannot read image {path} ({error}); replace the file or remove it from the split"
        ) from error


def read_label(path: Path) -> np.ndarray:
    """(H, W) raw label values as stored (uint8 or wider); a colour-coded mask raises DatasetError."""
    try:
        with Image.open(path) as image:
            if image.mode in ("RGB", "RGBA"):
                raise DatasetError(
                    f"label {path} is a {image.mode} colour image; "
                    "expected a single-channel PNG of class indices "
                    "(convert colour-coded masks to indices first)"
                )
            return np.asarray(image)
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise DatasetError(
            f"cannot read label {path} ({error}); replace the file or remove it from the split"
        ) from error


def map_label(raw: np.ndarray, lut: np.ndarray, path: Path, num_classes: int) -> np.ndarray:
    """Raw stored values -> (H, W) uint8 class indices, 255 = ignore; unexpected values raise DatasetError."""
    too_large = (raw < 0) | (raw >= len(lut))
    safe = np.where(too_large, 0, raw).astype(np.intp)
    mapped = lut[safe]  # (H, W) int16
    invalid = (mapped < 0) | too_large
    if invalid.any():
        values = np.unique(raw[invalid]).tolist()
        shown = ", ".join(str(v) for v in values[:20]) + (" ..." if len(values) > 20 else "")
        raise DatasetError(
            f"label {path} holds values {shown} outside the {num_classes} classes and the ignore value: "
            "check that it belongs to this dataset layout (or fix the mask)"
        )
    return mapped.astype(np.uint8)


def load_sample(sample: Sample, spec: DatasetSpec) -> tuple[np.ndarray, np.ndarray]:
    """Image (H, W, 3) uint8 and label (H, W) uint8, checked against each other."""
    image = read_image(sample.image)
    raw = read_label(sample.label)
    if raw.ndim != 2:
        raise DatasetError(f"label {sample.label} has shape {raw.shape}; expected a single-channel (H, W) mask")
    if raw.shape != image.shape[:2]:
        raise DatasetError(
            f"image {sample.image} is {image.shape[1]}x{image.shape[0]} but its label {sample.label} is "
            f"{raw.shape[1]}x{raw.shape[0]} (width x height): they must match pixel for pixel"
        )
    return image, map_label(raw, spec.label_lut, sample.label, spec.num_classes)


# --- the torch Dataset --------------------------------------------------------------------------------

Transform = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[torch.Tensor, torch.Tensor]]


class SegmentationDataset(torch.utils.data.Dataset):
    """Samples of one split; `dataset[(epoch, index)]` draws augmentation from a per-sample seed.

    Seeding each sample by (seed, epoch, index) makes augmentation independent of worker processes and
    their order, so a resumed run sees exactly the crops the uninterrupted run would have seen.
    """

    def __init__(self, spec: DatasetSpec, transform: Transform, seed: int = 0):
        self.spec = spec
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.spec.samples)

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        image, label = load_sample(self.spec.samples[index], self.spec)
        rng = np.random.default_rng([self.seed, epoch, index])
        return self.transform(image, label, rng)  # (3, H, W) float32, (H, W) int64
