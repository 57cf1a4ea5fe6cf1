"""The checkpoint format: safetensors + JSON sidecar, validated, never unpickled; the folder index."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ccnet.checkpoint import (
    CheckpointError,
    code_version,
    load_checkpoint,
    read_index,
    read_metadata,
    save_checkpoint,
    write_index,
)
from ccnet.classes import CAMVID
from ccnet.model import CCNet
from ccnet.preprocess import IMAGENET_MEAN, IMAGENET_STD


def _metadata(**changes) -> dict:
    base = {
        "class_names": list(CAMVID.names),
        "palette": CAMVID.palette_lists(),
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "input_size": [32, 48],
        "dataset": "camvid",
        "split": "val",
        "metrics": {"mIoU": 0.5},
        "train_config": {"seed": 0},
    }
    return base | changes


@pytest.fixture
def model(tiny_model_config):
    torch.manual_seed(0)
    return CCNet(num_classes=11, **tiny_model_config).eval()


def _edit_sidecar(path: Path, **changes) -> None:
    content = json.loads(path.read_text()) | changes
    path.write_text(json.dumps(content))


def test_round_trip_gives_identical_outputs_and_full_sidecar(model, tmp_path):
    weights, sidecar = save_checkpoint(model, tmp_path / "camvid_r2", _metadata())
    assert weights.name == "camvid_r2.safetensors" and sidecar.name == "camvid_r2.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["camvid_r2.json", "camvid_r2.safetensors"]  # no temp files
    loaded, metadata = load_checkpoint(tmp_path / "camvid_r2.safetensors", device="cpu")
    assert not loaded.training and metadata["recurrence"] == 2 and metadata["num_classes"] == 11
    assert metadata["model_config"] == model.config and metadata["code_version"].startswith("0.1.0")
    images = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        assert torch.equal(model(images).logits, loaded(images).logits)


def test_default_device_is_cuda_when_available(model, tmp_path):
    save_checkpoint(model, tmp_path / "m", _metadata())
    loaded, _ = load_checkpoint(tmp_path / "m")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert next(loaded.parameters()).device.type == expected


def test_half_stores_float16_and_loads_float32(model, tmp_path):
    full, _ = save_checkpoint(model, tmp_path / "full", _metadata())
    half, _ = save_checkpoint(model, tmp_path / "half", _metadata(), half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded, metadata = load_checkpoint(tmp_path / "half", device="cpu")
    assert metadata["weights_dtype"] == "float16"
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    images = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        assert torch.allclose(model(images).logits, loaded(images).logits, atol=1e-2)


class Payload:
    """Anything that needs the unpickler to import and run code."""


def test_pickled_pt_file_is_refused_and_plain_state_dict_accepted(model, tmp_path):
    torch.save({"state_dict": model.state_dict(), "evil": Payload()}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_checkpoint(tmp_path / "bad.pth", device="cpu")
    save_checkpoint(model, tmp_path / "good", _metadata())
    torch.save(model.state_dict(), tmp_path / "good.pt")  # plain tensors, sidecar good.json beside it
    loaded, metadata = load_checkpoint(tmp_path / "good.pt", device="cpu")
    assert metadata["dataset"] == "camvid"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"num_classes": "11"}, "num_classes"),
        ({"class_names": ["Sky"]}, "class_names"),
        ({"palette": [[0, 0, 0]] * 10}, "palette"),
        ({"palette": [[0, 0, 300]] * 11}, "palette"),
        ({"mean": [1, 2]}, "mean"),
        ({"std": [1, 0, 1]}, "std"),
        ({"recurrence": 3}, "recurrence"),
        ({"architecture": "PSPNet"}, "architecture"),
        ({"format_version": 99}, "format_version"),
    ],
)
def test_bad_sidecar_field_is_named(model, tmp_path, changes, field):
    _, sidecar = save_checkpoint(model, tmp_path / "m", _metadata())
    _edit_sidecar(sidecar, **changes)
    with pytest.raises(CheckpointError, match=f"field '{field}'"):
        load_checkpoint(tmp_path / "m", device="cpu")


def test_missing_sidecar_field_is_named(model, tmp_path):
    _, sidecar = save_checkpoint(model, tmp_path / "m", _metadata())
    content = json.loads(sidecar.read_text())
    del content["mean"]
    sidecar.write_text(json.dumps(content))
    with pytest.raises(CheckpointError, match="field 'mean' is missing"):
        read_metadata(sidecar)


def test_sidecar_of_other_weights_is_caught(model, tmp_path, tiny_model_config):
    save_checkpoint(model, tmp_path / "m", _metadata())
    other = CCNet(num_classes=19, **tiny_model_config)
    _, other_sidecar = save_checkpoint(
        other, tmp_path / "other", _metadata(class_names=[f"c{i}" for i in range(19)], palette=[[0, 0, 0]] * 19)
    )
    (tmp_path / "m.json").write_text(other_sidecar.read_text())  # 19-class sidecar on 11-class weights
    with pytest.raises(CheckpointError, match="field 'num_classes' is 19 but the weights' classifier"):
        load_checkpoint(tmp_path / "m", device="cpu")
    wider = dict(model.config, head_channels=32)
    _edit_sidecar(
        tmp_path / "m.json",
        **json.loads((tmp_path / "other.json").read_text())
        | {
            "num_classes": 11,
            "class_names": list(CAMVID.names),
            "palette": CAMVID.palette_lists(),
            "model_config": wider,
        },
    )
    with pytest.raises(CheckpointError, match="field 'model_config' does not describe these weights"):
        load_checkpoint(tmp_path / "m", device="cpu")


def test_missing_or_corrupt_files_are_explained(model, tmp_path):
    with pytest.raises(CheckpointError, match="no sidecar"):
        load_checkpoint(tmp_path / "absent", device="cpu")
    save_checkpoint(model, tmp_path / "m", _metadata())
    (tmp_path / "m.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read .* as safetensors"):
        load_checkpoint(tmp_path / "m", device="cpu")


def test_save_validates_metadata_before_writing(model, tmp_path):
    with pytest.raises(CheckpointError, match="field 'class_names' has 2 entries"):
        save_checkpoint(model, tmp_path / "m", _metadata(class_names=["a", "b"]))
    assert list(tmp_path.iterdir()) == []


def test_index_lists_checkpoints_and_keeps_default(tmp_path, tiny_model_config):
    for name, recurrence in (("r1", 1), ("r2", 2)):
        net = CCNet(num_classes=11, **tiny_model_config | {"recurrence": recurrence})
        save_checkpoint(net, tmp_path / name, _metadata(metrics={"mIoU": 0.1 * recurrence}))
    scanned = read_index(tmp_path)  # no index.json yet: scanned
    assert scanned["default"] == "r2" and [m["name"] for m in scanned["models"]] == ["r1", "r2"]
    index = write_index(tmp_path, default="r1")
    assert index["default"] == "r1" and (tmp_path / "index.json").is_file()
    entry = index["models"][1]
    assert entry["file"] == "r2.safetensors" and entry["recurrence"] == 2 and entry["mIoU"] == 0.2
    assert write_index(tmp_path)["default"] == "r1"  # rewriting keeps the chosen default
    assert read_index(tmp_path) == json.loads((tmp_path / "index.json").read_text())
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        write_index(tmp_path, default="r9")


def test_code_version_names_the_package_version():
    assert code_version().startswith("0.1.0")


# --- heads that share a backbone ----------------------------------------------------------------------


def _shared_pair(tmp_path):
    """A base model and a head model whose backbone is the base's, saved half with a shared backbone."""
    from ccnet.checkpoint import save_checkpoint
    from ccnet.factory import build_model

    config = {"num_classes": 4, "backbone": "resnet18", "base_width": 8, "head_channels": 16, "recurrence": 2}
    torch.manual_seed(0)
    base = build_model(config)
    torch.manual_seed(1)
    head = build_model(config | {"recurrence": 1})
    head.backbone.load_state_dict(base.backbone.state_dict())
    meta = {"class_names": ["a", "b", "c", "d"], "palette": [[0, 0, 0]] * 4, "mean": [0, 0, 0], "std": [1, 1, 1],
            "dataset": "synthetic", "split": "val", "input_size": [32, 32], "metrics": {}}  # fmt: skip
    save_checkpoint(base, tmp_path / "base", meta, half=True)
    save_checkpoint(head, tmp_path / "head", meta, half=True, backbone_from=tmp_path / "base")
    return base, head, meta


def test_a_head_with_a_shared_backbone_is_small_and_loads_whole(tmp_path):
    from ccnet.checkpoint import load_checkpoint

    base, head, _ = _shared_pair(tmp_path)
    assert (tmp_path / "head.safetensors").stat().st_size < 0.5 * (tmp_path / "base.safetensors").stat().st_size
    loaded, metadata = load_checkpoint(tmp_path / "head", device="cpu")
    assert metadata["shared_backbone"]["checkpoint"] == "base"
    for key, tensor in head.half().float().state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor), key
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images).logits, head.eval()(images).logits, atol=1e-3, rtol=1e-3)


def test_a_shared_backbone_is_checked_on_save_and_on_load(tmp_path):
    from ccnet.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
    from ccnet.factory import build_model

    base, head, meta = _shared_pair(tmp_path)
    other = build_model(head.config)  # a fresh backbone: not the base's
    with pytest.raises(CheckpointError, match="tensor for tensor"):
        save_checkpoint(other, tmp_path / "wrong", meta, half=True, backbone_from=tmp_path / "base")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.raises(CheckpointError, match="same folder"):
        save_checkpoint(head, elsewhere / "head", meta, half=True, backbone_from=tmp_path / "base")
    save_checkpoint(base, tmp_path / "base", meta, half=True)  # the base saved again: a new save_id
    with pytest.raises(CheckpointError, match="saved again since"):
        load_checkpoint(tmp_path / "head", device="cpu")
    sidecar = json.loads((tmp_path / "head.json").read_text())
    sidecar["shared_backbone"]["checkpoint"] = "../base"
    (tmp_path / "head.json").write_text(json.dumps(sidecar))
    with pytest.raises(CheckpointError, match="same folder"):
        load_checkpoint(tmp_path / "head", device="cpu")


def test_a_shared_backbone_link_out_of_the_folder_is_refused(tmp_path):
    from ccnet.checkpoint import CheckpointError, load_checkpoint

    _shared_pair(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    for suffix in (".safetensors", ".json"):
        (tmp_path / f"base{suffix}").rename(outside / f"base{suffix}")
        (tmp_path / f"base{suffix}").symlink_to(outside / f"base{suffix}")
    with pytest.raises(CheckpointError, match="must be a file in the same folder"):
        load_checkpoint(tmp_path / "head", device="cpu")
    sidecar = json.loads((tmp_path / "head.json").read_text())
    for name in ("C:base", "a/../base", ".base"):
        sidecar["shared_backbone"]["checkpoint"] = name
        (tmp_path / "head.json").write_text(json.dumps(sidecar))
        with pytest.raises(CheckpointError, match="same folder"):
            load_checkpoint(tmp_path / "head", device="cpu")


def test_update_sidecar_refuses_what_changes_loading_and_validates(tmp_path):
    from ccnet.checkpoint import CheckpointError, update_sidecar

    _shared_pair(tmp_path)
    for field in ("shared_backbone", "mean", "input_size", "save_id"):
        with pytest.raises(CheckpointError, match="descriptions only"):
            update_sidecar(tmp_path / "head", {field: None})
    with pytest.raises(CheckpointError):
        update_sidecar(tmp_path / "head", {"dataset": 5})  # not a valid description
    assert update_sidecar(tmp_path / "head", {"training": {"hours": 1.0}})["training"] == {"hours": 1.0}
