"""Which models exist (the checkpoint folder's index), on which device they run, and loading one.

Nothing here caches: the Streamlit page wraps `load_model` in `st.cache_resource`, so each model is
loaded once per server process and shared by every session.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ccnet.checkpoint import load_checkpoint, read_index

LOOP_COUNTS = (1, 2, 3)
HOW_TO_MAKE_A_CHECKPOINT = (
    "Train one, then export it into the checkpoint folder (which also writes its `index.json`):\n\n"
    "```bash\n"
    "python -m training.train --config training/configs/camvid_r2.yaml --out runs/camvid_r2 \\\n"
    "    --data-root ../shared/datasets/camvid\n"
    "python -m training.export runs/camvid_r2 checkpoints/camvid_r2 --default\n"
    "```\n\n"
    "To serve another folder of checkpoints, start the app with `CCNET_CHECKPOINTS=/path/to/folder`."
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

    @property
    def label(self) -> str:
        extras = [f"R={self.recurrence}", self.dataset] + (["CCL"] if self.ccl else [])
        if self.miou is not None:
            extras.append(f"val mIoU {100 * self.miou:.1f}")
        return f"{self.name} ({', '.join(extras)})"


@dataclass(frozen=True)
class Catalogue:
    folder: Path
    entries: tuple[CatalogueEntry, ...]
    default: str | None

    def get(self, name: str) -> CatalogueEntry:
        for entry in self.entries:
            if entry.name == name:
                return entry
        raise ModelError(f"no model named {name!r} in {self.folder}")

    def default_entry(self) -> CatalogueEntry | None:
        if self.default is not None and any(e.name == self.default for e in self.entries):
            return self.get(self.default)
        return self.entries[0] if self.entries else None

    def trained_per_loop_count(self, like: CatalogueEntry) -> dict[int, list[CatalogueEntry]]:
        """Models of `like`'s dataset trained with each R in LOOP_COUNTS (without CCL first)."""
        same_dataset = [e for e in self.entries if e.dataset == like.dataset]
        return {
            r: sorted((e for e in same_dataset if e.recurrence == r), key=_plain_first(like))
            for r in LOOP_COUNTS
        }


def _plain_first(like: CatalogueEntry):
    """Sort key: models without CCL first, then `like` itself, then by name."""
    return lambda entry: (entry.ccl, entry.name != like.name, entry.name)


def read_catalogue(folder: Path) -> Catalogue:
    """The checkpoint folder's models; an unreadable index raises ModelError saying how to rebuild it."""
    try:
        index = read_index(folder)
    except Exception as error:  # a broken index must not take the app down
        raise ModelError(
            f"The checkpoint index of {folder} cannot be read ({error}). Rebuild it with "
            f"`python -c \"from ccnet.checkpoint import write_index; write_index('{folder}')\"`."
        ) from error
    entries = []
    for item in index.get("models", []):
        try:
            entries.append(
                CatalogueEntry(
                    name=str(item["name"]),
                    path=_inside(folder, str(item["file"])),
                    recurrence=int(item["recurrence"]),
                    dataset=str(item.get("dataset", "")),
                    ccl=bool(item.get("ccl", False)),
                    miou=item.get("mIoU") if isinstance(item.get("mIoU"), (int, float)) else None,
                )
            )
        except (KeyError, TypeError, ValueError):
            continue  # a malformed entry is skipped, the others stay usable
    return Catalogue(folder=folder, entries=tuple(entries), default=index.get("default"))


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
