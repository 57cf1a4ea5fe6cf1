"""Sidebar controls: which models fill the columns, how maps are propagated and drawn."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from app.models import LOOP_COUNTS, Catalogue, CatalogueEntry
from app.render import COLORMAPS

UNROLLED = "One model, unrolled R = 1, 2, 3"
TRAINED = "Separately trained models per R"  # end to end only
HEADS = "Heads per R on one frozen backbone"  # the many-seeds study's heads, a family of their own
CHOSEN = "Any models side by side"
CHOSEN_COLUMNS = 3
WITH_R0_KEY = "with_r0"  # checkbox: the per-R modes also show the family's R = 0 model (no attention)
_WITH_R0_CHOICE = "_with_r0_choice"  # the box's last value, kept while other modes leave it undrawn
# the video page's colour scales: each frame its own (the default: the other frames stay visible), or one for all
FRAME_SCALES = ("each frame its own", "one for all frames")
SCALE_MODES = {
    "Linear (0 to the largest value)": "linear",
    "Clamp at a percentile": "percentile",
    "Clamp at a value": "value",
    "Log scale": "log",
}
PROPAGATION = {"Attention only (composition)": "attention", "Rollout (with the residual path)": "rollout"}
SIDE_BY_SIDE, FOCUS = "side_by_side", "focus"
LAYOUTS = {"Side by side": SIDE_BY_SIDE, "Focus: one large, the others small": FOCUS}
QUERIES = {
    "The clicked pixel": "pixel",
    "Its predicted-class segment": "predicted",
    "Its ground-truth segment (examples with labels)": "truth",
    "A box you drag on the image": "box",
}
DIRECTIONS = {
    "Where does this pixel read from?": "reads_from",
    "Which pixels read from this pixel?": "feeds",
}


@dataclass(frozen=True)
class ColumnSpec:
    """One column of the comparison: which model, at which loop count."""

    title: str
    entry: CatalogueEntry
    recurrence: int


@dataclass(frozen=True)
class ViewOptions:
    mode: str  # "attention" or "rollout", passed to influence_maps
    per_loop: bool  # also show each loop's own attention
    colormap: str
    heat_opacity: float
    seg_opacity: float
    smooth: bool  # bilinear instead of nearest upsampling of the feature-grid maps
    shared_scale: bool  # one colour scale for all columns instead of one per column
    scale_mode: str = "linear"  # one of SCALE_MODES' values
    percentile: float = 99.0  # clamp the colours at this percentile of the shown values
    clamp_percent: float = 1.0  # clamp the colours at this share of the total influence, in %
    hide_cross: bool = False  # leave the clicked pixel's own row and column uncoloured
    show_changes: bool = True  # where the predicted class changes between loop counts
    direction: str = "reads_from"  # or "feeds": the reverse view (a column of the composed attention)
    query: str = "pixel"  # or "predicted" / "truth" / "box": a region (class segment or dragged box), maps averaged
    layout: str = SIDE_BY_SIDE  # or FOCUS: one column large, the others as thumbnails


def choose_columns(catalogue: Catalogue) -> list[ColumnSpec] | None:
    """Comparison mode and models; None (with a message shown) when nothing can be compared."""
    unrollable = [e for e in catalogue.entries if e.recurrence > 0]
    if not unrollable:
        st.sidebar.warning("Every checkpoint here is a baseline without attention (R = 0): nothing to show.")
        return None
    default = catalogue.comparison_default()
    trained = catalogue.trained_per_loop_count(default)
    heads = catalogue.trained_per_loop_count(default, heads=True)
    # A family with at least two loop counts is a comparison; the missing ones are named (the queue trains them)
    have_trained, have_heads = _compares(trained), _compares(heads)
    modes = [UNROLLED, *([TRAINED] if have_trained else []), *([HEADS] if have_heads else []), CHOSEN]
    if st.session_state.get("comparison") not in modes:  # e.g. a link to a mode this folder cannot fill
        st.session_state.pop("comparison", None)
    comparison = st.sidebar.radio(
        "Compare",
        modes,
        key="comparison",
        help="Unrolled: one model run with its loop count overridden at inference. "
        "Trained: models trained end to end with R = 1, 2 and 3, each with the same recipe (and R = 0, without "
        "attention, as a segmentation under the image). "
        "Heads: attention heads trained with R = 1, 2 and 3 on one frozen backbone (the many-seeds study). "
        "Any: up to three models with the same classes, each at a loop count you choose.",
    )
    other_recipes = catalogue.other_recipes_per_loop_count(default)
    shown = {r: trained[r] + other_recipes[r] for r in LOOP_COUNTS}  # what the end-to-end columns can show
    _say_what_is_missing(trained, shown, heads, have_trained, comparison, default.dataset)
    if comparison == TRAINED:
        return _trained_columns(trained, "trained", other_recipes)
    if comparison == HEADS:
        return _trained_columns(heads, "heads")
    if comparison == CHOSEN:
        return _chosen_columns(catalogue, unrollable, default)
    names = [e.name for e in unrollable]
    if st.session_state.get("model") not in names:  # a stale or edited link: back to the default
        st.session_state["model"] = default.name
    name = st.sidebar.selectbox("Model", names, key="model", format_func=lambda n: catalogue.get(n).label)
    entry = catalogue.get(name)
    return [ColumnSpec(_unrolled_title(r, entry), entry, r) for r in LOOP_COUNTS]


def choose_baseline(catalogue: Catalogue, columns: list[ColumnSpec] | None) -> ColumnSpec | None:
    """In the per-R modes, the family's R = 0 model beside the R = 1, 2, 3 columns (asked for by a sidebar box,
    on by default): the same network without the criss-cross module, so only its segmentation can be shown."""
    if st.session_state.get("comparison") not in (TRAINED, HEADS) or not columns:
        return None
    entry = catalogue.baseline_for(columns[0].entry)
    if entry is None:
        return None
    if WITH_R0_KEY not in st.session_state:  # Streamlit drops an undrawn widget's state: restore the last choice
        st.session_state[WITH_R0_KEY] = st.session_state.get(_WITH_R0_CHOICE, True)  # on by default
    wanted = st.sidebar.checkbox(
        "Also show R = 0 (no attention)",
        key=WITH_R0_KEY,
        help=f"{entry.name}: the same network trained the same way without criss-cross attention. It has no "
        "attention to click, so its segmentation is shown under the image, and where R = 1 changes it.",
    )
    st.session_state[_WITH_R0_CHOICE] = wanted
    if not wanted:
        return None
    kind = "head" if entry.head_on is not None else "end to end"
    return ColumnSpec(f"R = 0: {entry.name} ({kind}, no attention)", entry, 0)


def _chosen_columns(catalogue: Catalogue, unrollable: list[CatalogueEntry], default) -> list[ColumnSpec]:
    """Up to three (model, R) pairs; models whose classes differ from the first column's are left out."""
    names = [e.name for e in unrollable]
    columns = []
    for index in range(CHOSEN_COLUMNS):
        allowed = names if not columns else [n for n in names if _same_classes(catalogue, n, columns[0].entry)]
        fallback = default.name if default.name in allowed else allowed[0]
        if st.session_state.get(f"chosen-model-{index}") not in allowed:
            st.session_state[f"chosen-model-{index}"] = fallback
        name = st.sidebar.selectbox(f"Column {index + 1}: model", allowed, key=f"chosen-model-{index}",
                                    format_func=lambda n: catalogue.get(n).label)  # fmt: skip
        entry = catalogue.get(name)
        if st.session_state.get(f"chosen-r-{index}") not in LOOP_COUNTS:  # first visit, or an edited link
            st.session_state[f"chosen-r-{index}"] = LOOP_COUNTS[min(index, len(LOOP_COUNTS) - 1)]
        loops = st.sidebar.selectbox(f"Column {index + 1}: R", LOOP_COUNTS, key=f"chosen-r-{index}")
        title = f"{entry.name} at R = {loops}"
        if any(c.title == title for c in columns):  # the same choice twice: titles name columns, keep them unique
            title += f" (column {index + 1})"
        columns.append(ColumnSpec(title, entry, loops))
    return columns


def _same_classes(catalogue: Catalogue, name: str, first: CatalogueEntry) -> bool:
    entry = catalogue.get(name)
    return entry.dataset == first.dataset and entry.num_classes == first.num_classes


def _unrolled_title(recurrence: int, entry: CatalogueEntry) -> str:
    return f"R = {recurrence}" + (" (as trained)" if recurrence == entry.recurrence else "")


def _say_what_is_missing(trained, shown, heads, have_trained: bool, comparison: str, dataset: str) -> None:
    """Sidebar captions: which R the family lacks (no per-R comparison), or which column the chosen mode leaves out
    (``shown``: the end-to-end columns' models, another recipe's included)."""
    missing = {name: ", ".join(f"R = {r}" for r in LOOP_COUNTS if not family[r])
               for name, family in (("family", trained), (TRAINED, shown), (HEADS, heads))}  # fmt: skip
    if not have_trained:
        st.sidebar.caption(f"Models trained end to end are missing for {missing['family']} of {dataset}, so "
                           "there is no per-R comparison of them yet (heads are not mixed in).")  # fmt: skip
    elif comparison == TRAINED and missing[TRAINED]:
        st.sidebar.caption(f"No model of {dataset} trained end to end with {missing[TRAINED]} is bundled yet (the "
                           "campaign queue trains the family), so that column is left out; heads are not mixed "
                           "in.")  # fmt: skip
    if comparison == HEADS and missing[HEADS]:
        st.sidebar.caption(f"No head with {missing[HEADS]} on this backbone is bundled, so that column is left out; "
                           "models trained end to end are not mixed in.")  # fmt: skip


def _compares(family: dict[int, list[CatalogueEntry]]) -> bool:
    """True when a family has models for at least two of the loop counts 1, 2, 3."""
    return sum(bool(family[r]) for r in LOOP_COUNTS) >= 2


def _trained_columns(
    trained: dict[int, list[CatalogueEntry]], key: str, other_recipes: dict[int, list[CatalogueEntry]] | None = None
) -> list[ColumnSpec]:
    """A column per R, each its model of that family (a choice where the family has several for one R, and where
    a model of another recipe has that R: the paper-recipe twin, its recipe then in the column's title)."""
    columns = []
    for r in LOOP_COUNTS:
        candidates = trained[r] + (other_recipes or {}).get(r, [])
        if not candidates:  # a family still in training: its other columns
            continue
        entry = candidates[0]
        if len(candidates) > 1:
            choices = [e.name for e in candidates]
            if f"{key}-{r}" in st.session_state and st.session_state[f"{key}-{r}"] not in choices:
                del st.session_state[f"{key}-{r}"]  # a stale or edited link
            name = st.sidebar.selectbox(f"Model for R = {r}", choices, key=f"{key}-{r}")
            entry = next(e for e in candidates if e.name == name)
        kind = "head" if entry.head_on is not None else "end to end"
        kind += f", {entry.recipe_words}" if entry.recipe_words else ""
        columns.append(ColumnSpec(f"R = {r}: {entry.name} ({kind})", entry, r))
    return columns


def view_options() -> ViewOptions:
    sidebar = st.sidebar
    mode = PROPAGATION[
        sidebar.radio(
            "Propagation",
            list(PROPAGATION),
            key="propagation",
            help="Rollout multiplies |gamma| A_r + I per loop, gamma being the "
            "model's learned residual scale; composition multiplies A_r alone.",
        )
    ]
    direction = DIRECTIONS[
        sidebar.radio(
            "Direction",
            list(DIRECTIONS),
            key="direction",
            help="Reverse view: instead of the clicked pixel's influence map (a row of the composed attention), "
            "how much of every pixel's reading comes from the clicked pixel (its column), normalised to sum 1. "
            "It composes the attention alone.",
        )
    ]
    query = QUERIES[
        sidebar.radio(
            "Query",
            list(QUERIES),
            key="query",
            help="A segment: the 4-connected cells of the clicked pixel's class (predicted, or ground truth where "
            "the image has labels). A box: the cells a box dragged on the image touches (a click: one cell). "
            "The maps average the influence maps of the region's cells.",
        )
    ]
    per_loop = sidebar.checkbox("Show each loop's own attention", key="per_loop")
    sidebar.subheader("Display")
    layout = LAYOUTS[
        sidebar.radio(
            "Layout",
            list(LAYOUTS),
            key="layout",
            help="Focus: one column's map large enough to read (a 45 x 60 grid in about 700 px), the other loop "
            "counts as thumbnails with a button that brings them into focus.",
        )
    ]
    colormap = sidebar.selectbox("Colour map", list(COLORMAPS), key="colormap")
    heat_opacity = sidebar.slider("Heatmap opacity", 0.0, 1.0, 0.65, 0.05, key="heat_opacity")
    seg_opacity = sidebar.slider("Segmentation opacity", 0.0, 1.0, 0.55, 0.05, key="seg_opacity")
    smooth = sidebar.checkbox(
        "Smooth maps (bilinear)", key="smooth", help="Off: each feature cell drawn as the block of pixels it covers."
    )
    shared_scale = sidebar.checkbox("Same colour scale in every column", key="shared_scale")
    scale_mode, percentile, clamp_percent = _scale_controls(sidebar)
    hide_cross = sidebar.checkbox(
        "Hide the clicked pixel's own row and column",
        key="hide_cross",
        help="The cross holds most of the influence and outshines the rest: hide it (and scale the colours "
        "to what is left) to see what reaches the pixel from off its row and column.",
    )
    show_changes = sidebar.checkbox("Show where the segmentation changes between R", value=True, key="show_changes")
    return ViewOptions(
        mode,
        per_loop,
        colormap,
        heat_opacity,
        seg_opacity,
        smooth,
        shared_scale,
        scale_mode,
        percentile,
        clamp_percent,
        hide_cross,
        show_changes,
        direction,
        query,
        layout,
    )


def _scale_controls(sidebar) -> tuple[str, float, float]:
    """Colour scale for maps dominated by the cross: (mode, percentile, clamp value in % of the total)."""
    scale_mode = SCALE_MODES[
        sidebar.selectbox(
            "Colour scale",
            list(SCALE_MODES),
            key="scale_mode",
            help="Clamping saturates the few large values (the cross) so that small ones get colours too; "
            "log scale spreads four decades over the colour map.",
        )
    ]
    percentile, clamp_percent = 99.0, 1.0
    if scale_mode == "percentile":
        percentile = sidebar.slider("Clamp at percentile", 50.0, 100.0, 99.0, 0.5, key="clamp_percentile")
    elif scale_mode == "value":
        clamp_percent = sidebar.number_input(
            "Clamp at (% of the total influence)",
            min_value=0.001,
            max_value=100.0,
            value=1.0,
            step=0.1,
            format="%.3f",
            key="clamp_value",
        )
    return scale_mode, float(percentile), float(clamp_percent)
