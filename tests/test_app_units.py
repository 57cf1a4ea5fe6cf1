"""The app's pieces on their own: geometry, statistics, rendering, settings, catalogue, examples, cache."""

from __future__ import annotations

import base64
import io
import json
import math
import threading
from dataclasses import replace

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from PIL import Image

from app import render
from app.examples import HOW_TO_SET_EXAMPLES, discover_examples, load_example
from app.explorer import BoundedCache, cached_decodes, column_maps, encode_and_decode
from app.grid import box_cells, cell_centre, display_box_to_image, display_to_image, pixel_to_cell, sample_at_cells
from app.models import Catalogue, CatalogueEntry, load_model, read_catalogue, resolve_device
from app.settings import REPO_ROOT, Settings, SettingsError
from app.stats import coverage_share, entropy_bits, image_miou, influence_stats, own_class_share
from ccnet.checkpoint import write_index
from ccnet.propagation import influence_maps
from tests.test_app_helpers import make_checkpoint_folder, save_tiny_checkpoint, street_rgb

# --- geometry -------------------------------------------------------------------------------------------


def test_pixel_to_cell_matches_the_cells_pixels_cover():
    assert pixel_to_cell(0, 0, (360, 480), (45, 60)) == (0, 0)
    assert pixel_to_cell(7, 7, (360, 480), (45, 60)) == (0, 0)
    assert pixel_to_cell(8, 15, (360, 480), (45, 60)) == (1, 1)
    assert pixel_to_cell(479, 359, (360, 480), (45, 60)) == (44, 59)
    assert pixel_to_cell(10_000, -5, (360, 480), (45, 60)) == (0, 59)  # clamped


def test_cell_centre_maps_back_into_its_cell():
    for y, x in [(0, 0), (3, 7), (44, 59)]:
        px, py = cell_centre(y, x, (360, 480), (45, 60))
        assert pixel_to_cell(px, py, (360, 480), (45, 60)) == (y, x)


def test_sample_at_cells_takes_the_pixel_under_each_centre():
    classes = np.zeros((8, 8), np.uint8)
    classes[4:, 4:] = 7
    assert np.array_equal(sample_at_cells(classes, (2, 2)), [[0, 0], [0, 7]])


def test_display_to_image_undoes_the_display_scale():
    assert display_to_image(100, 50, (240, 180), (360, 480)) == (200, 100)
    assert display_to_image(240, 180, (240, 180), (360, 480)) == (479, 359)


def test_a_drag_maps_to_an_ordered_image_box_clipped_to_the_image():
    shown, image = (240, 180), (360, 480)  # shown at half size: display (x, y) -> image (2x, 2y)
    assert display_box_to_image((10, 20), (50, 60), shown, image) == (20, 40, 100, 120)
    assert display_box_to_image((50, 60), (10, 20), shown, image) == (20, 40, 100, 120)  # reversed
    assert display_box_to_image((50, 20), (10, 60), shown, image) == (20, 40, 100, 120)  # anti-diagonal
    assert display_box_to_image((200, 150), (-20, 400), shown, image) == (0, 300, 400, 359)  # released outside
    assert display_box_to_image((30, 30), (30, 30), shown, image) == (60, 60, 60, 60)  # a click


def test_box_cells_are_the_cells_the_box_touches():
    # 360 x 480 image on a 45 x 60 grid: 8 x 8 pixels per cell
    cells = box_cells((8, 16, 31, 23), (360, 480), (45, 60))
    assert cells.shape == (45, 60) and cells.dtype == bool
    assert np.argwhere(cells).min(axis=0).tolist() == [2, 1] and np.argwhere(cells).max(axis=0).tolist() == [2, 3]
    assert cells.sum() == 3  # cells (2, 1) to (2, 3): x 8..31 is three cells, y 16..23 one
    assert box_cells((9, 17, 9, 17), (360, 480), (45, 60)).sum() == 1  # a zero-area box: the cell under it
    np.testing.assert_array_equal(box_cells((31, 23, 8, 16), (360, 480), (45, 60)), cells)  # reversed corners
    # outside the image: clamped into the grid, never empty and never an error
    assert box_cells((-50, -50, 10_000, 10_000), (360, 480), (45, 60)).all()
    far = box_cells((900, 500, 1000, 700), (360, 480), (45, 60))
    assert far.sum() == 1 and far[44, 59]
    edge = box_cells((-40, 100, -5, 119), (360, 480), (45, 60))  # rows 100..119: cells 12 to 14
    assert edge[:, 0].sum() == 3 and edge.sum() == 3  # left of the image: the first column's cells


# --- statistics -----------------------------------------------------------------------------------------


def test_coverage_share_of_one_hot_and_uniform_maps():
    one_hot = np.zeros((10, 10))
    one_hot[3, 3] = 1
    assert coverage_share(one_hot) == pytest.approx(0.01)
    assert coverage_share(np.full((10, 10), 0.01)) == pytest.approx(0.9)


def test_coverage_share_counts_the_fewest_cells_reaching_the_mass():
    influence = np.array([[0.5, 0.3], [0.15, 0.05]])
    assert coverage_share(influence, 0.8) == pytest.approx(0.5)
    assert coverage_share(influence, 0.81) == pytest.approx(0.75)


def test_entropy_in_bits():
    assert entropy_bits(np.full((4, 4), 1 / 16)) == pytest.approx(4.0)
    one_hot = np.zeros((4, 4))
    one_hot[0, 0] = 1
    assert entropy_bits(one_hot) == 0.0


def test_own_class_share():
    influence = np.array([[0.5, 0.25], [0.25, 0.0]])
    classes = np.array([[1, 2], [1, 2]])
    assert own_class_share(influence, classes, 1) == pytest.approx(0.75)


def test_influence_stats_bundle():
    stats = influence_stats(np.full((4, 4), 1 / 16), np.zeros((4, 4), int), 0, miou=0.5)
    assert stats.entropy_share == pytest.approx(1.0) and stats.own_class_share == pytest.approx(1.0)
    assert stats.miou == 0.5


def test_image_miou_on_hand_made_prediction():
    labels = np.array([[0, 0, 1, 1], [0, 0, 1, 255]])
    prediction = np.array([[0, 0, 0, 1], [0, 0, 1, 1]])
    # class 0: TP 4, FP 1 -> 4/5; class 1: TP 2, FN 1 -> 2/3 (the void pixel is ignored)
    assert image_miou(prediction, labels, num_classes=3) == pytest.approx((4 / 5 + 2 / 3) / 2)


# --- rendering ------------------------------------------------------------------------------------------


def test_colour_scale_maps_its_ends_to_the_table_ends():
    scale = render.ColourScale("Viridis", 0.0, 2.0)
    assert list(scale.to_levels(np.array([-1.0, 0.0, 1.0, 2.0, 3.0]))) == [0, 0, 127, 255, 255]
    table = render.colormap_table("Viridis")
    assert table.shape == (256, 3) and not table.flags.writeable  # shared by the chart and the pictures


@pytest.mark.parametrize(
    "vmax, labels",
    [
        (0.0123, ["0%", "0.5%", "1%"]),
        (1.0, ["0%", "50%", "100%"]),
        (0.0004, ["0%", "0.01%", "0.02%", "0.03%", "0.04%"]),
    ],
)
def test_linear_colour_bar_ticks_are_round_percentages(vmax, labels):
    ticks = render.ColourScale("Inferno", 0.0, vmax).tick_marks()
    assert [label for _, label in ticks] == labels  # at most five, at 1, 2 or 5 times a power of ten
    assert [at for at, _ in ticks] == pytest.approx([float(label[:-1]) / 100 / vmax for label in labels])
    assert render.ColourScale("Inferno", 0.0, 1e-12).tick_marks() == [(0.0, "0%")]  # "0 everywhere"


def test_influence_overlay_colours_the_hot_cell():
    image = np.zeros((40, 40, 3), np.uint8)
    influence = np.zeros((4, 4))
    influence[1, 2] = 1.0
    scale = render.ColourScale("Hot", 0.0, 1.0)
    overlay = render.influence_rgb(image, influence, scale, opacity=1.0)
    assert overlay.shape == (40, 40, 3)
    hot, cold = render.colormap_table("Hot")[255], render.colormap_table("Hot")[0]
    assert np.array_equal(overlay[15, 25], hot) and np.array_equal(overlay[0, 0], cold)
    smooth = render.influence_rgb(image, influence, scale, opacity=1.0, smooth=True)
    assert smooth.shape == (40, 40, 3)


def test_segmentation_overlay_uses_the_palette():
    image = np.zeros((4, 4, 3), np.uint8)
    prediction = np.array([[0, 1], [1, 0]]).repeat(2, 0).repeat(2, 1)
    palette = np.array([[255, 0, 0], [0, 0, 255]], np.uint8)
    overlay = render.segmentation_rgb(image, prediction, palette, opacity=1.0)
    assert list(overlay[0, 0]) == [255, 0, 0] and list(overlay[0, 3]) == [0, 0, 255]


def test_marker_is_drawn_without_touching_the_input():
    image = np.full((60, 60, 3), 128, np.uint8)
    marked = render.draw_marker(image, 30, 30)
    assert (image == 128).all() and (marked != 128).any()


def test_chart_arguments_check_the_grid_and_change_with_what_is_drawn():
    from app.display import ShownMap
    from app.influence_chart import chart_args

    values = np.random.default_rng(0).random((3, 4))
    classes = np.array([[0, 1, 2, 2]] * 3)
    scale, uri = render.ColourScale(), render.jpeg_data_uri(np.zeros((30, 40, 3), np.uint8))

    def args(shown=None, hover=values, ids=classes, names=("sky", "road", "?"), marker=(5, 6)):
        shown = shown or ShownMap(values, None)
        return chart_args(uri, (30, 40), shown, hover, ids, list(names), scale, 0.5, False, marker)

    first = args()
    assert first["grid"] == [3, 4] and first["size"] == [30, 40] and first["marker"] == [5, 6]
    assert first["radius"] == render.marker_radius((30, 40)) and first["names"] == ["sky", "road", "?"]
    assert np.frombuffer(base64.b64decode(first["classes"]), np.uint8).tolist() == classes.ravel().tolist()
    assert args()["signature"] == first["signature"]  # the same picture: the browser need not repaint
    assert args(marker=(6, 6))["signature"] != first["signature"]
    assert args(shown=ShownMap(values * 2, None), hover=values * 2)["signature"] != first["signature"]
    with pytest.raises(ValueError, match="one grid"):
        args(hover=values[:2])
    from app.influence_chart import photo_url

    assert photo_url(b"\xff\xd8jpeg", "here") == "data:image/jpeg;base64," + base64.b64encode(b"\xff\xd8jpeg").decode()
    with pytest.raises(ValueError, match="class ids must index"):
        args(ids=classes + 1)


def test_legend_escapes_names():
    html_text = render.class_legend_html([0], ["<b>road</b>"], np.array([[1, 2, 3]]))
    assert "&lt;b&gt;road" in html_text and "rgb(1,2,3)" in html_text


def test_panel_png_and_npy_round_trip():
    tiles = [[np.zeros((20, 30, 3), np.uint8)] * 3, [np.full((20, 30, 3), 255, np.uint8)] * 3]
    panel = Image.open(io.BytesIO(render.panel_png(["R = 1", "R = 2", "R = 3"], tiles)))
    assert panel.size == (3 * 30 + 2 * 6, 28 + 40)
    maps = np.random.rand(3, 4, 5).astype(np.float32)
    assert np.array_equal(np.load(io.BytesIO(render.npy_bytes(maps))), maps)


# --- settings and models --------------------------------------------------------------------------------


def test_settings_from_environment(tmp_path):
    environ = {"CCNET_CHECKPOINTS": str(tmp_path), "CCNET_EXAMPLES": "data", "CCNET_DEVICE": "CPU"}
    settings = Settings.from_env(environ | {"CCNET_MAX_SIDE": "640"})
    assert settings.checkpoints == tmp_path and str(settings.examples) == "data"
    assert settings.device == "cpu" and settings.max_side == 640 and settings.cache_mb == 512
    assert Settings.from_env({}).examples == REPO_ROOT / "examples"  # the bundled examples unless told otherwise
    assert Settings.from_env({"CCNET_EXAMPLES": " None "}).examples is None
    defaults = Settings.from_env({})
    assert defaults.checkpoints.name == "checkpoints" and defaults.examples == REPO_ROOT / "examples"
    assert defaults.device == "auto"


@pytest.mark.parametrize("value", ["abc", "10"])
def test_bad_settings_name_the_variable(value):
    with pytest.raises(SettingsError, match="CCNET_MAX_SIDE"):
        Settings.from_env({"CCNET_MAX_SIDE": value})


def test_device_resolution():
    assert resolve_device("cpu") == (torch.device("cpu"), None)
    assert resolve_device("auto")[0].type == ("cuda" if torch.cuda.is_available() else "cpu")
    device, warning = resolve_device("banana")
    assert device.type == "cpu" and "not a device name" in warning
    if not torch.cuda.is_available():
        device, warning = resolve_device("cuda")
        assert device.type == "cpu" and "CUDA is not available" in warning


def test_catalogue_lists_models_and_trained_loop_counts(tmp_path):
    folder = make_checkpoint_folder(tmp_path / "c", recurrences=(1, 2, 3))
    catalogue = read_catalogue(folder)
    assert catalogue.default_entry().name == "tiny_r2"
    trained = catalogue.trained_per_loop_count(catalogue.default_entry())
    assert [trained[r][0].name for r in (1, 2, 3)] == ["tiny_r1", "tiny_r2", "tiny_r3"]
    assert "R=2" in catalogue.get("tiny_r2").label


def test_the_r0_baseline_is_of_the_same_kind_and_classes(tmp_path):
    """An end-to-end family gets the end-to-end R = 0, a head family the head R = 0 on its backbone; never CCL,
    another dataset's or another backbone's."""
    folder = tmp_path / "c"
    save_tiny_checkpoint(folder, "e2e_r2", recurrence=2)
    save_tiny_checkpoint(folder, "head_r2", recurrence=2, training={"head_only_on": "backbone-1"})
    save_tiny_checkpoint(folder, "a_head_r0_elsewhere", recurrence=0, training={"head_only_on": "backbone-2"})
    write_index(folder)
    catalogue = read_catalogue(folder)
    assert catalogue.baseline_for(catalogue.get("e2e_r2")) is None  # no end-to-end R = 0: no panel
    assert catalogue.baseline_for(catalogue.get("head_r2")) is None
    save_tiny_checkpoint(folder, "e2e_r0", recurrence=0)
    save_tiny_checkpoint(folder, "head_r0", recurrence=0, training={"head_only_on": "backbone-1"})
    write_index(folder)
    catalogue = read_catalogue(folder)
    assert catalogue.baseline_for(catalogue.get("e2e_r2")).name == "e2e_r0"
    assert catalogue.baseline_for(catalogue.get("head_r2")).name == "head_r0"


def test_the_r0_baseline_is_never_one_with_ccl_other_classes_or_frames(tmp_path):
    like = CatalogueEntry("e2e_r2", tmp_path / "e2e_r2.safetensors", 2, "camvid", num_classes=11)
    strangers = [
        replace(like, name="a_ccl", recurrence=0, ccl=True),
        replace(like, name="a_cityscapes", recurrence=0, dataset="cityscapes"),
        replace(like, name="a_fewer_classes", recurrence=0, num_classes=4),
        replace(like, name="a_video", recurrence=0, frames=5),
        replace(like, name="a_head", recurrence=0, head_on="backbone-1"),
    ]
    catalogue = Catalogue(tmp_path, (like, *strangers), "e2e_r2")
    assert catalogue.baseline_for(like) is None
    kin = replace(like, name="z_e2e_r0", recurrence=0)
    assert Catalogue(tmp_path, (like, *strangers, kin), "e2e_r2").baseline_for(like) == kin


def test_the_comparisons_start_from_the_default_unless_it_has_no_loops(tmp_path):
    """The per-R modes (and bench_app --per-r) start from the folder's default; an R = 0 default or none falls
    back to the first model with attention, and a folder of baselines has nothing to start from."""
    r2 = CatalogueEntry("e2e_r2", tmp_path / "e2e_r2.safetensors", 2, "camvid", num_classes=11)
    r0, r1 = replace(r2, name="a_e2e_r0", recurrence=0), replace(r2, name="e2e_r1", recurrence=1)
    assert Catalogue(tmp_path, (r0, r1, r2), "e2e_r2").comparison_default() == r2
    assert Catalogue(tmp_path, (r0, r1, r2), "a_e2e_r0").comparison_default() == r1
    assert Catalogue(tmp_path, (r0, r1, r2), None).comparison_default() == r1  # index without a default
    assert Catalogue(tmp_path, (r0,), "a_e2e_r0").comparison_default() is None


def test_catalogue_of_a_missing_folder_is_empty(tmp_path):
    assert read_catalogue(tmp_path / "nowhere").entries == ()


def test_catalogue_refuses_files_outside_its_folder(tmp_path):
    folder = make_checkpoint_folder(tmp_path / "c", recurrences=(2,))
    index = json.loads((folder / "index.json").read_text())
    index["models"][0]["file"] = "../../etc/passwd"
    (folder / "index.json").write_text(json.dumps(index))
    assert read_catalogue(folder).entries == ()


def test_loaded_model_exposes_what_the_page_needs(tmp_path):
    folder = make_checkpoint_folder(tmp_path / "c", recurrences=(2,))
    loaded = load_model(folder / "tiny_r2.safetensors", torch.device("cpu"))
    assert loaded.class_names == ["sky", "building", "road", "car"] and loaded.palette.shape == (4, 3)
    assert loaded.trained_recurrence == 2 and loaded.gamma == pytest.approx(0.5)


# --- encode cache and click path ------------------------------------------------------------------------


def test_bounded_cache_drops_least_recently_used():
    cache = BoundedCache(max_bytes=100)
    cache.put("a", 1, 40)
    cache.put("b", 2, 40)
    assert cache.get("a") == 1  # now "b" is the oldest
    cache.put("c", 3, 40)
    assert cache.get("b") is None and cache.get("a") == 1 and cache.get("c") == 3
    assert cache.nbytes == 80 and len(cache) == 2


def test_bounded_cache_is_safe_under_threads():
    cache = BoundedCache(max_bytes=1000)

    def work(offset):
        for i in range(500):
            cache.put((offset, i % 30), i, 10)
            cache.get((offset, (i * 7) % 30))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert cache.nbytes <= 1000 and cache.nbytes == 10 * len(cache)


@pytest.fixture(scope="module")
def tiny_loaded(tmp_path_factory):
    folder = make_checkpoint_folder(tmp_path_factory.mktemp("c"), recurrences=(2,))
    return load_model(folder / "tiny_r2.safetensors", torch.device("cpu"))


def test_encode_and_decode_matches_the_full_forward(tiny_loaded):
    from ccnet.preprocess import to_tensor

    rgb = street_rgb(64, 96)
    decoded = encode_and_decode(tiny_loaded, rgb, [1, 3])
    images = to_tensor(rgb, tiny_loaded.metadata["mean"], tiny_loaded.metadata["std"])
    with torch.no_grad():
        full = tiny_loaded.model(images, recurrence=3, return_attention=True)
    assert len(decoded[3].attentions) == 3 and len(decoded[1].attentions) == 1
    for ours, reference in zip(decoded[3].attentions, full.attentions, strict=True):
        assert torch.allclose(ours, reference[0], atol=1e-6)
    assert np.array_equal(decoded[3].prediction, full.logits[0].argmax(0).numpy())
    assert decoded[3].grid_size == (8, 12) and decoded[3].gamma == pytest.approx(0.5)


def test_cached_decodes_encode_once_per_image_model_and_loop_count(tiny_loaded):
    calls = []

    def counting(loaded, rgb, loop_counts):
        calls.append(list(loop_counts))
        return encode_and_decode(loaded, rgb, loop_counts)

    cache = BoundedCache(max_bytes=2**30)
    rgb = street_rgb(64, 96)
    first, computed = cached_decodes(cache, tiny_loaded, rgb, "digest-a", [1, 2, 3], counting)
    again, computed_again = cached_decodes(cache, tiny_loaded, rgb, "digest-a", [1, 2, 3], counting)
    assert computed and not computed_again and calls == [[1, 2, 3]]
    assert all(again[r] is first[r] for r in (1, 2, 3))
    cached_decodes(cache, tiny_loaded, rgb, "digest-a", [2, 4], counting)
    assert calls == [[1, 2, 3], [4]]  # only the missing loop count is decoded


def test_column_maps_come_from_influence_maps(tiny_loaded):
    decoded = encode_and_decode(tiny_loaded, street_rgb(64, 96), [3])[3]
    maps = column_maps(decoded, px=50, py=20, mode="rollout", with_per_loop=True)
    y, x = maps.cell
    assert (y, x) == (2, 6)
    expected = influence_maps(decoded.attentions, y, x, mode="rollout", gammas=decoded.gamma)[-1]
    assert np.allclose(maps.composed, expected.numpy())
    assert len(maps.per_loop) == 3 and all(math.isclose(m.sum(), 1, rel_tol=1e-5) for m in maps.per_loop)
    alone = influence_maps([decoded.attentions[1]], y, x, mode="rollout", gammas=decoded.gamma)[0]
    assert np.allclose(maps.per_loop[1], alone.numpy())


# --- examples -------------------------------------------------------------------------------------------


def test_examples_without_a_folder_say_how_to_set_one():
    examples = discover_examples(None)
    assert examples.examples == [] and examples.message == HOW_TO_SET_EXAMPLES


def test_examples_folder_of_plain_images(tmp_path):
    Image.fromarray(street_rgb()).save(tmp_path / "a.png")
    Image.fromarray(street_rgb()).save(tmp_path / "b.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    examples = discover_examples(tmp_path)
    assert [e.name for e in examples.examples] == ["a.png", "b.jpg"] and not examples.has_labels
    loaded = load_example(examples, examples.examples[0], max_side=1024)
    assert loaded.image.rgb.shape == (96, 128, 3) and loaded.labels is None


def test_examples_folder_that_is_missing(tmp_path):
    examples = discover_examples(tmp_path / "nowhere")
    assert examples.examples == [] and "is not there" in examples.message


def test_example_labels_follow_the_scaled_image(tmp_path):
    from tests.test_app_page import camvid_like

    examples = discover_examples(camvid_like(tmp_path / "camvid"))
    assert examples.layout == "camvid" and len(examples.examples) == 4
    loaded = load_example(examples, examples.examples[0], max_side=48)
    assert loaded.image.rgb.shape == (36, 48, 3) and loaded.labels.shape == (36, 48)
    assert set(np.unique(loaded.labels)) <= {0, 3, 255} and loaded.class_names[3] == "Road"


def test_scorecard_numbers_come_from_the_library():
    import math

    from app.stats import scorecard
    from ccnet.analysis import mean_attention_distance, same_class_lift, uniform_same_class_share

    rng = np.random.default_rng(0)
    influence = rng.random((6, 8))
    influence /= influence.sum()
    predicted = rng.integers(0, 3, (6, 8))
    truth = predicted.copy()
    truth[0, :] = 255
    branch = rng.random((2, 6, 8))
    score = scorecard(influence, (2, 3), predicted, truth, (48, 96), loops=2, gamma=0.5, branch_weight=branch)
    assert score.lift_predicted.lift == same_class_lift(influence, 2, 3, predicted, -1, "off_cross")
    assert score.lift_predicted.uniform_share == uniform_same_class_share(2, 3, predicted, -1, "off_cross")
    assert score.lift_truth.lift == same_class_lift(influence, 2, 3, truth, 255, "off_cross")
    assert (score.distance_px, score.uniform_distance_px) == mean_attention_distance(influence, 2, 3, (8.0, 12.0))
    assert score.branch_weight == [branch[0, 2, 3], branch[1, 2, 3]] and not score.attention_quiet
    one_loop = scorecard(influence, (2, 3), predicted, None, (48, 96), loops=1, gamma=0.001, branch_weight=None)
    assert one_loop.lift_predicted.region == "cross" and one_loop.lift_truth is None and one_loop.attention_quiet
    assert not math.isnan(one_loop.distance_px)


def test_segment_at_is_the_connected_same_class_cells():
    from app.grid import segment_at

    classes = np.array([[0, 0, 1, 0], [1, 0, 1, 0], [0, 0, 1, 1]])
    assert segment_at(classes, (0, 0)).tolist() == [
        [True, True, False, False], [False, True, False, False], [True, True, False, False]
    ]  # fmt: skip
    assert segment_at(classes, (0, 3)).sum() == 2  # the other class-0 island
    assert segment_at(classes, (1, 2)).sum() == 4  # diagonal contact does not join (4-connectivity)


def test_a_matrix_row_click_names_its_class():
    from app.image_summary import ImageAttention, matrix_figure, row_class, with_clickable_cells

    names = ["sky", "building", "road", "car"]
    classes = [0, 2, 3]  # the classes present, in row order
    assert row_class([{"x": "sky", "y": "road", "z": 0.3}], classes, names) == 2
    assert row_class([{"x": "road", "y": "car"}], classes, names) == 3
    assert row_class([], classes, names) is None  # deselected
    assert row_class([{"y": "building"}], classes, names) is None  # not a row of this matrix
    assert row_class([{"x": "sky"}, {"y": "sky"}], classes, names) == 0  # the first point that names a row
    # The clickable markers: point i * k + j sits on row i, column j, so a click's y is its row's name.
    summary = ImageAttention("R = 2", classes, np.full((3, 3), 1 / 3), np.ones((3, 3)), 0.5)
    figure = with_clickable_cells(matrix_figure(summary, names, as_lift=True), [names[c] for c in classes])
    heat, markers = figure.data
    assert heat.type == "heatmap" and markers.type == "scatter" and markers.marker.opacity == 0
    assert list(markers.y[3:6]) == ["road"] * 3 and list(markers.x[3:6]) == ["sky", "road", "car"]
    assert list(markers.text) == [text for row in heat.text for text in row]  # the same hover text
    points = [{"x": markers.x[index], "y": markers.y[index]} for index in range(9)]
    assert [row_class([point], classes, names) for point in points] == [0, 0, 0, 2, 2, 2, 3, 3, 3]
    go.Figure(figure.to_dict())  # valid plotly


def test_a_matrix_row_click_is_remembered_for_its_image(monkeypatch):
    from app import image_summary
    from app.image_summary import (
        GENERATION_KEY,
        HIGHLIGHT_KEY,
        Highlight,
        ImageAttention,
        clear_highlight,
        current_highlight,
    )

    names = ["sky", "building", "road", "car"]
    summary = ImageAttention("R = 2", [0, 2], np.full((2, 2), 0.5), np.ones((2, 2)), 0.5)
    state = {"chart": {"selection": {"points": [{"x": "sky", "y": "road"}], "point_indices": [2]}}}
    monkeypatch.setattr(image_summary.st, "session_state", state)
    image_summary._remember_row("chart", "digest-a", summary, names)
    assert current_highlight("digest-a") == Highlight("R = 2", 2, "road")
    assert current_highlight("digest-b") is None  # another image: nothing highlighted
    state["chart"] = {"selection": {"points": [], "point_indices": []}}  # deselected
    image_summary._remember_row("chart", "digest-a", summary, names)
    assert HIGHLIGHT_KEY not in state
    state["chart"] = {"selection": {"points": [{"y": "sky"}]}}
    image_summary._remember_row("chart", "digest-a", summary, names)
    assert current_highlight("digest-a").class_id == 0
    clear_highlight()
    assert current_highlight("digest-a") is None and state[GENERATION_KEY] == 1  # fresh charts


def test_the_archive_holds_the_panel_every_map_and_every_number(tmp_path):
    import io
    import zipfile

    from app.archive import view_archive
    from app.controls import ColumnSpec
    from app.models import CatalogueEntry
    from app.stats import influence_stats, scorecard
    from app.view import ColumnResult
    from tests.test_app_helpers import save_tiny_checkpoint

    path = save_tiny_checkpoint(tmp_path / "ckpt", "tiny_r2", recurrence=2)
    loaded = load_model(path, torch.device("cpu"))
    decoded = encode_and_decode(loaded, np.full((64, 80, 3), 120, np.uint8), [2])[2]
    maps = column_maps(decoded, 10, 20, "attention", with_per_loop=False)
    stats = influence_stats(maps.composed, decoded.grid_classes, 0, cell=maps.cell)
    score = scorecard(maps.composed, maps.cell, decoded.grid_classes, None, (64, 80), 2, decoded.gamma, None)
    entry = CatalogueEntry("tiny_r2", path, 2, "synthetic")
    result = ColumnResult(ColumnSpec("R = 2", entry, 2), loaded, decoded, maps, stats, 0, None, score)
    data = view_archive(b"png bytes", [result], (10, 20), (64, 80), {"model": "tiny_r2"})
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert sorted(archive.namelist()) == ["map_0.npy", "panel.png", "view.json"]
        saved = np.load(io.BytesIO(archive.read("map_0.npy")))
        view = json.loads(archive.read("view.json"))
    np.testing.assert_allclose(saved, maps.composed, rtol=1e-6)
    assert view["click"] == {"px": 10, "py": 20} and view["settings"] == {"model": "tiny_r2"}
    column = view["columns"][0]
    assert column["model"] == "tiny_r2" and column["cell"] == list(maps.cell) and column["recurrence"] == 2
    assert column["statistics"]["entropy_bits"] == pytest.approx(stats.entropy_bits)
    assert column["scorecard"]["distance_px"] == pytest.approx(score.distance_px)
    assert view["second_click"] is None and view["box"] is None  # one pixel, no box

    data = view_archive(b"png", [result], (10, 20), (64, 80), {}, second_click=(30, 5), box=(2, 3, 40, 50))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        view = json.loads(archive.read("view.json"))
    assert view["second_click"] == {"px": 30, "py": 5}
    assert view["box"] == {"left": 2, "top": 3, "right": 40, "bottom": 50}
