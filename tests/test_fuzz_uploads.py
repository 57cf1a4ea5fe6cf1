"""Fuzzing the upload path: >= 500 generated files through `decode_image`, each ending in a decoded RGB image
within the limits or one clear `ImageError` -- never another exception, a hang or unbounded memory.

The decoding runs in a separate worker process (this file run as a script) so that a crash, a hang or a memory
blow-up is observed instead of taking pytest down:
- time: each input has PER_INPUT_SECONDS; a worker that does not answer is killed and counted as a hang;
- memory: the worker's address space is capped with RLIMIT_AS at its start-up size + ADDRESS_SPACE_BUDGET
  (a decode that needs more fails with MemoryError, which counts as a crash), and its peak resident set
  (VmHWM) after every input must stay under RSS_BOUND.
Inputs are generated from a fixed seed, so a failure names an input that can be regenerated exactly.
"""

from __future__ import annotations

import functools
import io
import json
import os
import random
import select
import struct
import subprocess
import sys
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).absolute().parent.parent
SEED = 20261126
PER_INPUT_SECONDS = 20.0
ADDRESS_SPACE_BUDGET = 3 * 2**30  # bytes of virtual memory the worker may add to its start-up size
RSS_BOUND = 2**30  # peak resident memory of the worker, bytes (a 50 M-pixel RGBA file is 200 MB decoded)
MAX_MESSAGE = 600  # characters: a message for a person, not a dump


@dataclass
class FuzzInput:
    category: str
    label: str  # what it is, to name it in a failure
    name: str  # the upload's file name
    data: bytes
    must_decode: bool = False  # a valid image in a supported format: an error would be a bug


# --- generators -------------------------------------------------------------------------------------------


def _encode(image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _random_picture(rng: np.random.Generator, height: int, width: int):
    from PIL import Image

    smooth = np.linspace(0, 255, width, dtype=np.float32)[None, :, None] * np.ones((height, 1, 3), np.float32)
    noise = rng.normal(0, 40, (height, width, 3))
    return Image.fromarray(np.clip(smooth + noise, 0, 255).astype(np.uint8))  # (H, W, 3)


def _valid_image(rng: np.random.Generator, fmt: str | None = None) -> tuple[str, bytes]:
    fmt = fmt or str(rng.choice(["PNG", "JPEG", "WEBP", "BMP", "TIFF"]))
    picture = _random_picture(rng, int(rng.integers(32, 160)), int(rng.integers(32, 160)))
    return fmt, _encode(picture, fmt)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_declaring(width: int, height: int, body: bytes | None = None, colour_type: int = 2) -> bytes:
    """A PNG whose header declares width x height; `body` is the raw (filtered) scanline data, if any."""
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    idat = zlib.compress(body if body is not None else b"\0" * 10, 9)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _bmp_declaring(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + 64, 0, 0, 54) + info + b"\0" * 64


def _tiff_declaring(width: int, height: int) -> bytes:
    entries = [
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 1, 8),
        (259, 3, 1, 1),
        (262, 3, 1, 1),
        (273, 4, 1, 8 + 2 + 12 * 9 + 4),
        (277, 3, 1, 1),
        (278, 4, 1, height),
        (279, 4, 1, 16),
    ]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\0\0\0\0"
    return b"II*\0" + struct.pack("<I", 8) + ifd + b"\0" * 16


def _jpeg_declaring(width: int, height: int, rng: np.random.Generator) -> bytes:
    """A real small JPEG whose SOF0 size fields are rewritten."""
    data = bytearray(_valid_image(rng, "JPEG")[1])
    marker = data.find(b"\xff\xc0")
    data[marker + 5 : marker + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _webp_declaring(width: int, height: int) -> bytes:
    """A VP8X (extended) WebP header declaring the canvas size, with nothing after it."""
    vp8x = (
        b"VP8X"
        + struct.pack("<I", 10)
        + b"\0\0\0\0"
        + (width - 1).to_bytes(3, "little")
        + (height - 1).to_bytes(3, "little")
    )
    return b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x


def random_bytes(rng: np.random.Generator, count: int) -> list[FuzzInput]:
    magics = [
        b"",
        b"\x89PNG\r\n\x1a\n",
        b"\xff\xd8\xff",
        b"RIFF\0\0\0\0WEBPVP8 ",
        b"BM",
        b"II*\0",
        b"MM\0*",
        b"GIF89a",
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR",
    ]
    inputs = []
    for index in range(count):
        magic = magics[index % len(magics)]
        body = rng.integers(0, 256, int(rng.integers(0, 4000)), dtype=np.uint8).tobytes()
        inputs.append(FuzzInput("random-bytes", f"{magic[:8]!r}+{len(body)}", f"noise{index}.png", magic + body))
    return inputs


def truncated(rng: np.random.Generator, count: int) -> list[FuzzInput]:
    inputs = []
    for index in range(count):
        fmt, data = _valid_image(rng)
        cut = int(rng.integers(0, len(data)))
        inputs.append(
            FuzzInput("truncated", f"{fmt} cut at {cut}/{len(data)}", f"cut{index}.{fmt.lower()}", data[:cut])
        )
    return inputs


def mutated(rng: np.random.Generator, count: int) -> list[FuzzInput]:
    """Valid files with a few bytes overwritten: reach deeper into each parser than pure noise does."""
    inputs = []
    for index in range(count):
        fmt, data = _valid_image(rng)
        data = bytearray(data)
        flips = int(rng.integers(1, 24))
        for position in rng.integers(0, len(data), flips):
            data[int(position)] = int(rng.integers(0, 256))
        inputs.append(
            FuzzInput("mutated", f"{fmt} with {flips} bytes changed", f"mut{index}.{fmt.lower()}", bytes(data))
        )
    return inputs


def wrong_extensions(rng: np.random.Generator, count: int) -> list[FuzzInput]:
    names = [
        "photo.jpg",
        "photo.png",
        "scan.tiff",
        "image.webp",
        "notes.txt",
        "program.exe",
        "noextension",
        "archive.tar.gz",
        "picture.gif",
        ".hidden",
        "x" * 300 + ".png",
        "[link](x)<b>.png",
    ]
    inputs = []
    for index in range(count):
        fmt, data = _valid_image(rng)
        name = names[index % len(names)]
        inputs.append(FuzzInput("wrong-extension", f"{fmt} named {name[:20]}", name, data, must_decode=True))
    return inputs


# Every mode a file can arrive in ("La", premultiplied LA, exists only in memory: no format stores it).
MODES = [
    "1",
    "L",
    "P",
    "RGB",
    "RGBA",
    "CMYK",
    "YCbCr",
    "LAB",
    "HSV",
    "I",
    "F",
    "LA",
    "PA",
    "RGBX",
    "RGBa",
    "I;16",
    "I;16L",
    "I;16B",
    "P+transparency",
]


def _in_mode(rng: np.random.Generator, mode: str):
    from PIL import Image

    picture = _random_picture(rng, int(rng.integers(32, 90)), int(rng.integers(32, 90)))
    if mode == "P+transparency":
        converted = picture.convert("P")
        converted.info["transparency"] = 0
        return converted
    if mode in ("I;16", "I;16L", "I;16B"):
        values = (np.asarray(picture.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
        return Image.fromarray(values).convert(mode) if mode != "I;16" else Image.fromarray(values)
    if mode == "F":
        values = np.asarray(picture.convert("L"), dtype=np.float32) * float(rng.choice([1e-6, 1.0, 1e30]))
        values[0, 0] = float(rng.choice([np.nan, np.inf, -np.inf, 0.0]))
        return Image.fromarray(values)
    if mode == "I":
        values = np.asarray(picture.convert("L"), dtype=np.int32) * int(rng.choice([-70000, 1, 1000]))
        return Image.fromarray(values)
    return picture.convert(mode)


def every_mode(rng: np.random.Generator, repeats: int) -> list[FuzzInput]:
    """Each PIL mode saved in each allowed format that can store it (a format that cannot is skipped)."""
    inputs = []
    for repeat in range(repeats):
        for mode in MODES:
            for fmt in ("PNG", "TIFF", "JPEG", "WEBP", "BMP"):
                image = _in_mode(rng, mode)
                try:
                    data = _encode(image, fmt)
                except (OSError, ValueError, KeyError, TypeError):
                    continue  # this format cannot store this mode
                inputs.append(
                    FuzzInput("mode", f"{mode} as {fmt} #{repeat}", f"mode.{fmt.lower()}", data, must_decode=True)
                )
    return inputs


def extreme_sizes(rng: np.random.Generator) -> list[FuzzInput]:
    from PIL import Image

    inputs = []
    for width, height in ((1, 1), (1, 10000), (10000, 1), (31, 31), (32, 32), (32, 4000), (40, 1100)):
        data = _encode(Image.new("RGB", (width, height), (10, 200, 30)), "PNG")
        inputs.append(
            FuzzInput(
                "extreme-size",
                f"real {width}x{height} PNG",
                "real.png",
                data,
                must_decode=min(width, height) >= 32 and max(width, height) <= 1100 and width != 32,
            )
        )
    inputs.append(
        FuzzInput(
            "extreme-size",
            "real 4000x3000 JPEG",
            "camera.jpg",
            _encode(_random_picture(rng, 3000, 4000), "JPEG", quality=80),
            must_decode=True,
        )
    )
    for width, height in ((20000, 20000), (65535, 65535), (100000, 1), (1, 100000), (7072, 7072), (0, 0)):
        inputs.append(
            FuzzInput("extreme-size", f"PNG header {width}x{height}", "bomb.png", _png_declaring(width, height))
        )
        if width and width < 70000 and height < 70000:
            inputs.append(
                FuzzInput("extreme-size", f"BMP header {width}x{height}", "bomb.bmp", _bmp_declaring(width, height))
            )
            inputs.append(
                FuzzInput("extreme-size", f"TIFF header {width}x{height}", "bomb.tif", _tiff_declaring(width, height))
            )
            inputs.append(
                FuzzInput(
                    "extreme-size", f"JPEG header {width}x{height}", "bomb.jpg", _jpeg_declaring(width, height, rng)
                )
            )
        if 0 < width <= 2**24 and 0 < height <= 2**24:
            inputs.append(
                FuzzInput("extreme-size", f"WebP header {width}x{height}", "bomb.webp", _webp_declaring(width, height))
            )
    # Real decompression bombs just inside the pixel limit: a few KB that decode to ~50 M pixels.
    side = 7000
    for colour_type, channels in ((0, 1), (2, 3), (6, 4)):
        rows = (b"\0" + b"\0" * (side * channels)) * side  # filter byte + zero pixels per row
        inputs.append(
            FuzzInput(
                "extreme-size",
                f"{side}x{side} zero PNG, {channels} channels",
                "zeros.png",
                _png_declaring(side, side, rows, colour_type),
                must_decode=True,
            )
        )
    return inputs


def animated(rng: np.random.Generator, count: int) -> list[FuzzInput]:
    from PIL import Image

    inputs = []
    for index in range(count):
        frames = [_random_picture(rng, 48, 64) for _ in range(int(rng.integers(2, 6)))]
        fmt = ["GIF", "PNG", "WEBP", "TIFF"][index % 4]
        data = (
            _encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=50, loop=0)
            if fmt != ("TIFF")
            else _encode(frames[0], fmt, save_all=True, append_images=frames[1:])
        )
        if index % 3 == 2:  # cut inside a later frame
            data = data[: int(rng.integers(len(data) // 2, len(data)))]
        label = f"{len(frames)}-frame {fmt}" + (" (cut)" if index % 3 == 2 else "")
        inputs.append(
            FuzzInput("animated", label, f"anim.{fmt.lower()}", data, must_decode=fmt != "GIF" and index % 3 != 2)
        )
    inputs.append(
        FuzzInput(
            "animated",
            "GIF with 300 frames",
            "long.gif",
            _encode(
                Image.new("P", (40, 40)),
                "GIF",
                save_all=True,
                append_images=[Image.new("P", (40, 40), i % 256) for i in range(299)],
            ),
        )
    )
    return inputs


def huge_exif(rng: np.random.Generator, count: int) -> list[FuzzInput]:
    from PIL import Image

    inputs = []
    for index in range(count):
        picture = _random_picture(rng, 40, 56)
        exif = Image.Exif()
        exif[0x0112] = int(rng.integers(0, 12))  # orientation, including invalid values
        fmt = ["JPEG", "PNG", "WEBP", "TIFF"][index % 4]
        # JPEG's APP1 segment holds < 64 KiB; the other containers take megabytes.
        size = int(rng.integers(30_000, 60_000)) if fmt == "JPEG" else int(rng.integers(1, 4) * 2**20)
        exif[0x010E] = "A" * size  # ImageDescription
        if index % 5 == 4:  # or raw garbage where the EXIF block should be
            raw = b"Exif\0\0" + rng.integers(0, 256, size // 4, dtype=np.uint8).tobytes()
            try:
                data = _encode(picture, fmt, exif=raw)
            except Exception:  # a container that refuses raw garbage: give it the structured block
                data = _encode(picture, fmt, exif=exif.tobytes())
        else:
            data = _encode(picture, fmt, exif=exif.tobytes()) if fmt != "TIFF" else _encode(picture, fmt, tiffinfo=exif)
        inputs.append(
            FuzzInput("huge-exif", f"{fmt} with {size // 1024} KiB EXIF", f"exif.{fmt.lower()}", data, must_decode=True)
        )
    return inputs


@functools.cache
def generate_inputs(seed: int = SEED) -> list[FuzzInput]:
    rng = np.random.default_rng(seed)
    random.seed(seed)
    return (
        random_bytes(rng, 90)
        + truncated(rng, 110)
        + mutated(rng, 110)
        + wrong_extensions(rng, 24)
        + every_mode(rng, 2)
        + extreme_sizes(rng)
        + animated(rng, 24)
        + huge_exif(rng, 20)
    )


# --- the worker (this file run as a script) ---------------------------------------------------------------


def _proc_status(field: str) -> int:
    """A memory figure of this process in bytes, e.g. VmSize (address space) or VmHWM (peak resident set).

    VmHWM rather than ru_maxrss: the latter is carried over from the parent across fork + exec.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def worker() -> None:
    """Read (name, bytes) requests from stdin, answer one JSON line per request on stdout."""
    import resource
    import traceback

    from app.images import ImageError, decode_image, image_digest

    limit = _proc_status("VmSize") + ADDRESS_SPACE_BUDGET
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    requests, answers = sys.stdin.buffer, sys.stdout
    while header := requests.readline():
        request = json.loads(header)
        data = requests.read(request["size"])
        try:
            decoded = decode_image(data, name=request["name"])
            answer = {
                "outcome": "decoded",
                "shape": list(decoded.rgb.shape),
                "dtype": str(decoded.rgb.dtype),
                "digest_ok": decoded.digest == image_digest(decoded.rgb),
                "contiguous": bool(decoded.rgb.flags.c_contiguous),
            }
        except ImageError as error:
            answer = {"outcome": "image_error", "message": str(error)}
        except BaseException as error:  # noqa: B036 -- exactly what the fuzzing hunts for
            answer = {
                "outcome": "crash",
                "message": f"{type(error).__name__}: {error}",
                "traceback": traceback.format_exc()[-2000:],
            }
        answer["max_rss"] = _proc_status("VmHWM")
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


class DecodeWorker:
    """The parent's side: one worker process, restarted after a hang or a crash of the process itself."""

    def __init__(self):
        self.process = None

    def _start(self) -> None:
        env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
            env=env,
        )

    def decode(self, item: FuzzInput, timeout: float = PER_INPUT_SECONDS) -> dict:
        if self.process is None or self.process.poll() is not None:
            self._start()
        header = json.dumps({"name": item.name, "size": len(item.data)}).encode() + b"\n"
        try:
            self.process.stdin.write(header + item.data)
            self.process.stdin.flush()
        except BrokenPipeError:
            return self._died()
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            self.close()
            return {"outcome": "hang", "message": f"no answer within {timeout} s"}
        line = self.process.stdout.readline()
        return json.loads(line) if line else self._died()

    def _died(self) -> dict:
        code = self.process.wait(timeout=10)
        self.process = None
        return {"outcome": "crash", "message": f"the worker process died (exit code {code})"}

    def close(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


def problems_with(item: FuzzInput, answer: dict) -> list[str]:
    """Everything wrong with one outcome (empty: the input ended as it must)."""
    from app.images import DEFAULT_MAX_SIDE, MIN_SIDE, shown_name

    outcome = answer["outcome"]
    if outcome in ("crash", "hang"):
        return [f"{outcome}: {answer['message']}"]
    problems = []
    if outcome == "decoded":
        height, width, channels = answer["shape"]
        if channels != 3 or answer["dtype"] != "uint8" or not answer["digest_ok"] or not answer["contiguous"]:
            problems.append(f"not a contiguous uint8 RGB array with its digest: {answer}")
        if max(height, width) > DEFAULT_MAX_SIDE or min(height, width) < MIN_SIDE:
            problems.append(f"decoded to {width} x {height}, outside {MIN_SIDE}..{DEFAULT_MAX_SIDE} px")
        return problems
    message = answer["message"]
    if not message.startswith(f"'{shown_name(item.name)}'") or len(message) > MAX_MESSAGE or "Traceback" in message:
        problems.append(f"not a clear user-facing message: {message[:300]!r}")
    if item.must_decode:
        problems.append(f"a valid image was refused: {message[:300]}")
    return problems


def run_fuzz(inputs: list[FuzzInput]) -> tuple[Counter, list[str], int]:
    """(outcomes per category, failures, peak RSS in bytes)."""
    worker_process = DecodeWorker()
    outcomes: Counter = Counter()
    failures: list[str] = []
    peak = 0
    try:
        for index, item in enumerate(inputs):
            answer = worker_process.decode(item)
            outcomes[(item.category, answer["outcome"])] += 1
            peak = max(peak, answer.get("max_rss", 0))
            failures += [f"#{index} {item.category} ({item.label}): {p}" for p in problems_with(item, answer)]
            if answer.get("max_rss", 0) > RSS_BOUND:  # the high-water mark only rises: blame this input, restart
                failures.append(
                    f"#{index} {item.category} ({item.label}): peak RSS "
                    f"{answer['max_rss'] / 2**20:.0f} MiB over {RSS_BOUND / 2**20:.0f} MiB"
                )
                worker_process.close()
    finally:
        worker_process.close()
    return outcomes, failures, peak


# --- the test ---------------------------------------------------------------------------------------------


def test_generated_inputs_cover_every_category():
    inputs = generate_inputs()
    counts = Counter(item.category for item in inputs)
    assert len(inputs) >= 500, counts
    assert set(counts) == {
        "random-bytes",
        "truncated",
        "mutated",
        "wrong-extension",
        "mode",
        "extreme-size",
        "animated",
        "huge-exif",
    }
    modes = {item.label.split(" as ")[0] for item in inputs if item.category == "mode"}
    assert modes == set(MODES), set(MODES) - modes  # every mode stored in at least one allowed format
    again = random_bytes(np.random.default_rng(SEED), 90)  # the same seed gives the same files
    assert [item.data for item in again] == [item.data for item in inputs[:90]]


@pytest.mark.slow
def test_every_fuzz_input_decodes_or_gives_one_clear_error():
    inputs = generate_inputs()
    outcomes, failures, peak = run_fuzz(inputs)
    summary = {f"{category}/{outcome}": count for (category, outcome), count in sorted(outcomes.items())}
    print(f"\n{len(inputs)} inputs, peak worker RSS {peak / 2**20:.0f} MiB: {json.dumps(summary, indent=1)}")
    if failures:
        pytest.fail(f"{len(failures)} of {len(inputs)} inputs failed:\n" + "\n".join(failures[:40]))
    decoded = sum(count for (_, outcome), count in outcomes.items() if outcome == "decoded")
    refused = sum(count for (_, outcome), count in outcomes.items() if outcome == "image_error")
    assert decoded + refused == len(inputs) and decoded >= 100 and refused >= 200


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        worker()
    else:
        import argparse

        parser = argparse.ArgumentParser(description="Run the upload fuzzer outside pytest and print a summary.")
        parser.add_argument("--seed", type=int, default=SEED)
        arguments = parser.parse_args()
        found = generate_inputs(arguments.seed)
        counted, failed, peak_rss = run_fuzz(found)
        for (category, outcome), count in sorted(counted.items()):
            print(f"{category:16s} {outcome:12s} {count:4d}")
        print(f"{len(found)} inputs, {len(failed)} failures, peak worker RSS {peak_rss / 2**20:.0f} MiB")
        print("\n".join(failed))


def test_the_harness_reports_a_hang_and_recovers():
    """The per-input time limit is real: a decode slower than it is reported as a hang, then work goes on."""
    inputs = {item.label: item for item in generate_inputs()}
    slow, small = inputs["7000x7000 zero PNG, 4 channels"], inputs["real 32x32 PNG"]
    worker_process = DecodeWorker()
    try:
        assert worker_process.decode(slow, timeout=0.01)["outcome"] == "hang"
        assert worker_process.decode(small)["outcome"] == "decoded"
    finally:
        worker_process.close()
