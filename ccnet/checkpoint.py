"""Checkpoints: safetensors weights plus a JSON sidecar that says what the weights are.

    <stem>.safetensors   the model's state dict (float32, or float16 with half=True)
    <stem>.json          the sidecar (fields in SIDECAR_FIELDS), validated on every load

Nothing is ever unpickled: a `.pt`/`.pth` file is read with `torch.load(weights_only=True)` and refused
when that fails. Files are written to a temporary name and renamed, so a crash leaves the old file.
`read_index` / `write_index` keep `index.json` of a checkpoint folder (what the app lists).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from contextlib import suppress
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

__all__ = [
    "FORMAT_VERSION",
    "INDEX_FILE",
    "SIDECAR_FIELDS",
    "CheckpointError",
    "atomic_write",
    "checkpoint_paths",
    "code_version",
    "complete_metadata",
    "load_checkpoint",
    "read_index",
    "read_metadata",
    "save_checkpoint",
    "validate_metadata",
    "write_index",
]

FORMAT_VERSION = 1
INDEX_FILE = "index.json"
WEIGHTS_SUFFIX = ".safetensors"
SIDECAR_SUFFIX = ".json"
TORCH_SUFFIXES = (".pt", ".pth")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used as it is; the message names the file and the field."""


# --- small helpers ------------------------------------------------------------------------------------


def _default_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call write(temporary_path) in path's folder, then rename over path (all or nothing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        os.chmod(temporary, _default_file_mode())  # mkstemp makes 0600 files; give the usual permissions
        write(temporary)
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return path


def _write_json(path: Path, content: Mapping) -> None:
    def write(temporary: str) -> None:
        with open(temporary, "w") as stream:
            json.dump(content, stream, indent=2)
            stream.write("\n")

    atomic_write(path, write)


def checkpoint_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """(weights, sidecar) for a stem, a `.safetensors` path or a `.json` sidecar path."""
    path = Path(path)
    if path.suffix in (WEIGHTS_SUFFIX, SIDECAR_SUFFIX):
        path = path.with_suffix("")
    return path.with_name(path.name + WEIGHTS_SUFFIX), path.with_name(path.name + SIDECAR_SUFFIX)


def code_version() -> str:
    """The package version, plus the git commit (and '-dirty') when run from a git checkout."""
    from ccnet import __version__

    try:
        folder = Path(__file__).resolve().parent
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    if not commit:
        return __version__
    return f"{__version__}+g{commit}" + ("-dirty" if dirty else "")


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, torch.nn.Module) else model


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# --- the sidecar --------------------------------------------------------------------------------------


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_colour(value) -> bool:
    return isinstance(value, list) and len(value) == 3 and all(_is_int(v) and 0 <= v <= 255 for v in value)


def _is_size(value) -> bool:
    return value is None or (
        isinstance(value, list) and len(value) == 2 and all(_is_int(v) and v > 0 for v in value)
    )


# field -> (check, what it must be)
SIDECAR_FIELDS: dict[str, tuple[Callable[[object], bool], str]] = {
    "format_version": (lambda v: v == FORMAT_VERSION, f"the integer {FORMAT_VERSION}"),
    "architecture": (lambda v: v == "CCNet", 'the string "CCNet"'),
    "model_config": (lambda v: isinstance(v, dict), "an object of CCNet arguments (model.config)"),
    "backbone": (lambda v: isinstance(v, str), "a backbone name"),
    "recurrence": (lambda v: _is_int(v) and v >= 0, "the trained loop count, an integer >= 0"),
    "num_classes": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "class_names": (
        lambda v: isinstance(v, list) and all(isinstance(n, str) for n in v),
        "a list of strings",
    ),
    "palette": (
        lambda v: isinstance(v, list) and all(_is_colour(c) for c in v),
        "a list of [r, g, b] (0-255)",
    ),
    "mean": (
        lambda v: isinstance(v, list) and len(v) == 3 and all(_is_number(x) for x in v),
        "3 numbers (RGB)",
    ),
    "std": (
        lambda v: isinstance(v, list) and len(v) == 3 and all(_is_number(x) and x > 0 for x in v),
        "3 positive numbers (RGB)",
    ),
    "ignore_index": (_is_int, "an integer"),
    "input_size": (_is_size, "[H, W] of the training crop, or null"),
    "dataset": (lambda v: isinstance(v, str), "the dataset name"),
    "split": (lambda v: isinstance(v, str), "the split the metrics were measured on"),
    "metrics": (lambda v: isinstance(v, dict), 'an object (e.g. {"mIoU": 0.61})'),
    "train_config": (lambda v: v is None or isinstance(v, dict), "an object or null"),
    "code_version": (lambda v: isinstance(v, str), "a version string"),
}


def validate_metadata(metadata: Mapping, source: str = "sidecar") -> None:
    """Check every sidecar field and their agreement with each other; CheckpointError names the field."""
    if not isinstance(metadata, Mapping):
        raise CheckpointError(f"{source}: expected a JSON object, got {type(metadata).__name__}")
    for field, (check, expected) in SIDECAR_FIELDS.items():
        if field not in metadata:
            raise CheckpointError(f"{source}: field '{field}' is missing (it must be {expected})")
        if not check(metadata[field]):
            raise CheckpointError(f"{source}: field '{field}' must be {expected}, got {metadata[field]!r}")
    count = metadata["num_classes"]
    for field in ("class_names", "palette"):
        if len(metadata[field]) != count:
            raise CheckpointError(
                f"{source}: field '{field}' has {len(metadata[field])} entries, num_classes is {count}"
            )
    config = metadata["model_config"]
    for field in ("num_classes", "backbone", "recurrence"):
        if field in config and config[field] != metadata[field]:
            raise CheckpointError(
                f"{source}: field '{field}' is {metadata[field]!r} "
                f"but model_config.{field} is {config[field]!r}"
            )


def complete_metadata(model: torch.nn.Module, metadata: Mapping) -> dict:
    """The sidecar for `model`: fields derived from the model and this code are filled in."""
    config = dict(_unwrap(model).config)
    derived = {
        "format_version": FORMAT_VERSION,
        "architecture": "CCNet",
        "model_config": config,
        "backbone": config.get("backbone"),
        "recurrence": config.get("recurrence"),
        "num_classes": config.get("num_classes"),
    }
    # code_version is kept when re-saving (export keeps the version that trained the weights).
    defaults = {
        "code_version": code_version(),
        "ignore_index": 255,
        "input_size": None,
        "metrics": {},
        "train_config": None,
        "split": "",
    }
    merged = defaults | dict(metadata) | derived
    ordered = {field: merged[field] for field in SIDECAR_FIELDS if field in merged}  # stable, readable order
    return ordered | {key: value for key, value in merged.items() if key not in ordered}


def read_metadata(path: str | os.PathLike) -> dict:
    """The validated sidecar of a checkpoint (stem, .safetensors or .json path)."""
    _, sidecar = checkpoint_paths(path)
    if not sidecar.is_file():
        raise CheckpointError(
            f"no sidecar {sidecar}: every checkpoint needs its JSON sidecar beside the weights"
        )
    try:
        metadata = json.loads(sidecar.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{sidecar} is not valid JSON: {error}") from error
    validate_metadata(metadata, str(sidecar))
    return metadata


# --- weights ------------------------------------------------------------------------------------------


def _state_for_saving(model: torch.nn.Module, half: bool) -> dict[str, torch.Tensor]:
    state = {}
    for key, tensor in _unwrap(model).state_dict().items():
        tensor = tensor.detach().cpu()
        if half and tensor.is_floating_point():
            tensor = tensor.half()
        state[key] = tensor.contiguous().clone()  # clone: safetensors refuses shared storage
    return state


def save_checkpoint(
    model: torch.nn.Module, path: str | os.PathLike, metadata: Mapping, half: bool = False
) -> tuple[Path, Path]:
    """Write <stem>.safetensors and <stem>.json atomically; returns both paths.

    `metadata` needs the dataset fields (class_names, palette, mean, std, dataset, ...); the fields that
    come from the model and the code (model_config, num_classes, code_version, ...) are filled in.
    """
    weights, sidecar = checkpoint_paths(path)
    content = complete_metadata(model, metadata) | {"weights_dtype": "float16" if half else "float32"}
    validate_metadata(content, f"metadata for {sidecar}")
    state = _state_for_saving(model, half)
    atomic_write(weights, lambda temporary: save_file(state, temporary, metadata={"format": "pt"}))
    _write_json(sidecar, content)
    return weights, sidecar


def _read_torch_file(path: Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    """A `.pt`/`.pth` state dict, only through weights_only=True; embedded metadata if present."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # the unpickler raises many types; all mean "not plain tensors"
        raise CheckpointError(
            f"refusing {path}: it cannot be loaded with weights_only=True (it holds pickled objects). "
            "Re-save it as a plain state dict, or convert it to safetensors."
        ) from error
    metadata = None
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        metadata = loaded.get("metadata") if isinstance(loaded.get("metadata"), dict) else None
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise CheckpointError(f"{path} does not hold a state dict (a mapping from names to tensors)")
    return dict(loaded), metadata


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"no weights file {path}")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as error:
        raise CheckpointError(
            f"cannot read {path} as safetensors ({error}); re-export the checkpoint"
        ) from error


def _check_state_matches(
    model: torch.nn.Module, state: Mapping[str, torch.Tensor], metadata: Mapping, source: str
):
    """Keys and shapes of the file against the model its sidecar describes."""
    expected = model.state_dict()
    classifier = "head.classifier.weight"
    if (
        classifier in state
        and classifier in expected
        and state[classifier].shape[0] != metadata["num_classes"]
    ):
        raise CheckpointError(
            f"{source}: field 'num_classes' is {metadata['num_classes']} but the weights' classifier "
            f"({classifier}) has {state[classifier].shape[0]} outputs"
        )
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: field 'model_config' does not describe these weights: "
            f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}, "
            f"unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}"
        )
    wrong = [
        f"{key} file {tuple(state[key].shape)} vs model {tuple(tensor.shape)}"
        for key, tensor in expected.items()
        if state[key].shape != tensor.shape
    ]
    if wrong:
        raise CheckpointError(
            f"{source}: field 'model_config' does not describe these weights: {'; '.join(wrong[:8])}"
        )
    for key, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(
                f"{source}: weights {key} hold NaN or inf values; use an earlier checkpoint"
            )


def load_checkpoint(path: str | os.PathLike, device: str | torch.device | None = None):
    """(model, metadata): the model in eval mode on `device` (CUDA when available by default).

    `path` is a stem, a `.safetensors` or `.json` path, or a `.pt`/`.pth` file read with weights_only=True
    (its metadata from a {"state_dict", "metadata"} wrapper or from a `.json` sidecar beside it).
    """
    from ccnet.model import build_model  # here, not at import: the model module imports this package

    path = Path(path)
    if path.suffix in TORCH_SUFFIXES:
        if not path.is_file():
            raise CheckpointError(f"no checkpoint file {path}")
        state, metadata = _read_torch_file(path)
        source = str(path)
        if metadata is None:
            metadata = read_metadata(path.with_suffix(""))
        else:
            validate_metadata(metadata, source)
    else:
        weights, sidecar = checkpoint_paths(path)
        metadata = read_metadata(sidecar)
        state = _read_weights(weights)
        source = str(sidecar)
    try:
        model = build_model(metadata["model_config"])
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{source}: field 'model_config' cannot build a model: {error}") from error
    _check_state_matches(model, state, metadata, source)
    expected = model.state_dict()
    model.load_state_dict(
        {key: tensor.to(expected[key].dtype) for key, tensor in state.items()}
    )  # fp16 -> fp32
    device = torch.device(device) if device is not None else _default_device()
    return model.to(device).eval(), metadata


# --- the folder index ---------------------------------------------------------------------------------


def _index_entry(sidecar: Path, metadata: Mapping) -> dict:
    weights, _ = checkpoint_paths(sidecar)
    metrics = metadata.get("metrics") or {}
    return {
        "name": weights.name[: -len(WEIGHTS_SUFFIX)],
        "file": weights.name,
        "sidecar": sidecar.name,
        "recurrence": metadata["recurrence"],
        "dataset": metadata["dataset"],
        "split": metadata["split"],
        "num_classes": metadata["num_classes"],
        "backbone": metadata["backbone"],
        "ccl": bool(metadata["model_config"].get("ccl_channels", 0)),
        "mIoU": metrics.get("mIoU"),
        "input_size": metadata["input_size"],
        "weights_dtype": metadata.get("weights_dtype", "float32"),
        "size_bytes": weights.stat().st_size if weights.is_file() else None,
    }


def _scan(folder: Path) -> list[dict]:
    entries = []
    for sidecar in sorted(folder.glob(f"*{SIDECAR_SUFFIX}")):
        if sidecar.name == INDEX_FILE or not checkpoint_paths(sidecar)[0].is_file():
            continue
        entries.append(_index_entry(sidecar, read_metadata(sidecar)))
    return entries


def _pick_default(entries: list[dict], wanted: str | None) -> str | None:
    names = [entry["name"] for entry in entries]
    if wanted is not None and wanted in names:
        return wanted
    for entry in entries:  # the paper's default loop count, without CCL
        if entry["recurrence"] == 2 and not entry["ccl"]:
            return entry["name"]
    return names[0] if names else None


def write_index(folder: str | os.PathLike, default: str | None = None) -> dict:
    """Scan `folder` for checkpoints and write its index.json; keeps the previous default unless given."""
    folder = Path(folder)
    entries = _scan(folder)
    if default is not None and default not in [entry["name"] for entry in entries]:
        raise CheckpointError(f"default {default!r} is not a checkpoint in {folder}")
    previous = None
    if (folder / INDEX_FILE).is_file():
        with suppress(json.JSONDecodeError, OSError, AttributeError):
            previous = json.loads((folder / INDEX_FILE).read_text()).get("default")
    index = {"default": _pick_default(entries, default or previous), "models": entries}
    _write_json(folder / INDEX_FILE, index)
    return index


def read_index(folder: str | os.PathLike) -> dict:
    """{"default": name, "models": [...]} of a checkpoint folder (scanned if it has no index.json yet)."""
    folder = Path(folder)
    path = folder / INDEX_FILE
    if not path.is_file():
        entries = _scan(folder) if folder.is_dir() else []
        return {"default": _pick_default(entries, None), "models": entries}
    try:
        index = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path} is not valid JSON ({error}); rebuild it with write_index") from error
    if not isinstance(index, dict) or not isinstance(index.get("models"), list):
        raise CheckpointError(
            f'{path}: expected {{"default": name, "models": [...]}}; rebuild it with write_index'
        )
    return index
