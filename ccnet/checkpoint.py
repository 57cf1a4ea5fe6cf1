"""Checkpoints: safetensors weights plus a JSON sidecar that says what the weights are.

    <stem>.safetensors   the model's state dict (float32, or float16 with half=True)
    <stem>.json          the sidecar (fields in SIDECAR_FIELDS), validated on every load

Nothing is ever unpickled: a `.pt`/`.pth` file is read with `torch.load(weights_only=True)` and refused
when that fails. Files are written to a temporary name and renamed, so a crash leaves the old file; both
files of a save carry the same `save_id`, so weights and a sidecar from different saves are never mixed.
`read_index` / `write_index` keep `index.json` of a checkpoint folder (what the app lists); names in an
index that would lead outside its folder (`../x`, absolute paths, symlinks out) are refused.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Mapping
from contextlib import suppress
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

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
    "resolve_in_folder",
    "save_checkpoint",
    "validate_metadata",
    "write_index",
]

FORMAT_VERSION = 1
INDEX_FILE = "index.json"
BACKBONE_PREFIX = "backbone."
SHARED_BACKBONE_KEY = "shared_backbone"  # sidecar: {"checkpoint": NAME in the same folder, "save_id": its save}
WEIGHTS_SUFFIX = ".safetensors"
SIDECAR_SUFFIX = ".json"
TORCH_SUFFIXES = (".pt", ".pth")
# What the weights file may hold: floating weights in the sidecar's `weights_dtype`, integer counters.
WEIGHTS_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
INTEGER_DTYPES = (torch.int64, torch.int32)
SAVE_ID_KEY = "ccnet_save_id"  # in the safetensors header; `save_id` in the sidecar


class CheckpointError(ValueError):
    """A checkpoint that cannot be used as it is; the message names the file and the field."""


# --- small helpers ------------------------------------------------------------------------------------


def _default_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _write_temporary(path: Path, write: Callable[[str], None]) -> str:
    """write(temporary) to a hidden `.<name>.*.tmp` beside `path`, flushed to disk; removed if it fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        os.chmod(temporary, _default_file_mode())  # mkstemp makes 0600 files; give the usual permissions
        write(temporary)
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return temporary


def _fsync_folder(folder: Path) -> None:
    """Make the renames in `folder` durable (a power cut must not bring back the old names)."""
    with suppress(OSError):
        handle = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call write(temporary_path) in path's folder, then rename over path (all or nothing)."""
    path = Path(path)
    temporary = _write_temporary(path, write)
    try:
        os.replace(temporary, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_folder(path.parent)
    return path


def _json_writer(content: Mapping) -> Callable[[str], None]:
    def write(temporary: str) -> None:
        with open(temporary, "w") as stream:
            json.dump(content, stream, indent=2)
            stream.write("\n")

    return write


def write_json(path: str | os.PathLike, content: Mapping) -> Path:
    """Indented JSON plus a newline, written atomically (all or nothing)."""
    return atomic_write(path, _json_writer(content))


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
    return value is None or (isinstance(value, list) and len(value) == 2 and all(_is_int(v) and v > 0 for v in value))


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
    dtype = metadata.get("weights_dtype", "float32")
    if dtype not in WEIGHTS_DTYPES:
        raise CheckpointError(f"{source}: field 'weights_dtype' must be one of {sorted(WEIGHTS_DTYPES)}, got {dtype!r}")
    if not isinstance(metadata.get("save_id", ""), str):
        raise CheckpointError(f"{source}: field 'save_id' must be a string, got {metadata['save_id']!r}")
    config = metadata["model_config"]
    for field in ("num_classes", "backbone", "recurrence"):
        if field in config and config[field] != metadata[field]:
            raise CheckpointError(
                f"{source}: field '{field}' is {metadata[field]!r} but model_config.{field} is {config[field]!r}"
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
        raise CheckpointError(f"no sidecar {sidecar}: every checkpoint needs its JSON sidecar beside the weights")
    try:
        metadata = json.loads(sidecar.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{sidecar} is not valid JSON: {error}") from error
    validate_metadata(metadata, str(sidecar))
    return metadata


def update_sidecar(path: str | os.PathLike, updates: Mapping) -> dict:
    """Replace top-level fields of a checkpoint's sidecar (descriptions only: the weights and save_id stay)."""
    structural = {"format_version", "architecture", "model_config", "backbone", "recurrence", "num_classes"}
    loading = {"class_names", "weights_dtype", "save_id", SHARED_BACKBONE_KEY, "mean", "std", "input_size"}
    protected = sorted(set(updates) & (structural | loading))
    if protected:
        raise CheckpointError(f"update_sidecar changes descriptions only, not {protected}: save the checkpoint again")
    _, sidecar = checkpoint_paths(path)
    metadata = read_metadata(sidecar) | dict(updates)
    validate_metadata(metadata, str(sidecar))
    write_json(sidecar, metadata)
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
    model: torch.nn.Module,
    path: str | os.PathLike,
    metadata: Mapping,
    half: bool = False,
    backbone_from: str | os.PathLike | None = None,
) -> tuple[Path, Path]:
    """Write <stem>.safetensors and <stem>.json atomically; returns both paths.

    `metadata` needs the dataset fields (class_names, palette, mean, std, dataset, ...); the fields that
    come from the model and the code (model_config, num_classes, code_version, ...) are filled in.

    `backbone_from`: a checkpoint in the same folder whose backbone this model shares, tensor for tensor (a
    head trained on its frozen backbone). The file then holds everything but the backbone, and loading takes
    the backbone from that checkpoint, checked by its save_id: a head costs a fifth of a whole model.
    """
    weights, sidecar = checkpoint_paths(path)
    save_id = uuid.uuid4().hex
    content = complete_metadata(model, metadata) | {"weights_dtype": "float16" if half else "float32"}
    content["save_id"] = save_id
    validate_metadata(content, f"metadata for {sidecar}")
    state = _state_for_saving(model, half)
    if backbone_from is not None:
        content[SHARED_BACKBONE_KEY] = _shared_backbone_entry(state, weights, backbone_from)
        state = {key: tensor for key, tensor in state.items() if not key.startswith(BACKBONE_PREFIX)}
    header = {"format": "pt", SAVE_ID_KEY: save_id}
    # Both files are complete on disk before either replaces its predecessor: a kill during the (long)
    # writing leaves the previous checkpoint whole; one between the two renames is caught by `save_id`.
    weights_temporary = _write_temporary(weights, lambda temporary: save_file(state, temporary, metadata=header))
    try:
        sidecar_temporary = _write_temporary(sidecar, _json_writer(content))
    except BaseException:
        os.unlink(weights_temporary)
        raise
    os.replace(weights_temporary, weights)
    os.replace(sidecar_temporary, sidecar)
    _fsync_folder(weights.parent)
    return weights, sidecar


def _shared_backbone_entry(state: Mapping[str, torch.Tensor], weights: Path, backbone_from) -> dict:
    """Check that `state`'s backbone is the other checkpoint's, tensor for tensor; the sidecar's reference."""
    other_weights, other_sidecar = checkpoint_paths(backbone_from)
    if other_weights.parent.resolve() != weights.parent.resolve():
        raise CheckpointError(f"a shared backbone must come from the same folder as {weights.name}: {other_weights}")
    other, _ = _read_weights(other_weights)
    mine = {key: tensor for key, tensor in state.items() if key.startswith(BACKBONE_PREFIX)}
    theirs = {key: tensor for key, tensor in other.items() if key.startswith(BACKBONE_PREFIX)}
    if mine.keys() != theirs.keys() or any(
        not torch.equal(tensor, theirs[key].to(tensor.dtype)) for key, tensor in mine.items()
    ):
        raise CheckpointError(
            f"{weights.name}: its backbone is not {other_weights.name}'s tensor for tensor: save it whole instead"
        )
    name = other_weights.name[: -len(WEIGHTS_SUFFIX)]
    return {"checkpoint": name, "save_id": read_metadata(other_sidecar)["save_id"]}


def _with_shared_backbone(state: dict, metadata: Mapping, sidecar: Path, source: str) -> dict:
    """The full state of a checkpoint saved with `backbone_from`: its backbone read from the named sibling."""
    shared = metadata.get(SHARED_BACKBONE_KEY)
    if shared is None:
        return state
    name = shared.get("checkpoint") if isinstance(shared, Mapping) else None
    plain = isinstance(name, str) and name and Path(name).name == name and not set(name) & set("/\\:")
    if not plain or name.startswith("."):
        raise CheckpointError(f"{source}: field '{SHARED_BACKBONE_KEY}' must name a checkpoint in the same folder")
    other_weights, other_sidecar = checkpoint_paths(sidecar.parent / name)
    folder = sidecar.resolve().parent
    if any(p.resolve().parent != folder for p in (other_weights, other_sidecar)):  # a link out of the folder
        raise CheckpointError(f"{source}: its shared backbone {name} must be a file in the same folder")
    other_metadata = read_metadata(other_sidecar)
    if other_metadata.get("save_id") != shared.get("save_id"):
        raise CheckpointError(
            f"{source}: its backbone comes from {name}, but {name} has been saved again since "
            f"(save {other_metadata.get('save_id')!r}, expected {shared.get('save_id')!r}): export this head again"
        )
    other, other_header = _read_weights(other_weights)
    _check_same_save(other_header, other_metadata, str(other_sidecar))
    backbone = {key: tensor for key, tensor in other.items() if key.startswith(BACKBONE_PREFIX)}
    dtype = WEIGHTS_DTYPES[metadata.get("weights_dtype", "float32")]
    backbone = {key: tensor.to(dtype) if tensor.is_floating_point() else tensor for key, tensor in backbone.items()}
    return state | backbone


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


def _read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, header metadata) of a safetensors file."""
    if not path.is_file():
        raise CheckpointError(f"no weights file {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as opened:
            header = opened.metadata() or {}
            return {key: opened.get_tensor(key) for key in opened.keys()}, header  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, TypeError) as error:  # unknown dtypes raise TypeError
        raise CheckpointError(f"cannot read {path} as safetensors ({error}); re-export the checkpoint") from error


def _check_dtypes(state: Mapping[str, torch.Tensor], metadata: Mapping, source: str) -> None:
    """Floating tensors in the sidecar's `weights_dtype`, integer buffers as int32/int64, nothing else."""
    expected = WEIGHTS_DTYPES[metadata.get("weights_dtype", "float32")]
    for key, tensor in state.items():
        if tensor.is_floating_point() and tensor.dtype != expected:
            raise CheckpointError(
                f"{source}: field 'weights_dtype' is {metadata.get('weights_dtype', 'float32')!r} but {key} "
                f"is stored as {tensor.dtype}; re-export the checkpoint"
            )
        if not tensor.is_floating_point() and tensor.dtype not in INTEGER_DTYPES:
            raise CheckpointError(f"{source}: weights {key} have the unsupported dtype {tensor.dtype}")


def _check_same_save(header: Mapping[str, str], metadata: Mapping, source: str) -> None:
    """A sidecar and weights from different saves (a save killed between its two renames, a copied file)."""
    stored, described = header.get(SAVE_ID_KEY), metadata.get("save_id")
    if stored and described and stored != described:
        raise CheckpointError(
            f"{source}: field 'save_id' is {described!r} but the weights were written by save {stored!r}: "
            "the sidecar belongs to other weights (an interrupted save, or a file copied over). "
            "Re-export the checkpoint from its training run."
        )


def _check_state_matches(model: torch.nn.Module, state: Mapping[str, torch.Tensor], metadata: Mapping, source: str):
    """Keys and shapes of the file against the model its sidecar describes."""
    expected = model.state_dict()
    classifier = "head.classifier.weight"
    if classifier in state and classifier in expected and state[classifier].shape[0] != metadata["num_classes"]:
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
        raise CheckpointError(f"{source}: field 'model_config' does not describe these weights: {'; '.join(wrong[:8])}")
    for key, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{source}: weights {key} hold NaN or inf values; use an earlier checkpoint")


def load_checkpoint(path: str | os.PathLike, device: str | torch.device | None = None):
    """(model, metadata): the model in eval mode on `device` (CUDA when available by default).

    `path` is a stem, a `.safetensors` or `.json` path, or a `.pt`/`.pth` file read with weights_only=True
    (its metadata from a {"state_dict", "metadata"} wrapper or from a `.json` sidecar beside it).
    """
    from ccnet.factory import build_model  # here, not at import: the model module imports this package

    path = Path(path)
    if path.suffix in TORCH_SUFFIXES:
        if not path.is_file():
            raise CheckpointError(f"no checkpoint file {path}")
        state, metadata = _read_torch_file(path)
        header = {}
        source = str(path)
        if metadata is None:
            metadata = read_metadata(path.with_suffix(""))
        else:
            validate_metadata(metadata, source)
    else:
        weights, sidecar = checkpoint_paths(path)
        metadata = read_metadata(sidecar)
        state, header = _read_weights(weights)
        source = str(sidecar)
        state = _with_shared_backbone(state, metadata, sidecar, source)
    try:
        model = build_model(metadata["model_config"])
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{source}: field 'model_config' cannot build a model: {error}") from error
    _check_state_matches(model, state, metadata, source)
    if path.suffix not in TORCH_SUFFIXES:
        _check_dtypes(state, metadata, source)
    _check_same_save(header, metadata, source)
    expected = model.state_dict()
    model.load_state_dict({key: tensor.to(expected[key].dtype) for key, tensor in state.items()})  # fp16 -> fp32
    device = torch.device(device) if device is not None else _default_device()
    return model.to(device).eval(), metadata


# --- the folder index ---------------------------------------------------------------------------------


def index_entry(sidecar: Path, metadata: Mapping) -> dict:
    """A checkpoint's entry in its folder's index.json, from its sidecar."""
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
        "frames": metadata["model_config"].get("frames"),
        # a head trained on another checkpoint's frozen backbone names that backbone's save_id; None: end to end
        "head_on": (metadata.get("training") or {}).get("head_only_on"),
        # the attention's recipe (None where not recorded): per-R comparisons keep to one recipe
        "attention_weight": ((metadata.get("train_config") or {}).get("loss") or {}).get("attention_weight"),
        "gamma_init": ((metadata.get("train_config") or {}).get("model") or {}).get("gamma_init"),
        "mIoU": metrics.get("mIoU"),
        "input_size": metadata["input_size"],
        "weights_dtype": metadata.get("weights_dtype", "float32"),
        "size_bytes": weights.stat().st_size if weights.is_file() else None,
    }


# A checkpoint name is a plain file stem: no folder parts, no leading dot (temporary files start with one).
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")


def resolve_in_folder(folder: str | os.PathLike, file_name: str) -> Path:
    """`folder / file_name`, refused (CheckpointError) unless it is a plain name that stays inside `folder`.

    Refuses `../x`, `sub/x`, absolute paths, hidden names and symlinks whose target lies outside the folder.
    """
    folder = Path(folder)
    if not isinstance(file_name, str) or not _NAME.fullmatch(file_name) or ".." in file_name:
        raise CheckpointError(f"{file_name!r} is not a plain file name inside {folder}; refusing it")
    path = folder / file_name
    if folder.resolve() != path.resolve().parent:
        raise CheckpointError(f"{file_name!r} in {folder} leads outside the folder (a symlink?); refusing it")
    return path


def _scan(folder: Path) -> list[dict]:
    entries = []
    for sidecar in sorted(folder.glob(f"*{SIDECAR_SUFFIX}")):
        weights = checkpoint_paths(sidecar)[0]
        if sidecar.name == INDEX_FILE or not weights.is_file():
            continue
        try:
            resolve_in_folder(folder, sidecar.name)
            resolve_in_folder(folder, weights.name)
        except CheckpointError:
            continue  # hidden, odd or escaping names are never listed
        entries.append(index_entry(sidecar, read_metadata(sidecar)))
    return entries


def _entry_problem(folder: Path, entry) -> str | None:
    """Why an index entry cannot be served (None: it is fine): every file it names must lie in `folder`."""
    if not isinstance(entry, dict):
        return f"entry {entry!r} is not an object"
    for field in ("name", "file", "sidecar"):
        if field not in entry:
            continue
        name = entry[field]
        try:
            resolve_in_folder(folder, name + WEIGHTS_SUFFIX if field == "name" and isinstance(name, str) else name)
        except CheckpointError as error:
            return f"field '{field}': {error}"
    if "file" in entry and not entry["file"].endswith(WEIGHTS_SUFFIX):
        return f"field 'file' {entry['file']!r} is not a {WEIGHTS_SUFFIX} file"
    return None


def _without_refused_entries(path: Path, index: dict) -> dict:
    """The index with entries naming files outside its folder removed (listed under "refused", with why)."""
    kept, refused = [], []
    for entry in index["models"]:
        problem = _entry_problem(path.parent, entry)
        if problem is None:
            kept.append(entry)
        else:
            refused.append(f"{path}: {problem}")
    return index | {"models": kept} | ({"refused": refused} if refused else {})


def _pick_default(entries: list[dict], wanted: str | None) -> str | None:
    names = [entry["name"] for entry in entries]
    if wanted is not None and wanted in names:
        return wanted
    for entry in entries:  # the paper's default loop count, without CCL
        if entry["recurrence"] == 2 and not entry["ccl"]:
            return entry["name"]
    return names[0] if names else None


def pick_default_video(entries: list[dict], wanted: str | None) -> str | None:
    """The video model a page opens on: `wanted` if it is one, else the one with the most frames (T = 5 attends
    across frames; T = 1 does not), then by name."""
    videos = [entry for entry in entries if entry.get("frames")]
    if wanted is not None and wanted in [entry["name"] for entry in videos]:
        return wanted
    return min(videos, key=lambda entry: (-entry["frames"], entry["name"]))["name"] if videos else None


def recipe_name(recurrence: int, gamma_init: float | None, attention_weight: float | None) -> str:
    """ "paper" for the paper's losses on a model with attention (gamma from 0, no affinity loss), else "default".

    Unrecorded values (None) read as the default's: only a recorded gamma_init of 0 makes a paper-recipe model.
    """
    return "paper" if recurrence and gamma_init == 0 and not attention_weight else "default"


def write_index(folder: str | os.PathLike, default: str | None = None, default_video: str | None = None) -> dict:
    """Scan `folder` for checkpoints and write its index.json; keeps the previous defaults unless given
    (`default`: the image model the explorer opens on; `default_video`: the video page's)."""
    folder = Path(folder)
    entries = _scan(folder)
    names = [entry["name"] for entry in entries]
    for wanted in (default, default_video):
        if wanted is not None and wanted not in names:
            raise CheckpointError(f"default {wanted!r} is not a checkpoint in {folder}")
    previous = {}
    if (folder / INDEX_FILE).is_file():
        with suppress(json.JSONDecodeError, OSError):
            previous = json.loads((folder / INDEX_FILE).read_text())
    if not isinstance(previous, dict):  # a malformed index is rewritten, its defaults forgotten
        previous = {}
    index = {
        "default": _pick_default(entries, default or previous.get("default")),
        "default_video": pick_default_video(entries, default_video or previous.get("default_video")),
        "models": entries,
    }
    write_json(folder / INDEX_FILE, index)
    return index


def read_index(folder: str | os.PathLike) -> dict:
    """{"default": name, "models": [...]} of a checkpoint folder (scanned if it has no index.json yet).

    Entries naming files outside the folder are dropped and explained under "refused" (the others stay usable).
    """
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
        raise CheckpointError(f'{path}: expected {{"default": name, "models": [...]}}; rebuild it with write_index')
    return _without_refused_entries(path, index)
