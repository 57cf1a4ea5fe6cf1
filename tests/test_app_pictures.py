"""The column pictures drawn on the pool are exactly the pictures drawn one by one on the calling thread."""

from __future__ import annotations

import numpy as np
import pytest

from app import render
from app.display import ShownMap
from app.pictures import PER_LOOP_WIDTH, MapPicture, start_column_pictures


def _maps(rng, count: int, shape=(9, 12)) -> list[np.ndarray]:
    maps = [rng.random(shape) for _ in range(count)]
    return [m / m.sum() for m in maps]


@pytest.mark.parametrize("smooth", [False, True])
def test_pool_pictures_equal_the_pictures_drawn_in_turn(smooth):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (72, 96 * 4, 3), dtype=np.uint8)  # wider than a per-loop thumbnail
    segmentation = rng.integers(0, 256, rgb.shape, dtype=np.uint8)
    first_map, second_map, *own = _maps(rng, 5)
    hidden = np.zeros(first_map.shape, bool)
    hidden[4, :] = True
    scale = render.ColourScale("Inferno", 0.0, float(first_map.max()))
    first = MapPicture(ShownMap(first_map, hidden), scale, (40, 30))
    second = MapPicture(ShownMap(second_map, None), render.ColourScale("Viridis", 0.0, 0.2), (300, 60), "B")
    per_loop = [
        MapPicture(ShownMap(m, None), render.ColourScale("Inferno", 0.0, float(m.max())), (40, 30)) for m in own
    ]

    drawn = start_column_pictures(rgb, first, segmentation, 0.6, smooth, second, per_loop).result()

    influence = render.influence_rgb(rgb, first_map, scale, 0.6, smooth, hidden)  # A's map: for the panel only
    pending = start_column_pictures(rgb, first, segmentation, 0.6, smooth, second, per_loop)
    assert np.array_equal(pending.influence(), render.draw_marker(influence, 40, 30))
    marked = render.draw_marker(segmentation, 40, 30)
    assert np.array_equal(drawn.segmentation, marked) and drawn.segmentation_jpeg == render.jpeg_bytes(marked)
    b_overlay = render.influence_rgb(rgb, second_map, second.scale, 0.6, smooth, None)
    assert drawn.second_jpeg == render.jpeg_bytes(render.draw_marker(b_overlay, 300, 60, label="B"))
    small, factor = render.thumbnail(rgb, PER_LOOP_WIDTH)
    assert small.shape[1] == PER_LOOP_WIDTH and len(drawn.per_loop_jpegs) == 3
    for jpeg, picture in zip(drawn.per_loop_jpegs, per_loop, strict=True):
        overlay = render.influence_rgb(small, picture.shown.values, picture.scale, 0.6, smooth, None)
        at = (round(40 * factor), round(30 * factor))
        assert jpeg == render.jpeg_bytes(render.draw_marker(overlay, *at))


def test_without_b_and_per_loop_maps_nothing_extra_is_drawn():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    (values,) = _maps(rng, 1, (6, 8))
    picture = MapPicture(ShownMap(values, None), render.ColourScale("Inferno", 0.0, 1.0), (10, 10))
    pending = start_column_pictures(rgb, picture, rgb, 0.5, False)
    drawn = pending.result()
    assert drawn.second_jpeg is None and drawn.per_loop_jpegs == [] and pending.second_scale is None


def test_an_error_while_drawing_reaches_the_caller():
    """A failure on a pool thread is raised where the column waits for its pictures, not lost."""
    rgb = np.zeros((48, 64, 3), np.uint8)
    right = MapPicture(ShownMap(np.ones((6, 8)) / 48, None), render.ColourScale("Inferno", 0.0, 1.0), (10, 10))
    wrong = MapPicture(ShownMap(np.ones((6, 8, 2)), None), render.ColourScale("Inferno", 0.0, 1.0), (10, 10))
    pending = start_column_pictures(rgb, right, rgb, 0.5, False, second=wrong)
    with pytest.raises(Exception):  # noqa: B017 - whatever OpenCV or NumPy raise for a 3-D map
        pending.result()


def test_cancel_drops_the_pictures_not_started_yet():
    """A rerun interrupts a column: its queued pictures leave the shared pool instead of being drawn."""
    import threading

    from app.pictures import POOL, WORKERS

    gate = threading.Event()
    busy = [POOL.submit(gate.wait, 30) for _ in range(WORKERS)]  # every worker taken
    try:
        rgb = np.zeros((48, 64, 3), np.uint8)
        picture = MapPicture(ShownMap(np.ones((6, 8)) / 48, None), render.ColourScale("Inferno", 0.0, 1.0), (10, 10))
        pending = start_column_pictures(rgb, picture, rgb, 0.5, False, per_loop=[picture])
        pending.cancel()
        assert pending.segmentation.cancelled() and pending.per_loop[0].cancelled()
    finally:
        gate.set()
    assert all(job.result(timeout=30) for job in busy)
