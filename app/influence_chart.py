"""An influence map coloured in the browser: a small Streamlit component of our own.

A click used to send each column's map as a plotly chart around a JPEG of the coloured overlay: drawing and
encoding the overlay, building the figure and serialising it cost about 8 ms per column on the server, the
largest share of a click with every view on (docs/APP.md, "Speed"). Now the server sends the feature grid's
values (h x w float32, about 14 kB in base64) and the URL of the photo (a JPEG encoded once per image and
served from Streamlit's media store, as `st.image` serves its pictures; the browser fetches and decodes it
only when it changes), and the frontend (`app/frontend/influence_chart/`: HTML, CSS
and a JavaScript module, no build step) colours the map the way `app.render.influence_rgb` does, draws the
marker and the colour bar, and shows a cell's influence and class on hover. `render.influence_rgb` stays the
reference: the downloadable panel uses it, and browser tests compare the two pictures value for value.

It is an `st.components.v2` component, mounted in the page itself: a v1 component is an iframe, and the
browser rebuilt the three iframes (page, script, photo) whenever Streamlit rebuilt the columns, on every new
image, which made the first result about 0.9 s slower than with plotly (docs/APP.md).
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import numpy as np
import streamlit as st

from app import render
from app.display import ShownMap

FRONTEND = Path(__file__).parent / "frontend" / "influence_chart"
COMPONENT_NAME = "ccnet_influence_chart"
ROOT_CLASS = "ccnet-influence-chart"  # the chart's root element in the page, for browser tests
_component = st.components.v2.component(
    COMPONENT_NAME,
    html=(FRONTEND / "influence_chart.html").read_text(),
    css=(FRONTEND / "influence_chart.css").read_text(),
    js=(FRONTEND / "influence_chart.js").read_text(),
    isolate_styles=False,  # in the page's DOM (no shadow root): its CSS is scoped by ROOT_CLASS instead
)


def photo_url(jpeg: bytes, coordinates: str) -> str:
    """Where the page can load the photo from: Streamlit's media file store, the same file for every chart of
    the image (a data: URL inside each chart's arguments cost hashing and JSON of 84 kB per chart and click).

    `coordinates` names the element the file belongs to (Streamlit frees it when a run no longer adds it). The
    URL is relative, so it also works under a `server.baseUrlPath`. Without a Streamlit runtime (a bare
    script) it is a data: URL.
    """
    from streamlit import runtime

    if not runtime.exists():
        return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
    url = runtime.get_instance().media_file_mgr.add(jpeg, "image/jpeg", coordinates)
    return url[1:] if url.startswith("/") and not url.startswith("//") else url  # "/media/x" -> "media/x"


def _base64(array: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype=dtype).tobytes()).decode("ascii")


def chart_args(
    photo_uri: str,
    image_size: tuple[int, int],
    shown: ShownMap,
    hover_values: np.ndarray,
    class_ids: np.ndarray,
    class_names: list[str],
    scale: render.ColourScale,
    opacity: float,
    smooth: bool,
    marker: tuple[int, int] | None,
) -> dict:
    """What the frontend needs to draw one map, as JSON-ready values.

    `photo_uri` is where the image (H, W) = `image_size` loads from (`photo_url`); `shown` the coloured values
    (h, w) and the cells left uncoloured; `hover_values` (h, w) the values a hover reports (the full map, even where the
    cross is hidden); `class_ids` (h, w) index `class_names`; `marker` = (px, py) in image pixels.
    """
    values = np.asarray(shown.values)
    rows, cols = values.shape
    if hover_values.shape != values.shape or class_ids.shape != values.shape:
        raise ValueError(
            f"influence_chart: values {values.shape}, hover values {hover_values.shape} and classes "
            f"{class_ids.shape} must share one grid"
        )
    low, high = int(class_ids.min(initial=0)), int(class_ids.max(initial=0))
    if low < 0 or high >= len(class_names) or len(class_names) > 256:
        raise ValueError(f"influence_chart: class ids must index the {len(class_names)} names (at most 256)")
    args = {
        "photo": photo_uri,
        "size": [int(image_size[0]), int(image_size[1])],
        "grid": [rows, cols],
        "values": _base64(values, "<f4"),
        "hover_values": None if hover_values is shown.values else _base64(hover_values, "<f4"),
        "hidden": None if shown.hidden is None else _base64(shown.hidden, "u1"),
        "classes": _base64(class_ids, "u1"),
        "names": list(class_names),
        "colours": render.colormap_table(scale.colormap).tobytes().hex(),  # (256, 3) RGB as 1,536 hex digits
        "scale": _scale_args(scale),
        "opacity": float(opacity),
        "smooth": bool(smooth),
        "marker": None if marker is None else [int(marker[0]), int(marker[1])],
        "radius": render.marker_radius(image_size),
    }
    args["signature"] = _signature(args)
    return args


def _scale_args(scale: render.ColourScale) -> dict:
    low, high = scale.bar_range()
    return {"low": low, "high": high, "log": scale.log, "title": scale.title, "ticks": scale.tick_marks()}


def _signature(args: dict) -> str:
    """A short digest of everything drawn: the frontend publishes it once the picture is painted."""
    digest = hashlib.blake2b(digest_size=8)
    for name in ("values", "hidden", "smooth", "opacity", "marker", "scale", "colours"):
        digest.update(json.dumps(args[name]).encode())
    digest.update(args["photo"].encode())
    return digest.hexdigest()


def influence_chart(args: dict, key: str) -> None:
    """Show one map drawn from `chart_args(...)` at the column's width (it reports nothing back)."""
    _component(data=args, key=key)
