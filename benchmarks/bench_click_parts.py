"""Pieces of an explorer click that docs/APP.md quotes, each timed on its own (bundled default model, 360 x 480).

- the letter "B": cv2.putText on its first call in a new thread (Streamlit runs every rerun in one) against
  `render.stamp_label`, which draws from masks made once per process;
- influence maps at R = 1, 2, 3 (`influence_maps`) and the reverse view with each loop's own maps
  (`column_maps(..., direction=FEEDS, with_per_loop=True)`), single-threaded as in the app;
- one influence chart: `chart_args`, and Streamlit's own call that mounts the component, inside a real script
  run (AppTest), with the photo as a media URL (the app) and as a data URL inside the arguments (before).

    python benchmarks/bench_click_parts.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).absolute().parent.parent
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from app import render  # noqa: E402
from app.explorer import FEEDS, column_maps, encode_and_decode, single_threaded  # noqa: E402
from app.models import load_model, read_catalogue  # noqa: E402
from ccnet.propagation import influence_maps  # noqa: E402


def median_ms(call, repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def first_call_in_new_threads(call, threads: int) -> float:
    """Median time of `call` as the first thing each of `threads` fresh threads does."""
    times = []

    def run():
        start = time.perf_counter()
        call()
        times.append(1000 * (time.perf_counter() - start))

    for _ in range(threads):
        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
    return statistics.median(times)


def _chart_calls(root: str, repeats: int) -> None:
    """An AppTest script: time `chart_args` and the component call for one 360 x 480 map, both photo forms."""
    import json
    import statistics
    import sys
    import time

    import numpy as np
    import streamlit as st

    sys.path.insert(0, root)
    from app import render
    from app.display import ShownMap
    from app.influence_chart import chart_args, influence_chart

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (360, 480, 3), dtype=np.uint8)
    values = (rng.random((45, 60)) / 2700).astype(np.float32)  # (h, w)
    classes = rng.integers(0, 11, (45, 60))
    scale = render.ColourScale("Inferno", 0.0, float(values.max()))
    names = [f"class {k}" for k in range(11)] + ["?"]
    photos = {"media URL": "media/" + "0" * 32 + ".jpg", "data URL": render.jpeg_data_uri(rgb)}
    timings = {}
    for form, photo in photos.items():
        build, mount = [], []
        for index in range(repeats):
            start = time.perf_counter()
            args = chart_args(photo, (360, 480), ShownMap(values, None), values, classes, names, scale, 0.65, False,
                              (240, 180))  # fmt: skip
            built = time.perf_counter()
            influence_chart(args, key=f"{form}-{index}")
            build.append(1000 * (built - start))
            mount.append(1000 * (time.perf_counter() - built))
        timings[form] = [statistics.median(build), statistics.median(mount)]
    st.text(json.dumps(timings))


def chart_call_rows(repeats: int) -> list[tuple[str, float]]:
    from streamlit.testing.v1 import AppTest

    app = AppTest.from_function(_chart_calls, args=(str(ROOT), repeats), default_timeout=300)
    app.run()  # the first run imports and registers the component
    app.run()
    timings = json.loads(app.text[-1].value)
    rows = []
    for form, (build, mount) in timings.items():
        rows.append((f"influence chart, photo as a {form}: chart_args", build))
        rows.append((f"influence chart, photo as a {form}: Streamlit's component call", mount))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per row (default 30)")
    args = parser.parse_args(argv)
    rgb = np.random.default_rng(0).integers(0, 256, (360, 480, 3), dtype=np.uint8)

    def put_text():
        canvas = rgb.copy()
        cv2.putText(canvas, "B", (100, 100), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(canvas, "B", (100, 100), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)

    render.stamp_label(rgb.copy(), "B", (100, 100), 0.4)  # its masks, made once per process
    rows = [
        ("cv2.putText 'B', first call in a new thread", first_call_in_new_threads(put_text, args.repeats)),
        (
            "render.stamp_label 'B', first call in a new thread",
            first_call_in_new_threads(lambda: render.stamp_label(rgb.copy(), "B", (100, 100), 0.4), args.repeats),
        ),
    ]

    entry = read_catalogue(ROOT / "checkpoints").default_entry()
    loaded = load_model(entry.path, torch.device("cpu"))
    decoded = encode_and_decode(loaded, rgb, [1, 2, 3])
    with single_threaded():
        for r in (1, 2, 3):
            forward = lambda d=decoded[r]: influence_maps(d.attentions, 20, 30)  # noqa: E731
            reverse = lambda d=decoded[r]: column_maps(d, 240, 180, "attention", True, direction=FEEDS)  # noqa: E731
            rows.append((f"influence_maps, R = {r}", median_ms(forward, args.repeats)))
            rows.append((f"reverse view + each loop's own maps, R = {r}", median_ms(reverse, args.repeats)))

    rows += chart_call_rows(args.repeats)

    print(f"model {entry.name}, 360 x 480 (feature grid {decoded[1].grid_size}), {args.repeats} repeats\n")
    print("| piece | median |\n| --- | ---: |")
    for name, ms in rows:
        print(f"| {name} | {ms:.2f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
