"""The campaign's hand-over between sessions (training/campaign.py): save, restore on a fresh folder, resume."""

from __future__ import annotations

import shutil

import pytest
from conftest import tiny_training_config

from training import campaign
from training.run_folder import read_metrics
from training.train import train


def test_a_saved_campaign_resumes_on_a_fresh_machine_exactly(camvid_factory, tmp_path):
    config = tiny_training_config(camvid_factory())
    run, saved = tmp_path / "runs" / "campaign", tmp_path / "repo" / "campaign"
    train(config, run, show_progress=False, stop_at=4)
    assert campaign.save(run, saved) == 4
    assert sorted(p.name for p in saved.iterdir()) == sorted(campaign.FILES)

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
