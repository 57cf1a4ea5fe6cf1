"""Which models exist (the checkpoint folders' indexes), on which device they run, and loading one.

The catalogue joins the bundled folder (CCNET_CHECKPOINTS) and any extra folders (CCNET_EXTRA_CHECKPOINTS,
e.g. converted published models, docs/CONVERT.md). A folder is read through its index.json, or, when it
has none, by scanning its NAME.safetensors + NAME.json pairs; what cannot be listed becomes a problem
message for the page, never a crash.

Nothing here caches: the Streamlit page wraps `load_model` in `st.cache_resource`, so each model is
loaded once per server process and shared by every session.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ccnet.checkpoint import (
    INDEX_FILE,
    checkpoint_paths,
    index_entry,
    load_checkpoint,
    read_index,
    read_metadata,
    recipe_name,
)

LOOP_COUNTS = (1, 2, 3)
HOW_TO_MAKE_A_CHECKPOINT = (
    "Train one, then export it into the checkpoint folder (which also writes its `index.json`):\n\n"
    "```bash\n"
    "python -m training.train --config training/configs/camvid_r2.yaml --out runs/camvid_r2 \\\n"
    "    --data-root ../shared/datasets/camvid\n"
    "python -m training.export runs/camvid_r2 checkpoints/camvid_r2 --default\n"
    "```\n\n"
    "To serve another folder of checkpoints, start the app with `CCNET_CHECKPOINTS=/path/to/folder`; to add "
    "folders (e.g. converted published models, docs/CONVERT.md), `CCNET_EXTRA_CHECKPOINTS=/path/a:/path/b`."
)


class ModelError(RuntimeError):
    """A model the app cannot serve; the message says which file and what to do."""


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    path: Path  # the .safetensors file
    recurrence: int  # the loop count it was trained with
    dataset: str
    ccl: bool = False
    miou: float | None = None
    num_classes: int | None = None  # None: an index written before the field existed
    folder_label: str = ""  # which folder it came from, shown when the catalogue joins several
    frames: int | None = None  # a video model's clip length T (ccnet.video_model); None for image models
    head_on: str | None = None  # a head on another checkpoint's frozen backbone (its save_id); None: end to end
    attention_weight: float | None = None  # the affinity loss's weight it trained with (None: not recorded)
    gamma_init: float | None = None  # the attention scale it started from (None: not recorded)

    @property
    def recipe(self) -> tuple:
        """What a per-R comparison keeps equal besides R: trained end to end or as a head, CCL, the attention's
        supervision and its starting scale."""
        return (self.head_on is not None, self.ccl, self.attention_weight, self.gamma_init)

    @property
    def recipe_words(self) -> str:
        """The recipe in a few words for a column title: "" for the default's kind, "paper's losses" for gamma
        from 0 without the affinity loss."""
        paper = recipe_name(self.recurrence, self.gamma_init, self.attention_weight) == "paper"
        return "paper's losses" if paper else ""

    @property
    def label(self) -> str:
        extras = [f"R={self.recurrence}", self.dataset] + ([f"T={self.frames}"] if self.frames else [])
        if self.num_classes is not None:
            extras.append(f"{self.num_classes} classes")
        extras += ["CCL"] if self.ccl else []
        if self.miou is not None:
            extras.append(f"val mIoU {100 * self.miou:.1f}")
        where = f" in {self.folder_label}/" if self.folder_label else ""
        return f"{self.name} ({', '.join(extras)}){where}"


@dataclass(frozen=True)
class Catalogue:
    folder: Path  # the bundled (first) folder
    entries: tuple[CatalogueEntry, ...]
    default: str | None
    folders: tuple[Path, ...] = ()  # every folder listed, the bundled one first
    problems: tuple[str, ...] = ()  # what could not be listed and what to do about it (shown by the page)
    default_video: str | None = None  # the video page's default (index.json "default_video")

    def images_only(self) -> Catalogue:
        """The image models (the explorer's); video models have their own page."""
        return replace(self, entries=tuple(e for e in self.entries if e.frames is None))

    def videos_only(self) -> Catalogue:
        """The video models; their default is the index's video default, else the one with the most frames (T = 5
        attends across frames, T = 1 does not)."""
        videos = tuple(e for e in self.entries if e.frames is not None)
        most_frames = min(videos, key=lambda e: (-e.frames, e.name)).name if videos else None
        return replace(self, entries=videos, default=self.default_video or most_frames)

    def get(self, name: str) -> CatalogueEntry:
        for entry in self.entries:
            if entry.name == name:
                return entry
        raise ModelError(f"no model named {name!r} in {self.folder}")

    def default_entry(self) -> CatalogueEntry | None:
        if self.default is not None and any(e.name == self.default for e in self.entries):
            return self.get(self.default)
        return self.entries[0] if self.entries else None

    def comparison_default(self) -> CatalogueEntry | None:
        """The model the loop-count comparisons start from: the folder's default when it has attention, else the
        first model that has (R = 0 has no loops to compare); None when no model here has attention."""
        unrollable = [e for e in self.entries if e.recurrence > 0]
        default = self.default_entry()
        return default if default in unrollable else (unrollable[0] if unrollable else None)

    def trained_per_loop_count(self, like: CatalogueEntry, heads: bool = False) -> dict[int, list[CatalogueEntry]]:
        """Models of `like`'s dataset trained with each R in LOOP_COUNTS with `like`'s recipe (CCL, affinity loss,
        starting gamma): trained end to end, or (heads=True) heads on a frozen backbone. The kinds and recipes are
        never mixed: a head on an R = 2 backbone beside an end-to-end model says nothing about R."""
        recipe = (heads, *like.recipe[1:])
        family = [e for e in self.entries if e.dataset == like.dataset and e.recipe == recipe]
        return {r: sorted((e for e in family if e.recurrence == r), key=_plain_first(like)) for r in LOOP_COUNTS}

    def other_recipes_per_loop_count(self, like: CatalogueEntry) -> dict[int, list[CatalogueEntry]]:
        """End-to-end models of `like`'s dataset, without CCL, trained with each R in LOOP_COUNTS but another recipe
        than `like`'s (the paper-recipe twin): offered beside the family's own, with their recipe in the title."""
        recipe = like.recipe
        others = [e for e in self.entries if e.dataset == like.dataset and e.head_on is None and not e.ccl
                  and e.frames is None and e.recipe != recipe]  # fmt: skip
        return {r: sorted((e for e in others if e.recurrence == r), key=lambda e: e.name) for r in LOOP_COUNTS}

    def baseline_for(self, like: CatalogueEntry) -> CatalogueEntry | None:
        """The R = 0 member of `like`'s family: same dataset and classes, trained the same way (end to end, or a head
        on the same backbone), without CCL; None when there is none. Its other recipe fields are not compared: the
        affinity loss and gamma do not exist without attention."""
        baselines = [e for e in self.entries if e.recurrence == 0 and e.dataset == like.dataset
                     and e.num_classes == like.num_classes and e.head_on == like.head_on and not e.ccl
                     and e.frames is None]  # fmt: skip
        return min(baselines, key=lambda e: e.name) if baselines else None


def _plain_first(like: CatalogueEntry):
    """Sort key: models without CCL first, then `like` itself, then by name."""
    return lambda entry: (entry.ccl, entry.name != like.name, entry.name)


def read_catalogue(folder: Path, extra_folders: Sequence[Path] = ()) -> Catalogue:
    """The models of the bundled folder and of each extra folder, in that order.

    An unreadable index.json of the bundled folder raises ModelError saying how to rebuild it (as before
    extra folders existed); everything wrong with an extra folder becomes one of `problems`. Names must be
    unique across folders (the page keys models and cached results by name): a later duplicate is left out
    with a problem naming both files.
    """
    folders = _unique_folders([Path(folder), *map(Path, extra_folders)])
    entries: list[CatalogueEntry] = []
    problems: list[str] = []
    default = default_video = None
    for position, current in enumerate(folders):
        label = current.name if len(folders) > 1 else ""
        if position == 0:
            found, default, default_video = _bundled_folder_entries(current, label, problems)
        else:
            found = _extra_folder_entries(current, label, problems)
        taken = {entry.name: entry for entry in entries}
        for entry in found:
            if entry.name in taken:
                problems.append(
                    f"`{entry.path}` is left out: `{taken[entry.name].path}` has the same name `{entry.name}`. "
                    "Rename one pair (NAME.safetensors + NAME.json) and rebuild that folder's index."
                )
                continue
            entries.append(entry)
            taken[entry.name] = entry
    return Catalogue(folders[0], tuple(entries), default, tuple(folders), tuple(problems), default_video)


def _unique_folders(folders: list[Path]) -> list[Path]:
    unique: list[Path] = []
    for folder in folders:
        if all(folder.resolve() != seen.resolve() for seen in unique):
            unique.append(folder)
    return unique


def _rebuild_hint(folder: Path) -> str:
    return f"`python -c \"from ccnet.checkpoint import write_index; write_index('{folder}')\"`"


def _bundled_folder_entries(
    folder: Path, label: str, problems: list[str]
) -> tuple[list[CatalogueEntry], str | None, str | None]:
    """The bundled folder's entries, default and video default: a missing folder is simply empty (the page explains
    how to make a checkpoint)."""
    if not (folder / INDEX_FILE).is_file():
        return _scanned_entries(folder, label, problems) if folder.is_dir() else [], None, None
    try:
        index = read_index(folder)
    except Exception as error:  # a broken index must not take the app down
        raise ModelError(
            f"The checkpoint index of {folder} cannot be read ({error}). Rebuild it with {_rebuild_hint(folder)}."
        ) from error
    entries = _index_entries(folder, index, label)
    return entries, index.get("default"), index.get("default_video")


def _extra_folder_entries(folder: Path, label: str, problems: list[str]) -> list[CatalogueEntry]:
    if not folder.is_dir():
        problems.append(f"`{folder}` (CCNET_EXTRA_CHECKPOINTS) is not a folder: fix the setting or create it.")
        return []
    known_problems = len(problems)
    if (folder / INDEX_FILE).is_file():
        try:
            found = _index_entries(folder, read_index(folder), label)
        except Exception as error:
            problems.append(
                f"`{folder / INDEX_FILE}` cannot be read ({error}): rebuild it with {_rebuild_hint(folder)}."
            )
            return []
    else:
        found = _scanned_entries(folder, label, problems)
    if not found and len(problems) == known_problems:  # nothing listed and nothing said yet
        problems.append(
            f"`{folder}` (CCNET_EXTRA_CHECKPOINTS) holds no checkpoint (NAME.safetensors + NAME.json). Convert a "
            f"published model into it: `python -m ccnet.convert mmseg MODEL.pth {folder}/` (docs/CONVERT.md)."
        )
    return found


def _entry(path: Path, item: Mapping, label: str) -> CatalogueEntry:
    """One index entry (as `ccnet.checkpoint` writes them) as a catalogue entry; raises on a malformed one."""
    classes = item.get("num_classes")
    return CatalogueEntry(
        name=str(item["name"]),
        path=path,
        recurrence=int(item["recurrence"]),
        dataset=str(item.get("dataset", "")),
        ccl=bool(item.get("ccl", False)),
        miou=_number(item.get("mIoU")),
        num_classes=classes if isinstance(classes, int) and not isinstance(classes, bool) else None,
        folder_label=label,
        frames=_frames(item.get("frames")),
        head_on=item.get("head_on") if isinstance(item.get("head_on"), str) else None,
        attention_weight=_number(item.get("attention_weight")),
        gamma_init=_number(item.get("gamma_init")),
    )


def _index_entries(folder: Path, index: dict, label: str) -> list[CatalogueEntry]:
    entries = []
    for item in index.get("models", []):
        try:
            entries.append(_entry(_inside(folder, str(item["file"])), item, label))
        except (KeyError, TypeError, ValueError, AttributeError):
            continue  # a malformed entry is skipped, the others stay usable
    return entries


def _scanned_entries(folder: Path, label: str, problems: list[str]) -> list[CatalogueEntry]:
    """A folder without index.json: every NAME.json sidecar with its NAME.safetensors, each validated alone so
    one broken pair does not hide the others."""
    entries = []
    for weights in sorted(folder.glob("*.safetensors")):
        _, sidecar = checkpoint_paths(weights)
        if not sidecar.is_file():
            problems.append(f"`{weights}` has no sidecar `{sidecar.name}` beside it, so it is not listed.")
            continue
        try:
            entries.append(_entry(weights.resolve(), index_entry(sidecar, read_metadata(sidecar)), label))
        except Exception as error:
            problems.append(f"`{sidecar}` is not listed: {error}")
    return entries


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _frames(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None


def _inside(folder: Path, file_name: str) -> Path:
    """The index names files inside its folder; refuse names that would escape it."""
    path = (folder / file_name).resolve()
    if folder.resolve() not in path.parents:
        raise ValueError(f"{file_name!r} points outside {folder}")
    return path


def resolve_device(setting: str) -> tuple[torch.device, str | None]:
    """(device, warning): 'auto' picks CUDA when available; an unavailable CUDA falls back to the CPU."""
    if setting in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu"), None
    cpu = torch.device("cpu")
    try:
        device = torch.device(setting)
    except RuntimeError:
        return cpu, f"CCNET_DEVICE={setting!r} is not a device name (use auto, cpu or cuda); using the CPU."
    if device.type == "cuda" and not torch.cuda.is_available():
        return cpu, f"CCNET_DEVICE={setting!r} but CUDA is not available here; using the CPU."
    if device.type not in ("cpu", "cuda"):
        return cpu, f"CCNET_DEVICE={setting!r} is not supported (use auto, cpu or cuda); using the CPU."
    return device, None


@dataclass
class LoadedModel:
    """A model ready to serve, with what the page needs from its sidecar."""

    name: str
    model: torch.nn.Module
    metadata: dict
    device: torch.device
    # One forward pass at a time per model: concurrent sessions would only split the same cores.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def cache_id(self) -> str:
        """Names this exact save: two checkpoints sharing a name (another folder) never share cached results."""
        return f"{self.name}:{self.metadata.get('save_id', '')}"

    @property
    def class_names(self) -> list[str]:
        return list(self.metadata["class_names"])

    @property
    def palette(self) -> np.ndarray:
        return np.asarray(self.metadata["palette"], dtype=np.uint8).reshape(-1, 3)  # (K, 3)

    @property
    def trained_recurrence(self) -> int:
        return int(self.metadata["recurrence"])

    @property
    def has_attention(self) -> bool:
        return getattr(self.model, "attention", None) is not None

    @property
    def gamma(self) -> float:
        """The learned residual scale of the attention (shared by every loop), used by rollout."""
        return float(self.model.attention.cca.gamma.detach().reshape(-1)[0]) if self.has_attention else 0.0


def load_model(path: Path, device: torch.device) -> LoadedModel:
    """Load a checkpoint through the library; any failure becomes a ModelError worded for the user."""
    try:
        model, metadata = load_checkpoint(path, device=device)
    except Exception as error:
        raise ModelError(
            f"The checkpoint {path.name} could not be loaded ({type(error).__name__}: {error}). "
            "Pick another model, or re-export this one from its training run."
        ) from error
    return LoadedModel(name=path.stem, model=model, metadata=metadata, device=device)
