"""The explorer under concurrent use: N browser sessions upload their own image and click at the same time.

Starts a real Streamlit server on a free loopback port (127.0.0.1 only) serving the bundled checkpoints, opens N
Playwright contexts (separate Streamlit sessions) in one headless /usr/bin/chromium, and:
1. issues every session's upload at once (each image has its own size, seed and content), then
2. for each round, clicks a pixel in every session at once.
Each latency runs from issuing the action to the page showing its new maps, observed by polling all pages in
turn (resolution: one sweep over the pages, ~0.1 s). It also records how often the server loaded each
checkpoint (the `ccnet-app: loaded model` lines of its log) and the server's resident memory over the run.

    python benchmarks/bench_concurrency.py --sessions 8 --rounds 3

Prints a table of p50 / p90 / max latencies. Numbers from a shared machine are only indicative.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.clickable_image import FRAME_TITLE
from app.influence_chart import ROOT_CLASS

REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CLICK_WIDGET = f"iframe[title='{FRAME_TITLE}']"
# The influence charts' signatures: each chart publishes the signature of the map it has painted
# (app/influence_chart.py), '' until its first paint; they change exactly when a column shows new maps. A chart
# that failed ("error: ...") counts as not painted, so waits time out instead of timing a broken chart.
MAP_CHART = f".{ROOT_CLASS}"
MAP_SOURCES = (
    "() => Array.from(document.querySelectorAll("
    + repr(MAP_CHART)
    + ")).map(chart => { const s = chart.dataset.painted || ''; return s.startsWith('error:') ? '' : s; })"
)
UPLOADED = (
    "() => document.body.innerText.includes('Clicked pixel') && (" + MAP_SOURCES + ")().filter(s => s).length === 3"
)
REPAINTED = (
    """(before) => { const now = ("""
    + MAP_SOURCES
    + """)();
    return now.length === before.length && now.length > 0 && now.every((s, i) => s && s !== before[i]); }"""
)
LOAD_LINE = re.compile(r"ccnet-app: loaded model (\S+)")


def painted(count: int) -> str:
    """A page condition: `count` charts there, every one painted."""
    return f"() => {{ const s = ({MAP_SOURCES})(); return s.length === {count} && s.every(x => x); }}"


def time_visit(browser, url: str, charts: int, timeout_ms: float = 120_000) -> tuple[float, list[str]]:
    """Seconds from opening `url` in a new session until `charts` maps are painted, and the page's errors."""
    context = browser.new_context(viewport={"width": 1500, "height": 1100})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    start = time.perf_counter()
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_function(painted(charts), timeout=timeout_ms)
    elapsed = time.perf_counter() - start
    context.close()
    return elapsed, errors


def street_image(height: int, width: int, seed: int) -> bytes:
    """A PNG of coloured blocks with noise: a different picture (and size) per session."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    rgb = np.zeros((height, width, 3), np.float32)
    rgb[: height // 3] = (128, 128, 128)  # sky
    rgb[height // 3 :] = (128, 0, 0)  # buildings
    rgb[2 * height // 3 :] = (128, 64, 128)  # road
    for _ in range(4):
        top, left = rng.integers(0, height - 8), rng.integers(0, width - 8)
        rgb[top : top + 16, left : left + 24] = rng.integers(0, 256, 3)
    rgb += rng.normal(0, 10, rgb.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def session_image_size(index: int) -> tuple[int, int]:
    """(height, width): unique per session, so the page's "of W x H" names whose image it shows."""
    return 96 + 8 * (index % 4), 128 + 8 * index


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path
    rss_samples: list[int] = field(default_factory=list)

    def model_loads(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for name in LOAD_LINE.findall(self.log.read_text()):
            counts[name] = counts.get(name, 0) + 1
        return counts


@contextmanager
def streamlit_server(
    log: Path, checkpoints: Path, cache_mb: int | None = None, timeout: float = 120, extra_env: dict | None = None
):
    """A real server on 127.0.0.1 (never another interface); its RSS is sampled every 0.2 s while it runs."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "CCNET_EXAMPLES"} | {"CCNET_EXAMPLES": "none"}  # unless asked
    env |= {"CCNET_CHECKPOINTS": str(checkpoints), "CCNET_DEVICE": "cpu", "PYTHONPATH": str(REPO_ROOT)}
    if cache_mb is not None:
        env["CCNET_CACHE_MB"] = str(cache_mb)
    env |= extra_env or {}
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        "app/main.py",
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--server.headless",
        "true",
        "--server.fileWatcherType",
        "none",
    ]
    with open(log, "w") as output:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", process, log)
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.2) and process.poll() is None:
            server.rss_samples.append(rss_bytes(process.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        _wait_healthy(server, timeout)
        sampler.start()
        yield server
    finally:
        stop.set()
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def _wait_healthy(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"streamlit exited with {server.process.returncode}:\n{server.log.read_text()}")
        try:
            with urllib.request.urlopen(f"{server.url}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"streamlit did not answer within {timeout} s:\n{server.log.read_text()}")


@dataclass
class Session:
    index: int
    context: object
    page: object
    image: bytes
    size: tuple[int, int]  # (height, width)
    errors: list[str] = field(default_factory=list)

    def text(self) -> str:
        return "\n".join(self.page.locator("[data-testid='stMarkdownContainer']").all_inner_texts())

    def clicked_pixel(self) -> tuple[int, int, int, int]:
        """(px, py, width, height) from "Clicked pixel (px, py) of W x H"."""
        found = re.search(r"Clicked pixel \((\d+), (\d+)\) of (\d+) x (\d+)", self.text())
        assert found, f"session {self.index}: no clicked-pixel line on the page"
        return tuple(int(value) for value in found.groups())

    def entropies(self) -> list[str]:
        return re.findall(r"entropy (\d+\.\d+) bits", self.text())

    def exceptions(self) -> int:
        return self.page.locator("[data-testid='stException']").count()


def open_sessions(browser, url: str, count: int, seed: int = 0) -> list[Session]:
    sessions = []
    for index in range(count):
        context = browser.new_context(viewport={"width": 1500, "height": 1100})
        page = context.new_page()
        size = session_image_size(index)
        session = Session(index, context, page, street_image(*size, seed=seed + index), size)
        page.on("pageerror", lambda error, s=session: s.errors.append(str(error)))
        page.goto(url, wait_until="domcontentloaded")
        sessions.append(session)
    for session in sessions:
        session.page.wait_for_selector("[data-testid='stFileUploaderDropzoneInput']", state="attached", timeout=90_000)
    return sessions


def _wait_all(sessions: list[Session], condition: str, args: list, started: list[float], timeout: float):
    """Poll every page in turn until `condition(arg)` holds on each; seconds from its start to when it held."""
    done: dict[int, float] = {}
    deadline = time.monotonic() + timeout
    while len(done) < len(sessions):
        if time.monotonic() > deadline:
            missing = [s.index for s in sessions if s.index not in done]
            raise TimeoutError(f"sessions {missing} did not finish within {timeout} s")
        for session, arg, start in zip(sessions, args, started, strict=True):
            if session.index not in done and session.page.evaluate(condition, arg):
                done[session.index] = time.monotonic() - start
        time.sleep(0.02)
    return [done[s.index] for s in sessions]


def upload_all(sessions: list[Session], timeout: float = 180) -> list[float]:
    started = []
    for session in sessions:
        started.append(time.monotonic())
        session.page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(
            files=[{"name": f"street{session.index}.png", "mimeType": "image/png", "buffer": session.image}]
        )
    return _wait_all(sessions, UPLOADED, [None] * len(sessions), started, timeout)


def click_all(sessions: list[Session], fractions: list[tuple[float, float]], timeout: float = 120) -> list[float]:
    """One real click per session (at its own fraction of the image), all in flight together."""
    before = [session.page.evaluate(MAP_SOURCES) for session in sessions]
    started = []
    for session, (fx, fy) in zip(sessions, fractions, strict=True):
        image = session.page.frame_locator(CLICK_WIDGET).locator("#image")
        try:
            image.wait_for(state="visible", timeout=timeout * 1000)
        except Exception as error:
            shot = Path(tempfile.gettempdir()) / f"concurrency_session{session.index}.png"
            session.page.screenshot(path=shot, full_page=True)
            state = image_state(session)
            raise TimeoutError(f"session {session.index}: the clickable image is not visible: {state}") from error
        box = image.bounding_box()
        started.append(time.monotonic())
        image.click(position={"x": fx * box["width"], "y": fy * box["height"]}, no_wait_after=True)
    return _wait_all(sessions, REPAINTED, before, started, timeout)


def image_state(session: Session) -> dict:
    """What the clickable image's frame holds (for a failure message): loaded or not, its sizes, the frame's."""
    frame = session.page.frame_locator(CLICK_WIDGET)
    state = frame.locator("#image").evaluate(
        """img => ({complete: img.complete, natural: [img.naturalWidth, img.naturalHeight],
        shown: [img.width, img.height], src_chars: (img.getAttribute('src') || '').length,
        frame_width: document.documentElement.clientWidth, classes: img.className})"""
    )
    state["iframe_box"] = session.page.locator(CLICK_WIDGET).bounding_box()
    # display: none means Streamlit never saw the frame's "ready" message (the cause found in issue 21)
    state["iframe_display"] = session.page.locator(CLICK_WIDGET).evaluate("frame => getComputedStyle(frame).display")
    return state


def click_fraction(rng: np.random.Generator, round_index: int) -> tuple[float, float]:
    """A random point in the left half on even rounds, the right half on odd ones: each click lands in
    another feature cell than the one before, so every map must change (same cell: nothing to repaint)."""
    low = 0.1 if round_index % 2 == 0 else 0.6
    return float(rng.uniform(low, low + 0.3)), float(rng.uniform(0.1, 0.9))


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50": statistics.median(ordered),
        "p90": ordered[min(len(ordered) - 1, int(np.ceil(0.9 * len(ordered))) - 1)],
        "max": ordered[-1],
    }


@dataclass
class ConcurrencyResult:
    sessions: list[Session]
    upload_s: list[float]
    click_s: list[float]
    model_loads: dict[str, int]
    rss_after_start: int
    rss_peak: int
    rss_samples: list[int]


@contextmanager
def concurrent_run(
    browser,
    checkpoints: Path,
    log: Path,
    sessions: int = 8,
    rounds: int = 2,
    cache_mb: int = 64,
    seed: int = 0,
    progress=None,
):
    """Run the whole scenario and yield its result while the server and the pages are still up (for checks)."""
    with streamlit_server(log, checkpoints, cache_mb) as server:
        rss_after_start = rss_bytes(server.process.pid)
        opened = open_sessions(browser, server.url, sessions, seed)
        try:
            upload_s = upload_all(opened)
            if progress is not None:
                progress.update(1)
            rng = np.random.default_rng(seed)
            click_s = []
            for round_index in range(rounds):
                click_s += click_all(opened, [click_fraction(rng, round_index) for _ in opened])
                if progress is not None:
                    progress.update(1)
            peak = max(server.rss_samples + [rss_bytes(server.process.pid)])
            yield ConcurrencyResult(
                opened, upload_s, click_s, server.model_loads(), rss_after_start, peak, server.rss_samples
            )
        finally:
            for session in opened:
                session.context.close()


def table(result: ConcurrencyResult) -> str:
    rows = ["| action | n | p50 (s) | p90 (s) | max (s) |", "| --- | --- | --- | --- | --- |"]
    for name, values in (("upload -> maps shown", result.upload_s), ("click -> maps repainted", result.click_s)):
        stats = percentiles(values)
        rows.append(f"| {name} | {stats['n']} | {stats['p50']:.2f} | {stats['p90']:.2f} | {stats['max']:.2f} |")
    loads = ", ".join(f"{name}: {count}" for name, count in sorted(result.model_loads.items()))
    rows.append("")
    rows.append(
        f"model loads: {loads}; server RSS after start {result.rss_after_start / 2**20:.0f} MiB, "
        f"peak {result.rss_peak / 2**20:.0f} MiB"
    )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=8, help="concurrent browser sessions (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of simultaneous clicks (default 3)")
    parser.add_argument("--cache-mb", type=int, default=64, help="CCNET_CACHE_MB of the server (default 64)")
    parser.add_argument("--checkpoints", type=Path, default=REPO_ROOT / "checkpoints")
    parser.add_argument("--log", type=Path, default=Path(tempfile.gettempdir()) / "bench_concurrency_streamlit.log")
    arguments = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright
    from tqdm import tqdm

    with sync_playwright() as playwright, tqdm(total=1 + arguments.rounds, desc="upload + click rounds") as bar:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        with concurrent_run(
            browser,
            arguments.checkpoints,
            arguments.log,
            arguments.sessions,
            arguments.rounds,
            arguments.cache_mb,
            progress=bar,
        ) as result:
            pass
        browser.close()
    print(f"\n{arguments.sessions} sessions, {arguments.rounds} click rounds, {os.cpu_count()} CPU cores\n")
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
