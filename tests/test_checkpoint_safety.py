"""Checkpoint safety: nothing can run code on load, sidecars are checked against the weights, index names stay
inside their folder, and a writer killed mid-write leaves the previous checkpoint loading bit-identically."""

from __future__ import annotations

import ast
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from ccnet.checkpoint import CheckpointError, load_checkpoint, read_index, resolve_in_folder, save_checkpoint
from ccnet.classes import CAMVID
from ccnet.model import CCNet
from tests.test_checkpoint import _metadata
from training.state import load_training_state

ROOT = Path(__file__).absolute().parent.parent
PROJECT_CODE = ("ccnet", "training", "app", "benchmarks")


@pytest.fixture
def model(tiny_model_config):
    torch.manual_seed(0)
    return CCNet(num_classes=11, **tiny_model_config).eval()


# --- nothing executes on load ------------------------------------------------------------------------------


class Bomb:
    """Unpickling this creates `marker`: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _bombs(folder: Path, state: dict) -> dict[str, Path]:
    """The same bomb as a torch.save zip file and as a legacy raw pickle, each with a real state dict."""
    marker = folder / "exploded"
    torch.save({"state_dict": state, "metadata": Bomb(marker)}, folder / "zip_bomb.pt")
    (folder / "raw_bomb.pth").write_bytes(pickle.dumps({"state_dict": state, "x": Bomb(marker)}))
    return {"zip": folder / "zip_bomb.pt", "raw": folder / "raw_bomb.pth", "marker": marker}


def test_the_bomb_is_live_when_unpickled(model, tmp_path):
    """Control: plain unpickling of the same bytes does run the payload (so the refusals below mean something)."""
    bombs = _bombs(tmp_path, model.state_dict())
    pickle.loads(bombs["raw"].read_bytes())  # noqa: S301 -- the point of the control
    assert bombs["marker"].exists()


@pytest.mark.parametrize("kind", ["zip", "raw"])
def test_pickle_bomb_checkpoint_is_refused_without_running(model, tmp_path, kind):
    bombs = _bombs(tmp_path, model.state_dict())
    save_checkpoint(model, tmp_path / "sidecar_source", _metadata())
    (tmp_path / f"{bombs[kind].stem}.json").write_text((tmp_path / "sidecar_source.json").read_text())
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_checkpoint(bombs[kind], device="cpu")
    with pytest.raises(Exception, match="(?i)weights_only|unpickl"):
        load_training_state(bombs[kind])
    assert not bombs["marker"].exists()


def _unsafe_loads(path: Path) -> list[str]:
    """Calls in one source file that could unpickle: torch.load without weights_only=True, pickle/dill/joblib
    loads, numpy loads with allow_pickle=True."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
        keywords = {k.arg: k.value for k in node.keywords}
        where = f"{path.relative_to(ROOT)}:{node.lineno}"
        if owner == "torch" and node.func.attr == "load":
            flag = keywords.get("weights_only")
            if not (isinstance(flag, ast.Constant) and flag.value is True):
                found.append(f"{where} torch.load without weights_only=True")
        if owner in ("pickle", "dill", "joblib", "cloudpickle", "marshal") and node.func.attr.startswith("load"):
            found.append(f"{where} {owner}.{node.func.attr}")
        if owner in ("np", "numpy") and node.func.attr == "load":
            flag = keywords.get("allow_pickle")
            if flag is not None and not (isinstance(flag, ast.Constant) and flag.value is False):
                found.append(f"{where} numpy load with allow_pickle")
    return found


def test_no_unpickling_anywhere_in_the_project():
    files = [path for folder in PROJECT_CODE for path in sorted((ROOT / folder).rglob("*.py"))]
    assert len(files) > 30
    problems = [problem for path in files for problem in _unsafe_loads(path)]
    assert problems == []


# --- the sidecar against the weights -----------------------------------------------------------------------


def _edit(path: Path, **changes) -> None:
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"num_classes": 11.0}, "field 'num_classes' must be"),
        ({"num_classes": True}, "field 'num_classes' must be"),
        ({"recurrence": "2"}, "field 'recurrence' must be"),
        ({"class_names": list(CAMVID.names) + ["extra"]}, "field 'class_names' has 12 entries"),
        ({"palette": CAMVID.palette_lists()[:-1]}, "field 'palette' has 10 entries"),
        ({"palette": [[0, 0]] * 11}, "field 'palette' must be"),
        ({"mean": ["0", 0, 0]}, "field 'mean' must be"),
        ({"model_config": "CCNet"}, "field 'model_config' must be"),
        ({"input_size": [0, 48]}, "field 'input_size' must be"),
        ({"weights_dtype": "int8"}, "field 'weights_dtype' must be one of"),
        ({"weights_dtype": "float16"}, "field 'weights_dtype' is 'float16' but"),
        ({"save_id": 7}, "field 'save_id' must be a string"),
    ],
)
def test_sidecar_types_and_agreement_with_the_weights(model, tmp_path, changes, message):
    _, sidecar = save_checkpoint(model, tmp_path / "m", _metadata())
    _edit(sidecar, **changes)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path / "m", device="cpu")


def test_class_count_and_shapes_are_checked_against_the_weights(model, tmp_path, tiny_model_config):
    _, sidecar = save_checkpoint(model, tmp_path / "m", _metadata())
    names, palette = [f"c{i}" for i in range(12)], [[1, 2, 3]] * 12
    config = json.loads(sidecar.read_text())["model_config"]
    _edit(sidecar, num_classes=12, class_names=names, palette=palette, model_config=config | {"num_classes": 12})
    with pytest.raises(CheckpointError, match="field 'num_classes' is 12 but the weights' classifier"):
        load_checkpoint(tmp_path / "m", device="cpu")
    _edit(
        sidecar,
        num_classes=11,
        class_names=list(CAMVID.names),
        palette=CAMVID.palette_lists(),
        model_config=config | {"head_channels": 24},
    )
    with pytest.raises(CheckpointError, match=r"does not describe these weights: .*\(16, .*vs model \(24"):
        load_checkpoint(tmp_path / "m", device="cpu")


def test_weights_with_an_unknown_or_wrong_dtype_are_refused(model, tmp_path):
    weights, _ = save_checkpoint(model, tmp_path / "m", _metadata())
    state = load_file(str(weights))
    key = next(k for k, v in state.items() if v.is_floating_point())
    for dtype, message in ((torch.float64, "is stored as torch.float64"), (torch.int8, "unsupported dtype")):
        changed = state | {key: state[key].to(dtype)}
        save_file(changed, str(weights), metadata={"format": "pt"})
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(tmp_path / "m", device="cpu")
    header = weights.read_bytes()
    weights.write_bytes(header.replace(b'"dtype":"F32"', b'"dtype":"Q99"', 1))
    with pytest.raises(CheckpointError, match="cannot read .* as safetensors"):
        load_checkpoint(tmp_path / "m", device="cpu")


def test_weights_and_sidecar_of_different_saves_are_never_mixed(model, tmp_path, tiny_model_config):
    """What a kill between the two renames of a save would leave: the new weights beside the old sidecar."""
    save_checkpoint(model, tmp_path / "old", _metadata(metrics={"mIoU": 0.1}))
    torch.manual_seed(1)
    newer = CCNet(num_classes=11, **tiny_model_config).eval()
    save_checkpoint(newer, tmp_path / "new", _metadata(metrics={"mIoU": 0.9}))
    os.replace(tmp_path / "new.safetensors", tmp_path / "old.safetensors")
    with pytest.raises(CheckpointError, match="field 'save_id' .* belongs to other weights"):
        load_checkpoint(tmp_path / "old", device="cpu")


def test_the_bundled_checkpoints_pass_every_check():
    index = read_index(ROOT / "checkpoints")
    assert len(index["models"]) >= 5 and "refused" not in index
    model, metadata = load_checkpoint(ROOT / "checkpoints" / index["default"], device="cpu")
    assert metadata["weights_dtype"] == "float16" and not model.training


# --- names stay inside the checkpoint folder ----------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "../x.safetensors",
        "/etc/passwd",
        "sub/x.safetensors",
        "..",
        ".hidden.json",
        "x/../../y.json",
        "",
        "C:\\x.safetensors",
    ],
)
def test_names_that_escape_the_folder_are_refused(tmp_path, name):
    with pytest.raises(CheckpointError, match="refusing"):
        resolve_in_folder(tmp_path, name)


def test_index_drops_entries_leading_outside_and_keeps_the_rest(model, tmp_path):
    folder, outside = tmp_path / "checkpoints", tmp_path / "outside"
    save_checkpoint(model, folder / "good", _metadata())
    save_checkpoint(model, outside / "secret", _metadata())
    (folder / "linked.safetensors").symlink_to(outside / "secret.safetensors")  # a symlink out of the folder
    (folder / "linked.json").symlink_to(outside / "secret.json")
    scanned = read_index(folder)  # no index.json: the folder is scanned
    assert [entry["name"] for entry in scanned["models"]] == ["good"]
    good = scanned["models"][0]
    bad = [
        good | {"file": "../outside/secret.safetensors"},
        good | {"name": "/etc/passwd"},
        good | {"sidecar": "../outside/secret.json"},
        good | {"name": "linked", "file": "linked.safetensors"},
        good | {"file": "good.json"},
        "not an entry",
    ]
    (folder / "index.json").write_text(json.dumps({"default": "good", "models": [good, *bad]}))
    index = read_index(folder)
    assert index["models"] == [good] and len(index["refused"]) == len(bad)
    assert all("refus" in reason or "not" in reason for reason in index["refused"])


# --- a writer killed mid-write -------------------------------------------------------------------------------

# Writes the new checkpoint slowly (the real bytes, in small flushed chunks), so a kill lands inside the write.
SLOW_WRITER = textwrap.dedent(
    """
    import sys, time, torch
    from safetensors.torch import save as to_bytes
    import ccnet.checkpoint as checkpoint
    from ccnet.model import CCNet

    def slow_save_file(state, path, metadata=None):
        data = to_bytes(state, metadata=metadata)
        with open(path, "wb") as stream:
            for start in range(0, len(data), 16384):
                stream.write(data[start : start + 16384])
                stream.flush()
                time.sleep(0.004)

    checkpoint.save_file = slow_save_file
    torch.manual_seed(int(sys.argv[2]))
    model = CCNet(num_classes=11, backbone="resnet18", base_width=16, head_channels=32, recurrence=2)
    print("writing", flush=True)
    checkpoint.save_checkpoint(model, sys.argv[1], {**__import__("json").loads(sys.argv[3])})
    print("done", flush=True)
    """
)


def _temporary_size(folder: Path) -> int:
    sizes = [path.stat().st_size for path in folder.glob(".m.safetensors.*.tmp") if path.exists()]
    return max(sizes, default=0)


def _kill_at(folder: Path, fraction: float, final_size: int, seed: int) -> None:
    """Start the slow writer and SIGKILL it once its temporary file holds `fraction` of the final size."""
    command = [sys.executable, "-c", SLOW_WRITER, str(folder / "m"), str(seed), json.dumps(_metadata())]
    process = subprocess.Popen(
        command, cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    try:
        while _temporary_size(folder) < fraction * final_size:
            assert process.poll() is None, f"the writer ended before the kill: {process.stderr.read().decode()}"
            assert time.monotonic() < deadline, "the writer never reached the kill point"
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=30)


def test_writer_killed_mid_write_leaves_the_previous_checkpoint(tmp_path):
    import random

    torch.manual_seed(0)
    previous = CCNet(num_classes=11, backbone="resnet18", base_width=16, head_channels=32, recurrence=2)
    weights, sidecar = save_checkpoint(previous, tmp_path / "m", _metadata())
    saved_bytes, saved_sidecar = weights.read_bytes(), sidecar.read_text()
    fractions = sorted(random.Random(7).uniform(0.02, 0.98) for _ in range(4)) + [0.0]
    for attempt, fraction in enumerate(fractions):
        _kill_at(tmp_path, fraction, len(saved_bytes), seed=100 + attempt)
        assert weights.read_bytes() == saved_bytes and sidecar.read_text() == saved_sidecar, fraction
        model, _ = load_checkpoint(tmp_path / "m", device="cpu")
        for key, tensor in previous.state_dict().items():
            assert torch.equal(model.state_dict()[key], tensor), (fraction, key)
        assert [entry["name"] for entry in read_index(tmp_path)["models"]] == ["m"]  # partial files not listed
    assert list(tmp_path.glob(".m.safetensors.*.tmp")), "no kill landed inside a write"
