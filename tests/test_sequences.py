"""Clips of consecutive labelled frames (ccnet/sequences.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ccnet.sequences import CAMVID_ORDER, centred_windows, clip_plan, frame_key, sliding_windows


def test_camvid_names_give_sequence_and_number():
    assert frame_key("0016E5_07959.png") == ("0016E5", 7959)
    assert frame_key("val/0006R0_f00930.png") == ("0006R0", 930)
    with pytest.raises(ValueError, match="does not fit the ordering rule"):
        frame_key("street.png")
    assert frame_key("clipA-frame12.jpg", r"^(?P<seq>.+)-frame(?P<num>\d+)$") == ("clipA", 12)


def test_windows_follow_frame_order_and_never_cross_sequences():
    names = ["B_0030.png", "A_0090.png", "A_0030.png", "B_0060.png", "A_0060.png", "A_0120.png", "B_0090.png"]
    plan = clip_plan(names, frames=3)
    assert plan.sequences == {"A": [2, 4, 1, 5], "B": [0, 3, 6]} and plan.too_short == []
    assert sliding_windows(plan) == [[2, 4, 1], [4, 1, 5], [0, 3, 6]]
    for clip in sliding_windows(plan):
        assert len({frame_key(names[i])[0] for i in clip}) == 1


def test_centred_windows_score_every_frame_once_shifted_at_the_ends():
    names = [f"S_{n:04d}.png" for n in range(6)] + ["T_0001.png", "T_0002.png"]
    plan = clip_plan(names, frames=5)
    assert plan.too_short == ["T"]  # 2 frames < T: left out, and said
    windows = centred_windows(plan)
    assert [clip[position] for clip, position in windows] == list(range(6))  # each frame once, in order
    assert windows[0] == ([0, 1, 2, 3, 4], 0)  # the start: shifted inward
    assert windows[2] == ([0, 1, 2, 3, 4], 2)  # centred
    assert windows[5] == ([1, 2, 3, 4, 5], 4)  # the end
    assert all(len(clip) == 5 for clip, _ in windows)


def test_bad_plans_are_refused():
    with pytest.raises(ValueError, match="frames must be"):
        clip_plan(["S_1.png"], frames=0)
    with pytest.raises(ValueError, match="same number"):
        clip_plan(["S_0001.png", "S_1.png"], frames=1)


@pytest.mark.skipif(not os.environ.get("CAMVID_ROOT"), reason="CAMVID_ROOT is not set (CI sets it)")
def test_real_camvid_splits_make_clips():
    root = Path(os.environ["CAMVID_ROOT"])
    for split, sequences in (("train", {"0001TP", "0006R0", "0016E5"}), ("val", {"0016E5"})):
        names = sorted(p.name for p in (root / split).glob("*.png"))
        plan = clip_plan(names, frames=5, order=CAMVID_ORDER)
        assert set(plan.sequences) == sequences and plan.too_short == []
        assert len(centred_windows(plan)) == len(names)
        assert len(sliding_windows(plan)) == len(names) - 4 * len(sequences)
