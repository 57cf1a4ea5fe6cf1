"""A newcomer's first minute in a real browser: a fresh clone's settings (the bundled checkpoints and examples),
both pages open with maps painted and a hint, with no action and no page error. Skips where Chromium or
Playwright is missing. The timings are benchmarks/bench_first_screen.py's (docs/APP.md)."""

from __future__ import annotations

import pytest

from benchmarks.bench_concurrency import CHROMIUM, CHROMIUM_ARGS, REPO_ROOT, painted, streamlit_server, time_visit
from tests.test_browser_app import _skip_reason

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or ""),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("server") / "streamlit.log"
    examples = {"CCNET_EXAMPLES": str(REPO_ROOT / "examples")}  # what an unset CCNET_EXAMPLES gives
    with streamlit_server(log, REPO_ROOT / "checkpoints", timeout=90, extra_env=examples) as running:
        yield running.url


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.mark.parametrize("path, charts, hint", [("", 3, "Start here"), ("/video", 15, "Start here")],
                         ids=["explorer", "video"])  # fmt: skip
def test_each_page_opens_with_maps_painted_and_a_hint(server, browser, path, charts, hint):
    seconds, errors = time_visit(browser, server + path, charts, timeout_ms=180_000)
    assert errors == []
    page = browser.new_context(viewport={"width": 1500, "height": 1100}).new_page()
    page.goto(server + path, wait_until="domcontentloaded")
    page.wait_for_function(painted(charts), timeout=120_000)
    body = page.inner_text("body")
    assert hint in body
    assert "Clicked pixel" in body
    if path == "/video":
        assert "of the influence at R = 3" in body, body[:3000]
    page.context.close()
    print(f"{path or '/'}: {charts} maps painted {seconds:.1f} s after opening")
