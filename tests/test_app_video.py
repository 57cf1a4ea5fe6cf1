"""The video page (app/video.py) through AppTest with a tiny video checkpoint: uploads good and bad, examples
with neighbours, a click's maps against the library, the temporal share, and the explorer keeping to images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from app.images import decode_image
from app.models import load_model, read_catalogue
from app.video import POINT_KEY, Clip, clip_maps, decode_clip
from ccnet.checkpoint import save_checkpoint, write_index
from ccnet.factory import build_model
from ccnet.preprocess import normalize_image
from ccnet.propagation_3d import influence_maps_3d
from tests.test_app_helpers import CLASS_NAMES, PALETTE, image_bytes, save_tiny_checkpoint, street_rgb

PAGE = str(Path(__file__).absolute().parent.parent / "app" / "pages" / "video.py")
MAIN = str(Path(__file__).absolute().parent.parent / "app" / "main.py")
FRAMES = 3
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def save_video_checkpoint(folder: Path, name: str = "tiny_video", frames: int = FRAMES) -> Path:
    torch.manual_seed(0)
    config = {"num_classes": len(CLASS_NAMES), "backbone": "resnet18", "base_width": 8, "head_channels": 16,
              "recurrence": 3, "frames": frames}  # fmt: skip
    model = build_model(config)
    with torch.no_grad():
        model.attention.cca.gamma.fill_(1.0)
    metadata = {"class_names": CLASS_NAMES, "palette": PALETTE, "mean": [123.675, 116.28, 103.53],
                "std": [58.395, 57.12, 57.375], "dataset": "synthetic", "split": "val", "input_size": [64, 96],
                "metrics": {"mIoU": 0.2}}  # fmt: skip
    weights, _ = save_checkpoint(model, folder / name, metadata)
    return weights


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("video_checkpoints")
    save_tiny_checkpoint(folder, "tiny_r2", recurrence=2)
    save_video_checkpoint(folder)
    write_index(folder, default="tiny_r2")
    return folder


@pytest.fixture
def page(monkeypatch, checkpoints) -> AppTest:
    monkeypatch.setenv("CCNET_CHECKPOINTS", str(checkpoints))
    monkeypatch.setenv("CCNET_EXAMPLES", "none")  # not the bundled examples
    monkeypatch.setenv("CCNET_DEVICE", "cpu")
    return AppTest.from_file(PAGE, default_timeout=90)


def frames_png(count: int, size=(96, 128)) -> list[tuple[str, bytes]]:
    return [(f"clip_{i:02d}.png", image_bytes(street_rgb(*size, seed=i))) for i in range(count)]


def upload(page: AppTest, files) -> AppTest:
    page.run()
    page.sidebar.radio(key="video_source").set_value("Upload frames").run()
    page.sidebar.file_uploader(key="video_upload").set_value([(n, d, "image/png") for n, d in files])
    return page.run()


def messages(page: AppTest) -> str:
    return "\n".join([m.value for m in page.error] + [m.value for m in page.info] + [m.value for m in page.warning])


def test_the_catalogue_splits_image_and_video_models(checkpoints):
    catalogue = read_catalogue(checkpoints)
    assert [e.name for e in catalogue.images_only().entries] == ["tiny_r2"]
    assert [(e.name, e.frames) for e in catalogue.videos_only().entries] == [("tiny_video", FRAMES)]


def test_uploaded_frames_give_a_grid_of_maps_and_the_temporal_share(page):
    upload(page, frames_png(FRAMES))
    assert not page.exception, page.exception
    text = "\n".join(m.value for m in page.markdown)
    assert "Temporal share" in text and "R = 1" in text and "R = 3" in text
    assert "clicked" in text  # the clicked frame's row is marked
    assert any("Clicked pixel (64, 48) of frame 2 of 3" in c.value for c in page.caption)


def test_a_click_gives_the_librarys_maps(page, checkpoints):
    upload(page, frames_png(FRAMES))
    files = frames_png(FRAMES)
    clip = Clip([decode_image(data, name=name) for name, data in files], [n for n, _ in files], None, None)
    page.session_state[POINT_KEY] = {"digest": clip.digest, "frame": 0, "px": 10, "py": 70}
    page.run()
    assert not page.exception
    loaded = load_model(checkpoints / "tiny_video.safetensors", torch.device("cpu"))
    decode = decode_clip(loaded, clip)
    result = clip_maps(decode, 0, (70 // 8, 10 // 8), "attention", loaded.gamma)
    mean, std = loaded.metadata["mean"], loaded.metadata["std"]
    batch = torch.stack([normalize_image(f.rgb, mean, std) for f in clip.frames])  # (T, 3, H, W)
    with torch.no_grad():
        for r in (1, 2, 3):  # each R from its own run of the model, against the page's maps
            attentions = loaded.model(batch[None], recurrence=r, return_attention=True).attentions
            expected = influence_maps_3d(attentions, 0, 70 // 8, 10 // 8)[-1].numpy()  # (T, h, w)
            np.testing.assert_allclose(result.maps[r], expected, atol=1e-6)
    assert any("Clicked pixel (10, 70) of frame 1 of 3" in c.value for c in page.caption)
    share = f"{100 * result.share[3]:.1f}%"
    assert share in "\n".join(m.value for m in page.markdown)
    assert 0 < result.uniform_share[3] < result.uniform_share[1] < 1  # more loops, more from other frames


@pytest.mark.parametrize(
    "files,message",
    [
        (frames_png(2), "clips of 3 frames; 2 given. Add 1"),
        (frames_png(4), "clips of 3 frames; 4 given. Remove 1"),
        (frames_png(2) + [("clip_09.png", image_bytes(street_rgb(64, 80)))], "must share one size"),
        (frames_png(2) + [("clip_09.png", b"not an image")], "clip_09.png"),
    ],
    ids=["too-few", "too-many", "sizes-differ", "unreadable"],
)
def test_bad_clips_are_a_message_and_the_page_keeps_working(page, files, message):
    upload(page, files)
    assert not page.exception
    assert message in messages(page)
    page.sidebar.file_uploader(key="video_upload").set_value([(n, d, "image/png") for n, d in frames_png(FRAMES)])
    page.run()
    assert not page.exception and "Temporal share" in "\n".join(m.value for m in page.markdown)


def test_an_example_frame_brings_its_neighbours(monkeypatch, checkpoints, tmp_path):
    """A CamVid-layout folder: picking a sequence's first frame gives it and the next two (shifted inward)."""
    for split in ("val", "valannot"):
        (tmp_path / split).mkdir()
    for n in range(5):
        Image.fromarray(street_rgb(96, 128, seed=n)).save(tmp_path / "val" / f"SEQ_{30 * n:05d}.png")
        Image.fromarray(np.zeros((96, 128), np.uint8)).save(tmp_path / "valannot" / f"SEQ_{30 * n:05d}.png")
    monkeypatch.setenv("CCNET_CHECKPOINTS", str(checkpoints))
    monkeypatch.setenv("CCNET_EXAMPLES", str(tmp_path))
    monkeypatch.setenv("CCNET_DEVICE", "cpu")
    page = AppTest.from_file(PAGE, default_timeout=90).run()
    assert not page.exception, page.exception
    text = "\n".join(m.value for m in page.markdown)
    assert "SEQ_00000.png" in text and "SEQ_00060.png" in text and "SEQ_00090.png" not in text


def test_without_a_video_model_the_page_says_how_to_train_one(monkeypatch, tmp_path):
    save_tiny_checkpoint(tmp_path, "tiny_r2", recurrence=2)
    write_index(tmp_path)
    monkeypatch.setenv("CCNET_CHECKPOINTS", str(tmp_path))
    monkeypatch.setenv("CCNET_DEVICE", "cpu")
    page = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not page.exception and "--kind video_t5" in messages(page)


def test_the_explorer_lists_only_image_models(monkeypatch, checkpoints):
    monkeypatch.setenv("CCNET_CHECKPOINTS", str(checkpoints))
    monkeypatch.setenv("CCNET_EXAMPLES", "none")  # not the bundled examples
    monkeypatch.setenv("CCNET_DEVICE", "cpu")
    app = AppTest.from_file(MAIN, default_timeout=60).run()
    assert not app.exception
    app.sidebar.file_uploader(key="upload").set_value(("street.png", image_bytes(street_rgb()), "image/png"))
    app.run()
    assert not app.exception
    assert all("tiny_video" not in str(option) for box in app.sidebar.selectbox for option in box.options)


def test_choosing_another_frame_moves_the_query_there(page):
    upload(page, frames_png(FRAMES))
    radio = next(r for r in page.radio if r.label == "Frame to click")
    radio.set_value(0).run()
    assert not page.exception
    assert any("Clicked pixel (64, 48) of frame 1 of 3" in c.value for c in page.caption)


def test_the_link_carries_the_model_and_the_clicked_frame_and_pixel(page):
    upload(page, frames_png(FRAMES))
    files = frames_png(FRAMES)
    clip = Clip([decode_image(data, name=name) for name, data in files], [n for n, _ in files], None, None)
    page.session_state[POINT_KEY] = {"digest": clip.digest, "frame": 2, "px": 30, "py": 20}
    page.run()
    params = {key: value if isinstance(value, str) else value[0] for key, value in page.query_params.items()}
    assert params["frame"] == "2" and params["px"] == "30" and params["video_model"] == "tiny_video"


def test_a_shared_link_reopens_the_clicked_frame_and_pixel(monkeypatch, checkpoints):
    monkeypatch.setenv("CCNET_CHECKPOINTS", str(checkpoints))
    monkeypatch.setenv("CCNET_EXAMPLES", "none")  # not the bundled examples
    monkeypatch.setenv("CCNET_DEVICE", "cpu")
    page = AppTest.from_file(PAGE, default_timeout=90)
    page.query_params.update({"video_source": "Upload frames", "frame": "0", "px": "12", "py": "40"})
    page.run()
    page.sidebar.file_uploader(key="video_upload").set_value([(n, d, "image/png") for n, d in frames_png(FRAMES)])
    page.run()
    assert not page.exception
    assert any("Clicked pixel (12, 40) of frame 1 of 3" in c.value for c in page.caption)


def test_a_click_reuses_the_clips_decode(checkpoints):
    from app.explorer import BoundedCache
    from app.video import cached_clip_decode

    loaded = load_model(checkpoints / "tiny_video.safetensors", torch.device("cpu"))
    files = frames_png(FRAMES)
    clip = Clip([decode_image(data, name=name) for name, data in files], [n for n, _ in files], None, None)
    cache = BoundedCache(2**30)
    first = cached_clip_decode(loaded, clip, cache)
    hits = cache.hits
    assert cached_clip_decode(loaded, clip, cache) is first and cache.hits == hits + 1
    assert ("video", clip.digest, loaded.cache_id) in cache  # beside each frame's backbone features


def test_stepping_one_frame_along_runs_the_backbone_on_the_new_frame_only(checkpoints):
    """A clip sharing T - 1 frames with one seen before: only the new frame goes through the backbone, and the
    decode equals a decode from scratch (the cached features are the same features)."""
    from app.explorer import BoundedCache
    from app.video import cached_clip_decode

    loaded = load_model(checkpoints / "tiny_video.safetensors", torch.device("cpu"))
    images = [decode_image(image_bytes(street_rgb(96, 128, seed=i)), name=f"f{i}.png") for i in range(FRAMES + 1)]
    first, stepped = (Clip(images[i : i + FRAMES], [f"f{j}" for j in range(i, i + FRAMES)], None, None) for i in (0, 1))
    encoded: list[int] = []  # frames per backbone call
    encode = loaded.model.encode
    loaded.model.encode = lambda batch: encoded.append(len(batch)) or encode(batch)
    cache = BoundedCache(2**30)
    cached_clip_decode(loaded, first, cache)
    decode = cached_clip_decode(loaded, stepped, cache)
    assert encoded == [FRAMES, 1]
    loaded.model.encode = encode
    fresh = decode_clip(loaded, stepped)
    assert (decode.predictions != fresh.predictions).mean() < 1e-3  # a near-tie may round the other way
    for cached_loop, fresh_loop in zip(decode.attentions, fresh.attentions, strict=True):
        # A frame's convolutions in a batch of 1 or of T round differently (oneDNN's blocking): 1e-5-ish.
        torch.testing.assert_close(cached_loop, fresh_loop, rtol=1e-4, atol=1e-5)


# --- issue 30: the video page's first screen and its scales ----------------------------------------------------


def test_a_fresh_clone_opens_the_video_page_on_the_example_clip_with_the_t5_model(monkeypatch):
    """No settings: the bundled checkpoints and examples; maps painted with no action, T = 5 by default."""
    from app.examples import discover_examples
    from app.settings import BUNDLED_EXAMPLES

    for name in ("CCNET_CHECKPOINTS", "CCNET_EXAMPLES", "CCNET_EXTRA_CHECKPOINTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CCNET_DEVICE", "cpu")
    start = discover_examples(BUNDLED_EXAMPLES).start("video")
    page = AppTest.from_file(PAGE, default_timeout=180).run()
    assert not page.exception, page.exception
    assert page.sidebar.selectbox(key="video_model").value == "camvid_video_t5"  # the index's video default
    assert page.sidebar.selectbox(key="video_example").value == start.example
    caption = f"Clicked pixel ({start.point[0]}, {start.point[1]}) of frame {start.frame + 1} of 5"
    assert any(caption in c.value for c in page.caption)
    assert "Start here" in messages(page)
    text = "\n".join(m.value for m in page.markdown)
    assert text.count("% of the influence at R = 3 (uniform:") == 5  # each frame's share beside it
    assert any("each frame its own" in c.value for c in page.caption)  # which scale is shown, said on the page


def test_each_frame_gets_its_own_scale_unless_one_is_asked_for(page):
    from app.video import EACH_FRAME, FRAME_SCALE_KEY, ONE_SCALE

    upload(page, frames_png(FRAMES))
    assert page.sidebar.radio(key=FRAME_SCALE_KEY).value == EACH_FRAME
    charts = _chart_scales(page)
    assert len({scale for scale in charts}) > 1  # the frames' own peaks differ
    page.sidebar.radio(key=FRAME_SCALE_KEY).set_value(ONE_SCALE).run()
    assert not page.exception
    assert len(set(_chart_scales(page))) == 1


def _chart_scales(page: AppTest) -> list[float]:
    import json

    from app.influence_chart import COMPONENT_NAME

    charts = [c for c in page.get("bidi_component") if c.proto.component_name == COMPONENT_NAME]
    return [json.loads(chart.proto.json)["scale"]["high"] for chart in charts]


def test_frame_shares_sum_to_one_and_agree_with_the_temporal_share():
    from ccnet.propagation_3d import frame_shares, temporal_share

    maps = torch.rand(3, 5, 4, 6)  # (R, T, h, w)
    shares = frame_shares(maps)  # (R, T)
    assert torch.allclose(shares.sum(dim=1), torch.ones(3))
    assert torch.allclose(shares[:, 2], temporal_share(maps, 2))
    assert torch.allclose(shares[0], maps[0].sum(dim=(1, 2)) / maps[0].sum())
