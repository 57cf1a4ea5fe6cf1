"""Geometry between the image (H x W pixels) and the model's feature grid (h x w cells).

Cell (y, x) covers image rows [y * H / h, (y + 1) * H / h): the same convention as bilinear resizing with
align_corners=False, which is how the model upsamples its logits.
"""

from __future__ import annotations

import cv2
import numpy as np

from ccnet.analysis import cell_centre_labels

Size = tuple[int, int]  # (height, width)
Box = tuple[int, int, int, int]  # (left, top, right, bottom) image pixels, inclusive


def pixel_to_cell(px: float, py: float, image_size: Size, grid_size: Size) -> tuple[int, int]:
    """Image pixel (px, py) -> feature cell (y, x), clamped inside the grid."""
    height, width = image_size
    rows, cols = grid_size
    y = int(np.clip(np.floor(py * rows / height), 0, rows - 1))
    x = int(np.clip(np.floor(px * cols / width), 0, cols - 1))
    return y, x


def cell_centre(y: int, x: int, image_size: Size, grid_size: Size) -> tuple[float, float]:
    """Feature cell (y, x) -> the image pixel (px, py) at its centre."""
    height, width = image_size
    rows, cols = grid_size
    return (x + 0.5) * width / cols, (y + 0.5) * height / rows


def sample_at_cells(values: np.ndarray, grid_size: Size) -> np.ndarray:
    """Per-pixel map (H, W) -> (h, w) by taking the pixel under each cell's centre (classes never blend)."""
    return cell_centre_labels(values, grid_size)  # (h, w): the library's rule, as the lift uses it


def display_to_image(
    click_x: float, click_y: float, shown_size: tuple[float, float], image_size: Size
) -> tuple[int, int]:
    """A click on the shown image (shown_size = (width, height) in CSS pixels) -> image pixel (px, py)."""
    shown_width, shown_height = shown_size
    height, width = image_size
    px = int(np.clip(click_x * width / max(shown_width, 1), 0, width - 1))
    py = int(np.clip(click_y * height / max(shown_height, 1), 0, height - 1))
    return px, py


def display_box_to_image(
    corner: tuple[float, float], other: tuple[float, float], shown_size: tuple[float, float], image_size: Size
) -> Box:
    """A drag on the shown image -> the box between its two corners in image pixels, clipped to the image.

    The corners may come in any order (a drag up and to the left) and the second may lie outside the shown
    image (the mouse released past its edge): each is clipped as a click is.
    """
    ax, ay = display_to_image(*corner, shown_size, image_size)
    bx, by = display_to_image(*other, shown_size, image_size)
    return min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)


def box_cells(box: Box, image_size: Size, grid_size: Size) -> np.ndarray:
    """(h, w) bool: the feature cells a pixel box touches, through the click's pixel -> cell mapping.

    Corners in any order and outside the image are clamped into the grid, so the result is never empty:
    a zero-area box (a click) is the one cell under it.
    """
    left, top, right, bottom = box
    y0, x0 = pixel_to_cell(min(left, right), min(top, bottom), image_size, grid_size)
    y1, x1 = pixel_to_cell(max(left, right), max(top, bottom), image_size, grid_size)
    cells = np.zeros(grid_size, dtype=bool)  # (h, w)
    cells[y0 : y1 + 1, x0 : x1 + 1] = True
    return cells


def segment_at(classes: np.ndarray, cell: tuple[int, int]) -> np.ndarray:
    """(h, w) bool: the 4-connected cells of ``classes`` (h, w) that share the class of ``cell`` and touch it."""
    same = (classes == classes[cell]).astype(np.uint8)  # (h, w)
    _, components = cv2.connectedComponents(same, connectivity=4)  # (h, w) component id per cell
    return components == components[cell]
