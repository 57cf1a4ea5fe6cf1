"""Video files -> a clip's T frames: an uploaded video (MP4, MOV, AVI, WebM, MKV) probed, checked against the
app's limits and sampled by seeking to T frame indices, never decoded whole.

OpenCV (FFmpeg backend) reads from a path, so the bytes go to a temporary file that is deleted afterwards. The
limits (file size, duration, pixels per frame) are checked from the container's header before any frame is
decoded. Every problem raises `VideoFileError` whose message says what is wrong and what to do; the video page
turns it into its `ClipError`. Frames are scaled like uploaded images (`app.images`) and come back as
`DecodedImage`s, whose content digests key the page's per-frame caches.
"""

from __future__ import annotations

import math
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from app.images import DecodedImage, ImageError, check_min_side, image_digest, scale_to_max_side, shown_name

VIDEO_EXTENSIONS = ["mp4", "mov", "avi", "webm", "mkv"]
MAX_FILE_BYTES = 200 * 2**20  # what the app accepts; Streamlit's server.maxUploadSize may refuse less first
MAX_DURATION_SECONDS = 10 * 60
MAX_FRAME_PIXELS = 4096 * 4096  # 16.8 MPixel: 4K (3840 x 2160) fits, an 8K frame does not
DEFAULT_STRIDE = 30  # CamVid's labelled frames are 30 video frames (1 s at 30 fps) apart
FORMATS = "MP4, MOV, AVI, WebM or MKV"
REENCODE = "Re-encode it (e.g. `ffmpeg -i input -c:v libx264 -pix_fmt yuv420p out.mp4`) and upload that."


class VideoFileError(ValueError):
    """A video file the app cannot use; `str(error)` is the message to show."""


@dataclass(frozen=True)
class VideoInfo:
    """What the container's header says, read without decoding frames."""

    frame_count: int
    fps: float
    width: int
    height: int
    codec: str  # the stream's FourCC, e.g. "FMP4", "MJPG", "avc1"

    @property
    def duration(self) -> float:
        return self.frame_count / self.fps

    def frame_time(self, index: int) -> float:
        return index / self.fps


def probe_video(data: bytes, name: str = "video") -> VideoInfo:
    """Frame count, frame rate, size and codec of `data`, checked against the limits; no frame is decoded."""
    name = shown_name(name)
    _check_file_size(data, name)
    with _opened(data, name) as capture:
        return _checked_info(capture, data, name)


def frame_indices(info: VideoInfo, start_seconds: float, stride: int, count: int, name: str = "video") -> list[int]:
    """The `count` frames from the one at `start_seconds`, `stride` frames apart; refuses a video too short."""
    if stride < 1:
        raise VideoFileError(f"The frame stride must be at least 1 (it is {stride}).")
    if start_seconds < 0 or not math.isfinite(start_seconds):
        raise VideoFileError(f"The start time must be 0 s or later (it is {start_seconds}).")
    start = round(start_seconds * info.fps)
    indices = [start + k * stride for k in range(count)]
    if indices[-1] < info.frame_count:
        return indices
    raise VideoFileError(_too_short_message(info, start, stride, count, shown_name(name)))


def read_frames(
    data: bytes, name: str, start_seconds: float, stride_frames: int, count: int, max_side: int
) -> list[DecodedImage]:
    """`count` frames of the video, `stride_frames` apart from `start_seconds`, each reached by seeking (not by
    decoding everything before it), converted to RGB and scaled so the longer side is at most `max_side`."""
    name = shown_name(name)
    _check_file_size(data, name)
    with _opened(data, name) as capture:
        info = _checked_info(capture, data, name)
        indices = frame_indices(info, start_seconds, stride_frames, count, name)
        return [_decoded(_frame_at(capture, info, index, name), max_side, name) for index in indices]


def _check_file_size(data: bytes, name: str) -> None:
    if not data:
        raise VideoFileError(f"'{name}' is empty (0 bytes). Choose a video file ({FORMATS}).")
    if len(data) > MAX_FILE_BYTES:
        raise VideoFileError(
            f"'{name}' is {_megabytes(len(data))}, more than the {_megabytes(MAX_FILE_BYTES)} allowed. "
            "Cut the part you need (e.g. `ffmpeg -ss 60 -t 20 -i input -c copy part.mp4`) or lower its bitrate."
        )


@contextmanager
def _opened(data: bytes, name: str) -> Iterator[cv2.VideoCapture]:
    """An open capture of `data`, through a temporary file that is removed on exit; unreadable files raise."""
    suffix = Path(name).suffix.lower()
    suffix = suffix if suffix[1:] in VIDEO_EXTENSIONS else ".bin"
    with tempfile.TemporaryDirectory(prefix="ccnet-video-") as folder:
        path = Path(folder) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)  # FFmpeg only: no image-sequence or camera backends
        except cv2.error as error:
            raise VideoFileError(_unopenable_message(data, name)) from error
        try:
            if not capture.isOpened():
                raise VideoFileError(_unopenable_message(data, name))
            yield capture
        finally:
            capture.release()


def _checked_info(capture: cv2.VideoCapture, data: bytes, name: str) -> VideoInfo:
    """The header's numbers, in the order a user can act on them: frames at all, then size, then length."""
    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    frame_count, fps = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), float(capture.get(cv2.CAP_PROP_FPS))
    codec = _fourcc_text(int(capture.get(cv2.CAP_PROP_FOURCC)))
    if frame_count <= 0 or width <= 0 or height <= 0:
        raise VideoFileError(
            f"'{name}' holds no video frames (an empty recording, an audio-only file, or a stream whose length "
            "is not stated). Upload a video with frames; if this one plays elsewhere, re-encode it (e.g. `ffmpeg -i "
            "input -c:v libx264 -pix_fmt yuv420p out.mp4`) and upload that."
        )
    if width * height > MAX_FRAME_PIXELS:
        side = math.isqrt(MAX_FRAME_PIXELS)
        raise VideoFileError(
            f"'{name}' is {width} x {height} pixels per frame ({width * height / 1e6:.3g} MPixel), more than the "
            f"{MAX_FRAME_PIXELS / 1e6:.3g} MPixel ({side} x {side}) allowed. Scale it down first, e.g. "
            "`ffmpeg -i input -vf scale=1920:-2 output.mp4`."
        )
    if not (math.isfinite(fps) and fps > 0):
        raise VideoFileError(f"'{name}' states no frame rate, so start times cannot be found. {REENCODE}")
    info = VideoInfo(frame_count, fps, width, height, codec)
    if info.duration > MAX_DURATION_SECONDS:
        raise VideoFileError(
            f"'{name}' lasts {_minutes(info.duration)}, longer than the {_minutes(MAX_DURATION_SECONDS)} allowed. "
            "Cut the part you need, e.g. `ffmpeg -ss 60 -t 20 -i input -c copy part.mp4`."
        )
    truncated = _declared_truncation(data)
    if truncated:
        raise VideoFileError(f"'{name}' is truncated: {truncated}. Upload the complete file.")
    return info


def _frame_at(capture: cv2.VideoCapture, info: VideoInfo, index: int, name: str) -> np.ndarray:
    """Frame `index` (BGR) by seeking: the decoder starts from the key frame before it, not from frame 0."""
    try:
        sought = capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = capture.read() if sought else (False, None)
    except cv2.error:  # OpenCV's own checks failing inside the decoder: the file's fault, not the app's
        ok, frame = False, None
    if not ok or frame is None or frame.ndim != 3 or frame.shape[2] != 3:
        raise VideoFileError(
            f"Frame {index} of '{name}' ({info.frame_time(index):.1f} s of {info.duration:.1f} s) could not be "
            "decoded: the file is truncated or damaged there. Choose an earlier start time or a smaller stride, "
            "or upload the complete file."
        )
    return frame  # (H, W, 3) BGR uint8


def _decoded(bgr: np.ndarray, max_side: int, name: str) -> DecodedImage:
    """A frame as the still-image path builds one: RGB, scaled to `max_side`, hashed by content."""
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    original_size = (int(rgb.shape[0]), int(rgb.shape[1]))
    notices: list[str] = []
    try:
        check_min_side(original_size, name)
        rgb = scale_to_max_side(rgb, original_size, max_side, notices)
        check_min_side(rgb.shape[:2], name, after_scaling=True)
    except ImageError as error:
        raise VideoFileError(str(error)) from error
    return DecodedImage(rgb=rgb, original_size=original_size, notices=notices, digest=image_digest(rgb))


def _too_short_message(info: VideoInfo, start: int, stride: int, count: int, name: str) -> str:
    """Say what fits: the latest start at this stride, else the largest stride from this start, else nothing."""
    span = (count - 1) * stride  # frames from the first to the last of the clip
    have = f"'{name}' has {info.frame_count} frames ({info.duration:.1f} s at {info.fps:.3g} fps)"
    wanted = f"{count} frames {stride} apart from {info.frame_time(start):.1f} s (frame {start})"
    if span < info.frame_count:
        latest = math.floor((info.frame_count - 1 - span) / info.fps * 10) / 10  # rounds to a frame that fits
        return f"{have}: too short for {wanted}. The latest start time that works is {latest:.1f} s."
    if count > 1 and start + count - 1 < info.frame_count:
        largest = (info.frame_count - 1 - start) // (count - 1)
        return f"{have}: too short for {wanted}. The largest stride that works from there is {largest}."
    return f"{have}: too short for a clip of {count} frames. Upload a longer video."


def _megabytes(size: int) -> str:
    return f"{size / 2**20:.1f} MB" if size < 10 * 2**20 else f"{size / 2**20:.0f} MB"


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def _fourcc_text(code: int) -> str:
    text = code.to_bytes(4, "little", signed=code < 0).decode("latin-1")
    return text if text.isprintable() and code else "?"


# Why a file OpenCV cannot open fails: the container from its first bytes, then what its header says.


def _container(data: bytes) -> str | None:
    if data[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
        return "MP4/MOV"
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return "AVI"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "Matroska/WebM"
    return None


def _unopenable_message(data: bytes, name: str) -> str:
    container = _container(data)
    if container is None:
        return (
            f"'{name}' is not a video file this app can read: its bytes do not start like an {FORMATS} file. "
            "Upload a video, or pick 'Upload frames' for still images."
        )
    truncated = _declared_truncation(data)
    if truncated:
        return f"'{name}' is truncated: {truncated}. Upload the complete file."
    if container == "MP4/MOV" and not _mp4_has_track(data):
        return f"'{name}' holds no video frames (its MP4/MOV index lists no track). Upload a video with frames."
    codec = _avi_codec(data) if container == "AVI" else None
    codec = f" ('{codec}')" if codec else ""
    return (
        f"'{name}' is an {container} file whose video codec{codec} this app cannot decode, or it is damaged. {REENCODE}"
    )


def _declared_truncation(data: bytes) -> str | None:
    """How the container's own sizes show the file was cut short (MP4/MOV boxes, AVI's RIFF size), or None."""
    container = _container(data)
    if container == "AVI":
        declared = 8 + struct.unpack("<I", data[4:8])[0]
        if declared > len(data):
            return f"its header declares {declared:,} bytes but the file holds {len(data):,}"
    if container == "MP4/MOV":
        boxes, overrun = _mp4_boxes(data, 0, len(data))
        if overrun:
            return f"its '{overrun}' box runs past the end of the file ({len(data):,} bytes)"
        if "moov" not in {kind for kind, _, _ in boxes}:
            return "its index (the 'moov' box, written when a recording ends) is missing"
    return None


def _mp4_boxes(data: bytes, start: int, end: int) -> tuple[list[tuple[str, int, int]], str | None]:
    """The boxes between `start` and `end` as (type, payload start, box end), and the type of one that overruns."""
    boxes, offset = [], start
    while offset + 8 <= end:
        size, header = struct.unpack(">I", data[offset : offset + 4])[0], 8
        kind = data[offset + 4 : offset + 8].decode("latin-1")
        if size == 1 and offset + 16 <= end:  # a 64-bit size follows the type
            size, header = struct.unpack(">Q", data[offset + 8 : offset + 16])[0], 16
        elif size == 0:  # the box runs to the end of the file
            size = end - offset
        if size < header:  # malformed: stop reading, nothing below can be trusted
            return boxes, None
        if offset + size > end:
            return boxes, kind
        boxes.append((kind, offset + header, offset + size))
        offset += size
    return boxes, None


def _mp4_has_track(data: bytes) -> bool:
    for kind, start, end in _mp4_boxes(data, 0, len(data))[0]:
        if kind == "moov":
            return any(child == "trak" for child, _, _ in _mp4_boxes(data, start, end)[0])
    return False


def _avi_codec(data: bytes) -> str | None:
    """The video stream's FourCC from an AVI header: the compression field of the 'strf' after 'vids', if printable."""
    vids = data.find(b"vids", 0, 8192)
    strf = data.find(b"strf", vids, 8192) if vids >= 0 else -1
    if strf < 0:
        return None
    code = data[strf + 24 : strf + 28].decode("latin-1")  # 'strf', its size, then BITMAPINFOHEADER.biCompression
    return code if len(code) == 4 and code.isprintable() else None
