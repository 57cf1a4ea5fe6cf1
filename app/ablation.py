"""The ablation page: what R (and CCL) buys, from the files the training and benchmark scripts write.

Source of every number: `results/<dataset>/summary.json` (written by `python -m training.report`;
path set by `CCNET_RESULTS`), and, when that file is missing or broken, the checkpoint folder's
`index.json` and sidecars (mIoU and per-class IoU only). Nothing is typed in here. Seed spread (error
bars) comes from the summary's `seeds`, the same-class lift chart from each model's `lift_at_recurrence`.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

from app.settings import REPO_ROOT, Settings, SettingsError
from ccnet.checkpoint import read_index, recipe_name

RESULTS_ENV = "CCNET_RESULTS"  # read here (not in app/settings.py): only this page uses it
DEFAULT_RESULTS = REPO_ROOT / "results" / "camvid" / "summary.json"
HOW_TO_MAKE_THE_SUMMARY = (
    "Generate it from the training records and the cost benchmark with `python -m training.report`, "
    f"or point `{RESULTS_ENV}` at an existing `summary.json`."
)
OURS, PAPER = "#1f77b4", "#ff7f0e"


def results_path(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    text = environ.get(RESULTS_ENV, "").strip()
    return Path(text).expanduser() if text else DEFAULT_RESULTS


@dataclass
class Ablation:
    """What the page can chart; each list holds only entries that passed the schema check."""

    source: str  # where the numbers come from, shown on the page
    dataset: str = ""
    split: str = ""
    generated: str = ""
    classes: list[str] = field(default_factory=list)
    models: list[dict] = field(default_factory=list)
    seeds: list[dict] = field(default_factory=list)
    costs: list[dict] = field(default_factory=list)
    paper: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what was skipped, and why
    heads: list[dict] = field(default_factory=list)  # heads on the campaign's backbone: mean, 95% interval, seeds
    head_ordering: list[dict] = field(default_factory=list)  # the report's reading of the intervals
    family: dict = field(default_factory=dict)  # the end-to-end family (read_family): members, curves, spread

    @property
    def end_to_end(self) -> list[dict]:
        """The models trained end to end (the family), never the heads on a frozen backbone."""
        return [m for m in self.models if not is_head(m)]


def is_head(model: dict) -> bool:
    """A head trained on a frozen backbone (the summary's `trained`, or an older summary's head keys)."""
    return model.get("trained") == "head" or bool(model.get("head_kind") or model.get("head_only_on"))


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_share(value) -> bool:
    return _is_number(value) and 0.0 <= value <= 1.0


def _optional(check):
    return lambda value: value is None or check(value)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _share_map(value) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and _is_share(v) for k, v in value.items())


def _pair(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(_is_int(v) and v > 0 for v in value)


MODEL_FIELDS = {
    "name": lambda v: isinstance(v, str) and bool(v),
    "trained_recurrence": lambda v: _is_int(v) and v >= 0,
    "ccl": lambda v: isinstance(v, bool),
    "mIoU": _is_share,
    "per_class_iou": _share_map,
    "mIoU_at_recurrence": _share_map,
}
SEED_FIELDS = {"name": lambda v: isinstance(v, str), "seed": _is_int, "best_val_mIoU": _is_share}


def _lift_map(value) -> bool:
    """{"1": lift, ...}: a lift is a ratio (>= 0, 1 = blind to class); None where it could not be measured."""
    return isinstance(value, dict) and all(
        isinstance(k, str) and (v is None or (_is_number(v) and v >= 0)) for k, v in value.items()
    )


# Newer keys (same-class lift and gamma): an older summary lacks them, a bad value is dropped and named.
OPTIONAL_MODEL_FIELDS = {
    "gamma": _optional(_is_number),
    "lift": _optional(lambda v: _is_number(v) and v >= 0),
    "lift_at_recurrence": _lift_map,
}
OPTIONAL_SEED_FIELDS = {"gamma": _optional(_is_number), "lift": _optional(lambda v: _is_number(v) and v >= 0)}
COST_FIELDS = {
    "input": _pair,
    "recurrence": lambda v: _is_int(v) and v >= 1,
    "gflops_increment": _is_number,
    "memory_mb_increment": _is_number,
}
HEAD_FIELDS = {
    "kind": lambda v: isinstance(v, str),
    "n": lambda v: _is_int(v) and v >= 1,
    "mean": _is_share,
    "ci95": _optional(lambda v: _is_number(v) and v >= 0),
    "seeds": lambda v: isinstance(v, dict) and all(_is_share(x) for x in v.values()),
}
FAMILY_MEMBER_FIELDS = {
    "name": lambda v: isinstance(v, str) and bool(v),
    "recurrence": lambda v: _is_int(v) and v >= 0,
    "recipe": lambda v: isinstance(v, str),
    "mIoU": _is_share,
    "seeds": lambda v: isinstance(v, dict) and all(_is_share(x) for x in v.values()),
}
CURVE_FIELDS = {
    "run": lambda v: isinstance(v, str),
    "member": lambda v: isinstance(v, str),
    "seed": _is_int,
    "finished": lambda v: isinstance(v, bool),
    "points": lambda v: isinstance(v, list)
    and all(isinstance(p, dict) and _is_int(p.get("step")) and _optional(_is_share)(p.get("mIoU")) for p in v),
}
PAPER_FIELDS = {
    "setting": lambda v: isinstance(v, str),
    "recurrence": _optional(lambda v: _is_int(v) and v >= 0),
    "mIoU": _optional(_is_share),
    "gflops_increment": _optional(_is_number),
    "memory_mb_increment": _optional(_is_number),
}


def _valid_entries(
    document: dict, section: str, fields: dict, problems: list[str], optional: dict | None = None
) -> list[dict]:
    entries = document.get(section, [])
    if not isinstance(entries, list):
        problems.append(f"`{section}` is not a list: left out.")
        return []
    valid = []
    for position, entry in enumerate(entries):
        bad = [name for name, check in fields.items() if not isinstance(entry, dict) or not check(entry.get(name))]
        if bad:
            problems.append(f"`{section}[{position}]` left out: missing or invalid {', '.join(bad)}.")
            continue
        dropped = [name for name, check in (optional or {}).items() if name in entry and not check(entry[name])]
        if dropped:
            problems.append(f"`{section}[{position}]`: invalid {', '.join(dropped)} ignored.")
        valid.append({key: value for key, value in entry.items() if key not in dropped})
    return valid


def read_summary(path: Path) -> Ablation | None:
    """The report's summary, checked against its schema; None with the reason shown when unusable.

    Returns an Ablation whose `problems` lists entries skipped; None when the file is missing or is not
    a JSON object (the caller then falls back to checkpoint metadata).
    """
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SummaryError(f"`{path}` cannot be read as JSON ({error}). {HOW_TO_MAKE_THE_SUMMARY}") from error
    if not isinstance(document, dict):
        raise SummaryError(
            f"`{path}` holds a {type(document).__name__}, not the report's object. " + HOW_TO_MAKE_THE_SUMMARY
        )
    problems: list[str] = []
    classes = document.get("classes", [])
    if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        problems.append("`classes` is not a list of names: per-class IoU follows the models' own order.")
        classes = []
    return Ablation(
        source=f"`{path}` (generated by `{document.get('generated_by', '?')}`)",
        dataset=str(document.get("dataset", "")),
        split=str(document.get("split", "")),
        generated=str(document.get("generated", "")),
        classes=classes,
        models=_valid_entries(document, "models", MODEL_FIELDS, problems, OPTIONAL_MODEL_FIELDS),
        seeds=_valid_entries(document, "seeds", SEED_FIELDS, problems, OPTIONAL_SEED_FIELDS),
        costs=_valid_entries(document, "costs", COST_FIELDS, problems),
        paper=_valid_entries(document, "paper_table2", PAPER_FIELDS, problems),
        problems=problems,
        heads=_valid_entries(document, "heads", HEAD_FIELDS, problems),
        head_ordering=[p for p in document.get("head_ordering", []) if isinstance(p, dict) and "verdict" in p],
        family=read_family(document.get("family"), problems),
    )


def read_family(block, problems: list[str]) -> dict:
    """The summary's `family` with its members and curves checked; {} for a summary from before it."""
    if block is None:
        return {}
    if not isinstance(block, dict):
        problems.append("`family` is not an object: the end-to-end family is drawn from the models instead.")
        return {}
    std = block.get("seed_std")
    pair = block.get("r2_minus_r0")
    return {
        "members": _valid_entries(block, "members", FAMILY_MEMBER_FIELDS, problems),
        "curves": _valid_entries(block, "curves", CURVE_FIELDS, problems),
        "missing": [m for m in block.get("missing") or [] if isinstance(m, dict) and _is_int(m.get("recurrence"))],
        "seed_std": std if _is_number(std) and std >= 0 else None,
        "r2_minus_r0": pair if isinstance(pair, dict) and _is_number(pair.get("difference")) else None,
        "paper_r2_minus_r0": block.get("paper_r2_minus_r0") if _is_number(block.get("paper_r2_minus_r0")) else None,
    }


class SummaryError(ValueError):
    """A summary file that exists but cannot be used; the message says what to do."""


def from_checkpoints(folder: Path) -> Ablation:
    """Fallback: mIoU and per-class IoU from the checkpoint index and the sidecars' metrics."""
    ablation = Ablation(source=f"checkpoint metadata in `{folder}` (index.json and sidecars)")
    try:
        index = read_index(folder)
    except Exception as error:  # no folder or a broken index: the page says so and shows nothing more
        ablation.problems.append(f"The checkpoint index of `{folder}` cannot be read ({error}).")
        return ablation
    for item in index.get("models", []):
        metrics = _sidecar_metrics(folder, item)
        model = {
            "name": item.get("name"),
            "trained_recurrence": item.get("recurrence"),
            "ccl": bool(item.get("ccl", False)),
            "mIoU": metrics.get("mIoU", item.get("mIoU")),
            "per_class_iou": metrics.get("per_class_iou", {}),
            "mIoU_at_recurrence": {},
            "trained": "head" if item.get("head_on") else "end to end",
            "recipe": recipe_name(item.get("recurrence") or 0, item.get("gamma_init"), item.get("attention_weight")),
        }  # fmt: skip
        ablation.dataset = ablation.dataset or str(item.get("dataset", ""))
        bad = [name for name, check in MODEL_FIELDS.items() if not check(model.get(name))]
        if bad:
            ablation.problems.append(f"Checkpoint {item.get('name')!r} left out: no valid {', '.join(bad)}.")
            continue
        ablation.models.append(model)
        ablation.classes = ablation.classes or list(model["per_class_iou"])
    return ablation


def _sidecar_metrics(folder: Path, item: dict) -> dict:
    try:
        sidecar = json.loads((folder / str(item.get("sidecar", ""))).read_text())
        return sidecar.get("metrics", {}) if isinstance(sidecar, dict) else {}
    except (OSError, ValueError):
        return {}


# ---------------------------------------------------------------------------------------------- charts


def model_label(model: dict) -> str:
    """"R = 2 + CCL"; a head on the default's backbone says so, and a paper-recipe twin says whose losses."""
    loops = model["trained_recurrence"]
    label = "R = 0 (no attention)" if loops == 0 else f"R = {loops}"
    label += " + CCL" if model["ccl"] else ""
    kind = model.get("head_kind")
    if kind == "r2_paper" or model.get("recipe") == "paper":
        label += ", paper's losses"
    return label + (", head" if is_head(model) else "")


def member_label(member: dict) -> str:
    """A family member (or a missing one) as model_label says it: "R = 2, paper's losses"."""
    return model_label({"trained_recurrence": member["recurrence"], "ccl": False, "recipe": member["recipe"]})


def _model_order(model: dict) -> tuple:
    return (model["ccl"], model["trained_recurrence"], model["name"])


def seed_spread(ablation: Ablation) -> dict[str, dict]:
    """Per model name: mean, sample standard deviation (None for one seed) and n of the seeds' best val mIoU."""
    values: dict[str, list[float]] = {}
    for seed in ablation.seeds:
        values.setdefault(seed["name"], []).append(seed["best_val_mIoU"])
    return {
        name: {"mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else None, "n": len(v)}
        for name, v in values.items()
    }


def _bar_text(value: float, spread: dict | None) -> str:
    if spread is None:
        return f"{100 * value:.1f}"  # no seed records: the bundled checkpoint's value alone
    if spread["std"] is None:
        return f"{100 * value:.1f} (n = 1)"
    return f"{100 * value:.1f} ± {100 * spread['std']:.1f} (n = {spread['n']})"


def family_figure(ablation: Ablation) -> go.Figure:
    """The end-to-end family beside the paper's Table 2: per member the mean of its seeds' final val mIoU, each
    seed as a dot, and the standard error of that mean from the seed spread (σ pooled over the members with two
    seeds, / √n) as the error bar. A member without a seed record shows its bundled file's mIoU, marked so."""
    members = sorted(ablation.family["members"], key=lambda m: (m["recipe"] != "default", m["recurrence"]))
    labels = [member_label(m) for m in members]
    values = [statistics.fmean(m["seeds"].values()) if m["seeds"] else m["mIoU"] for m in members]
    std = ablation.family.get("seed_std")
    spread = "" if std is None else f" ± {100 * std:.1f}"
    ns = [len(m["seeds"]) for m in members]
    ours = go.Bar(
        name=f"ours, end to end ({ablation.dataset or 'this project'} {ablation.split}): mean over seeds".replace(
            " )", ")"
        ),
        x=labels,
        y=values,
        marker_color=OURS,
        text=[f"{100 * v:.1f}{spread} (n = {n})" if n else f"{100 * v:.1f} (bundled file, no seed record)"
              for v, n in zip(values, ns, strict=True)],
        textposition="outside",
        customdata=[m["name"] for m in members],
        hovertemplate="%{customdata}: %{text}<extra></extra>",
    )
    if std is not None:
        ours.error_y = dict(type="data", array=[std / math.sqrt(n) if n else None for n in ns], visible=True)
    seeds = go.Scatter(
        name="one seed (its last validation)",
        x=[label for label, m in zip(labels, members, strict=True) for _ in m["seeds"]],
        y=[v for m in members for v in m["seeds"].values()],
        mode="markers",
        marker=dict(color="black", size=7, symbol="circle-open"),
        hovertemplate="%{x}: %{y:.2%}<extra>one seed</extra>",
    )
    return _with_paper(ablation, [ours, seeds], labels)


def _with_paper(ablation: Ablation, data: list, labels: list[str]) -> go.Figure:
    """Our traces, the paper's Table 2 bars under the same labels, and the shared layout."""
    paper_rows = _paper_by_label(ablation.paper, labels)
    if paper_rows:
        data.append(
            go.Bar(
                name="paper, Table 2 (ResNet-101, Cityscapes val)",
                x=list(paper_rows),
                y=[row["mIoU"] for row in paper_rows.values()],
                marker_color=PAPER,
                text=[f"{100 * row['mIoU']:.1f}" for row in paper_rows.values()],
                textposition="outside",
                customdata=[row["setting"] for row in paper_rows.values()],
                hovertemplate="%{customdata}: %{y:.2%}<extra></extra>",
            )
        )
    layout = dict(
        barmode="group",
        showlegend=True,  # also with our bars alone: the legend names the dataset and split
        yaxis=dict(title="mIoU", tickformat=".0%", range=[0, 1]),
        height=380,
        margin=dict(t=30, b=10),
        legend=dict(orientation="h", y=1.12),
        xaxis=dict(categoryorder="array", categoryarray=labels),
    )
    return go.Figure(data=data, layout=layout)


def curves_figure(ablation: Ablation) -> go.Figure | None:
    """Every end-to-end run's val mIoU against its iteration; a run still training is dotted. None without."""
    curves = ablation.family.get("curves") or []
    if not curves:
        return None
    data = []
    for curve in curves:
        points = [p for p in curve["points"] if p.get("mIoU") is not None]
        known = _is_int(curve.get("recurrence")) and isinstance(curve.get("recipe"), str)
        label = member_label(curve) if known else curve["member"]
        data.append(
            go.Scatter(
                name=f"{label}, seed {curve['seed']}" + ("" if curve["finished"] else " (training)"),
                x=[p["step"] for p in points],
                y=[p["mIoU"] for p in points],
                mode="lines+markers",
                line=dict(dash="solid" if curve["finished"] else "dot"),
                hovertemplate="iteration %{x}: %{y:.2%}<extra>" + curve["run"] + "</extra>",
            )
        )
    layout = dict(
        xaxis=dict(title="iteration"),
        yaxis=dict(title="val mIoU", tickformat=".0%"),
        height=380,
        margin=dict(t=30, b=10),
        legend=dict(orientation="h", y=-0.2),
    )
    return go.Figure(data=data, layout=layout)


def _bar_models(ablation: Ablation) -> list[dict]:
    """The models of the mIoU bars without a family block: the end-to-end ones (the heads only when there are no
    others, and then every label says ", head")."""
    return sorted(ablation.end_to_end or ablation.models, key=_model_order)


def miou_figure(ablation: Ablation) -> go.Figure:
    """Ours per trained loop count, end to end only (seed mean ± std when there are seed records), beside the
    paper's Table 2: the family's figure when the summary has the family, else the models trained end to end."""
    if ablation.family.get("members"):
        return family_figure(ablation)
    models = _bar_models(ablation)
    labels = [model_label(m) for m in models]
    spreads = [seed_spread(ablation).get(m["name"]) for m in models]
    values = [m["mIoU"] if s is None else s["mean"] for m, s in zip(models, spreads, strict=True)]
    ours = go.Bar(
        name=f"ours ({ablation.dataset or 'this project'} {ablation.split})".replace(" )", ")"),
        x=labels,
        y=values,
        marker_color=OURS,
        text=[_bar_text(v, s) for v, s in zip(values, spreads, strict=True)],
        textposition="outside",
        customdata=[m["name"] for m in models],
        hovertemplate="%{customdata}: %{text}<extra></extra>",
    )
    if any(s is not None for s in spreads):
        # Sample standard deviation over the seeds; one seed has no spread, so no bar (its text says n = 1).
        ours.error_y = dict(type="data", array=[None if s is None else s["std"] for s in spreads], visible=True)
    return _with_paper(ablation, [ours], labels)


HEAD_LABELS = {
    "r0": "R = 0", "r1": "R = 1", "r2": "R = 2", "r3": "R = 3", "r2_ccl": "R = 2 + CCL",
    "r2_paper": "R = 2, paper's losses", "video_t1": "video T = 1", "video_t5": "video T = 5",
}  # fmt: skip


def heads_figure(ablation: Ablation) -> go.Figure | None:
    """Each head kind: every seed as a dot, the mean with its 95% interval as a bar; None without heads."""
    if not ablation.heads:
        return None
    labels = [HEAD_LABELS.get(h["kind"], h["kind"]) for h in ablation.heads]
    means = go.Scatter(
        name="mean, 95% interval",
        x=labels,
        y=[h["mean"] for h in ablation.heads],
        mode="markers",
        marker=dict(color=OURS, size=12, symbol="line-ew-open", line=dict(width=3)),
        error_y=dict(type="data", array=[h["ci95"] or 0 for h in ablation.heads], visible=True, thickness=2),
        customdata=[[h["n"], h["ci95"] or 0] for h in ablation.heads],
        hovertemplate="%{x}: %{y:.2%} ± %{customdata[1]:.2%} (n = %{customdata[0]})<extra></extra>",
    )
    seeds = go.Scatter(
        name="one seed",
        x=[label for label, h in zip(labels, ablation.heads, strict=True) for _ in h["seeds"]],
        y=[value for h in ablation.heads for value in h["seeds"].values()],
        mode="markers",
        marker=dict(color=PAPER, size=6, opacity=0.7),
        hovertemplate="%{x}: %{y:.2%}<extra>one seed</extra>",
    )
    layout = dict(
        yaxis=dict(title="val mIoU", tickformat=".0%"),
        height=360,
        margin=dict(t=30, b=10),
        legend=dict(orientation="h", y=1.12),
        xaxis=dict(categoryorder="array", categoryarray=labels),
    )
    return go.Figure(data=[seeds, means], layout=layout)


def charted(ablation: Ablation, with_heads: bool = False) -> list[dict]:
    """The models a chart draws: the end-to-end family, and the heads (labelled ", head") only when asked."""
    chosen = ablation.models if with_heads else ablation.end_to_end
    return sorted(chosen, key=lambda m: (is_head(m), *_model_order(m)))


def lift_figure(ablation: Ablation, with_heads: bool = False) -> go.Figure | None:
    """Class-balanced same-class lift of each attention model run at R = 1, 2, 3; 1.0 = blind to class."""
    models = [m for m in charted(ablation, with_heads) if m.get("lift_at_recurrence")]
    if not models:
        return None
    data = _lines_over_r(models, "lift_at_recurrence", "run at R = %{x}: lift %{y:.2f}<extra></extra>")
    figure = go.Figure(
        data=data,
        layout=dict(
            xaxis=dict(title="loop count at inference", dtick=1),
            yaxis=dict(title="same-class lift", rangemode="tozero"),
            height=340,
            margin=dict(t=30, b=10),
        ),
    )
    figure.add_hline(y=1.0, line_dash="dash", line_color="grey", annotation_text="1.0 = blind to class")
    return figure


def _lines_over_r(models: list[dict], key: str, hovertemplate: str) -> list[go.Scatter]:
    """One line per model through its values at R = 1, 2, 3 (``model[key]``: {"1": v, ...}; None skipped)."""
    lines = []
    for model in models:
        points = sorted((int(r), v) for r, v in model[key].items() if r.isdigit() and v is not None)
        lines.append(
            go.Scatter(
                name=f"{model['name']} (trained {model_label(model)})",
                mode="lines+markers",
                x=[r for r, _ in points],
                y=[v for _, v in points],
                hovertemplate=hovertemplate,
            )
        )
    return lines


def _paper_by_label(paper: list[dict], labels: list[str]) -> dict[str, dict]:
    """The paper's first (arXiv) row per loop count that has an mIoU, under our bar labels."""
    rows: dict[str, dict] = {}
    for row in paper:
        if row["recurrence"] is None or row["mIoU"] is None:
            continue
        label = model_label({"trained_recurrence": row["recurrence"], "ccl": False})
        if label in labels and label not in rows:
            rows[label] = row
    return rows


def unrolled_figure(ablation: Ablation, with_heads: bool = False) -> go.Figure | None:
    """Each attention model evaluated with its loop count overridden at inference (R = 1, 2, 3)."""
    models = [m for m in charted(ablation, with_heads) if m["mIoU_at_recurrence"]]
    if not models:
        return None
    data = _lines_over_r(models, "mIoU_at_recurrence", "run at R = %{x}: %{y:.2%}<extra></extra>")
    layout = dict(
        xaxis=dict(title="loop count at inference", dtick=1),
        yaxis=dict(title="mIoU", tickformat=".0%"),
        height=340,
        margin=dict(t=30, b=10),
    )
    return go.Figure(data=data, layout=layout)


def cost_figures(ablation: Ablation) -> tuple[go.Figure, go.Figure] | None:
    """Extra GFLOPs and memory of the attention per loop count, one line per input size; the paper's points."""
    if not ablation.costs:
        return None
    figures = []
    for key, title in (
        ("gflops_increment", "GFLOPs added by the attention"),
        ("memory_mb_increment", "memory added by the attention (MB)"),
    ):
        data = []
        for size in sorted({tuple(c["input"]) for c in ablation.costs}):
            rows = sorted((c for c in ablation.costs if tuple(c["input"]) == size), key=lambda c: c["recurrence"])
            feature = rows[0].get("feature") or ["?", "?"]
            data.append(
                go.Scatter(
                    name=f"ours, {size[0]}x{size[1]} input ({feature[0]}x{feature[1]} features, "
                    f"{rows[0].get('channels', '?')} ch)",
                    mode="lines+markers",
                    x=[c["recurrence"] for c in rows],
                    y=[c[key] for c in rows],
                    hovertemplate="R = %{x}: %{y:.3g}<extra></extra>",
                )
            )
        paper = [r for r in ablation.paper if r["recurrence"] and r[key] is not None]
        if paper:
            data.append(
                go.Scatter(
                    name="paper, 769x769 (97x97 features, 512 ch)",
                    mode="markers",
                    marker=dict(symbol="diamond", size=11, color=PAPER),
                    x=[r["recurrence"] for r in paper],
                    y=[r[key] for r in paper],
                    customdata=[r["setting"] for r in paper],
                    hovertemplate="%{customdata}: %{y:.3g}<extra></extra>",
                )
            )
        values = [y for trace in data for y in trace.y if y]
        layout = dict(
            title=dict(text=title, font=dict(size=14)),
            xaxis=dict(title="R", dtick=1),
            yaxis=dict(type="log", title=title, **log_ticks(values)),
            height=380,
            margin=dict(t=40, b=10),
            legend=dict(orientation="h", y=-0.25),
        )
        figures.append(go.Figure(data=data, layout=layout))
    return figures[0], figures[1]


def log_ticks(values: list[float]) -> dict:
    """Explicit, non-overlapping tick labels for a log axis: 1-2-5 per decade over up to two decades,
    1 and 3 per decade beyond (plotly's own minor labels overlapped: "2, 10, 5, 2")."""
    positive = [v for v in values if v > 0]
    if not positive:
        return {}
    low, high = math.floor(math.log10(min(positive))), math.ceil(math.log10(max(positive)))
    steps = (1, 2, 5) if high - low <= 2 else (1, 3)
    ticks = [m * 10.0**e for e in range(low, high + 1) for m in steps]
    ticks = [t for t in ticks if min(positive) / 1.5 <= t <= max(positive) * 1.5] or [min(positive)]
    return {"tickvals": ticks, "ticktext": [f"{t:g}" for t in ticks]}


def per_class_figure(ablation: Ablation, with_heads: bool = False) -> go.Figure | None:
    models = charted(ablation, with_heads)
    classes = ablation.classes or (list(models[0]["per_class_iou"]) if models else [])
    if not models or not classes:
        return None
    data = [
        go.Bar(
            name=f"{model_label(m)} ({m['name']})",
            x=classes,
            y=[m["per_class_iou"].get(c) for c in classes],
            hovertemplate=f"{m['name']}" + "<br>%{x}: %{y:.1%}<extra></extra>",
        )
        for m in models
    ]
    layout = dict(
        barmode="group",
        yaxis=dict(title="IoU", tickformat=".0%", range=[0, 1]),
        height=420,
        margin=dict(t=30, b=10),
        legend=dict(orientation="h", y=1.1),
    )
    return go.Figure(data=data, layout=layout)


# ------------------------------------------------------------------------------------------------ page


def load_ablation() -> Ablation:
    """The summary when usable, else checkpoint metadata; reasons are kept in `problems`."""
    path = results_path()
    try:
        summary = read_summary(path)
    except SummaryError as error:
        summary, reason = None, str(error)
    else:
        reason = f"`{path}` is not there yet. {HOW_TO_MAKE_THE_SUMMARY}"
    if summary is not None and summary.models:
        return summary
    fallback = from_checkpoints(_checkpoint_folder())
    if summary is not None:  # costs and the paper's rows are still usable; the models come from the checkpoints
        summary.problems.append(f"No usable model in {summary.source}: the models below come from {fallback.source}.")
        summary.models, summary.classes = fallback.models, summary.classes or fallback.classes
        summary.problems += fallback.problems
        return summary
    fallback.problems.insert(0, reason + " Showing what the checkpoints' metadata holds instead.")
    return fallback


def _checkpoint_folder() -> Path:
    try:
        return Settings.from_env().checkpoints
    except SettingsError:
        return REPO_ROOT / "checkpoints"


def ablation_page() -> None:
    st.title("Ablation: what each loop count buys")
    ablation = load_ablation()
    st.caption(
        f"Every number on this page comes from {ablation.source}"
        + (f", generated {ablation.generated}" if ablation.generated else "")
        + "."
    )
    for problem in ablation.problems:
        st.warning(problem)
    if not ablation.models:
        st.info("No model results to chart yet. " + HOW_TO_MAKE_THE_SUMMARY)
        return
    _miou_section(ablation)
    _curves_section(ablation)
    with_heads = bool(ablation.heads or any(is_head(m) for m in ablation.models)) and st.toggle(
        "Also draw the heads (trained on one frozen backbone, marked “head”) in the charts below",
        value=False,
        key="ablation_with_heads",
    )
    _unrolled_section(ablation, with_heads)
    _lift_section(ablation, with_heads)
    _cost_section(ablation)
    _per_class_section(ablation, with_heads)
    _heads_section(ablation)
    _tables(ablation)


def _miou_section(ablation: Ablation) -> None:
    st.subheader("End to end: one network per loop count")
    st.plotly_chart(miou_figure(ablation), key="ablation-miou")
    paper = (
        " The paper's Table 2 is ResNet-101 on Cityscapes val: compare the trend across R, not the level."
        if ablation.paper
        else ""
    )
    if ablation.family.get("members"):
        st.caption(family_note(ablation.family) + paper)
    else:
        kind = "trained end to end" if ablation.end_to_end else "heads on one frozen backbone (none end to end here)"
        st.caption(f"Ours: models {kind}, one per R; {_spread_note(ablation)}" + paper)


def family_note(family: dict) -> str:
    """What the family's bars are, R2 - R0 against the seed spread, and the members not trained yet."""
    std = family.get("seed_std")
    note = (
        "Each network trained end to end with the default's recipe and schedule, so the bars differ in R alone. "
        "Bar: the mean of its seeds' last validation (± the seed spread σ); dots: the seeds; "
        + ("no second seed yet, so no spread to judge a difference by." if std is None else
           f"error bar: σ / √n, with σ = {100 * std:.1f} points pooled over the members with two seeds.")
    )  # fmt: skip
    pair, paper = family.get("r2_minus_r0"), family.get("paper_r2_minus_r0")
    if pair is not None:
        verdict = {"above": "beyond the seed spread", "below": "beyond the seed spread, the other way",
                   "within": "within the seed spread"}.get(pair.get("verdict"), "not judged yet")  # fmt: skip
        note += f" R = 2 minus R = 0: {100 * pair['difference']:+.1f} points, {verdict}"
        note += "." if paper is None else f" (the paper: {100 * paper:+.1f})."
    absent = [m for m in family.get("missing") or [] if isinstance(m.get("recipe"), str)]
    missing = [member_label(m) for m in absent if not m.get("not_bundled_because")]
    if missing:
        note += f" Not trained yet: {', '.join(missing)} (the campaign queue trains them session by session)."
    for member in absent:
        if member.get("not_bundled_because"):
            note += f" {member_label(member)}: trained, not bundled ({member['not_bundled_because']})."
    return note


def _curves_section(ablation: Ablation) -> None:
    figure = curves_figure(ablation)
    if figure is None:
        return
    st.markdown("**Learning curves** (val mIoU at each validation; dotted: still training)")
    st.plotly_chart(figure, key="ablation-curves")


def _unrolled_section(ablation: Ablation, with_heads: bool) -> None:
    unrolled = unrolled_figure(ablation, with_heads)
    if unrolled is not None:
        st.markdown("**Loop count changed at inference only** (the weights trained with one R, run with R = 1, 2, 3)")
        st.plotly_chart(unrolled, key="ablation-unrolled")


def _heads_section(ablation: Ablation) -> None:
    figure = heads_figure(ablation)
    if figure is None:
        return
    st.subheader("Heads on one frozen backbone: a separate, many-seeds study")
    st.plotly_chart(figure, key="ablation-heads")
    verdicts = [ordering_text(pair) for pair in ablation.head_ordering]
    st.caption(
        "Not end to end, so never compare these with the family above: each kind is the campaign's backbone, frozen, "
        "with its own head trained from a fresh seed on cached features; "
        "dots are seeds, the bar the mean with its 95% t-interval. \"above\": one interval wholly above the other; "
        "\"overlap\": the seeds cannot tell them apart; \"paired\" (2D kinds): the same question of the seed-by-seed "
        "differences (a seed draws the same batches for every 2D kind). " + "; ".join(verdicts)
    )


def ordering_text(pair: dict) -> str:
    """One pair of the report's head ordering: the interval verdict, then the paired one where the report has it."""
    text = (
        f"{HEAD_LABELS.get(pair['higher'], pair['higher'])} vs {HEAD_LABELS.get(pair['lower'], pair['lower'])}: "
        f"{pair['verdict']} ({100 * pair['difference']:+.1f} points)"
    )
    paired = pair.get("paired")
    if (isinstance(paired, dict) and isinstance(paired.get("verdict"), str)
            and all(_is_number(paired.get(key)) for key in ("n", "mean", "ci95"))):  # fmt: skip
        text += (f", paired over {paired['n']} seeds {paired['verdict']} "
                 f"({100 * paired['mean']:+.1f} ± {100 * paired['ci95']:.1f})")  # fmt: skip
    return text


def _spread_note(ablation: Ablation) -> str:
    """What the bars and error bars are; which models have a single seed (n = 1, so no spread to show)."""
    split = ablation.split or "validation"
    spreads = seed_spread(ablation)
    if not spreads:
        return f"each the bundled checkpoint evaluated on the {split} split (no seed records: no spread)."
    single = [model_label(m) for m in _bar_models(ablation) if (spreads.get(m["name"]) or {}).get("n") == 1]
    note = (
        f"the bar is the mean over training seeds of the best {split} mIoU, the error bar the standard "
        "deviation over those seeds."
    )
    return note + (f" One seed only (n = 1, no error bar): {', '.join(single)}." if single else "")


def _lift_section(ablation: Ablation, with_heads: bool) -> None:
    st.subheader("Does the attention follow the classes?")
    figure = lift_figure(ablation, with_heads)
    if figure is None:
        st.info(
            "No same-class lift in these results (a summary from before it was measured): "
            "`python -m training.report` measures it."
        )
        return
    st.plotly_chart(figure, key="ablation-lift")
    st.caption(
        "Same-class lift: how much more of a pixel's attention (its influence map after R loops) lies on its own "
        "ground-truth class than a map blind to class would put there, averaged over sampled cells per class "
        "and then over classes. 1.0 (dashed) = blind to class; each model's weights run at R = 1, 2, 3."
    )


def _cost_section(ablation: Ablation) -> None:
    st.subheader("FLOPs and memory per loop count")
    figures = cost_figures(ablation)
    if figures is None:
        st.info(
            "No cost measurements here: they come from the summary's `costs` (`python -m training.report` "
            "runs the cost benchmark)."
        )
        return
    left, right = st.columns(2)
    left.plotly_chart(figures[0], key="ablation-flops")
    right.plotly_chart(figures[1], key="ablation-memory")
    st.caption(
        "Increments over the same network without the attention, one image, forward pass; "
        "each loop runs the same module once more."
    )


def _per_class_section(ablation: Ablation, with_heads: bool) -> None:
    st.subheader("Per-class IoU")
    figure = per_class_figure(ablation, with_heads)
    if figure is None:
        st.info("No per-class IoU in these results.")
        return
    st.plotly_chart(figure, key="ablation-per-class")


def _tables(ablation: Ablation) -> None:
    rows = [
        {
            "model": m["name"],
            "trained": "head" if is_head(m) else "end to end",
            "R": m["trained_recurrence"],
            "CCL": m["ccl"],
            "seed": m.get("seed"),
            "mIoU": round(100 * m["mIoU"], 2),
            "gamma": m.get("gamma"),
            "lift": m.get("lift"),
            "params": m.get("params"),
            "train s": m.get("train_seconds"),
            "images/s": m.get("images_per_s"),
            "device": m.get("train_device"),
        }
        for m in charted(ablation, with_heads=True)
    ]
    with st.expander("The numbers behind the charts"):
        st.dataframe(rows, hide_index=True)
        if ablation.seeds:
            st.markdown("**Seeds** (best validation mIoU of each training run; lift and gamma of its last validation)")
            st.dataframe(
                [
                    {"model": s["name"], "seed": s["seed"], "best val mIoU": round(100 * s["best_val_mIoU"], 2),
                     "lift": s.get("lift"), "gamma": s.get("gamma")}
                    for s in ablation.seeds
                ],
                hide_index=True,
            )  # fmt: skip
