"""The campaign's hand-over between sessions (training/campaign.py): save, restore on a fresh folder, resume."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import tiny_training_config

from training import campaign
from training.run_folder import read_metrics
from training.train import train


def test_the_committed_state_is_split_under_the_part_size_and_joins_back_exactly(camvid_factory, tmp_path, monkeypatch):
    run, saved = tmp_path / "run", tmp_path / "saved"
    train(tiny_training_config(camvid_factory()), run, show_progress=False, stop_at=4)
    whole = (run / "state.pt").read_bytes()
    monkeypatch.setattr(campaign, "PART_BYTES", len(whole) // 3 + 1)  # three parts
    assert campaign.save(run, saved) == 4
    parts = campaign.state_parts(saved)
    assert len(parts) == 3 and all(p.stat().st_size <= campaign.PART_BYTES for p in parts)
    monkeypatch.setattr(campaign, "PART_BYTES", len(whole))  # fewer parts next time: the stale ones go
    campaign.save(run, saved)
    assert len(campaign.state_parts(saved)) == 1 and not (saved / "state.pt").exists()
    (run / "state.pt").unlink()
    assert campaign.restore(run, saved) == 4 and (run / "state.pt").read_bytes() == whole


def test_a_saved_campaign_resumes_on_a_fresh_machine_exactly(camvid_factory, tmp_path):
    config = tiny_training_config(camvid_factory())
    run, saved = tmp_path / "runs" / "campaign", tmp_path / "repo" / "campaign"
    train(config, run, show_progress=False, stop_at=4)
    assert campaign.save(run, saved) == 4
    assert sorted(p.name for p in saved.iterdir()) == sorted([*campaign.FILES, "state.pt.000"])

    shutil.rmtree(run)  # the next session's machine has only the repository
    assert campaign.restore(run, saved) == 4
    summary = train(config, run, resume=True, show_progress=False)
    assert summary.finished and summary.step == 6

    uninterrupted = tmp_path / "straight"
    train(config, uninterrupted, show_progress=False)
    losses = [[r["loss"] for r in read_metrics(folder) if r["kind"] == "train"] for folder in (run, uninterrupted)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)  # the hand-over changes nothing

    status = campaign.summary(run)
    assert status["step"] == 6 and status["iterations"] == 6
    assert [v["step"] for v in status["validations"]] == [3, 6]
    assert all("mIoU" in v for v in status["validations"])


def test_save_never_goes_backwards_and_restore_keeps_a_newer_local_run(camvid_factory, tmp_path):
    config = tiny_training_config(camvid_factory())
    ahead, behind, saved = tmp_path / "ahead", tmp_path / "behind", tmp_path / "saved"
    train(config, ahead, show_progress=False, stop_at=4)
    train(config, behind, show_progress=False, stop_at=2)
    campaign.save(ahead, saved)
    with pytest.raises(ValueError, match="ahead of"):
        campaign.save(behind, saved)
    assert campaign.restore(ahead, saved) == 4  # already as far: left alone
    with pytest.raises(FileNotFoundError, match="nothing to save"):
        campaign.save(tmp_path / "empty", saved)
    assert campaign.restore(tmp_path / "new", tmp_path / "nothing") is None
    assert campaign.restore(behind, tmp_path / "nothing") == 2  # nothing committed yet: the local run goes on


def test_finish_bundles_the_campaign_and_every_head_and_resumes(tmp_path, monkeypatch):
    from app.model_card import card_rows
    from ccnet.checkpoint import load_checkpoint, read_index, read_metadata
    from tests.conftest import write_camvid

    root = write_camvid(tmp_path / "camvid", {"train": 6, "val": 5}, (64, 96), 0, 0.05)
    config = tiny_training_config(root, model={"decoder_channels": 8}, optim={"iterations": 4, "batch_size": 2})
    run = tmp_path / "runs" / "campaign"
    monkeypatch.setattr(campaign, "RUN", run)
    monkeypatch.setattr(campaign, "SAVED", tmp_path / "repo" / "campaign")
    monkeypatch.setattr(campaign, "CHECKPOINTS", tmp_path / "checkpoints")
    monkeypatch.setattr(campaign, "HEAD_RECORDS", tmp_path / "results" / "heads")
    monkeypatch.setattr(campaign, "HEAD_RUNS", tmp_path / "runs" / "heads")
    monkeypatch.setenv("CCNET_CACHE_DIR", str(tmp_path / "cache"))
    train(config, run, show_progress=False, stop_at=3)  # validated at 3: an interim default
    with pytest.raises(ValueError, match="resume it before finishing"):
        campaign.finish(None, root, seeds=1, iterations=2)
    interim = campaign.interim()
    assert interim.name == "camvid_r2_campaign" and read_index(tmp_path / "checkpoints")["default"] == interim.name
    assert read_metadata(interim)["step"] == 3
    assert "an interim checkpoint" in card_rows(read_metadata(interim), 1.0)["Schedule"]
    train(config, run, resume=True, show_progress=False)
    campaign.save(run, tmp_path / "repo" / "campaign")
    shutil.rmtree(run)  # a fresh clone: the committed state only, no last checkpoint
    assert campaign.finish(0.0001, root, seeds=1, iterations=2) is False  # the deadline passes: paused, resumable
    assert load_checkpoint(run / "last", device="cpu")[1]["step"] == 4  # written from the restored state
    assert campaign.finish(None, root, seeds=1, iterations=2) is True
    records = sorted(p.name for p in (tmp_path / "results" / "heads").iterdir())
    assert len(records) == len(campaign.BUNDLED_HEADS) + 1  # every kind, r2 included
    index = read_index(tmp_path / "checkpoints")
    assert index["default"] == "camvid_r2"
    assert read_metadata(tmp_path / "checkpoints" / "camvid_r2")["step"] == 4
    assert not interim.with_suffix(".json").exists()  # the interim checkpoint is gone, the final one default
    assert {m["name"] for m in index["models"]} == {"camvid_r2", *campaign.BUNDLED_HEADS.values()}
    video, metadata = load_checkpoint(tmp_path / "checkpoints" / "camvid_video_t5", device="cpu")
    assert video.frames == 5 and metadata["shared_backbone"]["checkpoint"] == "camvid_r2"
    stamp = (tmp_path / "results" / "heads" / "r1_s0.json").stat().st_mtime_ns
    assert campaign.finish(None, root, seeds=1, iterations=2) is True  # again: nothing retrained
    assert (tmp_path / "results" / "heads" / "r1_s0.json").stat().st_mtime_ns == stamp
    for suffix in (".json", ".safetensors"):  # a kill between training a seed-0 head and bundling it
        (tmp_path / "checkpoints" / f"camvid_r1{suffix}").unlink()
    assert campaign.finish(None, root, seeds=1, iterations=2) is True
    assert (tmp_path / "results" / "heads" / "r1_s0.json").stat().st_mtime_ns == stamp  # bundled, not retrained
    assert load_checkpoint(tmp_path / "checkpoints" / "camvid_r1", device="cpu")[0].head.recurrence == 1
    saved = tmp_path / "repo" / "campaign"  # committed: the final curve and a record, no resume state
    assert campaign.finished_record(saved)["step"] == 4 and not campaign.state_parts(saved)
    assert campaign.summary(saved)["validations"][-1]["step"] == 4
    shutil.rmtree(tmp_path / "runs")  # a fresh clone of the finished campaign: no run, no head checkpoints
    assert campaign.finish(None, root, seeds=1, iterations=2) is True  # goes on from the bundled default
    assert (tmp_path / "results" / "heads" / "r1_s0.json").stat().st_mtime_ns == stamp
    assert (tmp_path / "results" / "heads" / "r2_s0.json").stat().st_mtime_ns > 0  # r2: a record, never bundled
    monkeypatch.setattr(campaign, "SAVED", saved)
    for action in ("start", "resume", "save", "interim"):  # nothing left to train: a clear refusal
        assert campaign.main([action]) == 2
    assert not run.exists()
    record = json.loads((saved / campaign.FINISHED).read_text())
    (saved / campaign.FINISHED).write_text(json.dumps(record | {"save_id": "another"}))  # another final export
    with pytest.raises(ValueError, match="not the campaign's final export"):
        campaign.finish(None, root, seeds=1, iterations=2)


def test_the_learning_curve_is_drawn_from_the_state_folder(camvid_factory, tmp_path):
    pytest.importorskip("matplotlib")
    run = tmp_path / "run"
    train(tiny_training_config(camvid_factory()), run, show_progress=False)
    path = campaign.draw_curve(run, tmp_path / "curve.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    with pytest.raises(ValueError, match="no validation yet"):
        (tmp_path / "empty").mkdir()
        train(tiny_training_config(camvid_factory(name="other"), train={"val_every": 100}), tmp_path / "empty",
              show_progress=False, stop_at=2)  # fmt: skip
        campaign.draw_curve(tmp_path / "empty", tmp_path / "none.png")
