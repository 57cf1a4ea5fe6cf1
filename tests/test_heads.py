"""Heads on a frozen backbone (training/feature_cache.py, training/heads.py), on a tiny synthetic CamVid."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tiny_training_config

from ccnet.checkpoint import load_checkpoint
from training.feature_cache import cache_features, load_entry, prepare, read_manifest, variants
from training.heads import KINDS, build_head_model, evaluate_head, random_crop, train_head
from training.train import train


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    """A tiny decoder model trained a few steps, and its feature cache (6 train frames x 6 variants, 5 val)."""
    from tests.conftest import write_camvid

    tmp = tmp_path_factory.mktemp("heads")
    root = write_camvid(tmp / "camvid", {"train": 6, "val": 5}, (64, 96), 0, 0.05)
    config = tiny_training_config(root, model={"decoder_channels": 8}, optim={"iterations": 4, "batch_size": 2})
    train(config, tmp / "run", show_progress=False)
    return cache_features(tmp / "run" / "last", root, tmp / "cache", show_progress=False), tmp / "run" / "last"


def test_the_cache_holds_every_variant_with_aligned_labels(features):
    folder, _ = features
    manifest = read_manifest(folder)
    assert len(manifest["splits"]["train"]) == 6 * len(variants("train")) and len(manifest["splits"]["val"]) == 5
    for entry in manifest["splits"]["train"][:6]:
        tensors = load_entry(folder, entry)
        h, w = tensors["final"].shape[-2:]
        assert tensors["final"].dtype == torch.float16 and tensors["low"].shape[-2:] == (2 * h, 2 * w)
        assert tensors["label"].shape == (round(64 * entry["scale"]), round(96 * entry["scale"]))
        assert h == -(-tensors["label"].shape[0] // 8)  # ceil: the backbone's grid covers the frame


def test_cached_features_are_the_backbones_own(features):
    folder, checkpoint = features
    model, metadata = load_checkpoint(checkpoint, device="cpu")
    model.eval()
    entry = read_manifest(folder)["splits"]["train"][1]  # scale 0.75, flipped
    from ccnet.datasets import find_dataset, load_sample
    from ccnet.preprocess import normalize_image

    spec = find_dataset("camvid", folder.parent / "camvid", "train")
    image, label = prepare(*load_sample(spec.samples[0], spec), variants("train")[1])
    with torch.no_grad():
        expected = model.encode(normalize_image(image, metadata["mean"], metadata["std"])[None])
    cached = load_entry(folder, entry)
    torch.testing.assert_close(cached["final"].float(), expected.final[0], atol=2e-2, rtol=2e-3)
    assert torch.equal(cached["label"], torch.from_numpy(label))


def test_a_crop_keeps_features_and_labels_on_the_same_cells():
    rng = np.random.default_rng(0)
    final = torch.arange(5 * 7, dtype=torch.float32).reshape(1, 5, 7)  # cell id
    label = torch.zeros(38, 56, dtype=torch.uint8)  # 38 rows: the grid's last row reaches past the frame
    tensors = {"final": final, "aux": final, "low": torch.zeros(1, 10, 14), "label": label}
    for _ in range(20):
        f, a, low, lab = random_crop(tensors, (3, 4), rng)
        assert f.shape == a.shape == (1, 3, 4) and low.shape == (1, 6, 8) and lab.shape == (24, 32)
        y0, x0 = divmod(int(f[0, 0, 0]), 7)
        assert (f[0] == torch.arange(3)[:, None] * 7 + torch.arange(4) + y0 * 7 + x0).all()  # contiguous cells
        assert (lab[: 38 - 8 * y0] == 0).all()  # the frame's rows keep their label
        if y0 + 3 == 5:  # the crop touches the last row: the label rows past the frame are void
            assert (lab[-2:] == 255).all()


def test_every_head_kind_trains_and_writes_a_loadable_full_model(features, tmp_path):
    folder, checkpoint = features
    campaign, _ = load_checkpoint(checkpoint, device="cpu")
    for kind in KINDS:
        record = train_head(folder, kind, seed=0, out=tmp_path, iterations=3, batch_size=2, crop_cells=(4, 6),
                            show_progress=False)  # fmt: skip
        assert 0 <= record["mIoU"] <= 1 and np.isfinite(record["final_loss"])
        video = KINDS[kind].get("frames") is not None
        assert (record["lift"] is None) == (KINDS[kind]["recurrence"] == 0 or video)
        assert (record["temporal_share"] is not None) == video
        saved = json.loads((tmp_path / f"{kind}_s0.json").read_text())
        assert saved["kind"] == kind and saved["backbone_save_id"] == read_manifest(folder)["save_id"]
        model, metadata = load_checkpoint(tmp_path / f"{kind}_s0_model", device="cpu")
        assert model.recurrence == KINDS[kind]["recurrence"]
        assert model.config.get("frames") == KINDS[kind].get("frames")
        for name, tensor in campaign.backbone.state_dict().items():  # the backbone is the campaign's, untouched
            assert torch.equal(model.backbone.state_dict()[name], tensor), name
        assert metadata["training"]["head_only_on"] == saved["backbone_save_id"]
        assert metadata["train_config"]["loss"]["ccl"] == KINDS[kind]["ccl"]
    paper = load_checkpoint(tmp_path / "r2_paper_s0_model", device="cpu")[1]
    assert paper["train_config"]["loss"]["attention_weight"] == 0 and paper["train_config"]["model"]["gamma_init"] == 0


def test_seeds_give_different_heads_and_the_same_seed_the_same(features):
    folder, _ = features
    a, _ = build_head_model(read_manifest(folder)["checkpoint"], "r2", seed=0)
    b, _ = build_head_model(read_manifest(folder)["checkpoint"], "r2", seed=0)
    c, _ = build_head_model(read_manifest(folder)["checkpoint"], "r2", seed=1)
    assert torch.equal(a.head.reduce.conv.weight, b.head.reduce.conv.weight)
    assert not torch.equal(a.head.reduce.conv.weight, c.head.reduce.conv.weight)


def test_head_evaluation_matches_the_full_model_on_val(features):
    """mIoU from cached val features equals the full model's on the same frames (float16 features aside)."""
    folder, checkpoint = features
    model, _ = load_checkpoint(checkpoint, device="cpu")
    manifest = read_manifest(folder)
    scores, lift = evaluate_head(model, folder, manifest["splits"]["val"], manifest["class_names"])
    from ccnet.datasets import SegmentationDataset, find_dataset
    from training.evaluate import confusion_over_dataset
    from training.transforms import EvalTransform

    spec = find_dataset("camvid", folder.parent / "camvid", "val")
    dataset = SegmentationDataset(spec, EvalTransform(manifest["mean"], manifest["std"]))
    from ccnet.metrics import scores_from_confusion

    full = scores_from_confusion(confusion_over_dataset(model, dataset, torch.device("cpu"), show_progress=False),
                                 manifest["class_names"])  # fmt: skip
    assert scores.mean_iou == pytest.approx(full.mean_iou, abs=0.02)
    assert lift is not None and lift > 0


def test_video_clips_keep_one_variant_and_consecutive_frames(features):
    from training.heads import training_clips

    folder, _ = features
    entries = read_manifest(folder)["splits"]["train"]
    clips = training_clips(entries, 5)
    assert len(clips) == len(variants("train")) * (6 - 5 + 1)
    for clip in clips:
        assert len({(entries[i]["scale"], entries[i]["flip"]) for i in clip}) == 1
        first = int(entries[clip[0]]["frame"][6:9])  # frame_NNN.png
        assert [entries[i]["frame"] for i in clip] == [f"frame_{n:03d}.png" for n in range(first, first + 5)]


def test_a_video_head_sees_other_frames_and_reports_its_temporal_share(features, tmp_path):
    folder, _ = features
    record = train_head(folder, "video_t5", seed=0, out=tmp_path, iterations=2, crop_cells=(4, 6), show_progress=False)
    assert record["frames"] == 5 and 0 < record["temporal_share"] <= 1
    assert 0 < record["temporal_share_uniform"] < 1
    one = train_head(folder, "video_t1", seed=0, out=tmp_path, iterations=2, crop_cells=(4, 6), show_progress=False)
    assert one["temporal_share"] == pytest.approx(1.0) and one["temporal_share_uniform"] == pytest.approx(1.0)


def test_a_clip_longer_than_the_cached_run_of_frames_says_what_to_do(features, tmp_path, monkeypatch):
    folder, _ = features  # 6 consecutive train frames: no clip of 7 fits
    monkeypatch.setitem(KINDS, "video_t7", dict(KINDS["video_t5"], frames=7))
    with pytest.raises(ValueError, match="no run of 7 consecutive train frames.*drop --max-images"):
        train_head(folder, "video_t7", seed=0, out=tmp_path, iterations=1, crop_cells=(4, 6), show_progress=False)


def test_a_head_exports_beside_its_backbone_as_a_small_shared_checkpoint(features, tmp_path):
    from training.export import export_run

    folder, checkpoint = features
    train_head(folder, "r1", seed=0, out=tmp_path / "heads", iterations=2, crop_cells=(4, 6), show_progress=False)
    bundle = tmp_path / "bundle"
    export_run(checkpoint.parent, bundle / "base", which="last", half=True, make_default=True)
    export_run(tmp_path / "heads" / "r1_s0_model", bundle / "head", half=True, backbone_from=bundle / "base")
    loaded, metadata = load_checkpoint(bundle / "head", device="cpu")
    assert metadata["shared_backbone"]["checkpoint"] == "base" and loaded.recurrence == 1
    assert metadata["training"]["head_only_on"] == read_manifest(folder)["save_id"]
    assert (bundle / "head.safetensors").stat().st_size < (bundle / "base.safetensors").stat().st_size


def test_an_odd_frame_size_crops_the_stride_4_map_to_the_same_cells():
    """450 rows: 113 at stride 4 but 57 at stride 8; a crop at the bottom still gets 2 x its cells, padded."""
    rng = np.random.default_rng(0)
    final = torch.zeros(1, 57, 10)
    low = torch.arange(113, dtype=torch.float32).view(1, 113, 1).expand(1, 113, 20).clone()  # row index
    tensors = {"final": final, "aux": final, "low": low, "label": torch.zeros(450, 80, dtype=torch.uint8)}
    f, _, cropped, label = random_crop(tensors, (32, 4), rng, origin=(25, 0))
    assert f.shape == (1, 32, 4) and cropped.shape == (1, 64, 8) and label.shape == (256, 32)
    assert cropped[0, 0, 0] == 50 and cropped[0, 62, 0] == 112 and cropped[0, 63, 0] == 0  # the missing row
