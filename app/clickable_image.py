"""The image a person clicks (or drags a box on): a small Streamlit component of our own.

Its frontend (`app/frontend/clickable_image/`, plain HTML and JavaScript, no build step) shows the picture at
the column's width and reports a click as {x, y, width, height, unix_time} or, in drag mode, a drag as
{x1, y1, x2, y2, width, height, unix_time}, in shown pixels (fractional, where streamlit-image-coordinates
sent whole ones; `app.grid` maps either to image pixels). It replaces that component, which ran its script
before the image element existed and measured the frame's height only once, when the picture loaded: once,
under load, a session kept a blank space where the image should be (docs/APP.md).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import streamlit.components.v1 as components
from PIL import Image

FRONTEND = Path(__file__).parent / "frontend" / "clickable_image"
_component = components.declare_component("clickable_image", path=str(FRONTEND))
# The iframe's title in the page (Streamlit names a component "<module>.<name>"), for browser tests.
FRAME_TITLE = f"{__name__}.clickable_image"


def jpeg_data_url(rgb: np.ndarray, quality: int = 90) -> str:
    """(H, W, 3) uint8 -> a data: URL of the JPEG (a few tens of kB for 360x480, sent with the page)."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def clickable_image(
    rgb: np.ndarray, key: str, click_and_drag: bool = False, on_change: Callable[[], None] | None = None
) -> dict | None:
    """Show `rgb` (H, W, 3) uint8 at the column's width; the last click or drag (see the module doc) or None.

    `on_change` runs before the rerun a click causes, with the value already in st.session_state[key].
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"clickable_image wants an (H, W, 3) uint8 image, got {rgb.dtype} {rgb.shape}")
    return _component(
        src=jpeg_data_url(rgb),
        click_and_drag=click_and_drag,
        cursor="crosshair",
        key=key,
        default=None,
        on_change=on_change,
    )
