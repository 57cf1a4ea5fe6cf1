"""Pieces of an explorer click that docs/APP.md quotes, each timed on its own (bundled default model, 360 x 480).

- the letter "B": cv2.putText on its first call in a new thread (Streamlit runs every rerun in one) against
  `render.stamp_label`, which draws from masks made once per process;
- influence maps at R = 1, 2, 3 (`influence_maps`) and the reverse view with each loop's own maps
  (`column_maps(..., direction=FEEDS, with_per_loop=True)`), single-threaded as in the app.

    python benchmarks/bench_click_parts.py [--repeats 30]
"""

from __future__ import annotations

import argparse
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

    print(f"model {entry.name}, 360 x 480 (feature grid {decoded[1].grid_size}), {args.repeats} repeats\n")
    print("| piece | median |\n| --- | ---: |")
    for name, ms in rows:
        print(f"| {name} | {ms:.2f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
