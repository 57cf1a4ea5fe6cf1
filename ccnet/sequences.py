"""Clips of consecutive labelled frames, for the video model (ccnet/video_model.py).

A frame's sequence and position come from its file name by an ordering rule, a regular expression with the
named groups ``seq`` and ``num``. CamVid's rule reads ``0016E5_07959.png`` and ``0006R0_f00930.png`` as
(sequence, frame number); its labelled frames are 30 video frames (1 s) apart in most sequences, 2 apart in
val's 0016E5 stretch. The generic folder layout passes its own rule. Frames are ordered by number within a
sequence, and a clip never crosses sequences (nor splits: a split's samples are all it sees).

- ``sliding_windows``: every run of T consecutive labelled frames of a sequence (training samples clips).
- ``centred_windows``: one clip per frame, centred on it, shifted inward at a sequence's ends, and the frame's
  position in it; so every frame is scored exactly once, with context on both sides where the sequence has it.
A sequence with fewer than T labelled frames gives no clip; ``clip_plan`` says which were left out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ccnet.datasets import CAMVID_FRAME_ORDER as CAMVID_ORDER  # one rule, kept with the layout


@dataclass(frozen=True)
class ClipPlan:
    """Frame indices (into the split's samples) grouped by sequence, in frame order."""

    sequences: dict[str, list[int]]
    too_short: list[str]  # sequences with fewer than `frames` labelled frames
    frames: int


def frame_key(path: str | Path, order: str = CAMVID_ORDER) -> tuple[str, int]:
    """(sequence, frame number) of a frame file, by an ordering rule; ValueError naming the file otherwise."""
    stem = Path(path).stem
    found = re.match(order, stem)
    if found is None or "seq" not in found.groupdict() or "num" not in found.groupdict():
        raise ValueError(
            f"frame {Path(path).name} does not fit the ordering rule {order!r} (named groups seq and num): "
            "name frames SEQUENCE_NUMBER, or give the rule that reads yours"
        )
    return found["seq"], int(found["num"])


def clip_plan(paths: Sequence[str | Path], frames: int, order: str = CAMVID_ORDER) -> ClipPlan:
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise ValueError(f"frames must be an integer >= 1, got {frames!r}")
    keyed: dict[str, list[tuple[int, int]]] = {}
    for index, path in enumerate(paths):
        sequence, number = frame_key(path, order)
        keyed.setdefault(sequence, []).append((number, index))
    sequences, too_short = {}, []
    for sequence, members in sorted(keyed.items()):
        numbers = [number for number, _ in members]
        if len(set(numbers)) != len(numbers):
            raise ValueError(f"sequence {sequence} has two frames with the same number: check the file names")
        ordered = [index for _, index in sorted(members)]
        if len(ordered) < frames:
            too_short.append(sequence)
        else:
            sequences[sequence] = ordered
    return ClipPlan(sequences, too_short, frames)


def sliding_windows(plan: ClipPlan) -> list[list[int]]:
    """Every run of T consecutive frames of each sequence: lists of T sample indices."""
    t = plan.frames
    return [members[start : start + t] for members in plan.sequences.values() for start in range(len(members) - t + 1)]


def centred_windows(plan: ClipPlan) -> list[tuple[list[int], int]]:
    """One (clip, position of its frame in the clip) per frame of every kept sequence, in frame order."""
    t = plan.frames
    windows = []
    for members in plan.sequences.values():
        for i in range(len(members)):
            start = min(max(i - t // 2, 0), len(members) - t)
            windows.append((members[start : start + t], i - start))
    return windows
