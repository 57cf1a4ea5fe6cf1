"""Video files -> T frames (app/video_files.py) on real files written by cv2.VideoWriter: frames reached by
seeking equal the frames a full sequential decode finds at those indices, in every container the page accepts;
each kind of bad file raises VideoFileError with a message naming the problem; and a clip moved by one stride
shares T - 1 frames, and so T - 1 frames' backbone features in the page's shared cache."""

from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from app import video_files
from app.explorer import BoundedCache
from app.models import load_model
from app.video import FRAME_FEATURES, Clip, encode_clip
from app.video_files import VideoFileError, frame_indices, probe_video, read_frames
from tests.test_app_helpers import street_rgb
from tests.test_app_video import save_video_checkpoint

# What this OpenCV build (FFmpeg backend) writes and reads back: the page's containers with a codec each.
CODECS = {"mp4": "mp4v", "mov": "mp4v", "avi": "MJPG", "mkv": "MJPG", "webm": "VP80"}


def moving_frames(count: int, width: int, height: int, seed: int = 0) -> list[np.ndarray]:
    """`count` different (H, W, 3) BGR frames: a street scene sliding sideways with its frame number drawn."""
    base = street_rgb(height, width, seed=seed)
    frames = []
    for index in range(count):
        frame = np.ascontiguousarray(np.roll(base, 4 * index, axis=1)[:, :, ::-1])
        cv2.putText(frame, str(index), (8, height - 8), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2)
        frames.append(frame)
    return frames


def write_video(
    path: Path, count: int, size=(480, 360), fps: float = 30.0, codec: str | None = None, seed: int = 0
) -> bytes:
    """A real video file of `count` frames at `size` (W, H); `count` 0 writes a container with no frames."""
    fourcc = cv2.VideoWriter_fourcc(*(codec or CODECS[path.suffix[1:]]))
    writer = cv2.VideoWriter(str(path), fourcc, fps, size)
    assert writer.isOpened(), f"this OpenCV cannot write {path.suffix} files"
    for frame in moving_frames(count, *size, seed=seed):
        writer.write(frame)
    writer.release()
    return path.read_bytes()


def video_bytes(folder: Path, name: str, seconds: float = 5.0, size=(480, 360), fps: float = 30.0, seed: int = 0):
    return write_video(folder / name, round(seconds * fps), size, fps, seed=seed)


def sequential_frames(data: bytes, suffix: str) -> list[np.ndarray]:
    """Every frame, decoded from the first to the last (what seeking must agree with), as RGB."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"video{suffix}"
        path.write_bytes(data)
        capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        frames = []
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        capture.release()
    return frames


@pytest.fixture(scope="module")
def clip_mp4(tmp_path_factory) -> bytes:
    """The issue's size: 5 s of 480 x 360 at 30 fps (150 frames)."""
    return video_bytes(tmp_path_factory.mktemp("videos"), "clip.mp4")


def error_of(data: bytes, name: str, **reading) -> str:
    arguments = {"start_seconds": 0.0, "stride_frames": 30, "count": 5, "max_side": 1024} | reading
    with pytest.raises(VideoFileError) as raised:
        read_frames(data, name, **arguments)
    return str(raised.value)


def test_probe_reads_frame_count_rate_size_duration_and_codec(clip_mp4):
    info = probe_video(clip_mp4, "clip.mp4")
    assert (info.frame_count, info.fps, info.width, info.height) == (150, 30.0, 480, 360)
    assert info.duration == pytest.approx(5.0) and info.codec == "FMP4"  # FFmpeg's tag for 'mp4v'


@pytest.mark.parametrize("suffix", list(CODECS))
def test_frames_reached_by_seeking_equal_the_sequentially_decoded_frames(tmp_path, suffix):
    data = write_video(tmp_path / f"clip.{suffix}", 60, size=(160, 120))
    frames = read_frames(data, f"clip.{suffix}", start_seconds=0.5, stride_frames=11, count=4, max_side=1024)
    everything = sequential_frames(data, f".{suffix}")
    assert len(everything) == 60
    for frame, index in zip(frames, (15, 26, 37, 48), strict=True):
        assert frame.rgb.dtype == np.uint8 and frame.rgb.shape == (120, 160, 3)
        np.testing.assert_array_equal(frame.rgb, everything[index])  # the same decoder: exactly equal
    assert len({frame.digest for frame in frames}) == 4


def test_the_frames_of_the_issue_sized_mp4_match_their_indices(clip_mp4):
    frames = read_frames(clip_mp4, "clip.mp4", start_seconds=1.0, stride_frames=30, count=4, max_side=1024)
    everything = sequential_frames(clip_mp4, ".mp4")
    for frame, index in zip(frames, (30, 60, 90, 120), strict=True):
        np.testing.assert_array_equal(frame.rgb, everything[index])
    assert frame_indices(probe_video(clip_mp4), 1.0, 30, 4) == [30, 60, 90, 120]


def test_frames_are_scaled_to_the_longest_side_like_uploaded_images(clip_mp4):
    frame = read_frames(clip_mp4, "clip.mp4", start_seconds=0.0, stride_frames=1, count=1, max_side=240)[0]
    assert frame.rgb.shape == (180, 240, 3) and frame.original_size == (360, 480)
    assert frame.notices and "Scaled down from 480 x 360 to 240 x 180" in frame.notices[0]


def test_moving_the_start_by_one_stride_shares_all_frames_but_one(clip_mp4):
    first = read_frames(clip_mp4, "clip.mp4", start_seconds=0.0, stride_frames=30, count=4, max_side=1024)
    moved = read_frames(clip_mp4, "clip.mp4", start_seconds=1.0, stride_frames=30, count=4, max_side=1024)
    assert [f.digest for f in first[1:]] == [f.digest for f in moved[:-1]]
    assert first[0].digest not in {f.digest for f in moved}
    assert Clip(first, ["a"] * 4, None, None).digest != Clip(moved, ["b"] * 4, None, None).digest


def test_a_clip_moved_by_one_stride_runs_the_backbone_on_its_new_frame_only(tmp_path, clip_mp4):
    """The page's shared cache holds backbone features per frame content: the moved clip finds T - 1 of them."""
    loaded = load_model(save_video_checkpoint(tmp_path), torch.device("cpu"))
    cache = BoundedCache(2**30)

    def clip_at(start: float) -> Clip:
        frames = read_frames(clip_mp4, "clip.mp4", start_seconds=start, stride_frames=30, count=3, max_side=128)
        return Clip(frames, [str(start)] * 3, None, None)

    encode_clip(loaded, clip_at(0.0), cache)
    moved = clip_at(1.0)
    held = [cache.get((FRAME_FEATURES, f.digest, loaded.cache_id)) is not None for f in moved.frames]
    assert held == [True, True, False]
    features = encode_clip(loaded, moved, cache)
    assert len(cache) == 4 and features.final.shape[0] == 3  # the three first frames and the new one


def test_the_temporary_file_is_removed_after_good_and_bad_files(tmp_path, monkeypatch, clip_mp4):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where TemporaryDirectory puts its folder
    read_frames(clip_mp4, "clip.mp4", start_seconds=0.0, stride_frames=30, count=2, max_side=256)
    error_of(b"not a video at all", "text.mp4")
    assert not list(tmp_path.glob("ccnet-video-*"))


# Every kind of bad file: a VideoFileError whose message names the problem and says what to do.


def test_random_bytes_are_not_a_video():
    message = error_of(np.random.default_rng(0).bytes(50_000), "noise.mp4")
    assert "'noise.mp4' is not a video file" in message and "Upload a video" in message


def test_a_text_file_renamed_mp4_is_not_a_video():
    message = error_of(b"Meeting notes, not a film.\n" * 100, "notes.mp4")
    assert "'notes.mp4' is not a video file" in message and "Upload frames" in message


def test_an_empty_file_says_so():
    assert "is empty (0 bytes)" in error_of(b"", "empty.mp4")


@pytest.mark.parametrize("suffix", ["mp4", "avi"])
def test_a_file_cut_in_half_is_truncated(tmp_path, suffix):
    data = write_video(tmp_path / f"clip.{suffix}", 60, size=(160, 120))
    message = error_of(data[: len(data) // 2], f"cut.{suffix}", stride_frames=5)
    assert "'cut." in message and "is truncated" in message and "complete file" in message


def test_a_matroska_file_cut_in_half_fails_at_the_first_missing_frame(tmp_path):
    """Matroska states its length up front: the header opens, the frames past the cut do not decode."""
    data = write_video(tmp_path / "clip.mkv", 60, size=(160, 120))
    message = error_of(data[: len(data) // 2], "cut.mkv", stride_frames=14)
    assert "could not be decoded: the file is truncated or damaged" in message and "earlier start time" in message


@pytest.mark.parametrize("suffix", ["mp4", "avi"])
def test_a_container_without_frames_has_zero_frames(tmp_path, suffix):
    data = write_video(tmp_path / f"empty.{suffix}", 0, size=(160, 120))
    message = error_of(data, f"empty.{suffix}")
    assert "holds no video frames" in message and "Upload a video with frames" in message


def test_too_short_for_the_clip_says_the_latest_start_that_works(clip_mp4):
    message = error_of(clip_mp4, "clip.mp4", start_seconds=2.0, stride_frames=30, count=5)
    assert "too short for 5 frames 30 apart from 2.0 s (frame 60)" in message
    assert "The latest start time that works is 0.9 s." in message
    read_frames(clip_mp4, "clip.mp4", start_seconds=0.9, stride_frames=30, count=5, max_side=128)  # it does work


def test_too_short_for_the_stride_says_the_largest_stride_that_works(clip_mp4):
    message = error_of(clip_mp4, "clip.mp4", start_seconds=0.0, stride_frames=40, count=5)
    assert "The largest stride that works from there is 37." in message
    read_frames(clip_mp4, "clip.mp4", start_seconds=0.0, stride_frames=37, count=5, max_side=128)


def test_a_video_with_fewer_frames_than_the_clip_asks_for_a_longer_one(tmp_path):
    data = write_video(tmp_path / "short.avi", 3, size=(160, 120))
    assert "too short for a clip of 5 frames. Upload a longer video." in error_of(data, "short.avi", stride_frames=1)


def test_an_unknown_codec_is_named(tmp_path):
    data = write_video(tmp_path / "clip.avi", 10, size=(160, 120))
    unknown = data.replace(b"MJPG", b"QQQQ")  # the AVI header's codec tags: FFmpeg has no decoder for 'QQQQ'
    message = error_of(unknown, "odd.avi")
    assert "video codec ('QQQQ') this app cannot decode" in message and "ffmpeg -i input -c:v libx264" in message


def test_a_huge_resolution_is_refused_before_decoding(tmp_path, monkeypatch):
    data = write_video(tmp_path / "clip.mp4", 10, size=(160, 120))
    monkeypatch.setattr(video_files, "MAX_FRAME_PIXELS", 100 * 100)  # a small stand-in for 4096 x 4096
    message = error_of(data, "big.mp4")
    assert "'big.mp4' is 160 x 120 pixels per frame (0.0192 MPixel), more than the 0.01 MPixel" in message
    assert "Scale it down" in message


def test_a_too_large_file_is_refused_before_it_is_written(tmp_path, monkeypatch):
    data = write_video(tmp_path / "clip.mp4", 10, size=(160, 120))
    monkeypatch.setattr(video_files, "MAX_FILE_BYTES", 1000)
    message = error_of(data, "large.mp4")
    assert "more than the 0.0 MB allowed" in message and "Cut the part you need" in message


def test_a_too_long_video_is_refused_before_decoding(tmp_path):
    data = write_video(tmp_path / "long.avi", 601, size=(64, 48), fps=1.0)  # 10 min 01 s of tiny frames
    message = error_of(data, "long.avi")
    assert "'long.avi' lasts 10 min 01 s, longer than the 10 min 00 s allowed" in message


def test_frames_too_small_for_the_model_say_so(tmp_path):
    data = write_video(tmp_path / "tiny.avi", 10, size=(24, 16))
    assert "needs at least 32 pixels on each side" in error_of(data, "tiny.avi", stride_frames=1)
