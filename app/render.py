"""Pictures: colour overlays as images, markers, legends, the downloadable panel.

Overlays are rendered here as (H, W, 3) uint8 images and shipped to the browser as small JPEGs. The clicked
pixel's influence map is the exception: the browser colours it from the feature grid
(`app.influence_chart`), and `influence_rgb` is the reference it is tested against and the panel's picture.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import math
from dataclasses import dataclass

import cv2
import numpy as np

COLORMAPS = {
    "Inferno": cv2.COLORMAP_INFERNO,
    "Viridis": cv2.COLORMAP_VIRIDIS,
    "Magma": cv2.COLORMAP_MAGMA,
    "Turbo": cv2.COLORMAP_TURBO,
    "Hot": cv2.COLORMAP_HOT,
}
JPEG_QUALITY = 90


@functools.cache
def colormap_table(name: str) -> np.ndarray:
    """The colour map as a (256, 3) RGB lookup table (OpenCV's, so image and colour bar agree exactly)."""
    bgr = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], COLORMAPS[name])  # (256, 1, 3)
    table = np.ascontiguousarray(bgr[:, 0, ::-1])  # (256, 3) RGB
    table.setflags(write=False)  # shared by every caller through the cache
    return table


@dataclass(frozen=True)
class ColourScale:
    """How map values become colours: the colour bar shows exactly this, and its title says what it is."""

    colormap: str = "Inferno"
    vmin: float = 0.0
    vmax: float = 1.0
    title: str = "influence"
    log: bool = False  # colours spread over log10(vmin)..log10(vmax); vmin must then be > 0

    def _ends(self) -> tuple[float, float]:
        if self.log:
            low = math.log10(max(self.vmin, 1e-30))
            return low, max(math.log10(max(self.vmax, 1e-30)), low + 1e-6)
        return self.vmin, self.vmax

    def to_levels(self, values: np.ndarray) -> np.ndarray:
        """Values -> 0..255 colour levels, clipped at the scale's ends."""
        low, high = self._ends()
        if self.log:
            values = np.log10(np.maximum(values, 10.0**low))
        span = max(high - low, 1e-12)
        return ((values - low) / span * 255.0).clip(0, 255).astype(np.uint8)

    def bar_range(self) -> tuple[float, float]:
        """The colour bar's (zmin, zmax): log10 of the ends on a log scale."""
        return self._ends()

    def tick_marks(self, count: int = 5) -> list[tuple[float, str]]:
        """The colour bar's ticks as (position along the bar in 0..1, label): about `count` round values
        labelled as percentages on a linear scale (what plotly's nticks=5, ".2~%" gave), one per decade on
        a log scale."""
        low, high = self._ends()
        span = max(high - low, 1e-12)
        if self.log:
            decades = range(math.ceil(low), math.floor(high) + 1)
            return [((d - low) / span, _percent(10.0**d)) for d in decades]
        if span < 1e-9:  # "0 everywhere": nothing to graduate
            return [(0.0, _short_percent(low, 2))]
        step = _nice_step(span / max(count - 1, 1))
        decimals = max(0, -math.floor(math.log10(100 * step)))  # enough to tell neighbouring ticks apart
        first = math.ceil(low / step - 1e-9)
        values = [k * step for k in range(first, math.floor(high / step + 1e-9) + 1)]
        return [((v - low) / span, _short_percent(v, decimals)) for v in values]


def _percent(value: float) -> str:
    return f"{100 * value:.2g}%"


def _short_percent(value: float, decimals: int) -> str:
    """A share as a percentage with `decimals` decimals, trailing zeros dropped (0.125, 2 -> "12.5%")."""
    text = f"{100 * value:.{decimals}f}"
    return (text.rstrip("0").rstrip(".") if "." in text else text) + "%"


def _nice_step(rough: float) -> float:
    """The smallest of 1, 2, 5 times a power of ten that is at least `rough`: at most the asked number of
    ticks, at round values."""
    power = 10.0 ** math.floor(math.log10(rough))
    return next(factor * power for factor in (1, 2, 5, 10) if factor * power >= rough * (1 - 1e-9))


def blend(image: np.ndarray, overlay: np.ndarray, opacity: float) -> np.ndarray:
    """(H, W, 3) uint8 images -> image seen through `overlay` at `opacity` (0 = image only)."""
    return cv2.addWeighted(overlay, float(opacity), image, 1.0 - float(opacity), 0.0)


def upsample(values: np.ndarray, size: tuple[int, int], smooth: bool) -> np.ndarray:
    """(h, w) -> (H, W): nearest shows the model's cells as they are, bilinear looks smoother."""
    interpolation = cv2.INTER_LINEAR if smooth else cv2.INTER_NEAREST
    return cv2.resize(values.astype(np.float32), (size[1], size[0]), interpolation=interpolation)


def influence_rgb(
    image: np.ndarray,
    influence: np.ndarray,
    scale: ColourScale,
    opacity: float,
    smooth: bool = False,
    hidden: np.ndarray | None = None,
) -> np.ndarray:
    """Influence map (h, w) as a heatmap over image (H, W, 3); cells where `hidden` (h, w) is True stay
    uncoloured (the image shows through), e.g. the clicked pixel's cross."""
    table = colormap_table(scale.colormap)  # (256, 3)
    height, width = image.shape[:2]
    if smooth:
        colours = table[scale.to_levels(upsample(influence, (height, width), smooth=True))]  # (H, W, 3)
    else:  # colour the few cells, then blow them up: same picture, a fraction of the work
        cells = table[scale.to_levels(influence)]  # (h, w, 3)
        colours = cv2.resize(cells, (width, height), interpolation=cv2.INTER_NEAREST)  # (H, W, 3)
    blended = blend(image, colours, opacity)
    if hidden is not None:
        keep = cv2.resize(hidden.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0  # (H, W)
        blended[keep] = image[keep]
    return blended


def segmentation_rgb(image: np.ndarray, prediction: np.ndarray, palette: np.ndarray, opacity: float) -> np.ndarray:
    """Class map (H, W) as palette colours (K, 3) over image (H, W, 3)."""
    colours = palette[np.minimum(prediction, len(palette) - 1)]  # (H, W, 3)
    return blend(image, colours.astype(np.uint8), opacity)


def thumbnail(rgb: np.ndarray, width: int) -> tuple[np.ndarray, float]:
    """rgb (H, W, 3) shrunk to at most `width` pixels wide (never enlarged), and the factor applied."""
    if rgb.shape[1] <= width:
        return rgb, 1.0
    factor = width / rgb.shape[1]
    height = max(1, round(rgb.shape[0] * factor))
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA), factor  # (h', width, 3)


def marker_radius(image_size: tuple[int, int]) -> int:
    return max(5, round(max(image_size) / 70))


def draw_marker(rgb: np.ndarray, px: int, py: int, label: str = "") -> np.ndarray:
    """A ring visible on any background (black outside, white inside) around pixel (px, py).

    With a label (the second pixel "B") the ring becomes a square with the letter beside it.
    """
    marked = rgb.copy()
    radius = marker_radius(rgb.shape[:2])
    centre = (int(px), int(py))
    if label:
        corner, opposite = (centre[0] - radius, centre[1] - radius), (centre[0] + radius, centre[1] + radius)
        cv2.rectangle(marked, corner, opposite, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.rectangle(marked, corner, opposite, (255, 255, 255), 1, cv2.LINE_AA)
        at = (centre[0] + radius + 2, centre[1] + radius)
        stamp_label(marked, label, at, max(0.35, radius / 16))
    else:
        cv2.circle(marked, centre, radius, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.circle(marked, centre, radius, (255, 255, 255), 1, cv2.LINE_AA)
    cv2.circle(marked, centre, 1, (255, 255, 255), -1)
    return marked


LABEL_FONT = cv2.FONT_HERSHEY_SIMPLEX
LABEL_MARGIN = 3  # the outline's reach beyond the glyphs, in pixels


@functools.lru_cache(maxsize=32)
def label_masks(label: str, scale: float) -> tuple[np.ndarray, np.ndarray, int]:
    """The label's outline (3 px) and fill (1 px) as anti-aliased alpha masks (h, w) in [0, 1], and the
    baseline's row in them. Drawn once per process and reused: cv2.putText costs about 22 ms on its first
    call in each thread (benchmarks/bench_click_parts.py), and Streamlit runs every rerun (every click) in a
    new thread."""
    (width, height), baseline = cv2.getTextSize(label, LABEL_FONT, scale, 3)
    size = (height + baseline + 2 * LABEL_MARGIN, width + 2 * LABEL_MARGIN)
    origin = (LABEL_MARGIN, LABEL_MARGIN + height)
    masks = []
    for thickness in (3, 1):
        canvas = np.zeros(size, np.uint8)
        cv2.putText(canvas, label, origin, LABEL_FONT, scale, 255, thickness, cv2.LINE_AA)
        mask = canvas.astype(np.float32) / 255
        mask.setflags(write=False)  # shared by every thread that draws a label
        masks.append(mask)
    return masks[0], masks[1], origin[1]


def stamp_label(rgb: np.ndarray, label: str, at: tuple[int, int], scale: float) -> None:
    """Write `label` into rgb (H, W, 3) uint8 in place, white with a black outline, its baseline starting at
    `at` (x, y) as cv2.putText would; clipped at the image's edges."""
    outline, fill, baseline_row = label_masks(label, scale)
    top, left = at[1] - baseline_row, at[0] - LABEL_MARGIN
    rows = slice(max(top, 0), min(top + outline.shape[0], rgb.shape[0]))
    cols = slice(max(left, 0), min(left + outline.shape[1], rgb.shape[1]))
    if rows.start >= rows.stop or cols.start >= cols.stop:
        return
    inside = (slice(rows.start - top, rows.stop - top), slice(cols.start - left, cols.stop - left))
    region = rgb[rows, cols].astype(np.float32)  # (h, w, 3)
    region *= 1 - outline[inside][..., None]  # black outline
    region += (255 - region) * fill[inside][..., None]  # white fill
    rgb[rows, cols] = np.rint(region).astype(np.uint8)


def draw_box(rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The query box (left, top, right, bottom; inclusive pixels) as a rectangle seen on any background."""
    marked = rgb.copy()
    left, top, right, bottom = (int(v) for v in box)
    cv2.rectangle(marked, (left, top), (right, bottom), (0, 0, 0), 3)
    cv2.rectangle(marked, (left, top), (right, bottom), (255, 255, 255), 1)
    return marked


HIGHLIGHT_COLOUR = (255, 220, 0)  # the same yellow as the class-change outlines
HIGHLIGHT_DIM = 0.4  # brightness left to the pixels outside the highlighted class


def highlight_pixels(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The pixels where mask (H, W) is True as they are, the others dimmed, the region outlined in yellow.

    Dimming the rest (rather than tinting the class) keeps the class's own colours readable.
    """
    picture = (image * HIGHLIGHT_DIM).astype(np.uint8)  # (H, W, 3)
    picture[mask] = image[mask]
    width = max(1, round(max(mask.shape) / 300))  # outline still visible when a large image is shown small
    kernel = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    outline = (cv2.dilate(mask.astype(np.uint8), kernel) > 0) & ~mask  # (H, W): just outside the class
    picture[outline] = HIGHLIGHT_COLOUR
    return picture


def jpeg_bytes(rgb: np.ndarray) -> bytes:
    """(H, W, 3) RGB -> JPEG; OpenCV's encoder is several times faster than PNG at this size."""
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])  # OpenCV writes BGR
    ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("OpenCV could not encode the overlay as JPEG")
    return encoded.tobytes()


def jpeg_data_uri(rgb: np.ndarray) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg_bytes(rgb)).decode("ascii")


def class_legend_html(class_ids: list[int], class_names: list[str], palette: np.ndarray) -> str:
    """Coloured chips naming the classes (ids index class_names and palette)."""
    chips = []
    for class_id in class_ids:
        red, green, blue = (int(c) for c in palette[class_id])
        name = html.escape(class_names[class_id] if class_id < len(class_names) else f"class {class_id}")
        chips.append(
            f'<span style="display:inline-block;margin:1px 6px 1px 0;white-space:nowrap">'
            f'<span style="display:inline-block;width:0.8em;height:0.8em;border:1px solid #888;'
            f'background:rgb({red},{green},{blue});margin-right:3px;vertical-align:middle"></span>{name}</span>'
        )
    # 150-class models: a long legend scrolls instead of pushing the page down
    return '<div style="font-size:0.8em;line-height:1.5;max-height:7.5em;overflow-y:auto">' + "".join(chips) + "</div>"


def changes_rgb(image: np.ndarray, changed: np.ndarray, after: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Changed pixels (H, W) in their new class's colour, outlined in yellow, over a dimmed grey image."""
    grey = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)  # (H, W, 3)
    picture = (grey * 0.45).astype(np.uint8)
    colours = palette[np.minimum(after, len(palette) - 1)].astype(np.uint8)  # (H, W, 3)
    picture[changed] = colours[changed]
    mask = changed.astype(np.uint8)
    outline = (cv2.dilate(mask, np.ones((3, 3), np.uint8)) > 0) & ~changed  # (H, W)
    picture[outline] = (255, 220, 0)
    return picture


ON_CROSS_COLOUR, OFF_CROSS_COLOUR = "#f4a261", "#2a9d8f"


def share_bars_html(titles: list[str], on_cross: list[float]) -> str:
    """One horizontal bar per column: the share of the influence on the clicked pixel's cross, then off it.

    Plain HTML rather than a plotly chart: it is redrawn on every click, and HTML costs the browser less.
    """
    rows = []
    for title, share in zip(titles, on_cross, strict=True):
        on, off = 100 * share, 100 * (1 - share)
        rows.append(
            f'<div style="margin:2px 0"><div style="font-size:0.8em">{html.escape(title)}</div>'
            '<div style="display:flex;height:1.3em;font-size:0.75em;line-height:1.3em;color:white;'
            'border-radius:3px;overflow:hidden">'
            f'<div class="on-cross" style="width:{on:.3f}%;background:{ON_CROSS_COLOUR};text-align:center;'
            f'white-space:nowrap">{on:.1f}%</div>'
            f'<div class="off-cross" style="width:{off:.3f}%;background:{OFF_CROSS_COLOUR};text-align:center;'
            f'white-space:nowrap">{off:.1f}%</div></div></div>'
        )
    legend = (
        f'<div style="font-size:0.75em;margin-top:3px"><span style="color:{ON_CROSS_COLOUR}">&#9632;</span> on its '
        f'row and column &nbsp; <span style="color:{OFF_CROSS_COLOUR}">&#9632;</span> off them</div>'
    )
    return '<div class="cross-shares">' + "".join(rows) + legend + "</div>"


def panel_png(titles: list[str], rows: list[list[np.ndarray]]) -> bytes:
    """Side-by-side panel: one column per title, each row a list of (H, W, 3) images, as PNG bytes."""
    header_height = 28
    tiles = []
    for column, title in enumerate(titles):
        header = np.full((header_height, rows[0][column].shape[1], 3), 255, np.uint8)
        cv2.putText(header, title, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
        tiles.append(np.concatenate([header] + [row[column] for row in rows], axis=0))  # (28 + n H, W, 3)
    gap = np.full((tiles[0].shape[0], 6, 3), 255, np.uint8)
    panel = np.concatenate([part for tile in tiles for part in (tile, gap)][:-1], axis=1)
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(panel[:, :, ::-1]))
    if not ok:
        raise RuntimeError("OpenCV could not encode the panel as PNG")
    return encoded.tobytes()


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()
