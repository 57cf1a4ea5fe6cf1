"""The exploration: the clickable image, one column per loop count, numbers, downloads, timings.

`exploration` is a Streamlit fragment: a click reruns only this part of the page, and since the
attentions are cached per (image, model, R), a click costs influence maps, statistics and drawing.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import streamlit as st

from app import render
from app.archive import view_archive
from app.clickable_image import clickable_image
from app.controls import FOCUS, ColumnSpec, ViewOptions
from app.display import ShownMap, colour_scales, shown_map
from app.explorer import (
    FEEDS,
    BoundedCache,
    ColumnMaps,
    Decoded,
    Timings,
    cached_decodes,
    column_maps,
    decode_key,
    single_threaded,
)
from app.grid import (
    Box,
    box_cells,
    display_box_to_image,
    display_to_image,
    pixel_to_cell,
    sample_at_cells,
    segment_at,
)
from app.image_summary import (
    Highlight,
    ImageAttention,
    clear_highlight,
    current_highlight,
    image_attention,
    show_image_attention,
)
from app.images import DecodedImage
from app.influence_chart import chart_args, influence_chart, photo_url
from app.model_card import supervision_note
from app.models import LOOP_COUNTS, LoadedModel
from app.pictures import PER_LOOP_WIDTH, ColumnPictures, MapPicture, start_column_pictures
from app.shareable import URL_BOX_KEY, URL_POINT_KEY, write_to_url
from app.stats import InfluenceStats, Lift, Scorecard, image_miou, influence_stats, scorecard
from ccnet.analysis import cross_share, map_overlap, prediction_changes

FOCUS_KEY = "focus"  # session state: the title of the column the focus layout shows large
POINT_KEY = "point"  # session state: {"digest", "px", "py"} of the last click on the current image
POINT_B_KEY = "point_b"  # the same for the second pixel, when comparing two
BOX_KEY = "query_box"  # session state: {"digest", "box": (left, top, right, bottom)} of the last drag
COMPARE_KEY = "compare"  # checkbox: compare the clicked pixel (A) with a second one (B)
TARGET_KEY = "click_target"  # radio: which pixel the next click places
PIXEL_A, PIXEL_B = "pixel A", "pixel B"
CHANGE_FILTER_KEY = "change_class"
ALL_CHANGES = "all changes"
ENCODE_STEP = "encode + decode (new image or model)"


@dataclass
class GroundTruth:
    labels: np.ndarray  # (H, W) uint8, 255 = ignore
    class_names: list[str]  # the dataset's, in label order
    palette: np.ndarray  # (K, 3) the dataset's colours

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass
class ColumnResult:
    spec: ColumnSpec
    loaded: LoadedModel
    decoded: Decoded
    maps: ColumnMaps
    stats: InfluenceStats
    clicked_class: int
    second: ColumnMaps | None = None  # pixel B's maps, when comparing two pixels
    score: Scorecard | None = None  # the click's numbers against their baselines


def current_point(image: DecodedImage, key: str = POINT_KEY) -> tuple[int, int]:
    """The last click on this image, or before the first click its centre (pixel A) or lower left (B)."""
    point = st.session_state.get(key)
    if point and point.get("digest") == image.digest:
        return int(point["px"]), int(point["py"])
    linked = st.session_state.pop(URL_POINT_KEY, None) if key == POINT_KEY else None
    if linked is not None:  # a shared link's click, taken by the first image shown
        px, py = min(linked[0], image.width - 1), min(linked[1], image.height - 1)
        st.session_state[key] = {"digest": image.digest, "px": px, "py": py}
        return px, py
    if key == POINT_B_KEY:
        return image.width // 4, (3 * image.height) // 4
    return image.width // 2, image.height // 2


def seed_point(image: DecodedImage, px: int, py: int) -> None:
    """Pixel A before any click on this image (an example's telling spot); a click or a shared link wins."""
    point = st.session_state.get(POINT_KEY)
    if (point and point.get("digest") == image.digest) or st.session_state.get(URL_POINT_KEY) is not None:
        return
    st.session_state[POINT_KEY] = {"digest": image.digest, "px": px, "py": py}


def _remember_click(widget_key: str, image: DecodedImage) -> None:
    """Click callback: runs before the rerun, so the new point is marked on everything drawn after it.

    When comparing two pixels, a click places the pixel chosen in the radio, then the radio moves to
    the other one: click A, click B, click A again, ...
    """
    value = st.session_state.get(widget_key)
    if not value or "x" not in value:
        return
    shown = (value["width"], value["height"])
    px, py = display_to_image(value["x"], value["y"], shown, (image.height, image.width))
    comparing = st.session_state.get(COMPARE_KEY, False)
    second = comparing and st.session_state.get(TARGET_KEY) == PIXEL_B
    st.session_state[POINT_B_KEY if second else POINT_KEY] = {"digest": image.digest, "px": px, "py": py}
    if comparing:
        st.session_state[TARGET_KEY] = PIXEL_A if second else PIXEL_B


def current_box(image: DecodedImage) -> Box | None:
    """The last box dragged on this image, or None (no drag yet, or one on another image)."""
    dragged = st.session_state.get(BOX_KEY)
    if dragged and dragged.get("digest") == image.digest:
        left, top, right, bottom = (int(v) for v in dragged["box"])
        return left, top, right, bottom
    linked = st.session_state.pop(URL_BOX_KEY, None)
    if linked is None:
        return None
    # A shared link's box, taken by the first image shown and clipped to it (the link may be for another size).
    right, bottom = image.width - 1, image.height - 1
    box = tuple(min(v, limit) for v, limit in zip(linked, (right, bottom, right, bottom), strict=True))
    st.session_state[BOX_KEY] = {"digest": image.digest, "box": box}
    return box


def _drag_corners(value) -> tuple[tuple[float, float], tuple[float, float], tuple[float, float]] | None:
    """The component's drag report -> (first corner, second corner, shown size), or None if it is not one.

    In click-and-drag mode the clickable image sends {x1, y1} (mouse down) and {x2, y2} (mouse up,
    possibly outside the image) in shown pixels; a plain click is a drag whose two corners coincide.
    """
    keys = ("x1", "y1", "x2", "y2", "width", "height")
    if not isinstance(value, dict) or any(key not in value for key in keys):
        return None
    try:
        x1, y1, x2, y2, width, height = (float(value[key]) for key in keys)
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2, width, height)):
        return None
    return (x1, y1), (x2, y2), (width, height)


def _remember_drag(widget_key: str, image: DecodedImage) -> None:
    """Drag callback: the box, clipped to the image, becomes the query; pixel A moves to its centre, the cell
    the scorecard measures distances and crosses from (as the clicked pixel is for a segment)."""
    corners = _drag_corners(st.session_state.get(widget_key))
    if corners is None:
        return
    first, second, shown = corners
    box = display_box_to_image(first, second, shown, (image.height, image.width))
    st.session_state[BOX_KEY] = {"digest": image.digest, "box": box}
    left, top, right, bottom = box
    st.session_state[POINT_KEY] = {"digest": image.digest, "px": (left + right) // 2, "py": (top + bottom) // 2}


@st.fragment
def exploration(
    image: DecodedImage,
    truth: GroundTruth | None,
    columns: list[ColumnSpec],
    models: dict[str, LoadedModel],
    options: ViewOptions,
    cache: BoundedCache,
    baseline: ColumnSpec | None = None,
) -> None:
    """`baseline`: the per-R modes' R = 0 model, shown as its segmentation under the image to click."""
    timings = Timings()
    decodes = _decodes_for_columns(image, [*columns, *([baseline] if baseline else [])], models, cache, timings)
    px, py = current_point(image)
    comparing = bool(st.session_state.get(COMPARE_KEY, False))
    second_point = current_point(image, POINT_B_KEY) if comparing else None
    box = current_box(image) if options.query == "box" else None

    results = []
    with timings.measure("influence maps + statistics"), single_threaded():
        for spec in columns:
            decoded = decodes[(spec.entry.name, spec.recurrence)]
            results.append(
                _column_result(spec, models[spec.entry.name], decoded, px, py, options, truth, second_point, box)
            )
    highlight = current_highlight(image.digest)

    focus = _focused_column(results) if options.layout == FOCUS else None
    # One row: the image to click, then one column per loop count, so everything is seen at once; or, in the
    # focus layout, the image, one large column and the others as thumbnails that take the focus when chosen.
    # Focus: the large column at least 640 px wide at 1500 px of browser width (tests/test_browser_app.py).
    widths = [1.2, 4.2, 1] if focus is not None else [1] * (1 + len(results))
    picker, *outputs = st.columns(widths)
    with picker, timings.measure("clickable image + summary"):
        _comparison_controls(drag=options.query == "box")
        mask = _highlight_mask(results, highlight)
        _clickable_image(image, px, py, second_point, box, mask, drag=options.query == "box")
        if mask is not None:
            _highlight_note(highlight)
        _point_summary(image, results, px, py, truth, cache, options.query, box)
        if baseline is not None:
            without = DecodedColumn(baseline, models[baseline.entry.name], decodes[(baseline.entry.name, 0)])
            _baseline_panel(image, without, px, py, truth, options.seg_opacity, cache)
        _cross_share_chart(results)
    with timings.measure("render + send columns"):
        shown = [shown_map(r.maps.composed, r.maps.cell, options.hide_cross) for r in results]
        scales = colour_scales(shown, options)
        if focus is None:
            # Every column's pictures go to the pool first, so they are drawn while the charts are built.
            small = render.thumbnail(image.rgb, PER_LOOP_WIDTH) if options.per_loop else None  # shared
            started = [
                _start_pictures(image, result, view, scale, options, cache, px, py, second_point, small)
                for result, view, scale in zip(results, shown, scales, strict=True)
            ]
            photo = _photo_uri(image, cache)
            try:
                pictures = [
                    _show_column(column, image, result, scale, pending, px, py, photo)
                    for column, result, scale, pending in zip(outputs, results, scales, started, strict=True)
                ]
            finally:  # a rerun stops this script with an exception: free the shared pool of its pictures
                for pending in started:
                    pending.cancel()
        else:
            pictures = _focus_columns(
                outputs, focus, image, results, shown, scales, options, cache, px, py, second_point
            )
    with timings.measure("download buttons"):
        _downloads(image, results, pictures, px, py, second_point, box)
    write_to_url((px, py), box)
    _timings_expander(timings, cache)


def _decodes_for_columns(image, columns, models, cache, timings) -> dict[tuple[str, int], Decoded]:
    wanted: dict[str, list[int]] = {}
    for spec in columns:
        wanted.setdefault(spec.entry.name, []).append(spec.recurrence)
    decodes = {}
    for name, loop_counts in wanted.items():
        start = time.perf_counter()
        new = any(decode_key(image.digest, models[name].cache_id, r) not in cache for r in loop_counts)
        with st.spinner(f"Running {name} on the image (once; clicks then reuse it)...") if new else nullcontext():
            found, computed = cached_decodes(cache, models[name], image.rgb, image.digest, loop_counts)
        step = ENCODE_STEP if computed else "attentions from the cache"
        timings.add(step, 1000 * (time.perf_counter() - start))
        decodes.update({(name, r): decoded for r, decoded in found.items()})
    return decodes


def _column_result(spec, loaded, decoded, px, py, options, truth, second_point=None, box=None) -> ColumnResult:
    region = _query_region(decoded, px, py, options.query, truth, len(loaded.class_names), box)
    maps = column_maps(decoded, px, py, options.mode, options.per_loop, options.direction, region)
    clicked_class = int(decoded.prediction[py, px])
    miou = None
    if truth is not None and truth.num_classes == len(loaded.class_names):
        miou = image_miou(decoded.prediction, truth.labels, truth.num_classes)
    stats = influence_stats(maps.composed, decoded.grid_classes, clicked_class, miou, cell=maps.cell)
    second = None
    if second_point is not None:
        second = column_maps(decoded, *second_point, options.mode, False, options.direction)
    truth_cells = None
    if truth is not None and truth.num_classes == len(loaded.class_names):
        truth_cells = sample_at_cells(truth.labels, decoded.grid_size)  # (h, w)
    score = scorecard(
        maps.composed, maps.cell, decoded.grid_classes, truth_cells, decoded.prediction.shape[:2],
        spec.recurrence, decoded.gamma, decoded.branch_weight,
    )  # fmt: skip
    return ColumnResult(spec, loaded, decoded, maps, stats, clicked_class, second, score)


def _query_region(decoded, px: int, py: int, query: str, truth, num_classes: int, box=None) -> np.ndarray | None:
    """The query's region on the feature grid, (h, w) bool: the clicked pixel's class segment or the dragged
    box; None for a single-pixel query."""
    if query == "pixel":
        return None
    if query == "box":
        corners = box if box is not None else (px, py, px, py)  # no drag yet: the clicked cell's box
        return box_cells(corners, decoded.prediction.shape[:2], decoded.grid_size)
    cell = pixel_to_cell(px, py, decoded.prediction.shape[:2], decoded.grid_size)
    if query == "truth":
        if truth is None or truth.num_classes != num_classes:
            return None  # said on the page (_point_summary)
        cells = sample_at_cells(truth.labels, decoded.grid_size)  # (h, w)
        if cells[cell] == 255:
            return None
        return segment_at(cells, cell)
    return segment_at(decoded.grid_classes, cell)


def _comparison_controls(drag: bool = False) -> None:
    """Compare two pixels (e.g. two of the same car, or a car and the road): each click places A or B."""
    st.checkbox(
        "Compare two pixels",
        key=COMPARE_KEY,
        help="Each click places the pixel chosen below, then switches to the other one.",
    )
    if st.session_state.get(COMPARE_KEY):
        st.radio("Next click places", [PIXEL_A, PIXEL_B], key=TARGET_KEY, horizontal=True)
        if drag:
            st.caption("While the query is a box, a drag moves the box and pixel A to its centre; B stays.")


def _clickable_image(
    image: DecodedImage, px: int, py: int, second_point=None, box=None, highlight=None, drag: bool = False
) -> None:
    """The image to click (or, with drag, to drag a box on), with the highlighted class (H, W) bool, the box
    and the markers drawn on it."""
    picture = image.rgb if highlight is None else render.highlight_pixels(image.rgb, highlight)
    if box is not None:
        picture = render.draw_box(picture, box)
    marked = render.draw_marker(picture, px, py)
    if second_point is not None:
        marked = render.draw_marker(marked, *second_point, label="B")
    # A new image gets a fresh widget, not the old click; so does the switch to drags (another kind of value).
    widget_key = f"{'drag' if drag else 'click'}-{image.digest}"
    remember = _remember_drag if drag else _remember_click
    # The component's callback takes no arguments: bind key and image here.
    clickable_image(marked, key=widget_key, click_and_drag=drag, on_change=lambda: remember(widget_key, image))
    if drag:
        st.caption("Drag a box: each map below averages the influence maps of the feature cells it touches.")
    else:
        st.caption("Click a pixel: each map below shows how much every position feeds into it.")


def _highlight_mask(results: list[ColumnResult], highlight: Highlight | None) -> np.ndarray | None:
    """(H, W) bool: the pixels the clicked row's column predicts as its class; None when nothing is chosen or
    that column is not shown any more. From the cached prediction: a row click costs no model run."""
    if highlight is None:
        return None
    for result in results:
        names = result.loaded.class_names
        same_class = highlight.class_id < len(names) and names[highlight.class_id] == highlight.name
        if result.spec.title == highlight.column and same_class:  # not another model under the same title
            return result.decoded.prediction == highlight.class_id  # (H, W)
    return None


def _highlight_note(highlight: Highlight) -> None:
    """Which class is highlighted, and the way back to the plain image."""
    st.caption(
        f"Highlighted: the pixels the {highlight.column} column predicts as **{highlight.name}** (the row "
        "clicked in the class matrix below); the rest is dimmed."
    )
    st.button("Clear the highlight", key="clear-highlight", on_click=clear_highlight)


def _point_summary(
    image, results: list[ColumnResult], px, py, truth: GroundTruth | None, cache, query="pixel", box=None
) -> None:
    first = results[0]
    y, x = first.maps.cell
    rows, cols = first.decoded.grid_size
    st.markdown(
        f"**Clicked pixel** ({px}, {py}) of {image.width} x {image.height} &rarr; feature cell "
        f"(y={y}, x={x}) of the {rows} x {cols} grid"
    )
    names = [f"R = {r.spec.recurrence}: {_class_name(r.loaded, r.clicked_class)}" for r in results]
    st.markdown("Predicted class there: " + ", ".join(names))
    second = first.second
    if second is not None:
        bx, by = current_point(image, POINT_B_KEY)
        b_names = ", ".join(
            f"R = {r.spec.recurrence}: {_class_name(r.loaded, int(r.decoded.prediction[by, bx]))}" for r in results
        )
        st.markdown(f"**Pixel B** ({bx}, {by}), cell (y={second.cell[0]}, x={second.cell[1]}): {b_names}")
    if query == "box" and first.maps.region_cells:
        _box_summary(first, box, px, py)
    elif first.maps.region_cells:
        st.info(
            f"Query: the clicked pixel's class segment ({first.maps.region_cells} feature cells in the "
            f"{results[0].spec.title} column); each map averages the influence maps of its cells."
        )
    elif st.session_state.get("query", "").startswith("Its ") and first.maps.direction != FEEDS:
        st.caption("No segment here (no labels, or a void pixel): showing the clicked pixel's maps.")
    if first.maps.direction == FEEDS:
        st.info(
            "Reverse view: each map shows which pixels read from the clicked pixel (its column of the composed "
            "attention), normalised to sum 1. The scorecard's numbers describe this map."
        )
    if results[0].maps.mode == "rollout":
        gammas = sorted({f"{abs(r.decoded.gamma):.3g} ({r.loaded.name})" for r in results})
        st.caption("Rollout: each loop is |γ| A + I with the model's learned γ = " + ", ".join(gammas))
    if truth is not None:
        label = int(truth.labels[py, px])
        name = truth.class_names[label] if label < truth.num_classes else "void"
        st.markdown(f"Ground truth there: {name}")
        truth_rgb = render.draw_marker(_truth_rgb(image, truth, cache), px, py)
        st.image(render.jpeg_bytes(truth_rgb), caption="Ground truth (black: void)", width="stretch")


def _baseline_panel(image, baseline: DecodedColumn, px: int, py: int, truth: GroundTruth | None, opacity, cache):
    """The family's R = 0 model: it has no attention to click, so its segmentation and its numbers only."""
    loaded, prediction = baseline.loaded, baseline.decoded.prediction
    st.markdown(f"##### {baseline.spec.title}")
    overlay = render.draw_marker(_segmentation_rgb(image, baseline, opacity, cache), px, py)  # (H, W, 3)
    st.image(render.jpeg_bytes(overlay), caption="segmentation at R = 0 (no attention: no map)", width="stretch")
    present = [c for c in baseline.decoded.classes_present if c < len(loaded.class_names)]
    st.html(render.class_legend_html(present, loaded.class_names, loaded.palette))
    lines = [f"predicted class at the clicked pixel: **{_class_name(loaded, int(prediction[py, px]))}**"]
    if truth is not None and truth.num_classes == len(loaded.class_names):
        lines.append(f"image mIoU at R = 0: **{100 * image_miou(prediction, truth.labels, truth.num_classes):.1f}%**")
    st.markdown("  \n".join(lines))


def _box_summary(first: ColumnResult, box: Box | None, px: int, py: int) -> None:
    if box is None:
        st.info("Query: the clicked pixel's feature cell as a box. Drag on the image to draw a larger one.")
        return
    left, top, right, bottom = box
    st.info(
        f"Query: the box from ({left}, {top}) to ({right}, {bottom}), {first.maps.region_cells} feature cells in "
        f"the {first.spec.title} column; each map averages the influence maps of its cells. The scorecard reads "
        f"from pixel A ({px}, {py}), which a drag puts at the box's centre."
    )


def _truth_rgb(image: DecodedImage, truth: GroundTruth, cache: BoundedCache) -> np.ndarray:
    key = ("truth", image.digest)
    overlay = cache.get(key)
    if overlay is None:
        overlay = render.segmentation_rgb(image.rgb, truth.labels, _palette_with_void(truth.palette), 0.6)
        cache.put(key, overlay, overlay.nbytes)
    return overlay  # (H, W, 3)


def _palette_with_void(palette: np.ndarray) -> np.ndarray:
    full = np.zeros((256, 3), np.uint8)  # (256, 3): 255 (ignore) and unknown values stay black
    full[: len(palette)] = palette
    return full


def _class_name(loaded: LoadedModel, class_id: int) -> str:
    names = loaded.class_names
    return names[class_id] if 0 <= class_id < len(names) else f"class {class_id}"


def _cross_share_chart(results: list[ColumnResult]) -> None:
    """Does R = 2 reach beyond the cross? The share of the influence on the clicked cell's row and column."""
    st.markdown("**Where the influence comes from**")
    st.html(render.share_bars_html([r.spec.title for r in results], [r.stats.cross_share for r in results]))
    one_loop = [r for r in results if len(r.decoded.attentions) == 1]
    note = (
        f" After one loop it is {100 * one_loop[0].stats.cross_share:.1f}%: one criss-cross step only reads "
        "the pixel's row and column; the second loop reads those cells' crosses, i.e. the whole image."
        if one_loop
        else ""
    )
    st.caption("Share of the clicked pixel's influence that comes from its own row and column." + note)


def _start_pictures(
    image, result: ColumnResult, shown: ShownMap, scale, options: ViewOptions, cache, px, py, second_point, small=None
) -> ColumnPictures:
    """Submit the column's pictures to the drawing pool: A's map, the segmentation, B's map, each loop's own."""
    first = MapPicture(shown, scale, (px, py))
    second = None
    if result.second is not None:
        view = shown_map(result.second.composed, result.second.cell, options.hide_cross)
        second = MapPicture(view, colour_scales([view], options)[0], second_point, label="B")
    per_loop = []
    if options.per_loop:  # each on its own scale: a loop's map is compared with itself, not the others
        for own in result.maps.per_loop:
            own_scale = render.ColourScale(options.colormap, 0.0, max(float(own.max()), 1e-12))
            per_loop.append(MapPicture(ShownMap(own, None), own_scale, (px, py)))
    segmentation = _segmentation_rgb(image, result, options.seg_opacity, cache)  # (H, W, 3)
    return start_column_pictures(
        image.rgb, first, segmentation, options.heat_opacity, options.smooth, second, per_loop, small
    )


def _show_column(column, image, result: ColumnResult, scale, pending: ColumnPictures, px, py, photo_uri: str):
    """Draw one column; returns its (influence, segmentation) for the panel: a function drawing A's marked map
    on demand (the browser colours the one shown) and the marked segmentation (H, W, 3)."""
    loaded, decoded = result.loaded, result.decoded
    grid_classes = np.minimum(decoded.grid_classes, len(loaded.class_names))  # (h, w); the last name is "?"
    chart = chart_args(
        photo_uri,
        (image.height, image.width),
        pending.first.shown,
        result.maps.composed,
        grid_classes,
        [*loaded.class_names, "?"],
        scale,
        pending.opacity,
        pending.smooth,
        (px, py),
    )
    drawn = pending.result()
    with column:
        st.markdown(f"#### {result.spec.title}")
        # The influence map is coloured in the browser (hover: value and class); the other pictures are
        # plain images.
        influence_chart(chart, key=f"influence-{result.spec.title}")  # titles are unique among the columns
        _stats_lines(result)
        if result.second is not None:
            _second_pixel(result, drawn.second_jpeg, pending.second_scale)
        st.image(drawn.segmentation_jpeg, caption=f"segmentation at R = {result.spec.recurrence}", width="stretch")
        present = [c for c in decoded.classes_present if c < len(loaded.class_names)]
        st.html(render.class_legend_html(present, loaded.class_names, loaded.palette))
        if drawn.per_loop_jpegs:
            _per_loop_images(drawn.per_loop_jpegs)
    return pending.influence, drawn.segmentation


def _photo_uri(image: DecodedImage, cache) -> str:
    """Where the influence charts load the image from: one JPEG per image (encoded once, cached) in Streamlit's
    media store, added again on every run so that it lives as long as the charts show it."""
    key = ("photo_jpeg", image.digest)
    jpeg = cache.get(key)
    if jpeg is None:
        jpeg = render.jpeg_bytes(image.rgb)
        cache.put(key, jpeg, len(jpeg))
    return photo_url(jpeg, coordinates=f"ccnet-influence-photo-{image.digest[:16]}")


def image_attention_section(
    image: DecodedImage, columns: list[ColumnSpec], models: dict[str, LoadedModel], cache: BoundedCache
) -> None:
    """The per-image class matrices, drawn outside the click fragment: they do not depend on the click, and
    sending three heat maps again on every click cost about 24 ms of a 73 ms click. A row click (selection
    callback) reruns the whole page, so the highlight still reaches the clickable image."""
    decodes = _decodes_for_columns(image, columns, models, cache, Timings())  # cached by the fragment's run
    summaries = []
    for spec in columns:
        loaded = models[spec.entry.name]
        summary = _image_attention(image, spec, loaded, decodes[(spec.entry.name, spec.recurrence)], cache)
        summaries.append((summary, loaded.class_names))
    show_image_attention(summaries, image.digest)


def _image_attention(image: DecodedImage, spec: ColumnSpec, loaded: LoadedModel, decoded, cache) -> ImageAttention:
    """The column's class matrix and query similarity: independent of the click, so computed once per image."""
    key = ("image_attention", image.digest, loaded.cache_id, spec.recurrence, spec.title)
    summary = cache.get(key)
    if summary is None:
        summary = image_attention(spec.title, decoded.attentions, decoded.grid_classes, len(loaded.class_names))
        cache.put(key, summary, summary.shares.nbytes * 2)
    return summary


def _focused_column(results: list[ColumnResult]) -> int:
    """Index of the column in focus: the one chosen last, else the model's trained loop count, else the first."""
    titles = [r.spec.title for r in results]
    chosen = st.session_state.get(FOCUS_KEY)
    if chosen in titles:
        return titles.index(chosen)
    trained = [i for i, r in enumerate(results) if r.spec.recurrence == r.loaded.trained_recurrence]
    return trained[0] if trained else 0


def _focus_columns(outputs, focus: int, image, results, shown, scales, options, cache, px, py, second_point):
    """The focused column drawn large (at least 640 px wide on a wide screen), the others as thumbnails."""
    large, thumbnails = outputs
    pictures = []
    for index, (result, view, scale) in enumerate(zip(results, shown, scales, strict=True)):
        if index == focus:
            pending = _start_pictures(image, result, view, scale, options, cache, px, py, second_point)
            pictures.append(_show_column(large, image, result, scale, pending, px, py, _photo_uri(image, cache)))
            continue
        influence = render.influence_rgb(
            image.rgb, view.values, scale, options.heat_opacity, options.smooth, view.hidden
        )
        marked = render.draw_marker(influence, px, py)
        with thumbnails:
            st.image(render.jpeg_bytes(marked), caption=result.spec.title, width="stretch")
            st.button(
                f"Focus on {result.spec.title}", key=f"focus-{index}", on_click=_set_focus, args=(result.spec.title,)
            )
        segmentation = render.draw_marker(_segmentation_rgb(image, result, options.seg_opacity, cache), px, py)
        pictures.append((lambda marked=marked: marked, segmentation))
    return pictures


def _set_focus(title: str) -> None:
    st.session_state[FOCUS_KEY] = title


def _second_pixel(result: ColumnResult, jpeg: bytes, scale: render.ColourScale) -> None:
    """Pixel B's map in the same column, drawn the same way (its own scale), and how much A and B share."""
    second = result.second
    st.image(
        jpeg,
        caption=f"pixel B at R = {result.spec.recurrence}; colours: {scale.title.replace('<br>', ', ')}",
        width="stretch",
    )
    overlap = map_overlap(result.maps.composed, second.composed)
    st.markdown(
        f"B on its row and column: **{100 * cross_share(second.composed, *second.cell):.1f}%**  \n"
        f"A and B share **{100 * overlap:.1f}%** of their influence (sum of the smaller of the two maps)"
    )


def _segmentation_rgb(image: DecodedImage, result: ColumnResult | DecodedColumn, opacity: float, cache) -> np.ndarray:
    """The overlay does not change with clicks: blend it once per image, model, R and opacity."""
    key = ("segmentation", image.digest, result.loaded.name, result.spec.recurrence, round(opacity, 3))
    overlay = cache.get(key)
    if overlay is None:
        prediction, palette = result.decoded.prediction, result.loaded.palette
        overlay = render.segmentation_rgb(image.rgb, prediction, palette, opacity)  # (H, W, 3)
        cache.put(key, overlay, overlay.nbytes)
    return overlay


def _stats_lines(result: ColumnResult) -> None:
    stats = result.stats
    lines = [
        f"90% of the influence on **{100 * stats.coverage_90:.3g}%** of the image",
        f"entropy **{stats.entropy_bits:.3f} bits** ({100 * stats.entropy_share:.0f}% of uniform)",
        f"on its own class ({_class_name(result.loaded, result.clicked_class)}): "
        f"**{100 * stats.own_class_share:.1f}%**",
        f"on its own row and column: **{100 * stats.cross_share:.1f}%**, off them: "
        f"**{100 * (1 - stats.cross_share):.1f}%**",
    ]
    if stats.miou is not None:
        lines.append(f"image mIoU at R = {result.spec.recurrence}: **{100 * stats.miou:.1f}%**")
    st.markdown("  \n".join(lines))
    if result.score is not None:
        _scorecard_lines(result)


def _lift_text(lift: Lift, against: str) -> str:
    where = "on its row and column" if lift.region == "cross" else "off its row and column"
    if lift.lift != lift.lift:  # NaN
        return f"same-class lift ({against}): – (no other cell of its class {where})"
    return (
        f"same-class lift ({against}): **{lift.lift:.2f}x** what a uniform map gives "
        f"({100 * lift.uniform_share:.1f}% of the cells {where} share its class)"
    )


def _scorecard_lines(result: ColumnResult) -> None:
    """Scorecard: each number next to the baseline it is read against (1.0x = blind to class)."""
    score = result.score
    lines = [_lift_text(score.lift_predicted, "predicted classes")]
    if score.lift_truth is not None:
        lines.append(_lift_text(score.lift_truth, "ground truth"))
    lines.append(
        f"mean attention distance **{score.distance_px:.0f} px** (uniform map: {score.uniform_distance_px:.0f} px)"
    )
    if score.branch_weight:
        weights = ", ".join(f"{w:.2f}" for w in score.branch_weight)
        lines.append(f"γ = {score.gamma:.3g}; attention branch / residual at this cell, per loop: **{weights}**")
    st.markdown("  \n".join(lines))
    note = supervision_note(result.loaded.metadata)
    if note:
        st.caption(f"⚠ {note}")
    if score.attention_quiet:
        st.warning(
            f"γ = {score.gamma:.3g}: this model's attention barely reaches its output, so these maps are not "
            "what the network uses. Compare a model whose γ is far from 0."
        )


def _per_loop_images(jpegs: list[bytes]) -> None:
    """Each loop's own attention of the clicked cell, small, in a row of as many slots as the largest R."""
    st.caption("Each loop's own attention of the clicked cell:")
    slots = st.columns(max(LOOP_COUNTS))
    for loop, (jpeg, slot) in enumerate(zip(jpegs, slots, strict=False), start=1):
        slot.image(jpeg, caption=f"loop {loop}", width="stretch")


@dataclass
class DecodedColumn:
    """A column without the click: what the segmentation-change view needs."""

    spec: ColumnSpec
    loaded: LoadedModel
    decoded: Decoded


def segmentation_changes(
    image: DecodedImage, columns: list[ColumnSpec], models: dict[str, LoadedModel], cache: BoundedCache
) -> None:
    """The paper's Fig. 6, interactive: pixels whose class changes from one column's R to the next.

    Outside the exploration fragment on purpose: it does not depend on the clicked pixel, so a click
    does not redraw it. The decodes come from the shared cache the exploration has just filled.
    """
    if len(columns) < 2:
        return
    decodes = _decodes_for_columns(image, columns, models, cache, Timings())
    results = [DecodedColumn(s, models[s.entry.name], decodes[(s.entry.name, s.recurrence)]) for s in columns]
    st.markdown("##### Where the segmentation changes between loop counts")
    pairs = list(zip(results[:-1], results[1:], strict=True))
    class_names = results[-1].loaded.class_names
    choice = st.selectbox(
        "Highlight",
        [ALL_CHANGES] + class_names,
        key=CHANGE_FILTER_KEY,
        help="Only the changes into or out of this class.",
    )
    wanted = None if choice == ALL_CHANGES else class_names.index(choice)
    slots = st.columns(len(pairs))
    for slot, (before, after) in zip(slots, pairs, strict=True):
        with slot:
            _change_pair(image, before, after, wanted, cache)


def _change_pair(image: DecodedImage, before: DecodedColumn, after: DecodedColumn, wanted: int | None, cache) -> None:
    key = (
        "changes",
        image.digest,
        before.loaded.name,
        before.spec.recurrence,
        after.loaded.name,
        after.spec.recurrence,
        wanted,
    )
    found = cache.get(key)
    if found is None:
        changes = prediction_changes(before.decoded.prediction, after.decoded.prediction)
        changed = changes.changed  # (H, W)
        if wanted is not None:
            changed = changed & ((before.decoded.prediction == wanted) | (after.decoded.prediction == wanted))
        picture = render.jpeg_bytes(
            render.changes_rgb(image.rgb, changed, after.decoded.prediction, after.loaded.palette)
        )
        transitions = [t for t in changes.transitions if wanted is None or wanted in (t.before, t.after)]
        found = (picture, transitions, float(changed.mean()))
        cache.put(key, found, len(picture) + 64 * len(transitions))
    picture, transitions, share = found
    title = f"R = {before.spec.recurrence} → R = {after.spec.recurrence}"
    st.image(
        picture,
        caption=f"{title}: {100 * share:.3g}% of the pixels change class (outlined, in the new class's colour)",
        width="stretch",
    )
    if not transitions:
        st.caption("No pixel changes class.")
        return
    lines = [
        f"- {_class_name(before.loaded, t.before)} → {_class_name(after.loaded, t.after)}: "
        f"{100 * t.share:.3g}% ({t.pixels} px)"
        for t in transitions[:6]
    ]
    more = len(transitions) - 6
    st.markdown("\n".join(lines) + (f"\n- and {more} smaller changes" if more > 0 else ""))


def _downloads(
    image, results: list[ColumnResult], pictures: list[tuple], px: int, py: int, second_point=None, box=None
) -> None:
    """pictures: per column, (a function drawing A's marked influence overlay, the marked segmentation), both
    (H, W, 3): the overlay is drawn only if a download asks for it (the page's map is coloured in the browser)."""
    stem = f"ccnet_{image.digest[:8]}_x{px}_y{py}"
    titles = [r.spec.title for r in results]

    def panel() -> bytes:  # built only when the button is pressed
        rows = [[influence() for influence, _ in pictures], [segmentation for _, segmentation in pictures]]
        return render.panel_png(titles, rows)

    left, right, everything = st.columns(3)
    everything.download_button(
        "Download everything (.zip)",
        data=lambda: view_archive(
            panel(), results, (px, py), (image.height, image.width), dict(st.query_params), second_point, box
        ),
        file_name=f"{stem}.zip",
        mime="application/zip",
        on_click="ignore",
        key="download-archive",
        help="panel.png, each column's map (map_<i>.npy, float32 (h, w), sums to 1) and view.json: the click, "
        "the settings, the models and every number shown.",
    )
    left.download_button(
        "Download the panel (PNG)",
        data=panel,
        file_name=f"{stem}.png",
        mime="image/png",
        on_click="ignore",
        key="download-panel",
    )
    grids = {r.maps.composed.shape for r in results}
    if len(grids) == 1:
        stacked = np.stack([r.maps.composed for r in results]).astype(np.float32)  # (columns, h, w)
        right.download_button(
            "Download the maps (.npy)",
            data=lambda: render.npy_bytes(stacked),
            file_name=f"{stem}.npy",
            mime="application/octet-stream",
            on_click="ignore",
            key="download-maps",
            help=f"float32 array (columns, h, w) = {stacked.shape}, columns in the order "
            f"{', '.join(titles)}; each map sums to 1.",
        )
    else:
        right.caption("The columns' feature grids differ in size: their maps cannot share one array.")


def _timings_expander(timings: Timings, cache: BoundedCache) -> None:
    with st.expander("Timings (server side, this run)"):
        total = timings.elapsed_ms()  # wall time of the whole exploration, steps and the glue between them
        st.markdown(
            "\n".join(f"- {name}: {ms:.1f} ms" for name, ms in timings.steps.items()) + f"\n- **total: {total:.1f} ms**"
        )
        st.caption(
            f"Attention cache: {len(cache)} entries, {cache.nbytes / 2**20:.1f} MiB of "
            f"{cache.max_bytes / 2**20:.0f} MiB; {cache.hits} hits, {cache.misses} misses."
        )
