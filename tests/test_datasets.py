"""Dataset layouts, label mapping, augmentation, and every bad input a user can hand us."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ccnet.classes import ADE20K, CITYSCAPES
from ccnet.datasets import (
    DatasetError,
    SegmentationDataset,
    find_dataset,
    load_sample,
)
from training.transforms import EvalTransform, TrainTransform


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _image(size=(8, 12), value=100):
    return np.full((*size, 3), value, dtype=np.uint8)


# --- layouts ------------------------------------------------------------------------------------------


def test_camvid_maps_void_to_ignore(camvid_factory):
    root = camvid_factory({"train": 2})
    spec = find_dataset("camvid", root, "train")
    assert len(spec.samples) == 2 and spec.num_classes == 11
    image, label = load_sample(spec.samples[0], spec)
    raw = np.asarray(Image.open(spec.samples[0].label))
    assert image.shape == (32, 48, 3) and image.dtype == np.uint8
    assert np.array_equal(label == 255, raw == 11)
    assert label[raw != 11].max() <= 10


def test_root_from_environment_variable(camvid_factory, monkeypatch):
    root = camvid_factory({"val": 1})
    monkeypatch.setenv("CAMVID_ROOT", str(root))
    assert find_dataset("camvid", None, "val").root == root


def test_cityscapes_label_ids_become_train_ids(tmp_path):
    label = np.array([[7, 8, 26, 33], [0, 1, 255, 24]], dtype=np.uint8)
    _save(tmp_path / "leftImg8bit/val/aachen/aachen_000000_000019_leftImg8bit.png", _image((2, 4)))
    _save(tmp_path / "gtFine/val/aachen/aachen_000000_000019_gtFine_labelIds.png", label)
    spec = find_dataset("cityscapes", tmp_path, "val")
    assert spec.classes == CITYSCAPES
    _, mapped = load_sample(spec.samples[0], spec)
    assert mapped.tolist() == [[0, 1, 13, 18], [255, 255, 255, 11]]


def test_ade20k_shifts_labels_and_accepts_parent_folder(tmp_path):
    data = tmp_path / "ADEChallengeData2016"
    _save(data / "images/validation/ADE_val_00000001.jpg", _image((2, 3)))
    _save(data / "annotations/validation/ADE_val_00000001.png", np.array([[0, 1, 150], [2, 0, 5]], dtype=np.uint8))
    spec = find_dataset("ade20k", tmp_path, "val")
    assert spec.classes == ADE20K and spec.num_classes == 150
    _, mapped = load_sample(spec.samples[0], spec)
    assert mapped.tolist() == [[255, 0, 149], [1, 255, 4]]


def test_generic_folder_with_class_file(tmp_path):
    (tmp_path / "classes.yaml").write_text("names: [background, cat, dog]\nignore_index: 9\n")
    _save(tmp_path / "images/train/a.jpg", _image((2, 2)))
    _save(tmp_path / "masks/train/a.png", np.array([[0, 1], [2, 9]], dtype=np.uint8))
    spec = find_dataset("folder", tmp_path, "train")
    assert spec.classes.names == ("background", "cat", "dog") and len(spec.classes.palette) == 3
    _, mapped = load_sample(spec.samples[0], spec)
    assert mapped.tolist() == [[0, 1], [2, 255]]
    assert spec.frame_order is None  # unrelated images unless the class file says how frames are ordered


def test_a_folder_dataset_can_order_its_frames_into_clips(tmp_path):
    from ccnet.sequences import clip_plan, frame_key

    order = r"^(?P<seq>clip\d+)-(?P<num>\d+)$"
    (tmp_path / "classes.yaml").write_text(f"names: [a, b]\nframe_order: '{order}'\n")
    for name in ("clip1-10", "clip1-2", "clip2-1"):
        _save(tmp_path / f"images/train/{name}.png", _image((2, 2)))
        _save(tmp_path / f"masks/train/{name}.png", np.zeros((2, 2), dtype=np.uint8))
    spec = find_dataset("folder", tmp_path, "train")
    assert spec.frame_order == order and frame_key(spec.samples[0].image, spec.frame_order)[0].startswith("clip")
    plan = clip_plan([s.image.name for s in spec.samples], 2, spec.frame_order)
    assert [[spec.samples[i].image.stem for i in m] for m in plan.sequences.values()] == [["clip1-2", "clip1-10"]]
    assert plan.too_short == ["clip2"]
    from conftest import write_camvid

    assert find_dataset("camvid", write_camvid(tmp_path / "cv"), "train").frame_order is not None
    (tmp_path / "classes.yaml").write_text("names: [a, b]\nframe_order: '^(?P<seq>.+)$'\n")
    with pytest.raises(DatasetError, match="named groups seq and num"):
        find_dataset("folder", tmp_path, "train")


# --- bad input ----------------------------------------------------------------------------------------


def test_missing_root_says_how_to_give_one(monkeypatch):
    monkeypatch.delenv("CAMVID_ROOT", raising=False)
    with pytest.raises(DatasetError, match="--data-root.*CAMVID_ROOT"):
        find_dataset("camvid", None, "train")
    with pytest.raises(DatasetError, match="does not exist"):
        find_dataset("camvid", "/nonexistent/camvid", "train")


def test_wrong_layout_names_the_expected_layout(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match=r"(?s)missing folder\(s\) train, trainannot.*ROOT/trainannot"):
        find_dataset("camvid", tmp_path, "train")
    with pytest.raises(DatasetError, match="leftImg8bit/train"):
        find_dataset("cityscapes", tmp_path, "train")
    with pytest.raises(DatasetError, match="classes.yaml is missing"):
        find_dataset("folder", tmp_path, "train")


def test_image_without_label_is_named(camvid_factory):
    root = camvid_factory({"train": 2})
    (root / "trainannot/frame_001.png").unlink()
    with pytest.raises(DatasetError, match="frame_001.png has no label"):
        find_dataset("camvid", root, "train")


def test_size_mismatch_names_both_files(camvid_factory):
    root = camvid_factory({"train": 1})
    _save(root / "trainannot/frame_000.png", np.zeros((30, 48), dtype=np.uint8))
    spec = find_dataset("camvid", root, "train")
    with pytest.raises(DatasetError, match=r"frame_000.png is 48x32 but its label .*frame_000.png is 48x30"):
        load_sample(spec.samples[0], spec)


def test_label_values_outside_classes_are_listed(camvid_factory):
    root = camvid_factory({"train": 1})
    label = np.zeros((32, 48), dtype=np.uint8)
    label[0, :3] = [12, 40, 11]  # 11 is void and allowed; 12 and 40 are not
    _save(root / "trainannot/frame_000.png", label)
    spec = find_dataset("camvid", root, "train")
    with pytest.raises(DatasetError, match=r"trainannot/frame_000.png holds values 12, 40 outside the 11 classes"):
        load_sample(spec.samples[0], spec)


def test_unreadable_image_is_named(camvid_factory):
    root = camvid_factory({"train": 1})
    (root / "train/frame_000.png").write_bytes(b"not a png")
    spec = find_dataset("camvid", root, "train")
    with pytest.raises(DatasetError, match=r"cannot read image .*train/frame_000.png"):
        load_sample(spec.samples[0], spec)


def test_colour_label_is_refused(camvid_factory):
    root = camvid_factory({"train": 1})
    _save(root / "trainannot/frame_000.png", _image((32, 48)))
    spec = find_dataset("camvid", root, "train")
    with pytest.raises(DatasetError, match="colour image; expected a single-channel PNG"):
        load_sample(spec.samples[0], spec)


def test_bad_class_file_names_the_field(tmp_path):
    (tmp_path / "classes.yaml").write_text("names: [a, b]\npalette: [[0, 0, 0]]\n")
    with pytest.raises(DatasetError, match="'palette' must hold one"):
        find_dataset("folder", tmp_path, "train")


# --- augmentation -------------------------------------------------------------------------------------


def test_train_transform_crops_pads_with_ignore_and_keeps_pairs_aligned():
    image = np.zeros((20, 30, 3), dtype=np.uint8)
    image[..., 0] = np.arange(30, dtype=np.uint8)[None, :]  # red encodes the column
    label = np.tile(np.arange(30, dtype=np.uint8)[None, :] % 11, (20, 1))
    transform = TrainTransform(crop_size=(24, 40), scale_range=(1.0, 1.0), flip=True, mean=(0, 0, 0), std=(1, 1, 1))
    for seed in range(6):
        tensor, target = transform(image, label, np.random.default_rng(seed))
        assert tensor.shape == (3, 24, 40) and target.shape == (24, 40) and target.dtype == torch.int64
        padded = target == 255
        assert padded.sum() == 24 * 40 - 20 * 30  # everything outside the image is ignored
        assert torch.all(tensor[0][padded] == 0)  # padded with the mean colour -> 0 once normalised
        kept = ~padded
        assert torch.equal(tensor[0][kept].long() % 11, target[kept])  # image and label moved together


def test_train_transform_scales_into_range():
    image, label = np.zeros((40, 60, 3), dtype=np.uint8), np.zeros((40, 60), dtype=np.uint8)
    transform = TrainTransform(crop_size=None, scale_range=(0.5, 0.5), flip=False)
    tensor, target = transform(image, label, np.random.default_rng(0))
    assert tensor.shape == (3, 20, 30) and target.shape == (20, 30)


def test_dataset_augmentation_depends_only_on_seed_epoch_and_index(camvid_factory):
    spec = find_dataset("camvid", camvid_factory({"train": 2}), "train")
    dataset = SegmentationDataset(spec, TrainTransform(crop_size=(16, 16), scale_range=(0.5, 1.5)), seed=3)
    first, again, other_epoch = dataset[(0, 1)], dataset[(0, 1)], dataset[(1, 1)]
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other_epoch[0])


def test_eval_transform_keeps_full_resolution(camvid_factory):
    spec = find_dataset("camvid", camvid_factory({"val": 1}), "val")
    image, label = SegmentationDataset(spec, EvalTransform())[0]
    assert image.shape == (3, 32, 48) and label.shape == (32, 48)


# --- the real CamVid, when it is there ----------------------------------------------------------------


def test_camvid_smoke_on_real_data():
    root = os.environ.get("CAMVID_ROOT")
    if not root or not Path(root).is_dir():
        pytest.skip("CAMVID_ROOT is not set or does not exist: no real CamVid to smoke-test")
    for split, count in (("train", 367), ("val", 101)):
        spec = find_dataset("camvid", root, split)
        assert len(spec.samples) == count
        dataset = SegmentationDataset(spec, EvalTransform())
        for index in (0, count // 2, count - 1):
            image, label = dataset[index]
            assert image.shape == (3, 360, 480) and label.shape == (360, 480)
            values = set(label.unique().tolist())
            assert values <= set(range(11)) | {255} and len(values - {255}) >= 2
    crop = TrainTransform(crop_size=(240, 320), scale_range=(0.5, 1.0))
    image, label = SegmentationDataset(find_dataset("camvid", root, "train"), crop)[(0, 5)]
    assert image.shape == (3, 240, 320) and label.shape == (240, 320)
