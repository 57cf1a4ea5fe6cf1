"""The view as a URL: a link reopens the same model, options and click; bad links fall back to defaults."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.test_app_helpers import save_tiny_checkpoint
from tests.test_app_page import MAIN, assert_no_exception, camvid_like, texts

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def examples_app(monkeypatch, tmp_path):
    from ccnet.classes import CAMVID

    folder = tmp_path / "checkpoints"
    save_tiny_checkpoint(folder, "camvid_r2", recurrence=2, classes=CAMVID)
    monkeypatch.setenv("CCNET_CHECKPOINTS", str(folder))
    monkeypatch.setenv("CCNET_EXAMPLES", str(camvid_like(tmp_path / "camvid")))
    monkeypatch.setenv("CCNET_DEVICE", "cpu")
    return lambda: AppTest.from_file(MAIN, default_timeout=60)


def test_the_view_is_mirrored_into_the_query_string(examples_app):
    app = examples_app().run()
    app.sidebar.radio(key="source").set_value("Examples folder").run()
    app.sidebar.radio(key="direction").set_value("Which pixels read from this pixel?").run()
    assert_no_exception(app)
    params = dict(app.query_params)
    assert params["source"] == "Examples folder" and params["direction"] == "Which pixels read from this pixel?"
    assert params["model"] == "camvid_r2" and "px" in params and "py" in params


def test_a_shared_link_reopens_the_same_click_and_options(examples_app):
    app = examples_app()
    for key, value in {"source": "Examples folder", "px": "7", "py": "9", "hide_cross": "1",
                       "direction": "Which pixels read from this pixel?"}.items():  # fmt: skip
        app.query_params[key] = value
    app.run()
    assert_no_exception(app)
    assert "**Clicked pixel** (7, 9)" in texts(app)
    assert app.sidebar.checkbox(key="hide_cross").value is True
    assert "Reverse view" in texts(app)


def test_a_link_with_unknown_values_falls_back_to_the_defaults(examples_app):
    app = examples_app()
    for key, value in {"source": "Examples folder", "model": "no_such_model", "colormap": "Rainbow",
                       "px": "-3", "example": "missing.png"}.items():  # fmt: skip
        app.query_params[key] = value
    app.run()
    assert_no_exception(app)
    assert app.sidebar.selectbox(key="model").value == "camvid_r2"
    assert app.sidebar.selectbox(key="colormap").value == "Inferno"
    assert "Clicked pixel" in texts(app)


def test_a_link_reopens_the_dragged_box_clipped_to_the_image(examples_app):
    app = examples_app()
    query = "A box you drag on the image"
    for key, value in {"source": "Examples folder", "query": query, "px": "7", "py": "9",
                       "box": "30,4000,2,20"}.items():  # fmt: skip  (corners reversed, bottom off the image)
        app.query_params[key] = value
    app.run()
    assert_no_exception(app)
    assert app.sidebar.radio(key="query").value == query
    assert "Query: the box from (2, 20) to (30, " in texts(app)  # the linked box is the query
    assert dict(app.query_params)["box"].startswith("2,20,30,")  # mirrored back, ordered and clipped
    assert int(dict(app.query_params)["box"].split(",")[3]) < 4000


def test_a_link_with_a_malformed_box_is_ignored(examples_app):
    app = examples_app()
    for key, value in {"source": "Examples folder", "query": "A box you drag on the image",
                       "box": "1,2,x,4"}.items():  # fmt: skip
        app.query_params[key] = value
    app.run()
    assert_no_exception(app)
    assert "Query: the clicked pixel's feature cell as a box. Drag on the image to draw a larger one." in texts(app)


# --- issue 30: "Any models side by side" and the video page's clip travel in the link too -------------------------


@pytest.fixture
def two_models_app(monkeypatch, tmp_path):
    from ccnet.classes import CAMVID

    folder = tmp_path / "checkpoints"
    save_tiny_checkpoint(folder, "camvid_r2", recurrence=2, classes=CAMVID)
    save_tiny_checkpoint(folder, "camvid_r1", recurrence=1, classes=CAMVID)
    monkeypatch.setenv("CCNET_CHECKPOINTS", str(folder))
    monkeypatch.setenv("CCNET_EXAMPLES", str(camvid_like(tmp_path / "camvid")))
    monkeypatch.setenv("CCNET_DEVICE", "cpu")
    return lambda: AppTest.from_file(MAIN, default_timeout=60)


def test_any_models_side_by_side_round_trips_through_the_link(two_models_app):
    app = two_models_app().run()
    app.sidebar.radio(key="comparison").set_value("Any models side by side").run()
    app.sidebar.selectbox(key="chosen-model-1").set_value("camvid_r1").run()
    app.sidebar.selectbox(key="chosen-r-2").set_value(1).run()
    assert_no_exception(app)
    before = [(app.sidebar.selectbox(key=f"chosen-model-{i}").value, app.sidebar.selectbox(key=f"chosen-r-{i}").value)
              for i in range(3)]  # fmt: skip
    assert before[1] == ("camvid_r1", 2) and before[2][1] == 1
    params = dict(app.query_params)
    assert params["comparison"] == "Any models side by side"
    assert params["chosen-model-1"] == "camvid_r1" and params["chosen-r-2"] == "1"

    reopened = two_models_app()
    for key, value in params.items():
        reopened.query_params[key] = value
    reopened.run()
    assert_no_exception(reopened)
    assert reopened.sidebar.radio(key="comparison").value == "Any models side by side"
    chosen = [(reopened.sidebar.selectbox(key=f"chosen-model-{i}").value,
               reopened.sidebar.selectbox(key=f"chosen-r-{i}").value) for i in range(3)]  # fmt: skip
    assert chosen == before
    headers = [m.value for m in reopened.markdown if m.value.startswith("#### ")]
    assert headers[1].startswith("#### camvid_r1 at R = 2")
    assert not reopened.warning or all("Session State" not in w.value for w in reopened.warning)


def test_a_side_by_side_link_with_bad_columns_falls_back(two_models_app):
    app = two_models_app()
    for key, value in {"comparison": "Any models side by side", "chosen-model-0": "gone", "chosen-r-1": "7"}.items():
        app.query_params[key] = value
    app.run()
    assert_no_exception(app)
    assert app.sidebar.selectbox(key="chosen-model-0").value in ("camvid_r1", "camvid_r2")  # the default model
    assert app.sidebar.selectbox(key="chosen-r-1").value == 2  # the column's default


def test_a_video_link_reopens_the_example_clip_frame_and_point(monkeypatch):
    from tests.test_app_video import PAGE

    for name in ("CCNET_CHECKPOINTS", "CCNET_EXAMPLES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CCNET_DEVICE", "cpu")
    page = AppTest.from_file(PAGE, default_timeout=180)
    link = {"video_model": "camvid_video_t5", "video_example": "val/0016E5_08091.jpg", "frame": "1", "px": "100",
            "py": "200", "video_scale": "one for all frames"}  # fmt: skip
    for key, value in link.items():
        page.query_params[key] = value
    page.run()
    assert not page.exception, page.exception
    assert page.sidebar.selectbox(key="video_example").value == "val/0016E5_08091.jpg"
    assert page.sidebar.radio(key="video_scale").value == "one for all frames"
    assert any("Clicked pixel (100, 200) of frame 2 of 5" in c.value for c in page.caption)
    assert "Start here" not in "\n".join(m.value for m in page.info)  # a link is not the first screen
    assert dict(page.query_params) | link == dict(page.query_params)  # the page writes the same view back
