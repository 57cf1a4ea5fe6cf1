"""Per image: who attends to whom (class-to-class attention), and how query-specific the maps are.

The maths is the library's (`class_attention_matrix`, `query_independence`, `influence_maps`); this module
only chooses what to compute for the shown columns and draws it. Clicking a row of a matrix remembers its
class (session state) so that the exploration can highlight that class's pixels on the image.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import streamlit as st
import torch

from ccnet.analysis import class_attention_matrix, query_independence
from ccnet.propagation import final_influence_maps

QUERY_CELLS = 32  # cells sampled (fixed seed) for the query-independence figure
NO_IGNORE = -1  # the predicted classes have no ignored cells
HIGHLIGHT_KEY = "highlight_class"  # session state: {"digest", "column", "class_id", "name"} of the clicked row
GENERATION_KEY = "matrix_generation"  # part of the charts' keys: bumped when the highlight is cleared


@dataclass(frozen=True)
class ImageAttention:
    title: str
    classes: list[int]  # the class ids present, in row/column order
    shares: np.ndarray  # (k, k): row i = where class-i cells draw their influence from, by class
    lift: np.ndarray  # (k, k): shares over class j's share of the image (1 = blind to class)
    query_similarity: float  # mean cosine similarity of sampled cells' maps (1 = the same map for all)


def image_attention(title: str, attentions: list[torch.Tensor], cell_classes: np.ndarray, num_classes: int):
    """The class matrix after all the column's loops, restricted to the classes present, and the lift."""
    matrix = class_attention_matrix(attentions, torch.tensor(cell_classes), num_classes, NO_IGNORE)[-1]  # (K, K)
    present = sorted(int(c) for c in np.unique(cell_classes))
    shares = matrix[present][:, present].numpy()  # (k, k)
    image_share = np.array([(cell_classes == c).mean() for c in present])  # (k,)
    return ImageAttention(title, present, shares, shares / image_share[None, :], sampled_similarity(attentions))


def sampled_similarity(attentions: list[torch.Tensor], count: int = QUERY_CELLS, seed: int = 0) -> float:
    h, w = attentions[0].shape[:2]
    rng = np.random.default_rng(seed)
    chosen = rng.choice(h * w, size=min(count, h * w), replace=False)
    if len(chosen) < 2:
        return float("nan")
    maps = final_influence_maps(attentions, [(int(i) // w, int(i) % w) for i in chosen])  # (N, h, w)
    return query_independence(maps)


def matrix_figure(summary: ImageAttention, class_names: list[str], as_lift: bool) -> go.Figure:
    names = [class_names[c] for c in summary.classes]
    title = f"{summary.title}: query similarity {summary.query_similarity:.2f}"
    return class_matrix_figure(summary.shares, summary.lift, names, as_lift, title)


LOWEST_LIFT = 2.0**-10  # a share of exactly 0 (a cross with no class-j cell at R = 1) has no log: drawn as this


def class_matrix_figure(shares, lift, names: list[str], as_lift: bool, title: str) -> go.Figure:
    """A class-to-class heat map (rows: pixels of class i; columns: drawing from class j), shares or lift.

    Lift is coloured by log2 around 0 (white = 1x, blind to class) so that 2x and 0.5x look equally strong.
    NaN (a class with no cells) is left blank. Used per image (explorer) and per dataset (the atlas page).
    """
    shares, lift = np.asarray(shares, dtype=float), np.asarray(lift, dtype=float)  # (k, k) each
    values = np.log2(np.maximum(lift, LOWEST_LIFT)) if as_lift else 100 * shares  # (k, k); NaN stays NaN
    text = [[_cell_text(v, s, as_lift) for v, s in zip(lr, sr, strict=True)]
            for lr, sr in zip(lift, shares, strict=True)]  # fmt: skip
    colour = {"colorscale": "RdBu_r", "zmid": 0.0} if as_lift else {"colorscale": "Viridis"}
    heat = go.Heatmap(
        z=values, x=names, y=names, text=text, texttemplate="%{text}", hoverinfo="text", **colour,
        colorbar={"title": "log2 lift" if as_lift else "% of influence"},
    )  # fmt: skip
    figure = go.Figure(heat)
    figure.update_layout(
        title=title,
        xaxis_title="draws from class j", yaxis_title="pixels of class i", yaxis_autorange="reversed",
        height=120 + 28 * len(names), margin={"l": 10, "r": 10, "t": 40, "b": 10},
    )  # fmt: skip
    return figure


def with_clickable_cells(figure: go.Figure, names: list[str]) -> go.Figure:
    """Add an invisible marker on every cell of a class matrix, so that a click selects a point.

    Plotly reports no selection for a click on a heat map (plotly.js cannot select heat map cells;
    streamlit/streamlit#8760), but it does for scatter markers: point i * k + j sits on row i, column j,
    and its y is the row's class name. It carries the cell's text, as its hover label covers the heat map's.
    """
    heat = figure.data[0]
    texts = [text for row in heat.text for text in row]  # (k * k,) row by row
    figure.add_trace(
        go.Scatter(
            x=[name for _ in names for name in names], y=[name for name in names for _ in names], text=texts,
            mode="markers", marker={"size": 22, "symbol": "square", "opacity": 0.0}, hoverinfo="text",
            showlegend=False,
        )
    )  # fmt: skip
    figure.update_layout(hoverdistance=-1)  # no cut-off: a click anywhere in a cell finds its marker
    return figure


def _cell_text(lift: float, share: float, as_lift: bool) -> str:
    value = lift if as_lift else share
    if not np.isfinite(value):
        return "–"
    return f"{value:.2f}x" if as_lift else f"{100 * value:.1f}%"


def show_image_attention(columns: list[tuple[ImageAttention, list[str]]], digest: str) -> None:
    """An expander with one heat map per shown column: (its summary, the model's class names); a click on a
    row highlights that class on the image of `digest`."""
    with st.expander("Who attends to whom in this image (by predicted class)"):
        st.caption(
            "Row i: where the pixels predicted as class i draw their influence from, by class, after the column's "
            "loops. Lift divides by class j's share of the image: 1x (white) is what a class-blind map gives. "
            "Query similarity: mean cosine similarity between the maps of 32 sampled pixels; near 1 means "
            "every pixel sees the same map (GCNet's finding for non-local blocks). Click a row to highlight "
            "its class's pixels on the image."
        )
        as_lift = st.toggle("Show as lift over a class-blind map", value=True, key="matrix_as_lift")
        generation = st.session_state.get(GENERATION_KEY, 0)
        for summary, names in columns:
            key = f"matrix-{summary.title}-{generation}"
            st.plotly_chart(
                with_clickable_cells(matrix_figure(summary, names, as_lift), [names[c] for c in summary.classes]),
                key=key,
                on_select=functools.partial(_remember_row, key, digest, summary, names),
                selection_mode="points",
            )


@dataclass(frozen=True)
class Highlight:
    """The class whose row was clicked, and the column whose prediction says which pixels it covers."""

    column: str  # the column's title
    class_id: int
    name: str


def row_class(points: list[dict], classes: list[int], names: list[str]) -> int | None:
    """The class id of the row a click selected (points: the chart's selection; a point's y names its row).

    classes: the matrix's class ids in row order; names: the model's class names, indexed by class id.
    """
    rows = [names[c] for c in classes]
    for point in points:
        if point.get("y") in rows:
            return classes[rows.index(point["y"])]
    return None


def _remember_row(chart_key: str, digest: str, summary: ImageAttention, names: list[str]) -> None:
    """Selection callback (runs before the rerun, so the image drawn after it is already highlighted)."""
    event = st.session_state.get(chart_key) or {}
    points = (event.get("selection") or {}).get("points") or []
    class_id = row_class(points, summary.classes, names)
    if class_id is None:  # deselected (a double click): nothing highlighted
        st.session_state.pop(HIGHLIGHT_KEY, None)
        return
    st.session_state[HIGHLIGHT_KEY] = {
        "digest": digest, "column": summary.title, "class_id": class_id, "name": names[class_id],
    }  # fmt: skip


def current_highlight(digest: str) -> Highlight | None:
    """The highlighted class for this image, or None (none chosen, or chosen on another image)."""
    chosen = st.session_state.get(HIGHLIGHT_KEY)
    if not chosen or chosen.get("digest") != digest:
        return None
    return Highlight(chosen["column"], int(chosen["class_id"]), str(chosen["name"]))


def clear_highlight() -> None:
    """Button callback. The charts get new keys too: their old selection would make the same row's next
    click no change, and no callback."""
    st.session_state.pop(HIGHLIGHT_KEY, None)
    st.session_state[GENERATION_KEY] = st.session_state.get(GENERATION_KEY, 0) + 1
