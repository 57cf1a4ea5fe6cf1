"""Display choices for cross-dominated maps (clamp, log, hide the cross), comparison and change pictures."""

from __future__ import annotations

import base64
import json
import math

import numpy as np
import pytest

from app import render
from app.controls import ViewOptions
from app.display import colour_scale, colour_scales, shown_map
from app.influence_chart import chart_args
from ccnet.analysis import cross_share

BASE = ViewOptions("attention", False, "Hot", 1.0, 0.5, False, False)


def options(**changes) -> ViewOptions:
    return ViewOptions(**{**BASE.__dict__, **changes})


def cross_dominated_map(h=6, w=8, y=2, x=3) -> np.ndarray:
    """Most of the mass on the cross of (y, x), a little elsewhere, summing to 1."""
    values = np.full((h, w), 0.001)
    values[y, :] = 0.05
    values[:, x] = 0.05
    values[y, x] = 0.2
    return values / values.sum()


def test_linear_scale_spans_zero_to_the_peak_and_says_so():
    influence = cross_dominated_map()
    scale = colour_scale(influence.ravel(), options())
    assert (scale.vmin, scale.vmax, scale.log) == (0.0, pytest.approx(influence.max()), False)
    assert scale.title.startswith("influence<br>0 to ")


def test_percentile_clamp_uses_that_percentile_of_the_values():
    influence = cross_dominated_map()
    scale = colour_scale(influence.ravel(), options(scale_mode="percentile", percentile=50.0))
    assert scale.vmax == pytest.approx(np.percentile(influence, 50.0))
    assert "clamped at p50 = " in scale.title
    levels = scale.to_levels(influence)
    assert (levels[influence >= scale.vmax] == 255).all()  # everything above saturates


def test_value_clamp_is_a_share_of_the_total():
    scale = colour_scale(cross_dominated_map().ravel(), options(scale_mode="value", clamp_percent=0.5))
    assert scale.vmax == pytest.approx(0.005) and "clamped at 0.5%" in scale.title


def test_log_scale_spreads_decades_and_labels_them_by_value():
    influence = cross_dominated_map()
    scale = colour_scale(influence.ravel(), options(scale_mode="log"))
    assert scale.log and scale.vmin == pytest.approx(influence.min()) and scale.vmax == pytest.approx(influence.max())
    assert "log scale" in scale.title
    mid = np.sqrt(scale.vmin * scale.vmax)  # the geometric middle gets the middle colour
    assert abs(int(scale.to_levels(np.array([mid]))[0]) - 127) <= 1
    assert list(scale.to_levels(np.array([0.0, scale.vmax]))) == [0, 255]  # zero is the bottom, not NaN
    ticks = scale.tick_marks()  # one per decade, labelled with the value
    low, high = scale.bar_range()
    assert len(ticks) == math.floor(high) - math.ceil(low) + 1
    assert all(0 <= at <= 1 for at, _ in ticks) and all(label.endswith("%") for _, label in ticks)
    floored = colour_scale(np.array([1e-12, 0.5]), options(scale_mode="log"))
    assert floored.vmin == pytest.approx(0.5e-4)  # at most four decades below the peak


def test_hidden_cross_leaves_the_image_uncoloured_and_rescales_to_the_rest():
    influence = cross_dominated_map()
    shown = shown_map(influence, (2, 3), hide=True)
    assert shown.hidden.sum() == 6 + 8 - 1 and (shown.values[shown.hidden] == 0).all()
    assert shown.visible_values().sum() == pytest.approx(1 - cross_share(influence, 2, 3), rel=1e-5)
    scale = colour_scale(shown.visible_values(), options(hide_cross=True))
    assert scale.vmax == pytest.approx(influence[0, 0], rel=1e-5)  # the off-cross peak, not the cross's
    assert scale.title.startswith("influence off the cross<br>")
    image = np.full((60, 80, 3), 77, np.uint8)
    drawn = render.influence_rgb(image, shown.values, scale, opacity=1.0, hidden=shown.hidden)
    assert (drawn[25, :] == 77).all() and (drawn[:, 35] == 77).all()  # row 2 and column 3 of cells: the image
    assert (drawn[5, 5] != 77).any()  # off the cross: coloured
    plain = shown_map(influence, (2, 3), hide=False)
    assert plain.hidden is None and plain.values is influence


def test_nothing_off_the_cross_is_said_plainly():
    one_loop = np.zeros((4, 5))
    one_loop[1, :] = 0.1
    one_loop[:, 2] = 0.1
    shown = shown_map(one_loop, (1, 2), hide=True)
    scale = colour_scale(shown.visible_values(), options(hide_cross=True, scale_mode="log"))
    assert scale.title == "influence off the cross<br>0 everywhere" and not scale.log


def test_shared_scale_pools_all_maps():
    first, second = cross_dominated_map(), 2 * cross_dominated_map()
    maps = [shown_map(first, (2, 3), False), shown_map(second, (2, 3), False)]
    own = colour_scales(maps, options())
    shared = colour_scales(maps, options(shared_scale=True))
    assert own[0].vmax < own[1].vmax and shared[0] == shared[1] and shared[0].vmax == pytest.approx(second.max())


@pytest.mark.parametrize("mode", ["linear", "percentile", "value", "log"])
def test_chart_arguments_with_each_scale_say_what_is_drawn(mode):
    """What the browser gets for a map: JSON, the values exactly, the scale's ends, title and ticks."""
    influence = cross_dominated_map()
    shown = shown_map(influence, (2, 3), hide=mode == "log")
    scale = colour_scale(shown.visible_values(), options(scale_mode=mode, hide_cross=mode == "log"))
    classes = np.zeros(influence.shape, np.int64)
    args = chart_args("data:image/jpeg;base64,", (60, 80), shown, influence, classes, ["road", "?"], scale, 0.6,
                      False, (10, 20))  # fmt: skip
    sent = json.loads(json.dumps(args))  # what Streamlit sends
    values = np.frombuffer(base64.b64decode(sent["values"]), "<f4").reshape(sent["grid"])
    np.testing.assert_array_equal(values, shown.values.astype(np.float32))
    assert sent["scale"]["title"] == scale.title and sent["scale"]["log"] == scale.log
    assert (sent["scale"]["low"], sent["scale"]["high"]) == pytest.approx(scale.bar_range())
    positions = [at for at, _ in sent["scale"]["ticks"]]
    assert positions == sorted(positions) and all(-1e-9 <= at <= 1 + 1e-9 for at in positions) and positions
    assert bytes.fromhex(sent["colours"]) == render.colormap_table(scale.colormap).tobytes()
    if shown.hidden is None:  # hovering reports the drawn values themselves: sent once
        assert sent["hover_values"] is None and sent["hidden"] is None
    else:  # the cross is hidden from the colours but a hover still reports the full map
        hover = np.frombuffer(base64.b64decode(sent["hover_values"]), "<f4").reshape(sent["grid"])
        np.testing.assert_array_equal(hover, influence.astype(np.float32))
        hidden = np.frombuffer(base64.b64decode(sent["hidden"]), np.uint8).reshape(sent["grid"])
        np.testing.assert_array_equal(hidden, shown.hidden)


def test_share_bars_split_each_column_on_and_off_the_cross():
    html_text = render.share_bars_html(["R = 1", "R = <2>"], [1.0, 0.4])
    assert 'class="on-cross" style="width:100.000%' in html_text and ">100.0%<" in html_text
    assert 'class="on-cross" style="width:40.000%' in html_text
    assert 'class="off-cross" style="width:60.000%' in html_text
    assert "R = &lt;2&gt;" in html_text  # titles are escaped


def test_second_marker_is_a_labelled_square():
    image = np.full((80, 80, 3), 128, np.uint8)
    ring, square = render.draw_marker(image, 40, 40), render.draw_marker(image, 40, 40, label="B")
    assert not np.array_equal(ring, square) and (image == 128).all()


@pytest.mark.parametrize("at", [(100, 100), (470, 10), (-5, 3), (200, 359), (479, 359), (600, 50)])
def test_the_label_stamp_draws_what_cv2_puttext_draws(at):
    """The B label is stamped from masks drawn once (cv2.putText is slow on each thread's first call): the
    same pixels as putText's outline and fill, within one grey level, clipped at the edges, or nothing."""
    import cv2

    rgb = np.random.default_rng(0).integers(0, 256, (360, 480, 3), dtype=np.uint8)
    expected = rgb.copy()
    cv2.putText(expected, "B", at, cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(expected, "B", at, cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    stamped = rgb.copy()
    render.stamp_label(stamped, "B", at, 0.4)
    assert np.abs(stamped.astype(int) - expected.astype(int)).max() <= 1
    assert np.array_equal((stamped != rgb).any(axis=2), (expected != rgb).any(axis=2))


def test_a_new_thread_draws_the_label_without_cv2_puttext(monkeypatch):
    """Streamlit runs each rerun in a new thread: the label's masks come from the process-wide cache."""
    import threading

    import cv2

    render.draw_marker(np.zeros((60, 80, 3), np.uint8), 20, 20, label="B")  # fills the cache
    calls = []
    monkeypatch.setattr(render.cv2, "putText", lambda *args, **kwargs: calls.append(args) or cv2.putText)
    drawn = []
    blank = np.zeros((60, 80, 3), np.uint8)
    thread = threading.Thread(target=lambda: drawn.append(render.draw_marker(blank, 30, 30, label="B")))
    thread.start()
    thread.join()
    assert calls == [] and len(drawn) == 1 and drawn[0][28:35, 38:43].max() > 200  # the white "B" is there


def test_changes_picture_colours_only_changed_pixels():
    image = np.full((10, 12, 3), 200, np.uint8)
    changed = np.zeros((10, 12), bool)
    changed[4:6, 4:6] = True
    after = np.ones((10, 12), np.int64)
    palette = np.array([[0, 0, 0], [10, 220, 30]], np.uint8)
    picture = render.changes_rgb(image, changed, after, palette)
    assert (picture[changed] == [10, 220, 30]).all()
    assert list(picture[3, 4]) == [255, 220, 0]  # outline around the changed block
    assert (picture[0, 0] < 200).all()  # unchanged pixels are dimmed


def test_long_legends_scroll():
    names = [f"class {k}" for k in range(150)]
    html_text = render.class_legend_html(list(range(150)), names, np.zeros((150, 3), np.uint8))
    assert "overflow-y:auto" in html_text and html_text.count("class 149") == 1


def test_highlight_keeps_the_class_dims_the_rest_and_outlines_it():
    image = np.full((40, 60, 3), 200, np.uint8)
    mask = np.zeros((40, 60), bool)
    mask[10:20, 20:30] = True
    picture = render.highlight_pixels(image, mask)
    assert (picture[mask] == 200).all() and (image == 200).all()  # the class as it is, the input untouched
    assert list(picture[0, 0]) == [80, 80, 80]  # dimmed
    yellow = list(render.HIGHLIGHT_COLOUR)
    assert list(picture[9, 25]) == yellow and list(picture[15, 30]) == yellow  # outlined just outside the class
    assert (render.highlight_pixels(image, np.zeros((40, 60), bool)) == 80).all()  # nothing to keep


def test_query_box_is_drawn_on_a_copy():
    image = np.full((40, 60, 3), 128, np.uint8)
    boxed = render.draw_box(image, (10, 5, 50, 30))
    assert (image == 128).all()
    assert (boxed[5, 10:51] != 128).any() and (boxed[30, 10:51] != 128).any()  # top and bottom edges
    assert (boxed[15, 20] == 128).all() and (boxed[0, 0] == 128).all()  # inside and outside untouched


def test_thumbnail_shrinks_to_the_width_and_never_enlarges():
    image = np.random.default_rng(1).integers(0, 256, (360, 480, 3), dtype=np.uint8)
    small, factor = render.thumbnail(image, 256)
    assert small.shape == (192, 256, 3) and factor == 256 / 480
    assert abs(float(small.mean()) - float(image.mean())) < 1  # an average of the pixels, not a crop
    same, one = render.thumbnail(image[:, :200], 256)
    assert same.shape == (360, 200, 3) and one == 1.0
