"""Convert published CCNet checkpoints (mmsegmentation's, the official code's) into our format.

    python -m ccnet.convert mmseg INPUT.pth OUTPUT [--dataset cityscapes|ade20k|voc] [--recurrence R]
    python -m ccnet.convert official INPUT.pth OUTPUT [--dataset cityscapes] [--recurrence R]

OUTPUT is a path stem (or a folder): ``OUTPUT.safetensors`` and the ``OUTPUT.json`` sidecar are written by
``ccnet.checkpoint.save_checkpoint`` and the folder's ``index.json`` is rebuilt (``write_index``), so the app
lists the model (``CCNET_EXTRA_CHECKPOINTS=FOLDER``). Class names and palettes come from ``ccnet.classes``.

The source is read with ``torch.load(weights_only=True)`` only. Every source key must land on a parameter
or buffer of our ``CCNet`` with the same shape, and every parameter and buffer of ours must be filled:
otherwise ``ConversionError`` lists what is missing, left over and mismatched. Nothing loads partially.

Key layouts (``ccnet.model``'s docstring has ours):

- mmsegmentation (``EncoderDecoder``: ``ResNetV1c`` + ``CCHead`` + ``FCNHead``): ``backbone.stem.*`` and
  ``backbone.layerN.*`` keep their names; ``decode_head.convs.0/1`` -> ``head.reduce/project``,
  ``decode_head.cca.*`` -> ``head.attention.cca.*`` (the scalar ``gamma.scale``, shape (), becomes
  ``gamma``, shape (1,)), ``decode_head.conv_cat`` -> ``head.fuse``, ``decode_head.conv_seg`` ->
  ``head.classifier``, ``auxiliary_head.convs.0`` -> ``aux_head.reduce``, ``auxiliary_head.conv_seg`` ->
  ``aux_head.classifier``. Input: RGB, mean 123.675/116.28/103.53, std 58.395/57.12/57.375.
- official code (speedinghzl/CCNet, master and pytorch-1.1 branches): ``conv1/bn1``, ``conv2/bn2``,
  ``conv3/bn3`` -> ``backbone.stem.0/1``, ``3/4``, ``6/7``; ``layerN`` -> ``backbone.layerN``;
  ``head.conva.0/1`` -> ``head.reduce.conv/bn``, ``head.cca`` -> ``head.attention.cca``,
  ``head.convb.0/1`` -> ``head.project.conv/bn``, ``head.bottleneck.0/1/3`` -> ``head.fuse.conv/bn`` and
  ``head.classifier``, ``dsn.0/1/3`` -> ``aux_head.reduce.conv/bn`` and ``aux_head.classifier``.
  A ``module.`` prefix (DataParallel) is stripped; ``criterion.*`` (loss state saved by the pytorch-1.1
  branch's model) is dropped and reported.

What changes on the way for the official code, each exactly:

- Every norm layer there is InPlace-ABN, which scales by ``|weight| + eps`` (eps 1e-5) to stay invertible:
  our BatchNorm gets that as its weight. Its head activation is InPlace-ABN's default leaky ReLU (0.01).
- ``dsn.0`` is a conv *with* bias, ours has none: the bias is folded into the next BN's running mean
  (``BN(conv(x) + b)`` with mean ``m`` equals ``BN(conv(x))`` with mean ``m - b``).
- The official code feeds OpenCV's BGR images minus a BGR mean, unscaled. Our pipeline feeds RGB, so the
  first conv's input channels are reversed, and mean = (122.679, 116.669, 104.007) RGB, std = 1.
- InPlace-ABN layers may lack ``num_batches_tracked`` (a counter unused in eval mode): it is set to 0.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from ccnet.checkpoint import (
    INDEX_FILE,
    CheckpointError,
    checkpoint_paths,
    read_metadata,
    save_checkpoint,
    write_index,
)
from ccnet.classes import ADE20K, CITYSCAPES, PASCAL_VOC, DatasetClasses
from ccnet.model import BACKBONES, DEEP_STEM_INDEX, CCNet

__all__ = [
    "CONVERTIBLE_DATASETS",
    "DATASET_CHOICES",
    "FORMATS",
    "MMSEG_RENAMES",
    "OFFICIAL_RENAMES",
    "PUBLISHED_MMSEG",
    "Conversion",
    "ConversionError",
    "build_converted_model",
    "build_metadata",
    "convert_file",
    "convert_state_dict",
    "dataset_classes",
    "fold_conv_bias_into_bn",
    "main",
    "read_source",
    "rename_key",
    "save_converted",
]

FORMATS = ("mmseg", "official")
ABN_EPS = 1e-5  # InPlace-ABN's default eps, used both in its scale (|w| + eps) and its variance
DEFAULT_RECURRENCE = 2  # mmsegmentation's CCNet configs and the official code's best released model
BGR_TO_RGB = [2, 1, 0]


class ConversionError(ValueError):
    """The source cannot become our checkpoint as it is; the message says why and what to do."""


class Conversion(NamedTuple):
    model_config: dict  # CCNet(**model_config) holds state_dict exactly
    state_dict: dict[str, torch.Tensor]  # our names, our shapes, float32
    notes: list[str]  # what changed on the way (for the sidecar and the console)


# -------------------------------------------------------------------------------------------------
# Key renames (source prefix -> our prefix; the longest matching prefix wins)
# -------------------------------------------------------------------------------------------------

MMSEG_RENAMES = {
    "backbone.stem.": "backbone.stem.",
    "backbone.layer": "backbone.layer",
    "decode_head.convs.0.": "head.reduce.",
    "decode_head.cca.gamma.scale": "head.attention.cca.gamma",
    "decode_head.cca.": "head.attention.cca.",
    "decode_head.convs.1.": "head.project.",
    "decode_head.conv_cat.": "head.fuse.",
    "decode_head.conv_seg.": "head.classifier.",
    "auxiliary_head.convs.0.": "aux_head.reduce.",
    "auxiliary_head.conv_seg.": "aux_head.classifier.",
}

OFFICIAL_RENAMES = {
    **{f"{name}.": f"backbone.stem.{index}." for name, index in DEEP_STEM_INDEX.items()},
    "layer": "backbone.layer",
    "head.conva.0.": "head.reduce.conv.",
    "head.conva.1.": "head.reduce.bn.",
    "head.cca.": "head.attention.cca.",
    "head.convb.0.": "head.project.conv.",
    "head.convb.1.": "head.project.bn.",
    "head.bottleneck.0.": "head.fuse.conv.",
    "head.bottleneck.1.": "head.fuse.bn.",
    "head.bottleneck.3.": "head.classifier.",
    "dsn.0.": "aux_head.reduce.conv.",
    "dsn.1.": "aux_head.reduce.bn.",
    "dsn.3.": "aux_head.classifier.",
}

_RENAMES = {"mmseg": MMSEG_RENAMES, "official": OFFICIAL_RENAMES}

# Keys that say which layout a file has (its attention's query), to catch a file given under the wrong format.
_SIGNATURE_KEYS = {
    "mmseg": "decode_head.cca.query_conv.weight",
    "official": "head.cca.query_conv.weight",
}


def rename_key(key: str, renames: Mapping[str, str]) -> str | None:
    """Our name for a source key (longest matching prefix), or None when no rule matches."""
    matches = [prefix for prefix in renames if key.startswith(prefix)]
    if not matches:
        return None
    prefix = max(matches, key=len)
    return renames[prefix] + key[len(prefix) :]


def _source_key(our_key: str, renames: Mapping[str, str]) -> str:
    """The source name a key of ours comes from (for messages about missing keys)."""
    matches = [(target, source) for source, target in renames.items() if our_key.startswith(target)]
    if not matches:
        return our_key
    target, source = max(matches, key=lambda pair: len(pair[0]))
    return source + our_key[len(target) :]


# -------------------------------------------------------------------------------------------------
# Reading the source file
# -------------------------------------------------------------------------------------------------


def _resave_hint(path: Path) -> str:
    clean = path.with_name(path.stem + ".weights.pth")
    return (
        "If you trust the file, re-save it with weights_only-compatible contents (plain tensors), then "
        "convert the new file:\n"
        f"  python -c \"import torch; c = torch.load('{path}', map_location='cpu', weights_only=False); "
        f"torch.save({{'state_dict': c.get('state_dict', c)}}, '{clean}')\"\n"
        "(weights_only=False runs whatever code the file holds: do this only for a file from a trusted source.)"
    )


def _load_torch_file(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # the unpickler raises many types; each means "not plain tensors"
        text = str(error)
        blocked = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        # A torch.save file (a zip) or a pickle naming a class: real content that weights_only refuses.
        if "Weights only load failed" in text and (blocked or zipfile.is_zipfile(path)):
            what = f" (it holds {blocked.group(1)})" if blocked else ""
            raise ConversionError(
                f"{path} holds pickled Python objects that torch.load(weights_only=True) refuses{what}. "
                + _resave_hint(path)
            ) from error
        raise ConversionError(
            f"{path} is not a PyTorch checkpoint torch.load can read ({type(error).__name__}: {text[:200]}). "
            "Expected the .pth file of a published CCNet model."
        ) from error


def _unwrap(loaded, path: Path) -> tuple[dict, dict]:
    """(state dict, meta) from {"state_dict": ..., "meta": ...} or a bare state dict."""
    if not isinstance(loaded, Mapping):
        raise ConversionError(
            f"{path} holds a {type(loaded).__name__}, not a checkpoint: expected a state dict (names -> "
            "tensors) or {'state_dict': ..., 'meta': ...}"
        )
    meta = loaded.get("meta") if isinstance(loaded.get("meta"), Mapping) else {}
    for wrapper in ("state_dict", "model"):
        if isinstance(loaded.get(wrapper), Mapping):
            return dict(loaded[wrapper]), dict(meta)
    return dict(loaded), dict(meta)


def read_source(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, meta) of a source checkpoint: ``.pth``/``.pt`` through weights_only, or safetensors."""
    path = Path(path)
    if not path.exists():
        raise ConversionError(
            f"{path}: no such file. Download the published checkpoint first (docs/CONVERT.md lists them)."
        )
    if not path.is_file():
        raise ConversionError(f"{path} is a folder: give the checkpoint file itself (a .pth file)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu"), {}
        except Exception as error:
            raise ConversionError(f"{path} is not a readable safetensors file ({error})") from error
    state, meta = _unwrap(_load_torch_file(path), path)
    not_tensors = sorted(key for key, value in state.items() if not isinstance(value, torch.Tensor))
    if not state or not_tensors:
        listed = ", ".join(not_tensors[:5]) + (" ..." if len(not_tensors) > 5 else "")
        raise ConversionError(
            f"{path} is not a state dict of tensors"
            + (f": {listed} are not tensors" if not_tensors else ": it is empty")
        )
    return state, meta


# -------------------------------------------------------------------------------------------------
# Architecture from shapes
# -------------------------------------------------------------------------------------------------

_DEPTHS = {
    ((2, 2, 2, 2), False): "resnet18",
    ((3, 4, 6, 3), False): "resnet34",
    ((3, 4, 6, 3), True): "resnet50",
    ((3, 4, 23, 3), True): "resnet101",
}


def _shape(state: Mapping[str, torch.Tensor], key: str, renames: Mapping[str, str], what: str) -> tuple:
    if key not in state:
        raise ConversionError(
            f"cannot read the architecture: the checkpoint has no {_source_key(key, renames)} ({what})"
        )
    return tuple(state[key].shape)


def _blocks_per_stage(state: Mapping[str, torch.Tensor]) -> tuple[int, ...]:
    counts = []
    for stage in range(1, 5):
        pattern = re.compile(rf"backbone\.layer{stage}\.(\d+)\.")
        blocks = {int(match.group(1)) for key in state if (match := pattern.match(key))}
        counts.append(max(blocks) + 1 if blocks else 0)
    return tuple(counts)


def _infer_depth(state: Mapping[str, torch.Tensor]) -> str:
    blocks = _blocks_per_stage(state)
    bottleneck = "backbone.layer1.0.conv3.weight" in state
    depth = _DEPTHS.get((blocks, bottleneck))
    if depth is None:
        kind = "bottleneck" if bottleneck else "basic"
        raise ConversionError(
            f"unsupported backbone: ResNet with {blocks} {kind} blocks per stage; supported: {', '.join(BACKBONES)}"
        )
    return depth


def _infer_config(source_format: str, state: Mapping[str, torch.Tensor], recurrence: int) -> dict:
    """CCNet arguments that hold these (renamed) weights, read from their shapes."""
    renames = _RENAMES[source_format]
    stem_out, stem_in = _shape(state, "backbone.stem.6.weight", renames, "the stem's last conv")[:2]
    head_channels = _shape(state, "head.reduce.conv.weight", renames, "the CC head's first conv")[0]
    qk_channels = _shape(state, "head.attention.cca.query_conv.weight", renames, "the attention's query")[0]
    aux_key = "aux_head.reduce.conv.weight"
    config = {
        "num_classes": _shape(state, "head.classifier.weight", renames, "the classifier")[0],
        "backbone": _infer_depth(state),
        "recurrence": recurrence,
        "base_width": _shape(state, "backbone.layer1.0.conv1.weight", renames, "the first block")[0],
        "head_channels": head_channels,
        "aux_channels": state[aux_key].shape[0] if aux_key in state else 0,
        "stem": "deep",
        "stem_channels": stem_out,
        # None keeps the model's default (head_channels // 8) visible as a default in the config.
        "qk_channels": None if qk_channels == max(1, head_channels // 8) else qk_channels,
    }
    if stem_in * 2 != stem_out:
        raise ConversionError(
            f"unsupported stem: convs of {stem_in} and {stem_out} channels; the deep stem halves the last"
        )
    if source_format == "official":
        config.update(ceil_mode=True, contract_dilation=False, head_activation="leaky_relu")
    return config


def _meta_model(config: Mapping) -> CCNet:
    """The model on the meta device: names and shapes without allocating or initialising weights."""
    with torch.device("meta"):
        return CCNet(**config)


# -------------------------------------------------------------------------------------------------
# Value changes
# -------------------------------------------------------------------------------------------------


def fold_conv_bias_into_bn(conv_bias: torch.Tensor, running_mean: torch.Tensor) -> torch.Tensor:
    """The running mean that makes ``BN(conv(x))`` equal ``BN(conv(x) + bias)`` in eval mode."""
    return running_mean - conv_bias  # (C,)


def _bn_prefixes(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, nn.BatchNorm2d)]


def _fill_batch_counters(state: dict, model: nn.Module, notes: list[str]) -> None:
    """InPlace-ABN has no ``num_batches_tracked``; it counts batches and is unused in eval mode."""
    filled = 0
    for prefix in _bn_prefixes(model):
        key = f"{prefix}.num_batches_tracked"
        if key not in state:
            state[key] = torch.tensor(0, dtype=torch.long)
            filled += 1
    if filled:
        notes.append(f"num_batches_tracked set to 0 in {filled} norm layers that had none")


def _mmseg_values(state: dict, model: nn.Module, notes: list[str]) -> None:
    gamma = state.get("head.attention.cca.gamma")
    if gamma is not None and gamma.dim() == 0:
        state["head.attention.cca.gamma"] = gamma.reshape(1)  # () -> (1,)
        notes.append("decode_head.cca.gamma.scale reshaped from () to (1,)")
    _fill_batch_counters(state, model, notes)


def _official_values(state: dict, model: nn.Module, notes: list[str]) -> None:
    bias = state.pop("aux_head.reduce.conv.bias", None)
    if bias is not None and "aux_head.reduce.bn.running_mean" in state:
        state["aux_head.reduce.bn.running_mean"] = fold_conv_bias_into_bn(
            bias, state["aux_head.reduce.bn.running_mean"]
        )
        notes.append("dsn.0.bias folded into dsn.1.running_mean")
    elif bias is not None:
        state["aux_head.reduce.conv.bias"] = bias  # nowhere to fold: reported as left over
    scaled = 0
    for prefix in _bn_prefixes(model):
        key = f"{prefix}.weight"
        if key in state:
            state[key] = state[key].abs() + ABN_EPS  # InPlace-ABN scales by |w| + eps
            scaled += 1
    notes.append(f"InPlace-ABN weights w -> |w| + {ABN_EPS:g} in {scaled} norm layers")
    stem = state.get("backbone.stem.0.weight")
    if stem is not None and stem.dim() == 4 and stem.shape[1] == 3:
        state["backbone.stem.0.weight"] = stem[:, BGR_TO_RGB]  # (C, 3, k, k): BGR input -> RGB input
        notes.append("conv1 input channels reversed (the official code feeds BGR; we feed RGB)")
    _fill_batch_counters(state, model, notes)


# -------------------------------------------------------------------------------------------------
# Strict completeness check
# -------------------------------------------------------------------------------------------------


def _listing(title: str, items: list[str], limit: int = 25) -> str:
    shown = "\n".join(f"  {item}" for item in items[:limit])
    more = f"\n  ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"{title} ({len(items)}):\n{shown}{more}"


def _check_complete(
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    origin: Mapping[str, str],
    unmatched: Sequence[str],
    renames: Mapping[str, str],
    source_format: str,
) -> None:
    """Every source key used and every key of ours filled with the right shape, or one error listing all."""
    missing = [
        f"{_source_key(key, renames)} (-> {key}, shape {tuple(tensor.shape)})"
        for key, tensor in expected.items()
        if key not in state
    ]
    left_over = [f"{key} (no place in CCNet)" for key in unmatched]
    left_over += [f"{origin.get(key, key)} (-> {key}, not in CCNet)" for key in state if key not in expected]
    mismatched = [
        f"{origin.get(key, key)} -> {key}: checkpoint {tuple(state[key].shape)}, CCNet {tuple(tensor.shape)}"
        for key, tensor in expected.items()
        if key in state and tuple(state[key].shape) != tuple(tensor.shape)
    ]
    if not (missing or left_over or mismatched):
        return
    parts = [
        _listing(title, items)
        for title, items in (
            ("missing from the checkpoint", missing),
            ("left over in the checkpoint", left_over),
            ("shape mismatches", mismatched),
        )
        if items
    ]
    raise ConversionError(
        f"the checkpoint does not fit a CCNet in the {source_format} layout exactly; nothing was written.\n"
        + "\n".join(parts)
    )


# -------------------------------------------------------------------------------------------------
# Conversion of a state dict
# -------------------------------------------------------------------------------------------------


def _strip_wrappers(source_format: str, state: Mapping[str, torch.Tensor], notes: list[str]) -> dict:
    state = dict(state)
    if any(key.startswith("module.") for key in state):
        stripped = {key.removeprefix("module."): value for key, value in state.items()}
        if len(stripped) != len(state):
            twice = sorted(key for key in state if key.startswith("module.") and key[7:] in state)
            raise ConversionError(f"keys present with and without 'module.': {', '.join(twice[:5])}")
        state = stripped
        notes.append("'module.' prefix (DataParallel) stripped")
    if source_format == "official":
        loss_keys = sorted(key for key in state if key.startswith("criterion."))
        for key in loss_keys:
            del state[key]
        if loss_keys:
            notes.append(f"loss-function state dropped (not part of the network): {', '.join(loss_keys)}")
    return state


def _check_format(source_format: str, state: Mapping[str, torch.Tensor]) -> None:
    own, other = _SIGNATURE_KEYS[source_format], _SIGNATURE_KEYS[_other_format(source_format)]
    if own in state:
        return
    if other in state:
        raise ConversionError(
            f"this is not an {source_format} checkpoint but looks like an {_other_format(source_format)} "
            f"one (it has {other}): run `python -m ccnet.convert {_other_format(source_format)} ...`"
        )
    sample = ", ".join(list(state)[:5])
    raise ConversionError(
        f"not a CCNet checkpoint in the {source_format} layout: it has no {own} (the criss-cross attention); "
        f"its keys start {sample} ..."
    )


def _other_format(source_format: str) -> str:
    return "official" if source_format == "mmseg" else "mmseg"


def _recurrence_from_meta(meta: Mapping) -> int | None:
    """The loop count stored in a checkpoint's meta (mmsegmentation keeps its config text there)."""
    if isinstance(meta.get("recurrence"), int):
        return meta["recurrence"]
    for field in ("config", "cfg"):
        text = meta.get(field)
        if isinstance(text, str) and (match := re.search(r"recurrence\s*=\s*(\d+)", text)):
            return int(match.group(1))
    return None


def _resolve_recurrence(recurrence: int | None, meta: Mapping, notes: list[str]) -> int:
    if recurrence is not None:
        if isinstance(recurrence, bool) or not isinstance(recurrence, int) or recurrence < 1:
            raise ConversionError(f"--recurrence must be an integer >= 1, got {recurrence!r}")
        notes.append(f"trained loop count {recurrence} (given)")
        return recurrence
    stored = _recurrence_from_meta(meta)
    if stored is not None and stored >= 1:
        notes.append(f"trained loop count {stored} (from the checkpoint's meta)")
        return stored
    notes.append(f"trained loop count {DEFAULT_RECURRENCE} (default; the checkpoint does not say)")
    return DEFAULT_RECURRENCE


def convert_state_dict(
    source_format: str,
    source_state: Mapping[str, torch.Tensor],
    meta: Mapping | None = None,
    recurrence: int | None = None,
) -> Conversion:
    """Map a source state dict onto CCNet: (model_config, our state dict, notes), or ConversionError.

    Works on meta tensors too (names and shapes only), which is how the full-size key lists are checked.
    """
    if source_format not in FORMATS:
        raise ConversionError(f"unknown format {source_format!r}: expected one of {', '.join(FORMATS)}")
    notes: list[str] = []
    state = _strip_wrappers(source_format, source_state, notes)
    _check_format(source_format, state)
    renames = _RENAMES[source_format]
    renamed, origin, unmatched = {}, {}, []
    for key, tensor in state.items():
        target = rename_key(key, renames)
        if target is None:
            unmatched.append(key)
        elif target in renamed:  # two source keys for one place: neither may silently win
            raise ConversionError(f"{origin[target]} and {key} both map to {target}; the checkpoint is ambiguous")
        else:
            renamed[target], origin[target] = tensor, key
    loops = _resolve_recurrence(recurrence, meta or {}, notes)
    config = _infer_config(source_format, renamed, loops)
    model = _meta_model(config)
    if source_format == "mmseg":
        _mmseg_values(renamed, model, notes)
    else:
        _official_values(renamed, model, notes)
    expected = model.state_dict()
    _check_complete(renamed, expected, origin, unmatched, renames, source_format)
    converted = {key: renamed[key].to(expected[key].dtype) for key in expected}  # e.g. fp16 -> fp32
    return Conversion(dict(model.config), converted, notes)


def build_converted_model(conversion: Conversion) -> CCNet:
    """The CCNet holding the converted weights (eval mode), built without a throw-away initialisation."""
    model = _meta_model(conversion.model_config)
    model.load_state_dict(conversion.state_dict, strict=True, assign=True)
    return model.eval()


# -------------------------------------------------------------------------------------------------
# Datasets, published models, sidecar
# -------------------------------------------------------------------------------------------------


# --dataset choices -> ccnet.classes' dataset names (one source of truth for names and palettes).
CONVERTIBLE_DATASETS = {"cityscapes": CITYSCAPES, "ade20k": ADE20K, "voc": PASCAL_VOC}
DATASET_CHOICES = tuple(CONVERTIBLE_DATASETS)
DATASET_ALIASES = {"pascal_voc": "voc", "voc12aug": "voc"}


def dataset_classes(dataset: str) -> DatasetClasses:
    """Class names and palette of a dataset a published CCNet was trained on (from ccnet.classes)."""
    key = DATASET_ALIASES.get(dataset, dataset)
    if key not in CONVERTIBLE_DATASETS:
        raise ConversionError(f"unknown dataset {dataset!r}: expected one of {', '.join(DATASET_CHOICES)}")
    return CONVERTIBLE_DATASETS[key]


# name -> (dataset, crop [H, W], mIoU, mIoU with multi-scale + flip), from mmsegmentation's model zoo
# (configs/ccnet/README.md); the file names start with the name.
PUBLISHED_MMSEG = {
    "ccnet_r50-d8_512x1024_40k_cityscapes": ("cityscapes", (512, 1024), 77.76, 78.87),
    "ccnet_r101-d8_512x1024_40k_cityscapes": ("cityscapes", (512, 1024), 76.35, 78.19),
    "ccnet_r50-d8_769x769_40k_cityscapes": ("cityscapes", (769, 769), 78.46, 79.93),
    "ccnet_r101-d8_769x769_40k_cityscapes": ("cityscapes", (769, 769), 76.94, 78.62),
    "ccnet_r50-d8_512x1024_80k_cityscapes": ("cityscapes", (512, 1024), 79.03, 80.16),
    "ccnet_r101-d8_512x1024_80k_cityscapes": ("cityscapes", (512, 1024), 78.87, 79.90),
    "ccnet_r50-d8_769x769_80k_cityscapes": ("cityscapes", (769, 769), 79.29, 81.08),
    "ccnet_r101-d8_769x769_80k_cityscapes": ("cityscapes", (769, 769), 79.45, 80.66),
    "ccnet_r50-d8_512x512_80k_ade20k": ("ade20k", (512, 512), 41.78, 42.98),
    "ccnet_r101-d8_512x512_80k_ade20k": ("ade20k", (512, 512), 43.97, 45.13),
    "ccnet_r50-d8_512x512_160k_ade20k": ("ade20k", (512, 512), 42.08, 43.13),
    "ccnet_r101-d8_512x512_160k_ade20k": ("ade20k", (512, 512), 43.71, 45.04),
    "ccnet_r50-d8_512x512_20k_voc12aug": ("voc", (512, 512), 76.17, 77.51),
    "ccnet_r101-d8_512x512_20k_voc12aug": ("voc", (512, 512), 77.27, 79.02),
    "ccnet_r50-d8_512x512_40k_voc12aug": ("voc", (512, 512), 75.96, 77.04),
    "ccnet_r101-d8_512x512_40k_voc12aug": ("voc", (512, 512), 77.87, 78.90),
}

MMSEG_MEAN = (123.675, 116.28, 103.53)  # RGB, 0-255
MMSEG_STD = (58.395, 57.12, 57.375)
OFFICIAL_MEAN = (122.67891434, 116.66876762, 104.00698793)  # the official BGR mean, in RGB order
OFFICIAL_STD = (1.0, 1.0, 1.0)  # the official code subtracts the mean only
OFFICIAL_CROP = (769, 769)  # its training crop (README, train.py)


def _published_name(path: Path) -> str | None:
    matches = [name for name in PUBLISHED_MMSEG if path.name.startswith(name)]
    return max(matches, key=len) if matches else None


def _crop_from_meta(meta: Mapping) -> tuple[int, int] | None:
    for field in ("config", "cfg"):
        text = meta.get(field)
        if isinstance(text, str) and (match := re.search(r"crop_size\s*=\s*\((\d+),\s*(\d+)\)", text)):
            return int(match.group(1)), int(match.group(2))
    return None


def _classes_in_meta(meta: Mapping) -> list[str] | None:
    """Class names an mmsegmentation checkpoint records (0.x: meta.CLASSES, 1.x: meta.dataset_meta)."""
    names = meta.get("CLASSES")
    if names is None and isinstance(meta.get("dataset_meta"), Mapping):
        names = meta["dataset_meta"].get("classes")
    if isinstance(names, list | tuple) and all(isinstance(name, str) for name in names):
        return [name.strip() for name in names]
    return None


def _choose_dataset(dataset: str | None, num_classes: int, published: str | None) -> DatasetClasses:
    if dataset is None and published is not None:
        dataset = PUBLISHED_MMSEG[published][0]
    if dataset is None:
        by_count = [key for key, classes in CONVERTIBLE_DATASETS.items() if classes.num_classes == num_classes]
        if len(by_count) != 1:
            raise ConversionError(
                f"the checkpoint has {num_classes} classes: say which dataset with "
                f"--dataset {'|'.join(DATASET_CHOICES)}"
            )
        dataset = by_count[0]
    classes = dataset_classes(dataset)
    if classes.num_classes != num_classes:
        fitting = [key for key, other in CONVERTIBLE_DATASETS.items() if other.num_classes == num_classes]
        hint = f"; pass --dataset {fitting[0]}" if fitting else ""
        raise ConversionError(
            f"the checkpoint has {num_classes} classes but --dataset {dataset} has {classes.num_classes}{hint}"
        )
    return classes


def _class_name_warnings(classes: DatasetClasses, meta: Mapping) -> list[str]:
    """A note when the checkpoint records class names other than the dataset's (spelling differs between
    mmsegmentation versions, so this warns rather than refuses)."""
    recorded = _classes_in_meta(meta)
    if recorded is None or recorded == list(classes.names):
        return []
    differing = [
        f"{ours!r} vs {theirs!r}" for ours, theirs in zip(classes.names, recorded, strict=False) if ours != theirs
    ]
    return [f"warning: the checkpoint's meta names classes differently from {classes.dataset}: {differing[:5]}"]


def build_metadata(
    conversion: Conversion,
    source_format: str,
    source_path: Path,
    meta: Mapping,
    dataset: str | None = None,
    input_size: Sequence[int] | None = None,
    miou: float | None = None,
) -> dict:
    """What the weights do not say: the sidecar fields ``ccnet.checkpoint.save_checkpoint`` needs.

    The fields that come from the model and this code (model_config, recurrence, num_classes,
    format_version, code_version) are filled in by ``save_checkpoint``.
    """
    config = conversion.model_config
    published = _published_name(source_path) if source_format == "mmseg" else None
    classes = _choose_dataset(dataset, config["num_classes"], published)
    notes = list(conversion.notes) + _class_name_warnings(classes, meta)
    metrics: dict[str, float] = {}
    if published is not None:
        _, crop, published_miou, published_ms_flip = PUBLISHED_MMSEG[published]
        metrics = {"mIoU": round(published_miou / 100, 4), "mIoU_ms_flip": round(published_ms_flip / 100, 4)}
    if miou is not None:
        metrics["mIoU"] = miou / 100 if miou > 1 else miou
    if input_size is None:
        crop = _crop_from_meta(meta) or (PUBLISHED_MMSEG[published][1] if published else None)
        input_size = crop or (OFFICIAL_CROP if source_format == "official" else None)
    mean, std = (MMSEG_MEAN, MMSEG_STD) if source_format == "mmseg" else (OFFICIAL_MEAN, OFFICIAL_STD)
    return {
        "class_names": list(classes.names),
        "palette": classes.palette_lists(),
        "mean": list(mean),
        "std": list(std),
        "ignore_index": 255,
        "input_size": list(input_size) if input_size is not None else None,
        "dataset": classes.dataset,
        "split": "val" if metrics else "",
        "metrics": metrics,
        "train_config": {
            "source": "mmsegmentation" if source_format == "mmseg" else "official CCNet code (speedinghzl/CCNet)",
            "source_file": source_path.name,
            "published_model": published,
            "converted_by": f"python -m ccnet.convert {source_format}",
            "conversion_notes": notes,
        },
    }


def save_converted(model: CCNet, weights: Path, metadata: Mapping, half: bool = False) -> dict:
    """Write the checkpoint through ``ccnet.checkpoint`` and list it in its folder's index.json (the app
    reads that); returns the sidecar as written."""
    weights, sidecar = save_checkpoint(model, weights, metadata, half=half)
    try:
        write_index(weights.parent)
    except CheckpointError as error:
        raise ConversionError(
            f"wrote {weights} and {sidecar}, but {weights.parent / INDEX_FILE} could not be rebuilt: {error}\n"
            'Fix or move that file, then rebuild the index: python -c "from ccnet.checkpoint import '
            f"write_index; write_index('{weights.parent}')\""
        ) from error
    return read_metadata(sidecar)


# -------------------------------------------------------------------------------------------------
# Command line
# -------------------------------------------------------------------------------------------------


def _resolve_output(output: str, source_path: Path, published: str | None) -> Path:
    """A folder (existing, or written with a trailing slash) gets a file named after the source."""
    path = Path(output)
    if path.is_dir() or output.endswith(("/", os.sep)):
        return path / (published or source_path.stem)
    return path


def convert_file(
    source_format: str,
    input_path: str | os.PathLike,
    output: str | os.PathLike,
    dataset: str | None = None,
    recurrence: int | None = None,
    input_size: Sequence[int] | None = None,
    miou: float | None = None,
    half: bool = False,
    force: bool = False,
) -> tuple[Path, Path, dict]:
    """Read, convert, check and write; returns (weights path, sidecar path, sidecar)."""
    source_path = Path(input_path)
    if input_size is not None and (len(input_size) != 2 or min(input_size) < 1):
        raise ConversionError(f"--input-size takes two positive integers H W, got {list(input_size)}")
    published = _published_name(source_path) if source_format == "mmseg" else None
    weights, sidecar = checkpoint_paths(_resolve_output(str(output), source_path, published))
    existing = [str(path) for path in (weights, sidecar) if path.exists()]
    if existing and not force:
        raise ConversionError(f"{' and '.join(existing)} already exist(s): pass --force to overwrite")
    state, meta = read_source(source_path)
    conversion = convert_state_dict(source_format, state, meta, recurrence)
    metadata = build_metadata(conversion, source_format, source_path, meta, dataset, input_size, miou)
    model = build_converted_model(conversion)
    return weights, sidecar, save_converted(model, weights, metadata, half=half)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ccnet.convert",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Convert a published CCNet checkpoint (mmsegmentation's model zoo, or the official code's\n"
            "Cityscapes models) into this project's safetensors + JSON sidecar format (app, ccnet.checkpoint).\n"
            "The source is read with torch.load(weights_only=True) only; every key must fit exactly, or\n"
            "nothing is written."
        ),
        epilog=(
            "examples (docs/CONVERT.md says where to get the files):\n"
            "  python -m ccnet.convert mmseg \\\n"
            "      ccnet_r101-d8_769x769_80k_cityscapes_20200618_011502-ad3cd481.pth checkpoints/converted/\n"
            "  python -m ccnet.convert official CCNet_R1.pth checkpoints/converted/official_r1 --recurrence 1\n"
            "then: CCNET_EXTRA_CHECKPOINTS=checkpoints/converted ./scripts/run_app.sh"
        ),
    )
    parser.add_argument("format", choices=FORMATS, help="mmseg: mmsegmentation; official: speedinghzl/CCNet")
    parser.add_argument("input", help="the source checkpoint (.pth)")
    parser.add_argument("output", help="output stem (writes OUTPUT.safetensors and OUTPUT.json) or an existing folder")
    parser.add_argument(
        "--dataset",
        choices=DATASET_CHOICES,
        help="class names and palette; default: from the published model's name or the class count",
    )
    parser.add_argument(
        "--recurrence",
        type=int,
        help=f"trained loop count R; default: from the checkpoint's meta, else {DEFAULT_RECURRENCE} "
        "(give 1 for the official R=1 model)",
    )
    parser.add_argument(
        "--input-size", type=int, nargs=2, metavar=("H", "W"), help="training crop to record (default: known crop)"
    )
    parser.add_argument("--miou", type=float, help="validation mIoU to record (e.g. 79.74 for the official R=2)")
    parser.add_argument("--half", action="store_true", help="store float16 weights (half the file size)")
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        weights, sidecar, metadata = convert_file(
            args.format,
            args.input,
            args.output,
            dataset=args.dataset,
            recurrence=args.recurrence,
            input_size=args.input_size,
            miou=args.miou,
            half=args.half,
            force=args.force,
        )
    except (ConversionError, CheckpointError) as error:  # CheckpointError: the sidecar failed validation
        print(f"error: {error}", file=sys.stderr)
        return 2
    config = metadata["model_config"]
    print(
        f"converted {args.input} ({args.format}): CCNet {config['backbone']}, {config['num_classes']} classes "
        f"({metadata['dataset']}), R={config['recurrence']}, head {config['head_channels']}, "
        f"aux {config['aux_channels']}"
    )
    for note in metadata["train_config"]["conversion_notes"]:
        print(f"  - {note}")
    print(f"wrote {weights}\n      {sidecar}")
    print(f"open it in the app: CCNET_EXTRA_CHECKPOINTS={weights.parent} ./scripts/run_app.sh")
    return 0


if __name__ == "__main__":
    sys.exit(main())
