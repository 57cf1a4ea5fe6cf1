"""The view as a URL: models, loop-count mode, display options and the clicked pixel in the query string.

`restore_from_url` runs once per session before any widget is drawn and seeds the widgets' session state from
`st.query_params`; `write_to_url` mirrors the current state back after each run, so the address bar always
holds a link that reopens this view (exactly, for an image of the examples folder; an uploaded image
cannot travel in a URL, so its link restores the settings, the click position and the box only).
"""

from __future__ import annotations

import streamlit as st

from app.controls import (
    CHOSEN,
    CHOSEN_COLUMNS,
    DIRECTIONS,
    FRAME_SCALES,
    HEADS,
    LAYOUTS,
    PROPAGATION,
    QUERIES,
    SCALE_MODES,
    TRAINED,
    UNROLLED,
    WITH_R0_KEY,
)
from app.models import LOOP_COUNTS
from app.render import COLORMAPS

# widget key -> the values it may take (None: checked where the widget's options are known)
CHOICES: dict[str, tuple[str, ...] | None] = {
    "source": ("Upload", "Examples folder"),
    "example": None,
    "comparison": (UNROLLED, TRAINED, HEADS, CHOSEN),
    "model": None,
    # "Any models side by side": each column's model (checked against the catalogue where the column is drawn)
    **{f"chosen-model-{index}": None for index in range(CHOSEN_COLUMNS)},
    # "Separately trained models per R" and the heads: which model for each R, where the folder has several
    **{f"{family}-{r}": None for family in ("trained", "heads") for r in LOOP_COUNTS},
    "propagation": tuple(PROPAGATION),
    "direction": tuple(DIRECTIONS),
    "query": tuple(QUERIES),
    "layout": tuple(LAYOUTS),
    "colormap": tuple(COLORMAPS),
    "scale_mode": tuple(SCALE_MODES),
}
FLAGS = ("per_loop", "smooth", "shared_scale", "hide_cross", WITH_R0_KEY)
# widget key -> the whole numbers it may take: each chosen column's loop count
NUMBERS: dict[str, tuple[int, ...]] = {f"chosen-r-{index}": tuple(LOOP_COUNTS) for index in range(CHOSEN_COLUMNS)}
URL_POINT_KEY = "url_point"  # session state: (px, py) from the link, until the first image takes it
URL_BOX_KEY = "url_box"  # session state: (left, top, right, bottom) from the link, until the first image takes it
_RESTORED_KEY = "_restored_from_url"


def _seed_choices(choices: dict[str, tuple[str, ...] | None], restored_key: str) -> bool:
    """Seed the widgets' state from the query string once per session; False when this session already did."""
    if st.session_state.get(restored_key):
        return False
    st.session_state[restored_key] = True
    for key, allowed in choices.items():
        value = st.query_params.get(key)
        if value is not None and (allowed is None or value in allowed):
            st.session_state[key] = value
    return True


def restore_from_url() -> None:
    """Seed widget state from the query string, once per session; values outside a widget's options are dropped."""
    if not _seed_choices(CHOICES, _RESTORED_KEY):
        return
    params = st.query_params
    for key in FLAGS:
        if params.get(key) in ("0", "1"):
            st.session_state[key] = params[key] == "1"
    for key, allowed in NUMBERS.items():
        value = _pixel(params.get(key))
        if value in allowed:
            st.session_state[key] = value
    point = _pixel(params.get("px")), _pixel(params.get("py"))
    if None not in point:
        st.session_state[URL_POINT_KEY] = point
    box = _box(params.get("box"))
    if box is not None:
        st.session_state[URL_BOX_KEY] = box


def _box(text: str | None) -> tuple[int, int, int, int] | None:
    """"left,top,right,bottom" (non-negative pixels) -> the box; None for anything else (an edited link)."""
    parts = (text or "").split(",")
    if len(parts) != 4 or not all(part.isdigit() for part in parts):
        return None
    left, top, right, bottom = (int(part) for part in parts)
    return min(left, right), min(top, bottom), max(left, right), max(top, bottom)


def _pixel(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() else None


def keep_if_valid(key: str, options: list[str]) -> None:
    """Drop a restored value that is not among the widget's options (a stale or edited link)."""
    if key in st.session_state and st.session_state[key] not in options:
        del st.session_state[key]


def write_to_url(point: tuple[int, int] | None, box: tuple[int, int, int, int] | None = None) -> None:
    """Mirror the current widget state, click and (with the box query) the dragged box into the query string."""
    wanted = {key: st.session_state[key] for key in CHOICES if isinstance(st.session_state.get(key), str)}
    wanted |= {key: "1" if st.session_state[key] else "0" for key in FLAGS if key in st.session_state}
    if st.session_state.get("comparison") == CHOSEN:  # the columns' loop counts mean something only there
        wanted |= {key: str(st.session_state[key]) for key in NUMBERS if isinstance(st.session_state.get(key), int)}
    else:
        wanted = {key: value for key, value in wanted.items() if not key.startswith("chosen-")}
    if point is not None:
        wanted |= {"px": str(point[0]), "py": str(point[1])}
    if box is not None:
        wanted["box"] = ",".join(str(int(v)) for v in box)
    if dict(st.query_params) != wanted:
        st.query_params.from_dict(wanted)


# The video page's link: its own widgets and the clicked (frame, px, py).
VIDEO_CHOICES: dict[str, tuple[str, ...] | None] = {
    "video_model": None,
    "video_source": ("Examples folder", "Upload frames", "Video file"),  # a video file itself cannot travel
    "video_example": None,
    "video_mode": tuple(PROPAGATION.values()),
    "video_colormap": tuple(COLORMAPS),
    "video_scale": FRAME_SCALES,
}
VIDEO_URL_POINT_KEY = "video_url_point"  # session state: (frame, px, py) from the link, until a clip takes it
_VIDEO_RESTORED_KEY = "_video_restored_from_url"


def restore_video_from_url() -> None:
    """As `restore_from_url`, for the video page (once per session)."""
    if not _seed_choices(VIDEO_CHOICES, _VIDEO_RESTORED_KEY):
        return
    params = st.query_params
    point = _pixel(params.get("frame")), _pixel(params.get("px")), _pixel(params.get("py"))
    if None not in point:
        st.session_state[VIDEO_URL_POINT_KEY] = point


def write_video_to_url(point: tuple[int, int, int]) -> None:
    """Mirror the video page's widgets and its clicked (frame, px, py) into the query string."""
    wanted = {key: st.session_state[key] for key in VIDEO_CHOICES if isinstance(st.session_state.get(key), str)}
    wanted |= {"frame": str(point[0]), "px": str(point[1]), "py": str(point[2])}
    if dict(st.query_params) != wanted:
        st.query_params.from_dict(wanted)
