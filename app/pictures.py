"""The pictures a column shows, drawn and JPEG-encoded on a small shared thread pool.

With every view on, a click draws 15 pictures at 360 x 480 (influence overlays, segmentations with
the marker, pixel B's maps, each loop's own map): roughly 20 ms of OpenCV and NumPy work on one core.
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


@dataclass(frozen=True)
class DrawnPictures:
    influence: np.ndarray  # (H, W, 3) pixel A's overlay, no marker (the chart draws its own ring)
    influence_uri: str  # that overlay as a JPEG data URI, the chart's layout image
    segmentation: np.ndarray  # (H, W, 3) with pixel A's marker
    segmentation_jpeg: bytes
    second_jpeg: bytes | None  # pixel B's overlay with its marker, when comparing two pixels
    per_loop_jpegs: list[bytes]  # each loop's own map, thumbnails with pixel A's marker


@dataclass
class ColumnPictures:
    """A column's pictures in flight on the pool."""

    influence: Future
    segmentation: Future
    second: Future | None
    per_loop: list[Future]
    second_scale: render.ColourScale | None = None  # the scale B's map is drawn with (its caption says it)

    def cancel(self) -> None:
        """Drop the jobs not started yet (a rerun interrupted the column: nobody will see them)."""
        for job in [self.influence, self.segmentation, self.second, *self.per_loop]:
            if job is not None:
                job.cancel()

    def result(self) -> DrawnPictures:
        influence, uri = self.influence.result()
        segmentation, segmentation_jpeg = self.segmentation.result()
        return DrawnPictures(
            influence,
            uri,
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

    def overlay(picture: MapPicture, base: np.ndarray) -> np.ndarray:
        values, hidden = picture.shown.values, picture.shown.hidden
        return render.influence_rgb(base, values, picture.scale, opacity, smooth, hidden)  # (H, W, 3)

    def influence() -> tuple[np.ndarray, str]:
        drawn = overlay(first, rgb)
        return drawn, render.jpeg_data_uri(drawn)

    def marked_segmentation() -> tuple[np.ndarray, bytes]:
        marked = render.draw_marker(segmentation, *first.point)
        return marked, render.jpeg_bytes(marked)

    def marked_jpeg(picture: MapPicture, base: np.ndarray, factor: float = 1.0) -> bytes:
        at = (round(picture.point[0] * factor), round(picture.point[1] * factor))
        return render.jpeg_bytes(render.draw_marker(overlay(picture, base), *at, label=picture.label))

    if small is None:
        small = render.thumbnail(rgb, PER_LOOP_WIDTH) if per_loop else (rgb, 1.0)
    thumbnail, factor = small
    return ColumnPictures(
        POOL.submit(influence),
        POOL.submit(marked_segmentation),
        None if second is None else POOL.submit(marked_jpeg, second, rgb),
        [POOL.submit(marked_jpeg, picture, thumbnail, factor) for picture in per_loop or []],
        None if second is None else second.scale,
    )
