"""The model card (app/model_card.py) and the training record behind it (training/model_card.py, export)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_training_config
from streamlit.testing.v1 import AppTest

from app.model_card import NOT_RECORDED, card_rows, supervision_note
from ccnet.checkpoint import CheckpointError, read_metadata, update_sidecar
from tests.test_app_helpers import image_bytes, save_tiny_checkpoint, street_rgb
from training.export import annotate, export_run
from training.model_card import interval95, training_record
from training.train import train

MAIN = str(Path(__file__).absolute().parent.parent / "app" / "main.py")


def _metadata(attention_weight: float, recurrence: int = 2) -> dict:
    return {
        "backbone": "mobilenet_v2",
        "recurrence": recurrence,
        "dataset": "camvid",
        "split": "val",
        "step": 4000,
        "model_config": {"decoder_channels": 64},
        "metrics": {"mIoU": 0.6812},
        "train_config": {
            "data": {"train_split": "train", "crop_size": [288, 384], "scale_range": [0.5, 1.5]},
            "model": {"pretrained": "pretrained/mobilenet_v2_imagenet.safetensors", "gamma_init": 1.0},
            "loss": {"class_weights": "enet", "aux_weight": 0.4, "attention_weight": attention_weight, "ccl": False},
            "optim": {"iterations": 4000, "batch_size": 8, "lr": 0.01},
        },
        "training": {
            "train_images": 367,
            "hours": 4.52,
            "machines": ["AMD EPYC (avx2, avx512f, avx512_bf16)"],
            "precisions": ["bfloat16"],
            "val_lift": 5.31,
            "seeds": {"n": 5, "mean": 0.675, "ci95": 0.008},
        },
    }


def test_a_full_card_says_how_the_model_was_trained():
    rows = card_rows(_metadata(0.4), gamma=0.87)
    assert rows["Backbone"] == (
        "mobilenet_v2 at output stride 8, ImageNet-pretrained, "
        "+ a stride-4 skip decoder (64 channels; not in the paper)"
    )
    assert rows["Training data"] == "camvid train, 367 images; 288x384 crops, random scale 0.5-1.5"
    assert "attention affinity loss 0.4" in rows["Losses"] and "γ starting at 1" in rows["Losses"]
    assert rows["Schedule"].startswith("4000 iterations of batch 8") and "87 epochs" in rows["Schedule"]
    assert rows["Training time"] == "4.5 h on AMD EPYC (avx2, avx512f, avx512_bf16) (bfloat16)"
    assert rows["Val mIoU"].startswith("68.1%") and "5 seeds: 67.5 ± 0.8 (95% interval)" in rows["Val mIoU"]
    assert rows["γ (attention scale)"] == "0.87" and rows["Same-class lift on val"].startswith("5.31x")
    assert rows["Attention"] == "supervised (affinity loss)"
    assert rows["Trained"] == "end to end (backbone and head trained together)"
    assert "interim" not in rows["Schedule"]


def test_a_heads_card_names_the_backbone_it_shares_and_its_minutes():
    metadata = _metadata(0.4, recurrence=1) | {"step": 300, "shared_backbone": {"checkpoint": "camvid_r2"}}
    metadata["train_config"]["optim"] |= {"iterations": 300}
    metadata["training"] |= {"head_only_on": "b83a9dfdddcb40489873bb70c5cc0e1c", "hours": 0.0441}
    rows = card_rows(metadata, gamma=1.02)
    assert rows["Trained"] == "head on `camvid_r2`"
    assert rows["Schedule"].endswith("head only, on the frozen backbone of `camvid_r2` (save b83a9dfd)")
    assert rows["Training data"].startswith("camvid train, 367 images; random crops of the frozen backbone's cached")
    assert "288x384" not in rows["Training data"]  # the backbone's crops, not the head's
    assert rows["Training time"] == "2.6 min on AMD EPYC (avx2, avx512f, avx512_bf16) (bfloat16)"
    del metadata["shared_backbone"]
    assert card_rows(metadata, gamma=1.02)["Schedule"].endswith("backbone of save `b83a9dfdddcb40489873bb70c5cc0e1c`")


def test_a_checkpoint_from_the_middle_of_its_schedule_says_it_is_interim():
    metadata = _metadata(0.4) | {"step": 2750}
    schedule = card_rows(metadata, gamma=0.84)["Schedule"]
    assert schedule.startswith("2750 iterations of batch 8") and "60 epochs" in schedule
    assert "an interim checkpoint: its schedule is 4000 iterations" in schedule


def test_missing_facts_read_not_recorded_and_the_paper_recipe_is_emergent():
    bare = {"backbone": "resnet18", "recurrence": 2, "dataset": "synthetic", "metrics": {}}
    rows = card_rows(bare, gamma=0.01)
    assert rows["Losses"] == rows["Schedule"] == rows["Training time"] == rows["Val mIoU"] == NOT_RECORDED
    assert rows["Same-class lift on val"] == NOT_RECORDED
    assert rows["Attention"] == "emergent (segmentation losses only)"
    assert card_rows(_metadata(0.0), gamma=None)["γ (attention scale)"] == "no attention (R = 0)"


def test_attention_that_stays_blind_to_class_is_called_unused():
    metadata = _metadata(0.0)
    metadata["training"]["val_lift"] = 1.63  # the paper-recipe head: gamma 0.04, lift 1.6
    assert card_rows(metadata, gamma=0.038)["Attention"].startswith("emergent (segmentation losses only); **not used**")
    assert "lift 1.63x, under 2x" in card_rows(metadata, gamma=0.038)["Attention"]
    metadata["training"]["val_lift"] = 2.4
    assert card_rows(metadata, gamma=0.3)["Attention"] == "emergent (segmentation losses only)"
    assert card_rows(_metadata(0.0, recurrence=0), gamma=None)["Attention"] == "none (R = 0)"


def test_the_supervision_note_marks_only_supervised_attention():
    assert "affinity loss (weight 0.4)" in supervision_note(_metadata(0.4))
    assert supervision_note(_metadata(0.0)) is None  # the paper's losses: emergent
    assert supervision_note(_metadata(0.4, recurrence=0)) is None  # no attention at all


def test_interval95_is_the_t_interval_of_the_mean():
    result = interval95([0.40, 0.42, 0.44])
    assert result["n"] == 3 and result["mean"] == pytest.approx(0.42)
    assert result["ci95"] == pytest.approx(4.303 * 0.02 / 3**0.5, rel=1e-4)
    assert interval95([0.5])["ci95"] is None


def test_export_writes_the_training_record_and_annotate_refreshes_it(camvid_factory, tmp_path):
    run = tmp_path / "run"
    train(tiny_training_config(camvid_factory()), run, show_progress=False)
    export_run(run, tmp_path / "bundle" / "tiny")
    record = read_metadata(tmp_path / "bundle" / "tiny")["training"]
    assert record["train_images"] > 0 and record["hours"] >= 0 and record["precisions"] == ["float32"]
    assert record["machines"] and record["run_id"] == json.loads((run / "run.json").read_text())["run_id"]
    assert record["gamma"] == pytest.approx(0.0, abs=1.0) and record["val_lift"] > 0
    assert training_record(run)["run_id"] == record["run_id"]
    annotate(tmp_path / "bundle" / "tiny", run, train_images=999)
    assert read_metadata(tmp_path / "bundle" / "tiny")["training"]["train_images"] == 999
    with pytest.raises(CheckpointError, match="descriptions only"):
        update_sidecar(tmp_path / "bundle" / "tiny", {"save_id": "x"})


def test_annotate_gives_a_video_head_its_kinds_interval(tmp_path):
    from training.model_card import annotate_from_summary

    weights = save_tiny_checkpoint(tmp_path, "camvid_video_t5", recurrence=2)
    update_sidecar(weights, {"training": {"head_kind": "video_t5"}})
    other = save_tiny_checkpoint(tmp_path, "camvid_r9", recurrence=2)  # a kind the summary has no heads of
    summary = {"models": [], "heads": [{"kind": "video_t5", "n": 5, "mean": 0.659, "ci95": 0.0095}]}
    annotate_from_summary(summary, tmp_path)
    seeds = read_metadata(weights)["training"]["seeds"]
    assert seeds == {"n": 5, "mean": 0.659, "ci95": 0.0095}
    assert "seeds" not in (read_metadata(other).get("training") or {})


def test_the_page_shows_the_card_and_the_supervision_line(monkeypatch, tmp_path):
    weights = save_tiny_checkpoint(tmp_path, "tiny_r2", recurrence=2)
    update_sidecar(weights, {"train_config": _metadata(0.4)["train_config"], "training": _metadata(0.4)["training"]})
    monkeypatch.setenv("CCNET_CHECKPOINTS", str(tmp_path))
    monkeypatch.setenv("CCNET_EXAMPLES", "none")  # not the bundled examples
    monkeypatch.setenv("CCNET_DEVICE", "cpu")
    app = AppTest.from_file(MAIN, default_timeout=60).run()
    app.sidebar.file_uploader(key="upload").set_value(("street.png", image_bytes(street_rgb()), "image/png"))
    app.run()
    assert not app.exception
    card = next(e for e in app.expander if "model card" in e.label)
    table = card.dataframe[0].value
    assert table.loc["Attention", "tiny_r2"] == "supervised (affinity loss)"
    assert table.loc["Training data", "tiny_r2"].startswith("synthetic train, 367 images")
    assert any("Supervised attention" in c.value for c in app.caption)
