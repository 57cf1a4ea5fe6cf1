"""The video page's speed (issue 23's goals): a click to all maps, server side and in Chromium, and the first
result after a clip is chosen, for a full-size video model (T = 5, R = 3, the campaign's MobileNetV2 with the
128-channel head and the skip decoder) on five 360 x 480 frames (a 45 x 60 grid).

Speed does not depend on the weights, so the model is built with random weights (no trained video model is
needed). Server side, timed in this process, single-threaded pieces as the page runs them:
  first result   decode_clip (backbone on 5 frames, the head once at R = 3) + the click below
  click          clip_maps (influence_maps_3d at R = 1, 2, 3 and the temporal shares) + chart_args of 15 charts
  backbone       the backbone on the 5 frames, stored contiguous and channels-last (the page's layout)
In Chromium (--browser): a real Streamlit server and page; upload -> all 15 maps painted, and real clicks ->
all 15 maps repainted. With --picks N: an examples folder of one sequence, the page opened on its first window,
then N frames of new windows picked in the sidebar, then N frames each one further along the sequence (a clip
sharing 4 frames with the one before), each timed to all 15 maps repainted.

    python benchmarks/bench_video.py [--repeats 20] [--browser] [--picks 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).absolute().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from app.controls import ViewOptions  # noqa: E402
from app.display import colour_scale, shown_map  # noqa: E402
from app.images import decode_image  # noqa: E402
from app.influence_chart import chart_args  # noqa: E402
from app.models import load_model  # noqa: E402
from app.video import Clip, clip_maps, decode_clip  # noqa: E402
from benchmarks.common import describe_machine, p90, wait_until_quiet  # noqa: E402
from ccnet.checkpoint import save_checkpoint, write_index  # noqa: E402
from ccnet.classes import CAMVID  # noqa: E402
from ccnet.factory import build_model  # noqa: E402
from ccnet.preprocess import normalize_image  # noqa: E402

FRAMES, SIZE = 5, (360, 480)
CONFIG = {"num_classes": 11, "backbone": "mobilenet_v2", "recurrence": 3, "head_channels": 128,
          "decoder_channels": 64, "frames": FRAMES}  # fmt: skip


def make_checkpoint(folder: Path) -> Path:
    torch.manual_seed(0)
    model = build_model(CONFIG)
    with torch.no_grad():
        model.attention.cca.gamma.fill_(1.0)
    metadata = {"class_names": list(CAMVID.names), "palette": [list(c) for c in CAMVID.palette],
                "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375], "dataset": "camvid",
                "split": "val", "input_size": list(SIZE), "metrics": {}}  # fmt: skip
    weights, _ = save_checkpoint(model, folder / "video_t5_random", metadata)
    write_index(folder)
    return weights


def street_png(seed: int) -> bytes:
    from tests.test_app_helpers import image_bytes, street_rgb

    return image_bytes(street_rgb(*SIZE, seed=seed))


def server_side(weights: Path, repeats: int) -> dict[str, list[float]]:
    torch.set_num_threads(2)
    loaded = load_model(weights, torch.device("cpu"))
    frames = [street_png(i) for i in range(FRAMES)]
    clip = Clip([decode_image(data, name=f"f{i}.png") for i, data in enumerate(frames)], [f"f{i}.png" for i in range(FRAMES)], None, None)  # noqa: E501
    options = ViewOptions("attention", False, "Inferno", 0.65, 0.55, False, True)
    names = [*loaded.class_names, "?"]
    rng = np.random.default_rng(0)

    def click(decode) -> None:
        t, y, x = int(rng.integers(FRAMES)), int(rng.integers(45)), int(rng.integers(60))
        result = clip_maps(decode, t, (y, x), "attention", loaded.gamma)
        scale = colour_scale(np.concatenate([m.ravel() for m in result.maps.values()]), options)
        classes = np.zeros((45, 60), np.uint8)
        for maps in result.maps.values():
            for f in range(FRAMES):
                chart_args("media/x.jpg", SIZE, shown_map(maps[f], (y, x), False), maps[f], classes, names, scale,
                           0.65, False, (8 * x, 8 * y))  # fmt: skip

    times: dict[str, list[float]] = {"first result (s)": [], "click (ms)": [],
                                     "backbone on 5 frames, contiguous (s)": [],
                                     "backbone on 5 frames, channels-last (s)": []}  # fmt: skip
    images = torch.stack([normalize_image(f.rgb, loaded.metadata["mean"], loaded.metadata["std"]) for f in clip.frames])
    layouts = {"contiguous": images, "channels-last": images.contiguous(memory_format=torch.channels_last)}
    for name, batch in layouts.items():  # the page's backbone input (app/video.py, encode_clip) against the plain one
        with torch.inference_mode():
            loaded.model.encode(batch)  # oneDNN builds its kernels for this layout once
            for _ in range(max(1, repeats // 5)):
                start = time.perf_counter()
                loaded.model.encode(batch)
                times[f"backbone on 5 frames, {name} (s)"].append(time.perf_counter() - start)
    decode = decode_clip(loaded, clip)
    for _ in range(max(1, repeats // 5)):
        wait_until_quiet()
        start = time.perf_counter()
        decode = decode_clip(loaded, clip)
        click(decode)
        times["first result (s)"].append(time.perf_counter() - start)
    wait_until_quiet()
    for _ in range(repeats):
        start = time.perf_counter()
        click(decode)
        times["click (ms)"].append(1000 * (time.perf_counter() - start))
    return times


def in_browser(folder: Path, clicks: int) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    from benchmarks.bench_concurrency import CHROMIUM, CHROMIUM_ARGS, CLICK_WIDGET, MAP_SOURCES, streamlit_server
    from tests.test_browser_app import MAPS_CHANGED

    maps = FRAMES * 3
    times: dict[str, list[float]] = {"browser: upload -> maps (s)": [], "browser: click -> maps (s)": []}
    scratch = tempfile.TemporaryDirectory()
    with scratch, streamlit_server(Path(scratch.name) / "log", folder, timeout=120) as server:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.goto(f"{server.url}/video", wait_until="domcontentloaded")
            page.get_by_text("Upload frames", exact=True).click(timeout=120_000)
            files = [{"name": f"f{i}.png", "mimeType": "image/png", "buffer": street_png(i)} for i in range(FRAMES)]
            wait_until_quiet()
            start = time.monotonic()
            page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(files=files)
            page.wait_for_function(f"() => ({MAP_SOURCES})().filter(s => s).length === {maps}", timeout=120_000)
            times["browser: upload -> maps (s)"].append(time.monotonic() - start)
            image = page.frame_locator(CLICK_WIDGET).locator("#image")
            rng = np.random.default_rng(1)
            for index in range(clicks):
                before = page.evaluate(MAP_SOURCES)
                box = image.bounding_box()
                low = 0.1 if index % 2 == 0 else 0.6  # another cell each time
                position = {"x": float(rng.uniform(low, low + 0.3)) * box["width"], "y": 0.5 * box["height"]}
                start = time.monotonic()
                image.click(position=position)
                page.wait_for_function(MAPS_CHANGED, arg=before, timeout=60_000)
                times["browser: click -> maps (s)"].append(time.monotonic() - start)
            browser.close()
    return times


def write_examples(folder: Path, windows: int) -> list[str]:
    """One sequence of 5 x `windows` street frames (and 5 more) named as CamVid's (sequence, frame number); the
    names of the frame to pick for each window (its centre: the clip is that window exactly), then of the frames
    after the last one, each a step of one frame along the sequence."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"0001TP_{30 * i:06d}.png" for i in range(FRAMES * (windows + 1))]
    for index, name in enumerate(names):
        (folder / name).write_bytes(street_png(index))
    centres = [names[FRAMES * w + FRAMES // 2] for w in range(windows)]
    last = FRAMES * (windows - 1) + FRAMES // 2
    return centres + names[last + 1 : last + 1 + windows - 1]


def pick_in_browser(folder: Path, picks: int) -> dict[str, list[float]]:
    """Picking a frame of the examples folder: the page open on the first window (untimed), then each pick of a
    frame of a window not seen yet, from the key press to all 15 maps repainted (the issue's "first result
    after picking a window")."""
    from playwright.sync_api import sync_playwright

    from benchmarks.bench_concurrency import CHROMIUM, CHROMIUM_ARGS, MAP_SOURCES, streamlit_server
    from tests.test_browser_app import MAPS_CHANGED

    times: dict[str, list[float]] = {"browser: first window after start (s)": [], "browser: pick -> maps (s)": [],
                                     "browser: step one frame -> maps (s)": []}  # fmt: skip
    scratch = tempfile.TemporaryDirectory()
    with scratch:
        names = write_examples(Path(scratch.name) / "examples", picks + 1)
        env = {"CCNET_EXAMPLES": str(Path(scratch.name) / "examples")}
        with streamlit_server(Path(scratch.name) / "log", folder, timeout=120, extra_env=env) as server:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1500, "height": 1100})
                start = time.monotonic()
                page.goto(f"{server.url}/video", wait_until="domcontentloaded")
                painted = f"() => ({MAP_SOURCES})().filter(s => s).length === {FRAMES * 3}"
                page.wait_for_function(painted, timeout=120_000)
                times["browser: first window after start (s)"].append(time.monotonic() - start)
                picker = page.get_by_test_id("stSelectbox").filter(has=page.get_by_text("Frame", exact=True))
                for index, name in enumerate(names[1:]):  # new windows, then steps of one frame
                    wait_until_quiet()
                    before = page.evaluate(MAP_SOURCES)
                    picker.click()
                    page.keyboard.type(name)
                    start = time.monotonic()
                    page.keyboard.press("Enter")
                    page.wait_for_function(MAPS_CHANGED, arg=before, timeout=120_000)
                    kind = "pick" if index < picks else "step one frame"
                    times[f"browser: {kind} -> maps (s)"].append(time.monotonic() - start)
                browser.close()
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20, help="timed clicks server side")
    parser.add_argument("--browser", action="store_true", help="also time a real page in Chromium")
    parser.add_argument("--clicks", type=int, default=10, help="real clicks in the browser")
    parser.add_argument("--picks", type=int, default=0, help="also time picking N new windows in Chromium")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        weights = make_checkpoint(Path(scratch))
        times = server_side(weights, args.repeats)
        if args.browser:
            times |= in_browser(Path(scratch), args.clicks)
        if args.picks:
            times |= pick_in_browser(Path(scratch), args.picks)
    print(f"Machine: {describe_machine()}. Video model T = {FRAMES}, R = 3, 45 x 60 grid, random weights.\n")
    print("| measure | n | median | p90 | goal |\n| --- | ---: | ---: | ---: | --- |")
    goals = {"click (ms)": "< 150 ms", "first result (s)": "< 3 s", "browser: click -> maps (s)": "< 1 s",
             "browser: upload -> maps (s)": "< 3 s (first result)", "browser: pick -> maps (s)": "< 3 s",
             "backbone on 5 frames, contiguous (s)": "–", "backbone on 5 frames, channels-last (s)": "–",
             "browser: first window after start (s)": "–", "browser: step one frame -> maps (s)": "< 3 s"}  # fmt: skip
    for name, values in times.items():
        print(f"| {name} | {len(values)} | {statistics.median(values):.3g} | {p90(values):.3g} | {goals[name]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
