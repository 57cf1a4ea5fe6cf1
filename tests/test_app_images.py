"""Safe decoding of uploads: every format and mode works, every bad input is one clear ImageError."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from app.images import MIN_SIDE, ImageError, decode_image, image_digest, resize_labels, shown_name


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def gradient_rgb(height=48, width=64) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width]
    return np.stack([xs * 4 % 256, ys * 5 % 256, (xs + ys) % 256], axis=2).astype(np.uint8)  # (H, W, 3)


def noise_png() -> bytes:
    """Incompressible pixels, so cutting the file in half really cuts the pixel data."""
    noise = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    return encode(Image.fromarray(noise), "PNG")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "TIFF"])
def test_every_upload_format_decodes_to_rgb(fmt):
    decoded = decode_image(encode(Image.fromarray(gradient_rgb()), fmt), name=f"x.{fmt.lower()}")
    assert decoded.rgb.shape == (48, 64, 3) and decoded.rgb.dtype == np.uint8
    assert decoded.notices == [] and decoded.scale == 1.0 and len(decoded.digest) == 32


def test_png_is_decoded_losslessly():
    rgb = gradient_rgb()
    assert np.array_equal(decode_image(encode(Image.fromarray(rgb), "PNG")).rgb, rgb)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "L", "1", "CMYK", "I;16", "I", "F"])
def test_every_mode_becomes_rgb(mode):
    source = Image.fromarray(gradient_rgb()).convert(mode) if mode not in ("I;16", "I", "F") else None
    if mode == "I;16":
        source = Image.fromarray((np.arange(48 * 64).reshape(48, 64) * 20).astype(np.uint16))
    elif mode in ("I", "F"):
        source = Image.fromarray(gradient_rgb()[:, :, 0].astype(np.float32)).convert(mode)
    fmt = "TIFF" if mode in ("CMYK", "I", "F") else "PNG"
    decoded = decode_image(encode(source, fmt))
    assert decoded.rgb.shape == (48, 64, 3) and decoded.rgb.dtype == np.uint8


def test_sixteen_bit_keeps_full_range():
    values = np.full((40, 40), 65535, dtype=np.uint16)
    values[:20] = 0
    decoded = decode_image(encode(Image.fromarray(values), "PNG"))
    assert decoded.rgb[0, 0, 0] == 0 and decoded.rgb[-1, -1, 0] == 255
    assert any("bit depth" in notice for notice in decoded.notices)


def test_transparency_is_composited_on_white():
    rgba = np.zeros((40, 40, 4), dtype=np.uint8)  # fully transparent black
    decoded = decode_image(encode(Image.fromarray(rgba), "PNG"))
    assert (decoded.rgb == 255).all()
    assert any("white" in notice for notice in decoded.notices)


def test_exif_orientation_is_honoured():
    rgb = gradient_rgb(40, 80)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = encode(Image.fromarray(rgb), "JPEG", exif=exif, quality=95)
    decoded = decode_image(data)
    assert decoded.rgb.shape == (80, 40, 3) and decoded.original_size == (80, 40)


def test_large_image_is_scaled_with_a_notice():
    decoded = decode_image(encode(Image.fromarray(gradient_rgb(300, 600)), "PNG"), max_side=120)
    assert decoded.rgb.shape == (60, 120, 3)
    assert decoded.original_size == (300, 600) and decoded.scale == pytest.approx(0.2)
    assert any("Scaled down from 600 x 300 to 120 x 60" in notice for notice in decoded.notices)


def test_large_jpeg_uses_reduced_decoding_and_still_hits_the_limit():
    decoded = decode_image(encode(Image.fromarray(gradient_rgb(400, 1000)), "JPEG"), max_side=200)
    assert decoded.rgb.shape == (80, 200, 3) and decoded.original_size == (400, 1000)


def test_animated_image_keeps_first_frame():
    frames = [Image.fromarray(np.full((40, 40, 3), value, np.uint8)) for value in (10, 200)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="WEBP", save_all=True, append_images=frames[1:], lossless=True)
    decoded = decode_image(buffer.getvalue())
    assert abs(int(decoded.rgb[0, 0, 0]) - 10) <= 2 and any("frames" in n for n in decoded.notices)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares a size but carries (almost) no pixel data: a decompression bomb's shape."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"", "empty"),
        (b"this is not an image at all", "not an image"),
        (b"GIF89a" + b"\0" * 50, "not an image"),  # a format outside the allowed list
        (noise_png()[: len(noise_png()) // 2], "truncated"),
        (encode(Image.fromarray(gradient_rgb()), "JPEG")[:300], "truncated"),
        (png_header_only(20000, 20000), "too many pixels"),
        (png_header_only(9000, 9000), "declares 9000 x 9000"),
        (encode(Image.fromarray(gradient_rgb(20, 200)), "PNG"), f"at least {MIN_SIDE}"),
        (encode(Image.fromarray(gradient_rgb(40, 2000)), "PNG"), "too elongated"),
    ],
    ids=["empty", "text", "gif", "cut-png", "cut-jpeg", "bomb", "over-limit", "tiny", "elongated"],
)
def test_bad_input_is_one_clear_error(data, expected):
    with pytest.raises(ImageError, match=expected):
        decode_image(data, max_side=1024, name="upload.png")


def test_file_names_in_messages_cannot_carry_markup():
    with pytest.raises(ImageError) as raised:
        decode_image(b"", name="[click](http://example.com)<b>x</b>.png")
    assert "[" not in str(raised.value) and "<" not in str(raised.value)
    assert len(shown_name("a" * 500)) == 80


def test_digest_depends_on_pixels_and_shape():
    rgb = gradient_rgb()
    assert image_digest(rgb) == image_digest(rgb.copy())
    assert image_digest(rgb) != image_digest(rgb[:, :32])
    changed = rgb.copy()
    changed[0, 0, 0] ^= 1
    assert image_digest(rgb) != image_digest(changed)


def test_labels_resize_nearest_keeps_class_values():
    labels = np.array([[0, 3], [11, 5]], dtype=np.uint8)
    resized = resize_labels(labels, (4, 4))
    assert set(np.unique(resized)) == {0, 3, 5, 11}


def test_multi_page_tiff_cut_in_a_later_page_still_gives_its_first_page():
    """Found by the fuzzer: counting the pages of such a file raised TypeError from inside PIL."""
    pages = [Image.fromarray(np.full((48, 64, 3), value, np.uint8)) for value in (10, 100, 200, 250)]
    data = encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    for cut in (len(data) // 2 + 100, len(data) * 3 // 4, len(data) - 10):
        decoded = decode_image(data[:cut])
        assert (decoded.rgb == 10).all() and any("first is used" in n for n in decoded.notices)


@pytest.mark.parametrize("mode", ["RGBA", "L", "F"])
def test_large_images_are_shrunk_before_mode_conversion(mode):
    """A large file is box-reduced first (peak memory), then fitted exactly; colours and alpha survive."""
    rgba = np.zeros((2100, 3100, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    rgba[:, :1550, 3] = 0  # left half fully transparent
    source = Image.fromarray(rgba)
    if mode == "L":
        source = source.convert("RGB").convert("L")
    elif mode == "F":
        source = Image.fromarray(np.full((2100, 3100), 0.5, np.float32))
    decoded = decode_image(encode(source, "TIFF"), max_side=1000)
    assert decoded.rgb.shape == (677, 1000, 3) and decoded.original_size == (2100, 3100)
    if mode == "RGBA":
        assert (decoded.rgb[:, :400] == 255).all() and (decoded.rgb[:, 600:] == [200, 0, 0]).all()
    else:
        assert decoded.rgb.std() == 0  # a uniform image stays uniform through both resizing steps
