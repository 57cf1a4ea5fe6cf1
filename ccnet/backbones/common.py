"""What every backbone shares: its two outputs, the load report, and loading a state dict safely."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn


class BackboneFeatures(NamedTuple):
    """Backbone outputs: ``aux`` and ``final`` at 1/8 of the input size, ``low`` at 1/4.

    ``low`` feeds the optional skip decoder (``CCNet(decoder_channels=...)``); features made without it
    (older caches, hand-built tuples) leave it None, which only a model with a decoder refuses.
    """

    aux: torch.Tensor  # (B, C_aux, h, w): input of the auxiliary head
    final: torch.Tensor  # (B, C_final, h, w): input of the RCCA head
    low: torch.Tensor | None = None  # (B, C_low, 2h, 2w): input of the skip decoder


class BackboneLoadReport(NamedTuple):
    missing: list[str]  # backbone keys the file did not provide (left at their initial values)
    unexpected: list[str]  # file keys the backbone has no place for (known-unused ones excluded)
    unused: list[str] = []  # file keys known to be unneeded (a classifier, a last conv the heads skip)


def check_choice(name: str, value, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}: expected one of {', '.join(choices)}")
    return value


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file, or of a ``.pth`` file through ``torch.load(weights_only=True)``
    (never plain unpickling). A ``{"state_dict": ...}`` wrapper is unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ValueError(f"{path} does not hold a state dict (a mapping from names to tensors)")
    return dict(loaded)


def as_state_dict(weights: str | Path | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return read_state_dict(weights) if isinstance(weights, str | Path) else dict(weights)


def load_checked(
    backbone: nn.Module, state: Mapping[str, torch.Tensor], unused: Sequence[str] = ()
) -> BackboneLoadReport:
    """Load ``state`` (already in the backbone's names) after checking every shape; report the rest.

    A shape mismatch raises ``ValueError`` naming the keys before anything is loaded. Missing and
    unexpected keys are returned and warned about; ``unused`` keys are only reported.
    """
    own = backbone.state_dict()
    mismatched = [
        f"{key}: file {tuple(value.shape)}, model {tuple(own[key].shape)}"
        for key, value in state.items()
        if key in own and own[key].shape != value.shape
    ]
    if mismatched:
        raise ValueError("pretrained backbone weights do not fit this backbone: " + "; ".join(mismatched))
    result = backbone.load_state_dict(dict(state), strict=False)
    report = BackboneLoadReport(sorted(result.missing_keys), sorted(result.unexpected_keys), sorted(unused))
    if report.missing or report.unexpected:
        warnings.warn(
            f"pretrained backbone weights: missing keys {report.missing}, unexpected keys {report.unexpected}",
            stacklevel=3,
        )
    return report
