"""The Streamlit page through AppTest: start-up, uploads good and bad, examples, modes and options.

Clicks cannot be made without a browser (see test_browser_app.py); setting the session's point is the
same input the click callback writes, so the click path is checked here too.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from app import view
from app.explorer import column_maps, encode_and_decode
from app.images import decode_image
from app.influence_chart import COMPONENT_NAME
from app.models import load_model
from app.resources import cached_model
from app.stats import entropy_bits
from app.view import BOX_KEY, CHANGE_FILTER_KEY, COMPARE_KEY, PIXEL_A, PIXEL_B, POINT_B_KEY, POINT_KEY, TARGET_KEY
from ccnet.analysis import cross_share, prediction_changes
from ccnet.checkpoint import write_index
from tests.test_app_helpers import CLASS_NAMES, image_bytes, make_checkpoint_folder, save_tiny_checkpoint, street_rgb
from tests.test_app_images import noise_png, png_header_only

MAIN = str(Path(__file__).absolute().parent.parent / "app" / "main.py")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> Path:
    """R = 1, 2, 3 tiny models, so both comparison modes are available."""
    return make_checkpoint_folder(tmp_path_factory.mktemp("checkpoints"), recurrences=(1, 2, 3))


@pytest.fixture
def app(monkeypatch, checkpoints) -> AppTest:
    monkeypatch.setenv("CCNET_CHECKPOINTS", str(checkpoints))
    monkeypatch.setenv("CCNET_EXAMPLES", "none")  # not the bundled examples
    monkeypatch.setenv("CCNET_DEVICE", "cpu")
    return AppTest.from_file(MAIN, default_timeout=60)


def texts(app: AppTest) -> str:
    parts = [m.value for m in app.markdown] + [m.value for m in app.caption]
    parts += [m.value for m in app.info] + [m.value for m in app.warning] + [m.value for m in app.error]
    return "\n".join(parts)


def upload(app: AppTest, name: str, data: bytes) -> AppTest:
    app.sidebar.file_uploader(key="upload").set_value((name, data, "application/octet-stream"))
    return app.run()


def assert_no_exception(app: AppTest) -> None:
    assert not app.exception, [e.value for e in app.exception]


def test_no_checkpoint_says_how_to_make_one(monkeypatch, tmp_path):
    monkeypatch.setenv("CCNET_CHECKPOINTS", str(tmp_path / "empty"))
    app = AppTest.from_file(MAIN, default_timeout=60).run()
    assert_no_exception(app)
    assert "No trained checkpoint" in texts(app)
    assert "python -m training.train --config training/configs/camvid_r2.yaml" in texts(app)


def test_default_load_asks_for_an_image_and_shows_the_device(app):
    app.run()
    assert_no_exception(app)
    assert "Upload an image" in texts(app)
    assert "Device: **cpu**" in texts(app)


def test_valid_upload_shows_three_columns(app):
    upload(app.run(), "street.png", image_bytes(street_rgb()))
    assert_no_exception(app)
    assert not app.error
    headers = [m.value for m in app.markdown if m.value.startswith("#### ")]
    assert headers == ["#### R = 1", "#### R = 2 (as trained)", "#### R = 3"]
    assert "Clicked pixel** (64, 48)" in texts(app)  # the centre until the first click
    assert texts(app).count("90% of the influence on") == 3
    downloads = [button.proto.label for button in app.get("download_button")]
    assert downloads == ["Download the panel (PNG)", "Download the maps (.npy)", "Download everything (.zip)"]


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("empty.png", b"", "empty (0 bytes)"),
        ("notes.png", b"certainly not an image", "not an image"),
        ("cut.png", noise_png()[:3000], "truncated or corrupt"),
        ("bomb.png", png_header_only(30000, 30000), "too many pixels"),
        ("tiny.png", image_bytes(street_rgb(16, 16)), "at least 32 pixels"),
    ],
    ids=["empty", "not-an-image", "truncated", "bomb", "tiny"],
)
def test_bad_upload_is_a_message_and_the_app_keeps_working(app, name, data, message):
    upload(app.run(), name, data)
    assert_no_exception(app)
    assert any(message in e.value for e in app.error), [e.value for e in app.error]
    upload(app, "street.png", image_bytes(street_rgb()))
    assert_no_exception(app)
    assert not app.error and "Clicked pixel" in texts(app)


def test_large_upload_is_scaled_with_a_visible_notice(app, monkeypatch):
    monkeypatch.setenv("CCNET_MAX_SIDE", "96")
    upload(app.run(), "big.png", image_bytes(street_rgb(150, 200)))
    assert_no_exception(app)
    assert "Scaled down from 200 x 150 to 96 x 72" in texts(app)


def test_checkpoint_that_fails_to_load_is_a_message(monkeypatch, tmp_path):
    folder = make_checkpoint_folder(tmp_path / "broken", recurrences=(2,))
    (folder / "tiny_r2.safetensors").write_bytes(b"\0" * 100)  # corrupt weights, index still lists them
    monkeypatch.setenv("CCNET_CHECKPOINTS", str(folder))
    app = upload(AppTest.from_file(MAIN, default_timeout=60).run(), "street.png", image_bytes(street_rgb()))
    assert_no_exception(app)
    assert any("could not be loaded" in e.value for e in app.error)


def test_broken_settings_are_a_message(monkeypatch, checkpoints):
    monkeypatch.setenv("CCNET_CHECKPOINTS", str(checkpoints))
    monkeypatch.setenv("CCNET_MAX_SIDE", "huge")
    app = AppTest.from_file(MAIN, default_timeout=60).run()
    assert_no_exception(app)
    assert any("CCNET_MAX_SIDE" in e.value for e in app.error)


def entropies(app: AppTest) -> list[str]:
    lines = [line for line in texts(app).splitlines() if "entropy **" in line]
    return [line.split("entropy **")[1].split(" bits")[0] for line in lines]


def test_modes_and_options_switch_without_errors(app):
    upload(app.run(), "street.png", image_bytes(street_rgb()))
    attention = entropies(app)
    app.sidebar.radio(key="propagation").set_value("Rollout (with the residual path)").run()
    assert_no_exception(app)
    assert entropies(app) != attention  # rollout keeps mass on the clicked pixel: a different map
    app.sidebar.checkbox(key="per_loop").check().run()
    assert_no_exception(app)
    captions = [caption for image in app.image for caption in image.captions]
    assert captions.count("loop 1") == 3 and captions.count("loop 3") == 1
    app.sidebar.selectbox(key="colormap").set_value("Viridis").run()
    app.sidebar.checkbox(key="smooth").check().run()
    app.sidebar.checkbox(key="shared_scale").check().run()
    app.sidebar.slider(key="heat_opacity").set_value(0.3).run()
    app.sidebar.slider(key="seg_opacity").set_value(0.9).run()
    assert_no_exception(app)
    app.sidebar.radio(key="comparison").set_value("Separately trained models per R").run()
    assert_no_exception(app)
    headers = [m.value for m in app.markdown if m.value.startswith("#### ")]
    assert headers == [f"#### R = {r}: tiny_r{r} (end to end)" for r in (1, 2, 3)]


def test_a_click_recomputes_the_maps_exactly(app, checkpoints):
    rgb = street_rgb()
    upload(app.run(), "street.png", image_bytes(rgb))
    digest = app.session_state["decoded_upload"][1].digest
    app.session_state[POINT_KEY] = {"digest": digest, "px": 20, "py": 70}
    app.run()
    assert_no_exception(app)
    assert "Clicked pixel** (20, 70)" in texts(app)
    loaded = load_model(checkpoints / "tiny_r2.safetensors", torch.device("cpu"))
    decoded = encode_and_decode(loaded, rgb, [1, 2, 3])
    maps = [column_maps(decoded[r], 20, 70, "attention", with_per_loop=False).composed for r in (1, 2, 3)]
    expected = [f"{entropy_bits(influence):.3f}" for influence in maps]
    assert entropies(app) == expected


def test_switching_image_resets_the_point(app):
    upload(app.run(), "a.png", image_bytes(street_rgb(seed=1)))
    digest = app.session_state["decoded_upload"][1].digest
    app.session_state[POINT_KEY] = {"digest": digest, "px": 5, "py": 5}
    upload(app.run(), "b.png", image_bytes(street_rgb(80, 120, seed=2)))
    assert "Clicked pixel** (60, 40)" in texts(app)


def test_model_is_loaded_once_per_process(checkpoints):
    path = str(checkpoints / "tiny_r2.safetensors")
    first = cached_model(path, "cpu", 1.0)
    assert cached_model(path, "cpu", 1.0) is first


def camvid_like(root: Path, count: int = 2) -> Path:
    """A tiny dataset in CamVid's SegNet layout: RGB frames and single-channel label PNGs (11 = void)."""
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for index in range(count):
            rgb = street_rgb(72, 96, seed=index)
            labels = np.full((72, 96), 3, np.uint8)
            labels[:24] = 0
            labels[-4:] = 11
            Image.fromarray(rgb).save(root / split / f"f{index}.png")
            Image.fromarray(labels).save(root / f"{split}annot" / f"f{index}.png")
    return root


def examples_with_truth(monkeypatch, tmp_path) -> AppTest:
    """The page on a CamVid-like examples folder (with labels) and a CamVid checkpoint, examples chosen."""
    from ccnet.classes import CAMVID

    folder = tmp_path / "camvid_checkpoints"
    save_tiny_checkpoint(folder, "camvid_r2", recurrence=2, classes=CAMVID)
    monkeypatch.setenv("CCNET_CHECKPOINTS", str(folder))
    monkeypatch.setenv("CCNET_EXAMPLES", str(camvid_like(tmp_path / "camvid")))
    app = AppTest.from_file(MAIN, default_timeout=60).run()
    app.sidebar.radio(key="source").set_value("Examples folder").run()
    return app


def test_examples_folder_with_a_dataset_loads_ground_truth(monkeypatch, tmp_path):
    app = examples_with_truth(monkeypatch, tmp_path)
    assert_no_exception(app)
    assert "camvid dataset" in texts(app) and "with ground truth" in texts(app)
    assert "Ground truth there: Road" in texts(app)
    assert texts(app).count("image mIoU at R =") == 3


def test_examples_list_says_how_to_set_it_when_empty(app):
    app.run()
    app.sidebar.radio(key="source").set_value("Examples folder").run()
    assert_no_exception(app)
    assert "CCNET_EXAMPLES=../shared/datasets/camvid" in texts(app)


# --- issue 9: the views that answer "does R = 2 reach beyond the cross?" ---------------------------------


def influence_charts(app: AppTest) -> list[dict]:
    """The influence charts' arguments (app/influence_chart.py), in column order."""
    charts = [c for c in app.get("bidi_component") if c.proto.component_name == COMPONENT_NAME]
    return [json.loads(chart.proto.json) for chart in charts]


def colour_bar_titles(app: AppTest) -> list[str]:
    return [args["scale"]["title"] for args in influence_charts(app)]


def map_images(app: AppTest) -> list[str]:
    """What each chart paints (the signature of its values, scale, marker and photo)."""
    return [args["signature"] for args in influence_charts(app)]


def cross_lines(app: AppTest) -> list[str]:
    lines = [line for line in texts(app).splitlines() if line.startswith("on its own row and column: **")]
    return [line.split("**")[1] for line in lines]


def uploaded(app: AppTest) -> AppTest:
    return upload(app.run(), "street.png", image_bytes(street_rgb()))


def test_the_charts_share_one_photo_from_the_media_store(app):
    """The photo is a file Streamlit serves (not 84 kB repeated inside every chart's arguments), one per image."""
    uploaded(app)
    photos = {args["photo"] for args in influence_charts(app)}
    (photo,) = photos  # AppTest's media store names it mock/media/<hash>.jpg, the server's media/<hash>.jpg
    assert "media/" in photo and photo.endswith(".jpg") and not photo.startswith(("/", "data:"))
    upload(app, "other.png", image_bytes(street_rgb(seed=3)))
    assert_no_exception(app)
    assert {args["photo"] for args in influence_charts(app)} != photos  # a new image, a new file


def test_cross_share_per_loop_count_comes_from_the_maps(app, checkpoints):
    uploaded(app)
    assert_no_exception(app)
    loaded = load_model(checkpoints / "tiny_r2.safetensors", torch.device("cpu"))
    decoded = encode_and_decode(loaded, street_rgb(), [1, 2, 3])
    maps = [column_maps(decoded[r], 64, 48, "attention", with_per_loop=False) for r in (1, 2, 3)]
    expected = [cross_share(m.composed, *m.cell) for m in maps]
    assert expected[0] == pytest.approx(1.0) and expected[1] < 0.99  # from the maths, not special-cased
    assert cross_lines(app) == [f"{100 * share:.1f}%" for share in expected]
    bars = next(element.proto.body for element in app.get("html") if "cross-shares" in element.proto.body)
    for share in expected:
        assert f'class="on-cross" style="width:{100 * share:.3f}%' in bars
    assert "After one loop it is 100.0%" in texts(app)


@pytest.mark.parametrize(
    "mode, setting, title",
    [
        ("Linear (0 to the largest value)", None, "influence<br>0 to "),
        ("Clamp at a percentile", ("clamp_percentile", 90.0), "clamped at p90 = "),
        ("Clamp at a value", ("clamp_value", 0.25), "clamped at 0.25%"),
        ("Log scale", None, "log scale"),
    ],
)
def test_each_colour_scale_says_what_it_shows(app, mode, setting, title):
    uploaded(app)
    before = map_images(app)
    app.sidebar.selectbox(key="scale_mode").set_value(mode).run()
    if setting is not None:
        key, value = setting
        widget = app.sidebar.slider(key=key) if key == "clamp_percentile" else app.sidebar.number_input(key=key)
        widget.set_value(value).run()
    assert_no_exception(app)
    titles = colour_bar_titles(app)
    assert len(titles) == 3 and all(title in t for t in titles), titles
    if mode != "Linear (0 to the largest value)":
        assert map_images(app) != before  # the colours changed too, not only the title


def test_hiding_the_cross_changes_the_map_and_its_scale(app):
    uploaded(app)
    before = map_images(app)
    app.sidebar.checkbox(key="hide_cross").check().run()
    assert_no_exception(app)
    after = map_images(app)
    assert all(new != old for new, old in zip(after, before, strict=True))
    assert all(t.startswith("influence off the cross<br>") for t in colour_bar_titles(app))


def test_comparing_two_pixels(app):
    uploaded(app)
    app.checkbox(key=COMPARE_KEY).check().run()
    assert_no_exception(app)
    assert app.radio(key=TARGET_KEY).value == PIXEL_A
    assert "**Pixel B** (32, 72)" in texts(app)  # lower left until placed
    digest = app.session_state["decoded_upload"][1].digest
    app.session_state[POINT_B_KEY] = {"digest": digest, "px": 100, "py": 20}
    app.run()
    assert "**Pixel B** (100, 20)" in texts(app)
    overlaps = [line for line in texts(app).splitlines() if line.startswith("A and B share **")]
    assert len(overlaps) == 3
    captions = [caption for image in app.image for caption in image.captions]
    assert sum(caption.startswith("pixel B at R =") for caption in captions) == 3
    app.checkbox(key=COMPARE_KEY).uncheck().run()
    assert "Pixel B" not in texts(app)


def test_a_click_places_a_then_b_when_comparing(monkeypatch):
    """The click callback: without comparing it moves A; when comparing it alternates A, B, A."""
    image = decode_image(image_bytes(street_rgb()))
    state = {"w": {"x": 10, "y": 20, "width": 128, "height": 96}}
    monkeypatch.setattr(view.st, "session_state", state)
    view._remember_click("w", image)
    assert state[POINT_KEY]["px"] == 10 and POINT_B_KEY not in state and TARGET_KEY not in state
    state.update({COMPARE_KEY: True, TARGET_KEY: PIXEL_B, "w": {"x": 30, "y": 40, "width": 128, "height": 96}})
    view._remember_click("w", image)
    assert (state[POINT_B_KEY]["px"], state[POINT_B_KEY]["py"]) == (30, 40) and state[TARGET_KEY] == PIXEL_A
    state["w"] = {"x": 50, "y": 60, "width": 128, "height": 96}
    view._remember_click("w", image)
    assert state[POINT_KEY]["px"] == 50 and state[POINT_B_KEY]["px"] == 30 and state[TARGET_KEY] == PIXEL_B


def change_lines(app: AppTest) -> list[str]:
    return [line for line in texts(app).splitlines() if "→" in line and "px)" in line]


def test_segmentation_changes_between_loop_counts(app, checkpoints):
    uploaded(app)
    app.sidebar.radio(key="comparison").set_value("Separately trained models per R").run()
    assert_no_exception(app)
    assert "Where the segmentation changes between loop counts" in texts(app)
    captions = [caption for image in app.image for caption in image.captions]
    assert sum("R = 1 → R = 2" in c for c in captions) == 1 and sum("R = 2 → R = 3" in c for c in captions) == 1
    rgb = decode_image(image_bytes(street_rgb())).rgb
    predictions = [
        encode_and_decode(load_model(checkpoints / f"tiny_r{r}.safetensors", torch.device("cpu")), rgb, [r])[r]
        for r in (1, 2)
    ]
    changes = prediction_changes(predictions[0].prediction, predictions[1].prediction)
    first = changes.transitions[0]  # different random models: their segmentations differ
    names = f"{CLASS_NAMES[first.before]} → {CLASS_NAMES[first.after]}"
    expected = f"- {names}: {100 * first.share:.3g}% ({first.pixels} px)"
    assert expected in change_lines(app)
    app.selectbox(key=CHANGE_FILTER_KEY).set_value(CLASS_NAMES[first.before]).run()
    assert_no_exception(app)
    assert change_lines(app) and all(CLASS_NAMES[first.before] in line for line in change_lines(app))
    app.sidebar.checkbox(key="show_changes").uncheck().run()
    assert "Where the segmentation changes" not in texts(app)


def test_sidebar_names_each_models_dataset_and_class_count(app):
    uploaded(app)
    assert "`tiny_r2`: synthetic, 4 classes, trained with R = 2" in texts(app)


def test_first_visit_guide_is_dismissed_for_the_session_and_comes_back(app):
    app.run()
    assert "What a criss-cross is" not in texts(app)
    assert "**How to read this page**" in texts(app)
    assert "Set `CCNET_EXAMPLES`" in texts(app)  # no examples folder: no example button, a hint instead
    assert [b.label for b in app.button] == ["Got it"]
    app.button(key="guide-close").click().run()
    assert "How to read this page" not in texts(app)
    app.run()
    assert "How to read this page" not in texts(app)  # remembered across reruns
    app.sidebar.button(key="guide-show").click().run()
    assert "How to read this page" in texts(app)


def test_guide_opens_an_example_in_one_click(monkeypatch, tmp_path):
    from ccnet.classes import CAMVID

    folder = tmp_path / "camvid_checkpoints"
    save_tiny_checkpoint(folder, "camvid_r2", recurrence=2, classes=CAMVID)
    monkeypatch.setenv("CCNET_CHECKPOINTS", str(folder))
    monkeypatch.setenv("CCNET_EXAMPLES", str(camvid_like(tmp_path / "camvid")))
    app = AppTest.from_file(MAIN, default_timeout=60).run()
    assert app.sidebar.radio(key="source").value == "Examples folder"  # examples there: they come first
    app.sidebar.radio(key="source").set_value("Upload").run()
    assert "Upload an image" in texts(app)
    app.button(key="guide-example").click().run()
    assert_no_exception(app)
    assert app.sidebar.radio(key="source").value == "Examples folder"
    assert "How to read this page" not in texts(app) and "Clicked pixel" in texts(app)


def test_scorecard_reads_each_number_against_its_baseline(app):
    upload(app.run(), "street.png", image_bytes(street_rgb()))
    assert_no_exception(app)
    text = texts(app)
    assert text.count("same-class lift (predicted classes)") == 3
    assert text.count("what a uniform map gives") + text.count("no other cell of its class") >= 3
    assert text.count("mean attention distance") == 3 and text.count("(uniform map: ") == 3
    assert text.count("γ = 0.5; attention branch / residual at this cell, per loop") == 3
    assert "barely reaches its output" not in text  # gamma 0.5 is far from 0


def test_a_model_whose_gamma_is_near_zero_gets_a_visible_note(monkeypatch, tmp_path):
    from safetensors.torch import load_file, save_file

    from ccnet.checkpoint import SAVE_ID_KEY

    folder = make_checkpoint_folder(tmp_path / "quiet", recurrences=(2,))
    for weights in folder.glob("*.safetensors"):  # the same model with gamma ~ 0, saved as a new save
        state = load_file(str(weights))
        state["head.attention.cca.gamma"] = torch.full_like(state["head.attention.cca.gamma"], 0.003)
        save_file(state, str(weights), metadata=_safetensors_metadata(weights) | {SAVE_ID_KEY: "quiet"})
        sidecar = weights.with_suffix(".json")
        sidecar.write_text(json.dumps(json.loads(sidecar.read_text()) | {"save_id": "quiet"}))
    monkeypatch.setenv("CCNET_CHECKPOINTS", str(folder))
    monkeypatch.setenv("CCNET_DEVICE", "cpu")
    app = upload(AppTest.from_file(MAIN, default_timeout=60).run(), "street.png", image_bytes(street_rgb()))
    assert_no_exception(app)
    assert "γ = 0.003: this model's attention barely reaches its output" in texts(app)


def _safetensors_metadata(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        return handle.metadata() or {}


def test_scorecard_uses_the_ground_truth_when_the_image_has_labels(monkeypatch, tmp_path):
    app = examples_with_truth(monkeypatch, tmp_path)
    assert_no_exception(app)
    assert texts(app).count("same-class lift (ground truth)") == 3


def test_reverse_view_shows_who_reads_from_the_pixel(app, checkpoints):
    from app.explorer import FEEDS, column_maps, encode_and_decode
    from ccnet.propagation import reverse_influence_maps

    upload(app.run(), "street.png", image_bytes(street_rgb()))
    before = influence_charts(app)
    app.sidebar.radio(key="direction").set_value("Which pixels read from this pixel?").run()
    assert_no_exception(app)
    assert "Reverse view: each map shows which pixels read from the clicked pixel" in texts(app)
    after = influence_charts(app)
    assert len(after) == len(before) == 3 and after != before
    # The map is the column of the composition, normalised: the library's numbers.
    loaded = load_model(checkpoints / "tiny_r2", torch.device("cpu"))
    decoded = encode_and_decode(loaded, street_rgb(), [2])[2]
    maps = column_maps(decoded, 64, 48, "attention", False, FEEDS)
    column = reverse_influence_maps(decoded.attentions, *maps.cell)[-1].numpy()
    np.testing.assert_allclose(maps.composed, column / column.sum(), rtol=1e-6)


def test_who_attends_to_whom_draws_a_class_matrix_per_column(app, checkpoints):
    from app.explorer import encode_and_decode
    from app.image_summary import image_attention
    from ccnet.analysis import class_attention_matrix

    upload(app.run(), "street.png", image_bytes(street_rgb()))
    assert_no_exception(app)
    specs = [json.loads(chart.proto.spec) for chart in app.get("plotly_chart")]
    heat = [s for s in specs if "query similarity" in s["layout"].get("title", {}).get("text", "")]
    assert [s["layout"]["title"]["text"].split(":")[0] for s in heat] == ["R = 1", "R = 2 (as trained)", "R = 3"]
    assert all(s["data"][0]["type"] == "heatmap" for s in heat)
    # Rows are the classes present; the lift is the library's share over the class's share of the image.
    decoded = encode_and_decode(load_model(checkpoints / "tiny_r2", torch.device("cpu")), street_rgb(), [2])[2]
    summary = image_attention("R = 2", decoded.attentions, decoded.grid_classes, len(CLASS_NAMES))
    full = class_attention_matrix(decoded.attentions, torch.tensor(decoded.grid_classes), len(CLASS_NAMES), -1)
    np.testing.assert_allclose(summary.shares, full[-1][summary.classes][:, summary.classes].numpy())
    np.testing.assert_allclose(summary.shares.sum(axis=1), 1.0, rtol=1e-9)
    share_of_image = [(decoded.grid_classes == c).mean() for c in summary.classes]
    np.testing.assert_allclose(summary.lift * share_of_image, summary.shares)
    assert 0 < summary.query_similarity <= 1


def test_a_class_segment_query_averages_its_cells_maps(app, checkpoints):
    from app.explorer import column_maps, encode_and_decode
    from app.grid import pixel_to_cell, segment_at
    from ccnet.propagation import region_influence_maps

    upload(app.run(), "street.png", image_bytes(street_rgb()))
    app.sidebar.radio(key="query").set_value("Its predicted-class segment").run()
    assert_no_exception(app)
    assert "Query: the clicked pixel's class segment (" in texts(app)
    decoded = encode_and_decode(load_model(checkpoints / "tiny_r2", torch.device("cpu")), street_rgb(), [2])[2]
    cell = pixel_to_cell(64, 48, decoded.prediction.shape[:2], decoded.grid_size)
    region = segment_at(decoded.grid_classes, cell)
    maps = column_maps(decoded, 64, 48, "attention", False, region=region)
    expected = region_influence_maps(decoded.attentions, torch.from_numpy(region))[-1].numpy()
    np.testing.assert_allclose(maps.composed, expected, rtol=1e-6)
    app.sidebar.radio(key="query").set_value("Its ground-truth segment (examples with labels)").run()
    assert_no_exception(app)
    assert "No segment here" in texts(app)  # an upload has no labels


def test_focus_layout_draws_one_large_map_and_thumbnails_that_take_the_focus(app):
    upload(app.run(), "street.png", image_bytes(street_rgb()))
    app.sidebar.radio(key="layout").set_value("Focus: one large, the others small").run()
    assert_no_exception(app)
    assert len(influence_charts(app)) == 1  # the trained R = 2, drawn large (its width: the browser test)
    headers = [m.value for m in app.markdown if m.value.startswith("#### ")]
    assert headers == ["#### R = 2 (as trained)"]
    buttons = [b.label for b in app.button]
    assert "Focus on R = 1" in buttons and "Focus on R = 3" in buttons
    app.button(key="focus-2").click().run()
    assert_no_exception(app)
    assert [m.value for m in app.markdown if m.value.startswith("#### ")] == ["#### R = 3"]
    assert len(app.get("download_button")) == 3  # the panel still holds every column


def test_any_models_side_by_side_at_chosen_loop_counts(app):
    upload(app.run(), "street.png", image_bytes(street_rgb()))
    app.sidebar.radio(key="comparison").set_value("Any models side by side").run()
    assert_no_exception(app)
    app.sidebar.selectbox(key="chosen-model-0").set_value("tiny_r3").run()
    app.sidebar.selectbox(key="chosen-r-0").set_value(2).run()
    app.sidebar.selectbox(key="chosen-model-1").set_value("tiny_r3").run()
    app.sidebar.selectbox(key="chosen-r-1").set_value(2).run()
    assert_no_exception(app)
    headers = [m.value for m in app.markdown if m.value.startswith("#### ")]
    assert headers[:2] == ["#### tiny_r3 at R = 2", "#### tiny_r3 at R = 2 (column 2)"]
    assert len(influence_charts(app)) == 3


# --- issue 14: a dragged box as the query region; a class matrix row highlighting its class --------------

BOX_QUERY = "A box you drag on the image"


def image_widget_args(app: AppTest) -> dict:
    """What the page sent the clickable image component: the picture (src), click_and_drag, ..."""
    widget = next(c for c in app.get("component_instance") if "clickable_image" in c.proto.component_name)
    return json.loads(widget.proto.json_args)


def test_a_dragged_box_is_the_query_region(app, checkpoints):
    from app.grid import box_cells
    from ccnet.propagation import region_influence_maps

    upload(app.run(), "street.png", image_bytes(street_rgb()))
    assert image_widget_args(app)["click_and_drag"] is False
    app.sidebar.radio(key="query").set_value(BOX_QUERY).run()
    assert_no_exception(app)
    assert image_widget_args(app)["click_and_drag"] is True  # the image now reports drags
    assert "Query: the clicked pixel's feature cell as a box" in texts(app)  # before a drag: one cell
    decoded = encode_and_decode(load_model(checkpoints / "tiny_r2", torch.device("cpu")), street_rgb(), [1, 2, 3])
    one_cell = box_cells((64, 48, 64, 48), (96, 128), decoded[2].grid_size)
    maps = [column_maps(decoded[r], 64, 48, "attention", False, region=one_cell).composed for r in (1, 2, 3)]
    assert entropies(app) == [f"{entropy_bits(m):.3f}" for m in maps]
    picture = image_widget_args(app)["src"]

    # What the drag callback writes (checked on its own below): the box, and pixel A at its centre.
    digest = app.session_state["decoded_upload"][1].digest
    app.session_state[BOX_KEY] = {"digest": digest, "box": (10, 20, 60, 50)}
    app.session_state[POINT_KEY] = {"digest": digest, "px": 35, "py": 35}
    app.run()
    assert_no_exception(app)
    region = box_cells((10, 20, 60, 50), (96, 128), decoded[2].grid_size)
    assert 1 < region.sum() < region.size
    assert f"Query: the box from (10, 20) to (60, 50), {region.sum()} feature cells in the R = 1 column" in texts(app)
    maps = [column_maps(decoded[r], 35, 35, "attention", False, region=region).composed for r in (1, 2, 3)]
    assert entropies(app) == [f"{entropy_bits(m):.3f}" for m in maps]
    expected = region_influence_maps(decoded[2].attentions, torch.from_numpy(region))[-1].numpy()
    np.testing.assert_allclose(maps[1], expected, rtol=1e-6)  # the library's region map, nothing re-derived
    text = texts(app)
    assert text.count("same-class lift (predicted classes)") == 3 and text.count("mean attention distance") == 3
    assert image_widget_args(app)["src"] != picture  # the box is drawn on the image

    app.sidebar.radio(key="query").set_value("The clicked pixel").run()
    assert_no_exception(app)
    assert image_widget_args(app)["click_and_drag"] is False and "Query: the box" not in texts(app)


def test_a_drag_sets_the_box_and_moves_pixel_a_to_its_centre(monkeypatch):
    """The drag callback: corners in any order and outside the image are clipped; a click is a one-pixel box."""
    image = decode_image(image_bytes(street_rgb()))  # 128 x 96, shown here at half size
    shown = {"width": 64, "height": 48, "unix_time": 1}
    state = {"w": {"x1": 60, "y1": 40, "x2": 20, "y2": 10} | shown}  # dragged up and to the left
    monkeypatch.setattr(view.st, "session_state", state)
    view._remember_drag("w", image)
    assert state[BOX_KEY] == {"digest": image.digest, "box": (40, 20, 120, 80)}
    assert (state[POINT_KEY]["px"], state[POINT_KEY]["py"]) == (80, 50)
    state["w"] = {"x1": 60, "y1": 40, "x2": -30, "y2": 500} | shown  # released outside the image
    view._remember_drag("w", image)
    assert state[BOX_KEY]["box"] == (0, 80, 120, 95)
    state["w"] = {"x1": 10, "y1": 10, "x2": 10, "y2": 10} | shown  # a click
    view._remember_drag("w", image)
    assert state[BOX_KEY]["box"] == (20, 20, 20, 20) and (state[POINT_KEY]["px"], state[POINT_KEY]["py"]) == (20, 20)
    corners = {"x1": 1, "y1": 1, "x2": 2, "y2": 3}
    not_drags = [None, {"x": 5, "y": 5} | shown, corners | shown | {"x1": None}, corners | shown | {"y2": math.nan}]
    for bad in not_drags + [corners]:  # a click's report, no number, NaN, no shown size
        state["w"] = bad
        view._remember_drag("w", image)
        assert state[BOX_KEY]["box"] == (20, 20, 20, 20)  # ignored, nothing raised


def test_a_class_matrix_row_highlights_its_pixels_until_cleared(app, checkpoints):
    from streamlit.proto.PlotlyChart_pb2 import PlotlyChart

    from app.image_summary import HIGHLIGHT_KEY

    upload(app.run(), "street.png", image_bytes(street_rgb()))
    matrices = [c for c in app.get("plotly_chart") if "-matrix-" in c.proto.id]
    assert [list(c.proto.selection_mode) for c in matrices] == [[PlotlyChart.SelectionMode.POINTS]] * 3  # clickable
    assert all([t["type"] for t in json.loads(c.proto.spec)["data"]] == ["heatmap", "scatter"] for c in matrices)
    picture = image_widget_args(app)["src"]

    # What a click on a row writes (image_summary._remember_row, tested in test_app_units.py).
    decoded = encode_and_decode(load_model(checkpoints / "tiny_r2", torch.device("cpu")), street_rgb(), [2])[2]
    class_id = decoded.classes_present[0]
    digest = app.session_state["decoded_upload"][1].digest
    chosen = {"digest": digest, "column": "R = 2 (as trained)", "class_id": class_id, "name": CLASS_NAMES[class_id]}
    app.session_state[HIGHLIGHT_KEY] = chosen
    app.run()
    assert_no_exception(app)
    expected = f"Highlighted: the pixels the R = 2 (as trained) column predicts as **{CLASS_NAMES[class_id]}**"
    assert expected in texts(app)
    assert image_widget_args(app)["src"] != picture  # the image is redrawn with the class highlighted

    app.button(key="clear-highlight").click().run()
    assert_no_exception(app)
    assert "Highlighted:" not in texts(app) and image_widget_args(app)["src"] == picture
    assert all(c.proto.id.endswith("-1") for c in app.get("plotly_chart") if "-matrix-" in c.proto.id)  # new charts

    app.session_state[HIGHLIGHT_KEY] = chosen | {"name": "not this model's class"}  # e.g. another model chosen
    app.run()
    assert_no_exception(app)
    assert "Highlighted:" not in texts(app)


# --- issue 30: a newcomer's first screen ------------------------------------------------------------------------


def test_a_fresh_clone_opens_on_the_bundled_example_with_a_telling_pixel_clicked(monkeypatch):
    """No settings at all: the bundled checkpoints and examples, maps painted before any action."""
    from app.examples import discover_examples
    from app.settings import BUNDLED_EXAMPLES

    for name in ("CCNET_CHECKPOINTS", "CCNET_EXAMPLES", "CCNET_EXTRA_CHECKPOINTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CCNET_DEVICE", "cpu")
    start = discover_examples(BUNDLED_EXAMPLES).start("explorer")
    assert start is not None and start.example.startswith("train/")  # a train frame: never test
    app = AppTest.from_file(MAIN, default_timeout=120).run()
    assert_no_exception(app)
    assert app.sidebar.radio(key="source").value == "Examples folder"
    assert app.sidebar.selectbox(key="example").value == start.example
    assert f"Clicked pixel** ({start.point[0]}, {start.point[1]})" in texts(app)  # 480 x 360: not rescaled
    assert "Start here" in texts(app)
    assert len(influence_charts(app)) == 3  # R = 1, 2, 3 painted with no action
    assert "Ground truth there: Car" in texts(app)  # the telling spot is a car
    # the first screen unrolls the default; the per-R modes (offered as the queue bundles the family) wait in the list
    assert app.sidebar.radio(key="comparison").value == "One model, unrolled R = 1, 2, 3"


def test_a_click_or_another_example_replaces_the_start_pixel_and_its_hint(monkeypatch):
    for name in ("CCNET_CHECKPOINTS", "CCNET_EXAMPLES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CCNET_DEVICE", "cpu")
    app = AppTest.from_file(MAIN, default_timeout=120).run()
    digest = app.session_state[POINT_KEY]["digest"]
    app.session_state[POINT_KEY] = {"digest": digest, "px": 20, "py": 30}  # what a click's callback stores
    app.run()
    assert_no_exception(app)
    assert "Clicked pixel** (20, 30)" in texts(app) and "Start here" not in texts(app)
    app.sidebar.selectbox(key="example").set_value("train/0001TP_007110.jpg").run()
    assert_no_exception(app)
    assert "Clicked pixel** (240, 180)" in texts(app)  # no start point for this one: its centre
    assert "Start here" not in texts(app)


# --- issue 29: end-to-end models and heads are never compared in one row ----------------------------------------


def _family_app(monkeypatch, tmp_path, end_to_end: tuple[int, ...], heads: tuple[int, ...]) -> AppTest:
    folder = tmp_path / "family"
    for r in end_to_end:
        save_tiny_checkpoint(folder, f"e2e_r{r}", recurrence=r, seed=r)
    for r in heads:
        save_tiny_checkpoint(folder, f"head_r{r}", recurrence=r, seed=10 + r, training={"head_only_on": "backbone-1"})
    write_index(folder, default="e2e_r2" if 2 in end_to_end else None)
    monkeypatch.setenv("CCNET_CHECKPOINTS", str(folder))
    monkeypatch.setenv("CCNET_DEVICE", "cpu")
    return upload(AppTest.from_file(MAIN, default_timeout=60).run(), "street.png", image_bytes(street_rgb()))


def test_the_per_r_modes_show_one_family_each(monkeypatch, tmp_path):
    app = _family_app(monkeypatch, tmp_path, end_to_end=(1, 2, 3), heads=(1, 2, 3))
    assert app.sidebar.radio(key="comparison").options == [
        "One model, unrolled R = 1, 2, 3", "Separately trained models per R", "Heads per R on one frozen backbone",
        "Any models side by side"]  # fmt: skip
    app.sidebar.radio(key="comparison").set_value("Separately trained models per R").run()
    assert_no_exception(app)
    headers = [m.value for m in app.markdown if m.value.startswith("#### ")]
    assert headers == [f"#### R = {r}: e2e_r{r} (end to end)" for r in (1, 2, 3)]
    app.sidebar.radio(key="comparison").set_value("Heads per R on one frozen backbone").run()
    assert_no_exception(app)
    headers = [m.value for m in app.markdown if m.value.startswith("#### ")]
    assert headers == [f"#### R = {r}: head_r{r} (head)" for r in (1, 2, 3)]


def test_the_paper_recipe_twin_is_offered_in_the_r2_column_and_says_so(monkeypatch, tmp_path):
    folder = tmp_path / "family"
    default = {"model": {"gamma_init": 1.0}, "loss": {"attention_weight": 0.4}}
    for r in (1, 2, 3):
        save_tiny_checkpoint(folder, f"e2e_r{r}", recurrence=r, seed=r, train_config=default)
    paper = {"model": {"gamma_init": 0.0}, "loss": {"attention_weight": 0.0}}
    save_tiny_checkpoint(folder, "e2e_r2_paper", recurrence=2, seed=7, train_config=paper)
    write_index(folder, default="e2e_r2")
    monkeypatch.setenv("CCNET_CHECKPOINTS", str(folder))
    monkeypatch.setenv("CCNET_DEVICE", "cpu")
    app = upload(AppTest.from_file(MAIN, default_timeout=60).run(), "street.png", image_bytes(street_rgb()))
    app.sidebar.radio(key="comparison").set_value("Separately trained models per R").run()
    assert_no_exception(app)
    assert app.sidebar.selectbox(key="trained-2").options == ["e2e_r2", "e2e_r2_paper"]  # the family's own first
    app.sidebar.selectbox(key="trained-2").set_value("e2e_r2_paper").run()
    assert_no_exception(app)
    headers = [m.value for m in app.markdown if m.value.startswith("#### ")]
    assert headers == ["#### R = 1: e2e_r1 (end to end)", "#### R = 2: e2e_r2_paper (end to end, paper's losses)",
                       "#### R = 3: e2e_r3 (end to end)"]  # fmt: skip


def test_an_end_to_end_r2_beside_heads_is_no_per_r_comparison(monkeypatch, tmp_path):
    """The bundle before the family is trained: an end-to-end R = 2 and heads for R = 1 and 3 only. The heads compare
    among themselves (two loop counts); the end-to-end R = 2 alone is no per-R comparison and is never their third."""
    app = _family_app(monkeypatch, tmp_path, end_to_end=(2,), heads=(1, 3))
    assert_no_exception(app)
    assert app.sidebar.radio(key="comparison").options == [
        "One model, unrolled R = 1, 2, 3", "Heads per R on one frozen backbone", "Any models side by side"]  # fmt: skip
    app.sidebar.radio(key="comparison").set_value("Heads per R on one frozen backbone").run()
    assert_no_exception(app)
    headers = [m.value for m in app.markdown if m.value.startswith("#### ")]
    assert headers == ["#### R = 1: head_r1 (head)", "#### R = 3: head_r3 (head)"]
    assert any("No head with R = 2 on this backbone is bundled" in c.value for c in app.sidebar.caption)
    assert any("trained end to end are missing for R = 1, R = 3" in c.value for c in app.sidebar.caption)


def test_a_family_still_in_training_compares_the_loop_counts_it_has(monkeypatch, tmp_path):
    """R = 0, 1 and 2 end to end (R = 3 still in the queue): the per-R mode is offered with those, says which R is
    missing, and mixes no head in."""
    app = _family_app(monkeypatch, tmp_path, end_to_end=(0, 1, 2), heads=(3,))
    assert "Separately trained models per R" in app.sidebar.radio(key="comparison").options
    app.sidebar.radio(key="comparison").set_value("Separately trained models per R").run()
    assert_no_exception(app)
    headers = [m.value for m in app.markdown if m.value.startswith("#### ")]
    assert headers == ["#### R = 1: e2e_r1 (end to end)", "#### R = 2: e2e_r2 (end to end)"]
    assert any("trained end to end with R = 3 is bundled yet" in c.value for c in app.sidebar.caption)
    captions = [caption for image in app.image for caption in image.captions]
    assert [c.split(":")[0] for c in captions if "→" in c] == ["R = 0 → R = 1", "R = 1 → R = 2"]
    assert "head_r3" not in texts(app)
    app.sidebar.radio(key="comparison").set_value("One model, unrolled R = 1, 2, 3").run()
    assert not any("is bundled yet" in c.value for c in app.sidebar.caption)  # said only where it applies


def test_the_per_r_modes_show_the_familys_r0_segmentation_and_its_changes(monkeypatch, tmp_path):
    """R = 0 has no attention to click: its segmentation sits under the image, its class at the clicked pixel
    beside the others', and R = 0 → R = 1 leads the changes; a box hides it, and the unrolled mode never shows it."""
    app = _family_app(monkeypatch, tmp_path, end_to_end=(0, 1, 2, 3), heads=())
    app.sidebar.radio(key="comparison").set_value("Separately trained models per R").run()
    assert_no_exception(app)
    assert app.sidebar.checkbox(key="with_r0").value is True
    headers = [m.value for m in app.markdown if m.value.startswith("#### ")]
    assert headers == [f"#### R = {r}: e2e_r{r} (end to end)" for r in (1, 2, 3)]  # R = 0 is not a map column
    assert "##### R = 0: e2e_r0 (end to end, no attention)" in texts(app)
    captions = [caption for image in app.image for caption in image.captions]
    assert "segmentation at R = 0 (no attention: no map)" in captions
    assert [c.split(":")[0] for c in captions if "→" in c] == ["R = 0 → R = 1", "R = 1 → R = 2", "R = 2 → R = 3"]
    px, py = (int(v) for v in re.search(r"Clicked pixel\*\* \((\d+), (\d+)\)", texts(app)).groups())
    rgb = decode_image(image_bytes(street_rgb())).rgb
    loaded = load_model(tmp_path / "family" / "e2e_r0.safetensors", torch.device("cpu"))
    expected = CLASS_NAMES[int(encode_and_decode(loaded, rgb, [0])[0].prediction[py, px])]
    assert f"predicted class at the clicked pixel: **{expected}**" in texts(app)
    assert "`e2e_r0`: synthetic, 4 classes, trained with R = 0" in texts(app)  # the model list and card name it
    assert dict(app.query_params)["with_r0"] == "1"  # a link keeps it

    app.sidebar.checkbox(key="with_r0").uncheck().run()
    assert_no_exception(app)
    assert "no attention" not in texts(app)
    captions = [caption for image in app.image for caption in image.captions]
    assert [c.split(":")[0] for c in captions if "→" in c] == ["R = 1 → R = 2", "R = 2 → R = 3"]
    app.sidebar.radio(key="comparison").set_value("One model, unrolled R = 1, 2, 3").run()
    assert_no_exception(app)
    assert "no attention" not in texts(app)
    app.sidebar.radio(key="comparison").set_value("Separately trained models per R").run()
    assert app.sidebar.checkbox(key="with_r0").value is False  # the choice survives a visit to another mode
    assert "no attention" not in texts(app)
    app.sidebar.checkbox(key="with_r0").check().run()
    assert "##### R = 0: e2e_r0 (end to end, no attention)" in texts(app)


def test_a_head_family_gets_the_head_r0_on_its_backbone(monkeypatch, tmp_path):
    app = _family_app(monkeypatch, tmp_path, end_to_end=(0, 2), heads=(0, 1, 2, 3))
    app.sidebar.radio(key="comparison").set_value("Heads per R on one frozen backbone").run()
    assert_no_exception(app)
    assert "##### R = 0: head_r0 (head, no attention)" in texts(app)
    assert "e2e_r0" not in texts(app)


def test_a_link_that_turned_r0_off_reopens_without_it(monkeypatch, tmp_path):
    folder = tmp_path / "family"
    for r in (0, 1, 2, 3):
        save_tiny_checkpoint(folder, f"e2e_r{r}", recurrence=r, seed=r)
    write_index(folder, default="e2e_r2")
    monkeypatch.setenv("CCNET_CHECKPOINTS", str(folder))
    monkeypatch.setenv("CCNET_DEVICE", "cpu")
    app = AppTest.from_file(MAIN, default_timeout=60)
    app.query_params["comparison"] = "Separately trained models per R"
    app.query_params["with_r0"] = "0"
    app = upload(app.run(), "street.png", image_bytes(street_rgb()))
    assert_no_exception(app)
    assert app.sidebar.checkbox(key="with_r0").value is False and "no attention" not in texts(app)
