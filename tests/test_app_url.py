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
