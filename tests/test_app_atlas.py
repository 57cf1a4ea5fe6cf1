"""The attention atlas page: drawn from a summary.json in the report's schema, never from a model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest
from streamlit.testing.v1 import AppTest

from app.atlas import atlas_figure, atlas_problem, class_lift_figure, load_atlas, recurrence_lift_figure

ROOT = Path(__file__).absolute().parent.parent
PAGE = str(ROOT / "app" / "pages" / "atlas.py")
CLASSES = ["Sky", "Road", "Car", "Bicyclist"]  # Bicyclist has no cells in the split: a null row
SPLIT_SHARE = np.array([0.5, 0.3, 0.2, 0.0])  # (K,) each class's share of the split's cells
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def shares_at(loops: int) -> np.ndarray:
    """(K, K) rows summing to 1 on the present classes, more on the own class at higher R; NaN for Bicyclist."""
    own = 0.4 + 0.1 * loops
    matrix = np.array([[own, (1 - own) / 2, (1 - own) / 2, 0.0]] * 4)
    for i in range(3):
        matrix[i] = np.roll(matrix[0][:3], i).tolist() + [0.0]
    matrix[3] = np.nan
    return matrix


def as_json(matrix: np.ndarray) -> list[list[float | None]]:
    return [[None if np.isnan(v) else float(v) for v in row] for row in matrix]


def atlas_entry() -> dict:
    atlas = {}
    for loops in (1, 2, 3):
        shares = shares_at(loops)
        with np.errstate(divide="ignore", invalid="ignore"):
            lift = shares / SPLIT_SHARE[None, :]  # (K, K): NaN in the absent class's column
        atlas[str(loops)] = {"shares": as_json(shares), "lift": as_json(np.where(np.isinf(lift), np.nan, lift))}
    return atlas


def model(name: str, loops: int, ccl: bool = False, with_atlas: bool = True) -> dict:
    entry = {
        "name": name, "trained_recurrence": loops, "ccl": ccl, "seed": 0, "mIoU": 0.5,
        "per_class_iou": {c: 0.5 for c in CLASSES}, "mIoU_at_recurrence": {} if loops == 0 else {"1": 0.5},
        "gamma": None if loops == 0 else 0.9, "lift": None if loops == 0 else 2.0 + loops,
        "lift_per_class": {} if loops == 0 else {"Sky": 1.5, "Road": 2.5, "Car": 4.0, "Bicyclist": None},
        "lift_at_recurrence": {} if loops == 0 else {"1": 1.2, "2": 2.0 + loops, "3": 2.5 + loops},
    }  # fmt: skip
    if with_atlas:
        entry["atlas"] = {} if loops == 0 else atlas_entry()
    return entry


def summary_document(with_atlas: bool = True) -> dict:
    """A summary.json in the schema `python -m training.report` writes (made-up numbers, 4 classes)."""
    return {
        "dataset": "camvid", "split": "val", "generated": "2026-11-26T02:00:00+00:00",
        "generated_by": "python -m training.report", "classes": CLASSES,
        "models": [model("camvid_r0", 0, with_atlas=with_atlas), model("camvid_r1", 1, with_atlas=with_atlas),
                   model("camvid_r2", 2, with_atlas=with_atlas)],
        "seeds": [], "costs": [], "paper_table2": [],
    }  # fmt: skip


def write(path: Path, document) -> Path:
    path.write_text(json.dumps(document))
    return path


def run_page(monkeypatch, summary: Path, tmp_path: Path) -> AppTest:
    monkeypatch.setenv("CCNET_RESULTS", str(summary))
    monkeypatch.setenv("CCNET_CHECKPOINTS", str(tmp_path / "no_checkpoints"))  # the page needs no model
    app = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def specs(app: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in app.get("plotly_chart")]


def heat_map(app: AppTest) -> dict:
    (heat,) = [s for s in specs(app) if s["data"][0]["type"] == "heatmap"]
    return heat


# ---------------------------------------------------------------------------------------------- logic


def test_load_keeps_the_attention_models_with_an_atlas(tmp_path):
    atlas = load_atlas(write(tmp_path / "summary.json", summary_document()))
    assert [m["name"] for m in atlas.models] == ["camvid_r1", "camvid_r2"] and not atlas.missing
    assert atlas.classes == CLASSES and atlas.problems == []


def test_heat_map_is_the_summary_matrix_on_the_classes_present(tmp_path):
    atlas = load_atlas(write(tmp_path / "summary.json", summary_document()))
    r2 = atlas.models[1]
    shares = atlas_figure(r2, "3", CLASSES, as_lift=False).data[0]
    assert list(shares.x) == list(shares.y) == CLASSES[:3]  # Bicyclist: no cells, no row and no column
    np.testing.assert_allclose(np.array(shares.z), 100 * shares_at(3)[:3, :3])
    assert shares.text[0][0] == "70.0%"
    lift = atlas_figure(r2, "3", CLASSES, as_lift=True).data[0]
    np.testing.assert_allclose(np.array(lift.z), np.log2(shares_at(3)[:3, :3] / SPLIT_SHARE[None, :3]))
    assert lift.zmid == 0.0 and lift.text[0][0] == "1.40x"  # 0.7 over Sky's 0.5 of the split


def test_lift_charts_per_class_and_per_r_with_the_blind_line(tmp_path):
    r2 = load_atlas(write(tmp_path / "summary.json", summary_document())).models[1]
    per_class = go.Figure(class_lift_figure(r2, CLASSES).to_dict())
    assert list(per_class.data[0].x) == ["Sky", "Road", "Car"] and list(per_class.data[0].y) == [1.5, 2.5, 4.0]
    per_r = go.Figure(recurrence_lift_figure(r2).to_dict())
    assert list(per_r.data[0].x) == [1, 2, 3] and list(per_r.data[0].y) == [1.2, 4.0, 4.5]
    for figure in (per_class, per_r):
        (line,) = figure.layout.shapes
        assert (line.y0, line.y1, line.line.dash) == (1.0, 1.0, "dash")
        assert "blind to class" in figure.layout.annotations[0].text
    assert class_lift_figure({"lift_per_class": {}}, CLASSES) is None
    assert recurrence_lift_figure({"lift_at_recurrence": {}}) is None


def test_a_malformed_atlas_is_named_and_left_out(tmp_path):
    assert atlas_problem(atlas_entry(), 4) is None
    assert "not two 3x3" in atlas_problem(atlas_entry(), 3)
    assert "not one of" in atlas_problem({"7": atlas_entry()["1"]}, 4)
    document = summary_document()
    document["models"][1]["atlas"]["2"]["shares"][0][0] = 3.0  # a share above 1
    atlas = load_atlas(write(tmp_path / "summary.json", document))
    assert [m["name"] for m in atlas.models] == ["camvid_r2"]
    assert any("`camvid_r1` left out" in p for p in atlas.problems)


# ---------------------------------------------------------------------------------------------- page


def test_page_draws_the_heat_map_with_the_class_names(monkeypatch, tmp_path):
    app = run_page(monkeypatch, write(tmp_path / "summary.json", summary_document()), tmp_path)
    assert app.title[0].value == "Attention atlas" and not app.warning and not app.info
    assert "generated 2026-11-26T02:00:00+00:00" in app.caption[0].value
    assert app.selectbox[0].options == ["camvid_r1 (trained R = 1)", "camvid_r2 (trained R = 2)"]
    heat = heat_map(app)
    assert heat["data"][0]["x"] == heat["data"][0]["y"] == CLASSES[:3]
    assert heat["layout"]["title"]["text"] == "camvid_r1 run at R = 1 (as trained)"  # the trained R first
    assert heat["layout"]["yaxis"]["title"]["text"] == "pixels of class i"
    assert "x" in heat["data"][0]["text"][0][0]  # lift first: "1.20x"
    assert len(app.get("plotly_chart")) == 3  # the heat map, lift per class, lift per R


def test_switching_model_r_and_shares_or_lift(monkeypatch, tmp_path):
    app = run_page(monkeypatch, write(tmp_path / "summary.json", summary_document()), tmp_path)
    app.selectbox(key="atlas_model").set_value("camvid_r2").run()
    # The chosen R stays when the model changes: two models compared at the same loop count.
    assert not app.exception and heat_map(app)["layout"]["title"]["text"] == "camvid_r2 run at R = 1"
    app.radio(key="atlas_loops").set_value("2").run()
    assert not app.exception and heat_map(app)["layout"]["title"]["text"] == "camvid_r2 run at R = 2 (as trained)"
    app.radio(key="atlas_loops").set_value("3").run()
    assert not app.exception and heat_map(app)["layout"]["title"]["text"] == "camvid_r2 run at R = 3"
    app.radio(key="atlas_view").set_value("shares").run()
    assert not app.exception
    heat = heat_map(app)
    assert heat["data"][0]["text"][0][0] == "70.0%" and heat["data"][0]["colorbar"]["title"]["text"] == "% of influence"
    app.radio(key="atlas_loops").set_value("1").run()
    assert not app.exception and heat_map(app)["data"][0]["text"][0][0] == "50.0%"


def test_summary_without_an_atlas_says_how_to_make_it(monkeypatch, tmp_path):
    app = run_page(monkeypatch, write(tmp_path / "summary.json", summary_document(with_atlas=False)), tmp_path)
    assert any("No attention atlas" in i.value and "python -m training.report" in i.value for i in app.info)
    assert not app.get("plotly_chart")


def test_missing_and_broken_summaries_keep_the_page_working(monkeypatch, tmp_path):
    app = run_page(monkeypatch, tmp_path / "absent.json", tmp_path)
    assert any("is not there yet" in i.value and "python -m training.report" in i.value for i in app.info)
    (tmp_path / "broken.json").write_text("{")
    app = run_page(monkeypatch, tmp_path / "broken.json", tmp_path)
    assert any("cannot be read as JSON" in i.value and "python -m training.report" in i.value for i in app.info)
    assert not app.get("plotly_chart")
