"""The pictures a column shows, drawn and JPEG-encoded on a small shared thread pool.

With every view on, a click draws 12 pictures (segmentations with the marker, pixel B's maps at 360 x 480,
each loop's own map as a thumbnail): roughly 15 ms of OpenCV and NumPy work on one core. Pixel A's
influence map is coloured in the browser (`app.influence_chart`); its server-side picture is drawn only
for a download (`ColumnPictures.influence`).
Both release the GIL, so two pool threads draw two pictures at once while the script thread builds the
charts. The pool's threads live as long as the server: per-thread start-up costs are paid once, not per
click (Streamlit runs every rerun in a new thread).

`start_column_pictures` submits a column's pictures and returns at once; `ColumnPictures.result()` waits.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from app import render
from app.display import ShownMap

# One pool for all sessions, one thread per core (at least two, so drawing overlaps the script thread).
WORKERS = max(2, min(8, os.cpu_count() or 2))
POOL = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="ccnet-pictures")
PER_LOOP_WIDTH = 256  # pixels: each loop's own map is a thumbnail (a third of a column)


@dataclass(frozen=True)
class MapPicture:
    """What to draw for one influence map: its values and colour scale, and the marker where it goes."""

    shown: ShownMap
    scale: render.ColourScale
    point: tuple[int, int]  # (px, py) in image pixels
    label: str = ""  # "" for pixel A's ring, "B" for pixel B's labelled square


def marked_overlay(picture: MapPicture, base: np.ndarray, opacity: float, smooth: bool, factor: float = 1.0):
    """The map coloured over `base` (H, W, 3) with its marker, at `factor` times the image's size."""
    values, hidden = picture.shown.values, picture.shown.hidden
    drawn = render.influence_rgb(base, values, picture.scale, opacity, smooth, hidden)  # (H, W, 3)
    at = (round(picture.point[0] * factor), round(picture.point[1] * factor))
    return render.draw_marker(drawn, *at, label=picture.label)


@dataclass(frozen=True)
class DrawnPictures:
    segmentation: np.ndarray  # (H, W, 3) with pixel A's marker
    segmentation_jpeg: bytes
    second_jpeg: bytes | None  # pixel B's overlay with its marker, when comparing two pixels
    per_loop_jpegs: list[bytes]  # each loop's own map, thumbnails with pixel A's marker


@dataclass
class ColumnPictures:
    """A column's pictures in flight on the pool, and pixel A's map to draw on demand."""

    first: MapPicture
    rgb: np.ndarray  # (H, W, 3) the image under the maps
    opacity: float
    smooth: bool
    segmentation: Future
    second: Future | None
    per_loop: list[Future]
    second_scale: render.ColourScale | None = None  # the scale B's map is drawn with (its caption says it)

    def cancel(self) -> None:
        """Drop the jobs not started yet (a rerun interrupted the column: nobody will see them)."""
        for job in [self.segmentation, self.second, *self.per_loop]:
            if job is not None:
                job.cancel()

    def influence(self) -> np.ndarray:
        """Pixel A's map over the image with its marker (H, W, 3), as the browser shows it: for the panel."""
        return marked_overlay(self.first, self.rgb, self.opacity, self.smooth)

    def result(self) -> DrawnPictures:
        segmentation, segmentation_jpeg = self.segmentation.result()
        return DrawnPictures(
            segmentation,
            segmentation_jpeg,
            None if self.second is None else self.second.result(),
            [job.result() for job in self.per_loop],
        )


def start_column_pictures(
    rgb: np.ndarray,
    first: MapPicture,
    segmentation: np.ndarray,
    opacity: float,
    smooth: bool,
    second: MapPicture | None = None,
    per_loop: list[MapPicture] | None = None,
    small: tuple[np.ndarray, float] | None = None,
) -> ColumnPictures:
    """Submit one column's pictures over `rgb` (H, W, 3): pixel A's map `first`, the blended segmentation
    (H, W, 3) with A's marker, pixel B's map and each loop's own map, drawn over `small`, the image and
    factor from `render.thumbnail(rgb, PER_LOOP_WIDTH)` (made here when not given: pass it to share it)."""

    def marked_segmentation() -> tuple[np.ndarray, bytes]:
        marked = render.draw_marker(segmentation, *first.point)
        return marked, render.jpeg_bytes(marked)

    def marked_jpeg(picture: MapPicture, base: np.ndarray, factor: float = 1.0) -> bytes:
        return render.jpeg_bytes(marked_overlay(picture, base, opacity, smooth, factor))

    if small is None:
        small = render.thumbnail(rgb, PER_LOOP_WIDTH) if per_loop else (rgb, 1.0)
    thumbnail, factor = small
    return ColumnPictures(
        first,
        rgb,
        opacity,
        smooth,
        POOL.submit(marked_segmentation),
        None if second is None else POOL.submit(marked_jpeg, second, rgb),
        [POOL.submit(marked_jpeg, picture, thumbnail, factor) for picture in per_loop or []],
        None if second is None else second.scale,
    )
