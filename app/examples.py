"""The examples folder: a dataset in a layout `ccnet.datasets` knows (labels too), or plain images.

Layout knowledge lives in ccnet.datasets; this module only asks it which layout fits and reads
labels through it, so the app and the evaluation script agree on what every label value means.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.images import DecodedImage, ImageError, decode_image, resize_labels
from ccnet import datasets

SPLITS = ("val", "train", "test")
HOW_TO_SET_EXAMPLES = (
    "No examples folder is set. Point `CCNET_EXAMPLES` at a folder of images or at a dataset root "
    "(CamVid in the SegNet layout first; Cityscapes, ADE20K and the generic folder layout work too), e.g.\n\n"
    "```bash\nCCNET_EXAMPLES=../shared/datasets/camvid streamlit run app/main.py\n```\n\n"
    "Dataset images are never part of this repository."
)


@dataclass(frozen=True)
class Example:
    name: str  # shown in the picker, e.g. "val/0016E5_07959.png"
    image: Path
    label: Path | None = None
    split: str = ""


@dataclass
class ExampleSet:
    folder: Path | None
    layout: str | None  # "camvid", "cityscapes", ... or None for plain images
    examples: list[Example]
    message: str  # what was found, or why the list is empty
    spec_by_split: dict[str, datasets.DatasetSpec] | None = None

    @property
    def has_labels(self) -> bool:
        return self.layout is not None


@dataclass
class LoadedExample:
    image: DecodedImage
    labels: np.ndarray | None  # (H, W) uint8 class indices, 255 = ignore, at the decoded image's size
    class_names: list[str] | None  # the dataset's classes, when labels are there
    palette: np.ndarray | None  # (K, 3)


def discover_examples(folder: Path | None) -> ExampleSet:
    """Try each dataset layout (CamVid first), then fall back to the image files in the folder itself."""
    if folder is None:
        return ExampleSet(None, None, [], HOW_TO_SET_EXAMPLES)
    if not folder.is_dir():
        return ExampleSet(folder, None, [], f"The examples folder `{folder}` (CCNET_EXAMPLES) is not there.")
    for layout, find in datasets.LAYOUTS.items():
        specs = _splits_found(find, folder)
        if specs:
            examples = [
                Example(f"{split}/{sample.image.name}", sample.image, sample.label, split)
                for split, spec in specs.items()
                for sample in spec.samples
            ]
            message = f"{layout} dataset at `{folder}`: {len(examples)} images with ground truth."
            return ExampleSet(folder, layout, examples, message, specs)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _SUFFIXES and p.is_file())
    images = [Example(p.name, p) for p in files]
    message = (
        f"`{folder}`: {len(images)} images (no dataset layout recognised, so no ground truth)."
        if images
        else f"`{folder}` holds no images (PNG, JPEG, WebP, BMP, TIFF) and no known dataset layout."
    )
    return ExampleSet(folder, None, images, message)


_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


def _splits_found(find, folder: Path) -> dict[str, datasets.DatasetSpec]:
    specs = {}
    for split in SPLITS:
        try:
            spec = find(folder, split)
        except Exception:  # this layout or split is not there: try the next one
            continue
        if spec.samples:
            specs[split] = spec
    return specs


def load_example(example_set: ExampleSet, example: Example, max_side: int) -> LoadedExample:
    """Decode the image safely; read and map its label through the dataset's layout when there is one."""
    try:
        data = example.image.read_bytes()
    except OSError as error:
        raise ImageError(f"'{example.name}' could not be read ({error}).") from error
    image = decode_image(data, max_side=max_side, name=example.name)
    if example.label is None or not example_set.spec_by_split:
        return LoadedExample(image, None, None, None)
    spec = example_set.spec_by_split[example.split]
    try:
        raw = datasets.read_label(example.label)  # (H0, W0) as stored
        labels = datasets.map_label(raw, spec.label_lut, example.label, spec.num_classes)  # (H0, W0)
    except datasets.DatasetError as error:
        image.notices.append(f"Ground truth not used: {error}")
        return LoadedExample(image, None, None, None)
    if labels.shape != tuple(image.original_size):
        image.notices.append(
            f"Ground truth not used: its size {labels.shape[1]} x {labels.shape[0]} differs from the image's."
        )
        return LoadedExample(image, None, None, None)
    labels = resize_labels(labels, (image.height, image.width))  # (H, W)
    palette = np.asarray(spec.classes.palette, dtype=np.uint8).reshape(-1, 3)  # (K, 3)
    return LoadedExample(image, labels, list(spec.classes.names), palette)
