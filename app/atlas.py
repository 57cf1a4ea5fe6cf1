"""The attention atlas page: who attends to whom, by class, over a whole val split, per model and loop count.

Source of every number: the `atlas` of each attention model in `results/<dataset>/summary.json` (written by
`python -m training.report`, which measures it in its evaluation pass; path set by `CCNET_RESULTS`, read
and checked as the ablation page does), and the same entry's `lift_per_class` and `lift_at_recurrence`.
Nothing is computed from a model here: the matrices are the report's, this module only picks and draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from app.ablation import RESULTS_ENV, SummaryError, model_label, read_summary, results_path
from app.image_summary import class_matrix_figure

LOOPS = ("1", "2", "3")  # the loop counts the report measures the atlas at
BLIND = 1.0  # a lift of 1: attention blind to class
HOW_TO_MAKE_THE_ATLAS = (
    "`python -m training.report` makes it (it measures the atlas of every bundled model with attention on the "
    f"val split), or point `{RESULTS_ENV}` at a `summary.json` that has it."
)
SHARES, LIFT = "shares", "lift"


@dataclass
class Atlas:
    """What the page can draw: attention models whose atlas passed the check, or why there is none."""

    source: str
    generated: str = ""
    classes: list[str] = field(default_factory=list)
    models: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # entries left out, and why
    missing: str = ""  # non-empty: nothing to draw, and how to make it


# ---------------------------------------------------------------------------------------------- schema


def _entry_ok(value, upper: float) -> bool:
    """A matrix entry: a number in [0, upper], or None (JSON's stand-in for NaN: a class with no cells)."""
    if value is None:
        return True
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return number and math.isfinite(value) and 0.0 <= value <= upper


def _matrix_ok(value, size: int, upper: float) -> bool:
    return (
        isinstance(value, list)
        and len(value) == size
        and all(isinstance(row, list) and len(row) == size and all(_entry_ok(v, upper) for v in row) for row in value)
    )


def atlas_problem(atlas, size: int) -> str | None:
    """Why an `atlas` value cannot be drawn for `size` classes; None when it can."""
    if not isinstance(atlas, dict) or not atlas:
        return "no atlas"
    for loops, entry in atlas.items():
        if loops not in LOOPS or not isinstance(entry, dict):
            return f"atlas key {loops!r} is not one of R = {', '.join(LOOPS)}"
        # Shares are fractions (rounding may pass 1 by a hair); a lift is any ratio >= 0.
        if not _matrix_ok(entry.get(SHARES), size, 1.0 + 1e-6) or not _matrix_ok(entry.get(LIFT), size, math.inf):
            return f"atlas at R = {loops} is not two {size}x{size} matrices (shares, lift)"
    return None


def _lift_per_class_ok(value) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and _entry_ok(v, math.inf) for k, v in value.items())


# ---------------------------------------------------------------------------------------------- loading


def load_atlas(path: Path | None = None) -> Atlas:
    """The summary's attention models that carry a usable atlas; `missing` says why when there is none."""
    path = results_path() if path is None else path
    try:
        summary = read_summary(path)
    except SummaryError as error:
        return Atlas(source=f"`{path}`", missing=f"{error} The atlas needs it: {HOW_TO_MAKE_THE_ATLAS}")
    if summary is None:
        return Atlas(source=f"`{path}`", missing=f"`{path}` is not there yet. {HOW_TO_MAKE_THE_ATLAS}")
    atlas = Atlas(source=summary.source, generated=summary.generated, classes=summary.classes)
    atlas.problems = [p for p in summary.problems if p.startswith(("`models", "`classes"))]
    for model in sorted((m for m in summary.models if m["trained_recurrence"] > 0), key=_order):
        _add_model(atlas, model)
    if not atlas.models:
        atlas.missing = (
            f"No attention atlas in `{path}` (a summary from before the atlas was measured, or one without a "
            f"model with attention). {HOW_TO_MAKE_THE_ATLAS}"
        )
    return atlas


def _add_model(atlas: Atlas, model: dict) -> None:
    if "atlas" not in model or model["atlas"] in ({}, None):
        return  # an older summary: the page's message covers it when no model has one
    problem = atlas_problem(model["atlas"], len(atlas.classes))
    if problem is not None:
        atlas.problems.append(f"`{model['name']}` left out: {problem} (for {len(atlas.classes)} classes).")
        return
    if "lift_per_class" in model and not _lift_per_class_ok(model["lift_per_class"]):
        atlas.problems.append(f"`{model['name']}`: invalid lift_per_class ignored.")
        model = {key: value for key, value in model.items() if key != "lift_per_class"}
    atlas.models.append(model)


def _order(model: dict) -> tuple:
    return (model["ccl"], model["trained_recurrence"], model["name"])


# ---------------------------------------------------------------------------------------------- figures


def _array(matrix: list[list[float | None]]) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in matrix], dtype=float)  # (K, K)


def present_classes(shares: np.ndarray) -> list[int]:
    """Classes with cells in the split: the others have a null row, and no one can draw from them."""
    return [i for i, row in enumerate(shares) if np.isfinite(row).any()]


def atlas_figure(model: dict, loops: str, classes: list[str], as_lift: bool) -> go.Figure:
    """The model's class-to-class matrix over the split at R = `loops`, restricted to the classes present."""
    entry = model["atlas"][loops]
    shares, lift = _array(entry[SHARES]), _array(entry[LIFT])  # (K, K) each
    present = present_classes(shares)
    trained = " (as trained)" if loops == str(model["trained_recurrence"]) else ""
    title = f"{model['name']} run at R = {loops}{trained}"
    return class_matrix_figure(
        shares[np.ix_(present, present)], lift[np.ix_(present, present)], [classes[i] for i in present], as_lift, title
    )


def _blind_line(figure: go.Figure) -> go.Figure:
    figure.add_hline(y=BLIND, line_dash="dash", line_color="grey", annotation_text="1.0 = blind to class")
    return figure


def class_lift_figure(model: dict, classes: list[str]) -> go.Figure | None:
    """Same-class lift per class (the report's sampled cells, at the model's trained R); None without it."""
    per_class = model.get("lift_per_class") or {}
    names = [c for c in classes if per_class.get(c) is not None] or [c for c, v in per_class.items() if v is not None]
    if not names:
        return None
    bars = go.Bar(
        x=names, y=[per_class[c] for c in names], text=[f"{per_class[c]:.2f}" for c in names],
        textposition="outside", hovertemplate="%{x}: lift %{y:.2f}<extra></extra>",
        name=f"run at trained R = {model['trained_recurrence']}",
    )  # fmt: skip
    layout = dict(
        title=dict(text=f"Lift per class at trained R = {model['trained_recurrence']}", font=dict(size=14)),
        yaxis=dict(title="same-class lift", rangemode="tozero"), height=360, margin=dict(t=40, b=10),
    )  # fmt: skip
    return _blind_line(go.Figure(data=[bars], layout=layout))


def recurrence_lift_figure(model: dict) -> go.Figure | None:
    """Class-balanced same-class lift of the model's weights run at R = 1, 2, 3; None without it."""
    at = model.get("lift_at_recurrence") or {}
    points = sorted((int(r), v) for r, v in at.items() if r.isdigit() and v is not None)
    if not points:
        return None
    line = go.Scatter(
        x=[r for r, _ in points], y=[v for _, v in points], mode="lines+markers", name="class-balanced lift",
        hovertemplate="run at R = %{x}: lift %{y:.2f}<extra></extra>",
    )  # fmt: skip
    layout = dict(
        title=dict(text="Lift (mean over classes) per R", font=dict(size=14)),
        xaxis=dict(title="loop count at inference", dtick=1),
        yaxis=dict(title="same-class lift", rangemode="tozero"), height=360, margin=dict(t=40, b=10),
    )  # fmt: skip
    return _blind_line(go.Figure(data=[line], layout=layout))


# ------------------------------------------------------------------------------------------------ page


def atlas_page() -> None:
    st.title("Attention atlas")
    atlas = load_atlas()
    generated = f", generated {atlas.generated}" if atlas.generated else ""
    st.caption(f"Every number on this page comes from {atlas.source}{generated}; nothing is computed here.")
    for problem in atlas.problems:
        st.warning(problem)
    if atlas.missing:
        st.info(atlas.missing)
        return
    model, loops, as_lift = _controls(atlas)
    st.plotly_chart(atlas_figure(model, loops, atlas.classes, as_lift), key="atlas-matrix")
    st.caption(
        "Row i: where the influence of every class-i cell of the split goes after R loops, by class (ground truth "
        "at the cell centres, void left out; each row sums to 100 %). Lift divides by class j's share of the "
        "split's cells: 1x (white) is what attention blind to class gives, red draws more from that class, blue "
        "less. Classes without cells in the split are left out."
    )
    _lift_section(model, atlas.classes)


def _controls(atlas: Atlas) -> tuple[dict, str, bool]:
    by_name = {m["name"]: m for m in atlas.models}
    name = st.selectbox(
        "Model", list(by_name), format_func=lambda n: f"{n} (trained {model_label(by_name[n])})", key="atlas_model"
    )
    model = by_name[name]
    loops_available = [r for r in LOOPS if r in model["atlas"]]
    default = str(model["trained_recurrence"])
    loops = st.radio(
        "Loop count R at inference", loops_available, horizontal=True, key="atlas_loops",
        index=loops_available.index(default) if default in loops_available else 0,
        format_func=lambda r: f"R = {r}" + (" (as trained)" if r == default else ""),
    )  # fmt: skip
    shown = st.radio(
        "Show", (LIFT, SHARES), horizontal=True, key="atlas_view",
        format_func=lambda v: "lift over a class-blind map" if v == LIFT else "shares of influence",
    )  # fmt: skip
    return model, loops, shown == LIFT


def _lift_section(model: dict, classes: list[str]) -> None:
    st.subheader("Same-class lift")
    figures = [class_lift_figure(model, classes), recurrence_lift_figure(model)]
    if all(f is None for f in figures):
        st.info(f"No same-class lift for `{model['name']}` in this summary: {HOW_TO_MAKE_THE_ATLAS}")
        return
    for column, figure, key in zip(st.columns(2), figures, ("atlas-lift-class", "atlas-lift-r"), strict=True):
        if figure is not None:
            column.plotly_chart(figure, key=key)
    st.caption(
        "The report's sampled same-class lift (the ablation page's measure): for 16 sampled cells per val frame, "
        "the share of a cell's influence on its own class over that class's share of the frame, off the cell's "
        "row and column from R = 2 on; per class at the trained R (left), averaged over classes at each R "
        "(right). 1.0 (dashed) = blind to class. The heat map's diagonal is the same question asked of every "
        "cell, cross included, against the class's share of the whole split."
    )
