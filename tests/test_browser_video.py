"""The video page in a real browser: upload a clip, real clicks on a frame, every map repainted, the caption
naming the clicked pixel and frame, no exception on the page. Skips where Chromium or Playwright is missing."""

from __future__ import annotations

import re
import time

import pytest

from benchmarks.bench_concurrency import CHROMIUM, CHROMIUM_ARGS, CLICK_WIDGET, MAP_SOURCES, streamlit_server
from ccnet.checkpoint import write_index
from tests.test_app_helpers import image_bytes, save_tiny_checkpoint, street_rgb
from tests.test_app_video import FRAMES, save_video_checkpoint
from tests.test_browser_app import MAPS_CHANGED, _skip_reason

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or ""),
]
MAPS = FRAMES * 3  # one chart per frame and loop count


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("checkpoints")
    save_tiny_checkpoint(folder, "tiny_r2", recurrence=2)
    save_video_checkpoint(folder)
    write_index(folder, default="tiny_r2")
    log = tmp_path_factory.mktemp("server") / "streamlit.log"
    with streamlit_server(log, folder, timeout=90) as running:
        yield running.url


def test_a_clip_and_real_clicks_repaint_every_frames_maps(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"{server}/video", wait_until="domcontentloaded")
            page.get_by_text("Upload frames", exact=True).click(timeout=90_000)
            frames = [image_bytes(street_rgb(96, 128, seed=i)) for i in range(FRAMES)]
            files = [{"name": f"clip_{i:02d}.png", "mimeType": "image/png", "buffer": b} for i, b in enumerate(frames)]
            page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(files=files)
            painted = f"() => ({MAP_SOURCES})().filter(s => s).length === {MAPS}"
            page.wait_for_function(painted, timeout=90_000)
            assert "Temporal share" in page.inner_text("body")
            image = page.frame_locator(CLICK_WIDGET).locator("#image")
            image.wait_for(state="visible", timeout=30_000)
            for fx, fy in ((0.2, 0.3), (0.8, 0.7)):
                before = page.evaluate(MAP_SOURCES)
                box = image.bounding_box()
                started = time.monotonic()
                image.click(position={"x": fx * box["width"], "y": fy * box["height"]})
                page.wait_for_function(MAPS_CHANGED, arg=before, timeout=60_000)
                elapsed = time.monotonic() - started
                found = re.search(r"Clicked pixel \((\d+), (\d+)\) of frame (\d) of 3", page.inner_text("body"))
                assert found, "no clicked-pixel caption"
                px, py, frame = (int(v) for v in found.groups())
                assert abs(px - fx * 128) <= 2 and abs(py - fy * 96) <= 2 and frame == 2
                assert elapsed < 30
            page.get_by_role("radiogroup", name="Frame to click").get_by_text("1: clip_00.png", exact=True).click()
            page.wait_for_function("() => document.body.innerText.includes('of frame 1 of 3')", timeout=60_000)
            assert page.locator("[data-testid='stException']").count() == 0 and errors == []
        finally:
            browser.close()
