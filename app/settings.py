"""The app's settings, read from environment variables (so `streamlit run` needs no arguments).

| variable | default | meaning |
| --- | --- | --- |
| CCNET_CHECKPOINTS | <repo>/checkpoints | folder with index.json and *.safetensors + *.json |
| CCNET_EXTRA_CHECKPOINTS | (none) | more checkpoint folders listed after it, `/a:/b` (os.pathsep), e.g. converted |
|   |   | published models (docs/CONVERT.md); index.json optional, problems shown in the sidebar |
| CCNET_EXAMPLES | <repo>/examples | folder of example images, or a dataset root (CamVid, Cityscapes, ADE20K, folder); |
|   |   | `none` for no examples. The default holds nine CamVid frames with labels (examples/README.md) |
| CCNET_DEVICE | auto | auto (CUDA when available), cpu, cuda or cuda:N |
| CCNET_MAX_SIDE | 1024 | longest image side fed to the model; larger images are scaled down |
| CCNET_CACHE_MB | 512 | memory for encoded images shared by all sessions (least recently used dropped) |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).absolute().parent.parent
BUNDLED_EXAMPLES = REPO_ROOT / "examples"
NO_EXAMPLES = "none"  # CCNET_EXAMPLES=none: no examples folder at all


class SettingsError(ValueError):
    """A setting with a value the app cannot use; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    checkpoints: Path
    examples: Path | None
    device: str
    max_side: int
    cache_mb: int
    extra_checkpoints: tuple[Path, ...] = ()

    @property
    def checkpoint_folders(self) -> tuple[Path, ...]:
        """Every folder the catalogue lists: the bundled one first."""
        return (self.checkpoints, *self.extra_checkpoints)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        examples = environ.get("CCNET_EXAMPLES", "").strip() or str(BUNDLED_EXAMPLES)
        checkpoints = environ.get("CCNET_CHECKPOINTS", "").strip() or REPO_ROOT / "checkpoints"
        return cls(
            checkpoints=Path(checkpoints).expanduser(),
            examples=None if examples.lower() == NO_EXAMPLES else Path(examples).expanduser(),
            device=environ.get("CCNET_DEVICE", "auto").strip().lower() or "auto",
            max_side=_positive_int(environ, "CCNET_MAX_SIDE", 1024, minimum=64),
            cache_mb=_positive_int(environ, "CCNET_CACHE_MB", 512, minimum=16),
            extra_checkpoints=_folder_list(environ.get("CCNET_EXTRA_CHECKPOINTS", "")),
        )


def _folder_list(text: str) -> tuple[Path, ...]:
    """os.pathsep-separated folders (':' on Linux and macOS, ';' on Windows); empty pieces are ignored."""
    return tuple(Path(piece.strip()).expanduser() for piece in text.split(os.pathsep) if piece.strip())


def _positive_int(environ: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError as error:
        message = f"{name}={text!r} is not a whole number; unset it or set e.g. {default}"
        raise SettingsError(message) from error
    if value < minimum:
        raise SettingsError(f"{name}={value} is below the minimum {minimum}; unset it or set e.g. {default}")
    return value
