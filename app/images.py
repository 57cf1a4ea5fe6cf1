"""Safe image decoding: bytes from an upload or a file -> an RGB uint8 array within the app's limits.

Every failure becomes an `ImageError` whose message tells the user what was wrong and what to do;
nothing else escapes `decode_image`, so one bad file never takes the app down.
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Only these decoders are ever tried: fewer parsers exposed to hostile files.
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF")
UPLOAD_EXTENSIONS = ["png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff"]
MIN_SIDE = 32
DEFAULT_MAX_SIDE = 1024
# Pixels a header may declare before anything is decoded (a 20000 x 20000 "bomb" is 400 M).
DEFAULT_MAX_PIXELS = 50_000_000


class ImageError(ValueError):
    """An image the app cannot use; `str(error)` is the message to show."""


@dataclass
class DecodedImage:
    rgb: np.ndarray  # (H, W, 3) uint8, what the model sees
    original_size: tuple[int, int]  # (height, width) as stored in the file, after EXIF rotation
    notices: list[str] = field(default_factory=list)  # conversions the user should know about
    digest: str = ""  # content hash of `rgb`, the cache key of everything computed from it

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def scale(self) -> float:
        """Displayed (decoded) size over the file's size: 1.0 unless scaled down."""
        return self.height / self.original_size[0]


def shown_name(name: str, limit: int = 80) -> str:
    """A file name safe to show in a message: markdown and HTML characters dropped, length bounded."""
    safe = re.sub(r"[^\w .,()+-]", "_", name)
    return safe if len(safe) <= limit else safe[: limit - 3] + "..."


def image_digest(rgb: np.ndarray) -> str:
    """Hash of the pixels and shape, so two uploads of the same picture share cached results."""
    hasher = hashlib.blake2b(digest_size=16)
    hasher.update(str(rgb.shape).encode())
    hasher.update(np.ascontiguousarray(rgb).tobytes())
    return hasher.hexdigest()


def decode_image(
    data: bytes, max_side: int = DEFAULT_MAX_SIDE, max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "image"
) -> DecodedImage:
    """Decode `data` into RGB, honouring EXIF orientation, converting any mode, scaling down to `max_side`."""
    name = shown_name(name)
    if not data:
        raise ImageError(f"'{name}' is empty (0 bytes). Choose an image file (PNG, JPEG, WebP, BMP or TIFF).")
    image = _open_checked(data, max_pixels, name)
    notices: list[str] = []
    image = _first_frame(image, notices, name)
    stored_width, stored_height = image.size
    check_min_side((stored_height, stored_width), name)
    _reduce_while_decoding(image, max_side)
    loaded = _load_pixels(image, name)
    oriented = _apply_exif_orientation(loaded, notices)  # before shrinking: TIFF keeps its tag outside `info`
    turned = oriented.size != loaded.size  # a 90-degree EXIF rotation swaps the sides
    original_size = (stored_width, stored_height) if turned else (stored_height, stored_width)
    rgb = _to_rgb_array(_shrink_before_converting(oriented, max_side, name), notices, name)  # (H, W, 3) uint8
    rgb = scale_to_max_side(rgb, original_size, max_side, notices)
    check_min_side(rgb.shape[:2], name, after_scaling=True)
    return DecodedImage(rgb=rgb, original_size=original_size, notices=notices, digest=image_digest(rgb))


def _open_checked(data: bytes, max_pixels: int, name: str) -> Image.Image:
    """Read the header only and refuse unsupported formats and oversized declarations before decoding."""
    try:
        with warnings.catch_warnings():
            # PIL warns (not raises) between its limit and twice its limit: treat both as a bomb.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(f"'{name}' declares too many pixels to decode safely ({error}).") from error
    except UnidentifiedImageError as error:
        raise ImageError(f"'{name}' is not an image this app can read. Use PNG, JPEG, WebP, BMP or TIFF.") from error
    except Exception as error:  # a malformed header can raise almost anything inside PIL's parsers
        raise ImageError(f"'{name}' is truncated or corrupt and could not be read ({_reason(error)}).") from error
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(
            f"'{name}' declares {width} x {height} pixels, more than the {max_pixels:,} allowed; "
            "scale it down before uploading."
        )
    return image


def _first_frame(image: Image.Image, notices: list[str], name: str) -> Image.Image:
    """Frame 0 of an animation or multi-page file, without counting the frames.

    Counting (`n_frames`) walks every frame's header: slow on a file with thousands, and a broken later page
    raises from inside PIL (a truncated multi-page TIFF raises TypeError). `is_animated` looks one frame ahead.
    """
    try:
        several = bool(getattr(image, "is_animated", False))
    except Exception:  # a later frame is broken; the first one may still be fine
        several = True
    if several:
        notices.append("The file holds several frames or pages; only the first is used.")
        try:
            image.seek(0)
        except Exception as error:
            raise ImageError(
                f"'{name}' is truncated or corrupt: its first frame could not be read ({_reason(error)}). "
                "Re-export it as a single image."
            ) from error
    return image


def _apply_exif_orientation(image: Image.Image, notices: list[str]) -> Image.Image:
    try:
        rotated = ImageOps.exif_transpose(image)
    except Exception:  # broken EXIF must not cost the picture itself
        notices.append("The EXIF orientation tag could not be read; the image is shown as stored.")
        return image
    return rotated if rotated is not None else image


def check_min_side(size: tuple[int, int], name: str, after_scaling: bool = False) -> None:
    height, width = size
    if min(height, width) >= MIN_SIDE:
        return
    if after_scaling:
        raise ImageError(
            f"'{name}' is too elongated: scaled to fit the longest-side limit it becomes {width} x {height}, "
            f"under {MIN_SIDE} pixels on a side. Crop it closer to a usual aspect ratio."
        )
    raise ImageError(
        f"'{name}' is {width} x {height} pixels; the explorer needs at least {MIN_SIDE} pixels on each side."
    )


def _reduce_while_decoding(image: Image.Image, max_side: int) -> None:
    """JPEG can decode at 1/2, 1/4, 1/8 size directly: much faster for camera photos."""
    if image.format == "JPEG" and max(image.size) > 2 * max_side:
        scale = max_side / max(image.size)
        image.draft("RGB", (int(image.width * scale) + 1, int(image.height * scale) + 1))


# Modes PIL's box reduction averages correctly (palette and 1-bit images would average indices or bits).
_REDUCIBLE_MODES = ("RGB", "RGBA", "L", "LA", "I", "F", "CMYK", "RGBX")


def _shrink_before_converting(image: Image.Image, max_side: int, name: str) -> Image.Image:
    """Box-reduce a large image by an integer factor first, so mode conversions copy a small image.

    A 7000 x 7000 RGBA file is 196 MB decoded; compositing it on white at full size would need five such
    copies. The result keeps its longest side >= max_side; `scale_to_max_side` does the exact fit.
    """
    factor = max(image.size) // max_side
    if factor < 2 or image.mode not in _REDUCIBLE_MODES:
        return image
    try:
        return image.reduce(factor)
    except Exception as error:
        raise ImageError(f"'{name}' could not be scaled down ({_reason(error)}). Re-export it smaller.") from error


def _reason(error: BaseException, limit: int = 160) -> str:
    """The library's own words, bounded: messages are for people, not for dumps."""
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _load_pixels(image: Image.Image, name: str) -> Image.Image:
    # PIL refuses truncated data by default (ImageFile.LOAD_TRUNCATED_IMAGES is False): never half an image.
    try:
        image.load()
    except Exception as error:
        raise ImageError(
            f"'{name}' is truncated or corrupt and could not be decoded ({_reason(error)}). "
            "Re-export or re-download it."
        ) from error
    return image


def _to_rgb_array(image: Image.Image, notices: list[str], name: str) -> np.ndarray:
    try:
        return _convert_mode(image, notices)
    except Exception as error:  # exotic modes PIL cannot convert
        raise ImageError(
            f"'{name}' uses colour mode {image.mode}, which could not be converted to RGB ({_reason(error)}). "
            "Save it as an 8-bit RGB PNG or JPEG."
        ) from error


def _convert_mode(image: Image.Image, notices: list[str]) -> np.ndarray:
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image, dtype=np.uint8).copy()
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        notices.append(f"High bit depth image (mode {mode}) converted to 8 bits.")
        grey = _to_uint8(np.asarray(image))  # (H, W)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in image.info):
        notices.append("Transparent areas were placed on a white background.")
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"), dtype=np.uint8).copy()
    if mode not in ("L", "P", "1"):
        notices.append(f"Colour mode {mode} converted to RGB.")
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """16-bit data keeps its full range (/257); integers in 0..255 are kept; anything else is stretched."""
    if values.dtype.kind in "iu" and values.min() >= 0:
        if values.dtype == np.uint16 or 255 < values.max() <= 65535:
            return (values.astype(np.float32) / 257.0).round().clip(0, 255).astype(np.uint8)
        if values.max() <= 255:
            return values.astype(np.uint8)
    values = values.astype(np.float32)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, dtype=np.uint8)
    low, high = float(values[finite].min()), float(values[finite].max())
    stretched = (values - low) / max(high - low, 1e-12) * 255.0
    return np.nan_to_num(stretched, nan=0.0, posinf=255.0, neginf=0.0).round().clip(0, 255).astype(np.uint8)


def scale_to_max_side(
    rgb: np.ndarray, original_size: tuple[int, int], max_side: int, notices: list[str]
) -> np.ndarray:
    height, width = rgb.shape[:2]
    longest = max(height, width)
    if longest > max_side:
        scale = max_side / longest
        size = (max(1, round(width * scale)), max(1, round(height * scale)))  # cv2 wants (W, H)
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)  # (H', W', 3)
    if rgb.shape[:2] != tuple(original_size):
        notices.append(
            f"Scaled down from {original_size[1]} x {original_size[0]} to {rgb.shape[1]} x {rgb.shape[0]} "
            f"(longest side limit {max_side} px, setting CCNET_MAX_SIDE)."
        )
    return np.ascontiguousarray(rgb)


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a class-index map to (H, W), so labels never blend into new classes."""
    if labels.shape[:2] == tuple(size):
        return labels
    return cv2.resize(labels, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)  # (H, W)
