"""The examples folder: a dataset in a layout `ccnet.datasets` knows (labels too), or plain images.

Layout knowledge lives in ccnet.datasets; this module only asks it which layout fits and reads
labels through it, so the app and the evaluation script agree on what every label value means.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.images import DecodedImage, ImageError, decode_image, resize_labels
from ccnet import datasets

SPLITS = ("val", "train", "test")
START_FILE = "start.json"  # optional, in an examples folder: the first view of each page (examples/start.json)
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


@dataclass(frozen=True)
class StartView:
    """The view a page opens on before any click: an example, a pixel of it (original pixels) and why."""

    example: str  # an Example.name, e.g. "train/0001TP_006870.jpg"
    point: tuple[int, int]  # (x, y) in the example's pixels as stored
    frame: int = 0  # the video page: which frame of the clip is clicked
    why: str = ""  # what the pixel is, in a few words ("a car: ...")

    def point_in(self, image: DecodedImage) -> tuple[int, int]:
        """The point in the decoded image's pixels (it may have been scaled down to the app's max side)."""
        width, height = image.original_size[1], image.original_size[0]
        x = min(round(self.point[0] * image.width / width), image.width - 1)
        y = min(round(self.point[1] * image.height / height), image.height - 1)
        return x, y


@dataclass
class ExampleSet:
    folder: Path | None
    layout: str | None  # "camvid", "cityscapes", ... or None for plain images
    examples: list[Example]
    message: str  # what was found, or why the list is empty
    spec_by_split: dict[str, datasets.DatasetSpec] | None = None
    starts: dict[str, StartView] | None = None  # page ("explorer", "video") -> its first view, from START_FILE

    def start(self, page: str) -> StartView | None:
        """The page's first view, when the folder names one of its own examples."""
        view = (self.starts or {}).get(page)
        return view if view is not None and view.example in {e.name for e in self.examples} else None

    @property
    def has_labels(self) -> bool:
        return self.layout is not None


@dataclass
class LoadedExample:
    image: DecodedImage
    labels: np.ndarray | None  # (H, W) uint8 class indices, 255 = ignore, at the decoded image's size
    class_names: list[str] | None  # the dataset's classes, when labels are there
    palette: np.ndarray | None  # (K, 3)


def read_starts(folder: Path) -> dict[str, StartView]:
    """The folder's START_FILE, page by page; a missing or malformed file gives no start (never an error)."""
    try:
        spec = json.loads((folder / START_FILE).read_text())
        return {
            page: StartView(str(view["example"]), (int(view["point"][0]), int(view["point"][1])),
                            int(view.get("frame", 0)), str(view.get("why", "")))  # fmt: skip
            for page, view in spec.items()
        }
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return {}


def discover_examples(folder: Path | None) -> ExampleSet:
    """Try each dataset layout (CamVid first), then fall back to the image files in the folder itself."""
    found = _discover(folder)
    if found.folder is not None and found.examples:
        found.starts = read_starts(found.folder)
    return found


def _discover(folder: Path | None) -> ExampleSet:
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
