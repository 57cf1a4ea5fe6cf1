"""The report's heads and campaign parts (training/report: records, summary, goals, markdown) on made-up records."""

from __future__ import annotations

import json

import pytest

from training.report.goals import head_ordering
from training.report.markdown import campaign_section, heads_section
from training.report.records import ReportError, read_campaign, read_head_records
from training.report.summary import head_summary


def _records(kind: str, values, lift=3.0, frames=None, share=None):
    return [
        {"kind": kind, "seed": seed, "mIoU": value, "lift": lift, "gamma": 0.9, "frames": frames,
         "temporal_share": share, "temporal_share_uniform": None if share is None else 0.4,
         "per_class_iou": {"Pole": value / 2}, "seconds": 60.0}
        for seed, value in enumerate(values)
    ]  # fmt: skip


def test_head_summary_gives_the_t_interval_per_kind():
    records = _records("r0", [0.60, 0.61, 0.62, 0.61, 0.60]) + _records("r2", [0.65, 0.66, 0.64, 0.65, 0.66])
    heads = head_summary(records)
    r0, r2 = heads
    assert (r0["kind"], r0["n"]) == ("r0", 5) and r0["mean"] == pytest.approx(0.608)
    sd = (sum((v - 0.608) ** 2 for v in [0.60, 0.61, 0.62, 0.61, 0.60]) / 4) ** 0.5
    assert r0["ci95"] == pytest.approx(2.776 * sd / 5**0.5)
    assert r2["per_class_iou"]["Pole"] == pytest.approx(0.652 / 2)
    assert r2["seconds_range"] == [60.0, 60.0]
    assert head_summary([{**records[0], "seconds": None}])[0]["seconds_range"] is None


def test_the_ordering_is_read_from_the_intervals():
    apart = head_summary(_records("r0", [0.60, 0.61, 0.60]) + _records("r2", [0.70, 0.71, 0.70]))
    (pair,) = head_ordering(apart)
    assert {k: pair[k] for k in ("lower", "higher", "relation", "verdict")} == {
        "lower": "r0",
        "higher": "r2",
        "relation": "<",
        "verdict": "above",
    }
    assert pair["difference"] == pytest.approx(0.1)
    close = head_summary(_records("r1", [0.60, 0.65, 0.62]) + _records("r2", [0.61, 0.64, 0.63]))
    assert head_ordering(close)[0]["verdict"] == "overlap"
    worse = head_summary(_records("r2", [0.70, 0.71, 0.70]) + _records("r3", [0.60, 0.61, 0.60]))
    assert head_ordering(worse)[0]["verdict"] == "below"
    assert head_ordering(head_summary(_records("r0", [0.6]) + _records("r2", [0.7]))) == []  # one seed: no interval


def test_paired_seeds_separate_kinds_the_intervals_cannot():
    # Seed luck moves both kinds together: the intervals overlap, but r2 beats r0 by a point on every seed.
    heads = head_summary(_records("r0", [0.60, 0.64, 0.62, 0.58]) + _records("r2", [0.61, 0.65, 0.63, 0.595]))
    (pair,) = head_ordering(heads)
    assert pair["verdict"] == "overlap"
    paired = pair["paired"]
    assert paired["verdict"] == "above" and paired["n"] == 4 and paired["mean"] == pytest.approx(0.01125)
    sd = (sum((d - 0.01125) ** 2 for d in [0.01, 0.01, 0.01, 0.015]) / 3) ** 0.5
    assert paired["ci95"] == pytest.approx(3.182 * sd / 2)
    video = head_summary(
        _records("video_t1", [0.60, 0.64, 0.62], frames=1) + _records("video_t5", [0.61, 0.65, 0.63], frames=5)
    )
    assert head_ordering(video)[0]["paired"] is None  # clips of 1 and 5 frames: different batches, no pairing
    noisy = head_summary(_records("r0", [0.60, 0.64, 0.62]) + _records("r2", [0.62, 0.63, 0.62]))
    assert head_ordering(noisy)[0]["paired"]["verdict"] == "overlap"
    text = "\n".join(heads_section({"heads": heads, "head_ordering": head_ordering(heads)}))
    assert "paired over 4 seeds: **above** (+1.13 ± 0.40)" in text


def test_the_sections_say_what_the_numbers_are():
    heads = head_summary(
        _records("r0", [0.60, 0.61, 0.60])
        + _records("r2", [0.70, 0.71, 0.70])
        + _records("video_t5", [0.7, 0.71, 0.72], frames=5, share=0.55)
    )
    text = "\n".join(heads_section({"heads": heads, "head_ordering": head_ordering(heads)}))
    assert "| RCCA R = 2 | 3 | 70.3 | ± " in text and "55.0 (40.0)" in text and "**above** (+10.00 points)" in text
    assert "| 60-60 |" in text  # every made-up record took 60 s
    assert heads_section({}) == []
    curve = {"iterations": 4000, "step": 500, "hours": 0.51,
             "curve": [{"step": 250, "mIoU": 0.566, "lift": 5.07, "gamma": 0.898,
                        "per_class_iou": {"Pole": 0.019, "SignSymbol": 0.199, "Pedestrian": 0.214}}]}  # fmt: skip
    text = "\n".join(campaign_section({"campaign": curve}))
    assert "Iteration 500 of 4000, 0.5 hours" in text and "| 250 | 56.6 | 5.07 | 0.898 | 1.9 | 19.9 | 21.4 |" in text


def test_records_are_read_and_bad_ones_refused(tmp_path):
    (tmp_path / "heads").mkdir()
    for record in _records("r1", [0.5, 0.6]):
        (tmp_path / "heads" / f"r1_s{record['seed']}.json").write_text(json.dumps(record))
    assert [r["seed"] for r in read_head_records(tmp_path / "heads")] == [0, 1]
    assert read_head_records(tmp_path / "nothing") == []
    (tmp_path / "heads" / "junk.json").write_text("{}")
    with pytest.raises(ReportError, match="not a head record"):
        read_head_records(tmp_path / "heads")
    assert read_campaign(tmp_path / "no_campaign") is None


def test_the_campaigns_curve_comes_from_its_committed_state(camvid_factory, tmp_path):
    from conftest import tiny_training_config

    from training.train import train

    train(tiny_training_config(camvid_factory()), tmp_path / "run", show_progress=False)
    campaign = read_campaign(tmp_path / "run")
    assert campaign["iterations"] == 6 and [p["step"] for p in campaign["curve"]] == [3, 6]
    assert all(0 <= p["mIoU"] <= 1 and p["gamma"] is not None for p in campaign["curve"])
