"""How fast the explorer answers: first result for a new image, and a click, at 360 x 480 on this machine.

    python benchmarks/bench_app.py [--checkpoint checkpoints/camvid_r2.safetensors] [--repeats 20]
    python benchmarks/bench_app.py --per-r     # "Separately trained models per R" on the bundled family

Two views of the same work:
- page: the real page script run by Streamlit's AppTest; the numbers are the app's own timings expander
  (server time of the exploration fragment: maps, statistics, drawing, charts handed to Streamlit), plus
  the upload's decoding for a new image. The websocket and the browser's repaint are not included: the
  browser test measures click -> repaint (test-artifacts/browser_timings.json).
- parts: the steps of that path timed one by one, to see where the milliseconds go.

--per-r times the loop-count comparison instead: the end-to-end family of --folder (default: the bundled
one; one network per R, and R = 0 under the image when there is one), so a new image runs every member once.
The step-by-step parts are the unrolled model's and are not repeated there (a click's work per column is the
same).

Without --checkpoint it uses the folder's default model (checkpoints/index.json) and, when there is none
yet, random weights in the architecture of training/configs/camvid_r2.yaml (the bundled default's
recipe), saying so: timing depends on the architecture and the feature grid (45 x 60 at 360 x 480),
not on the weights.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).absolute().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from PIL import Image  # noqa: E402

from app import render  # noqa: E402
from app.controls import TRAINED  # noqa: E402
from app.display import ShownMap  # noqa: E402
from app.explorer import column_maps, encode_and_decode, single_threaded  # noqa: E402
from app.images import decode_image  # noqa: E402
from app.influence_chart import chart_args  # noqa: E402
from app.models import load_model, read_catalogue  # noqa: E402
from app.stats import influence_stats  # noqa: E402
from app.view import ENCODE_STEP  # noqa: E402
from ccnet.checkpoint import save_checkpoint, write_index  # noqa: E402
from ccnet.model import CCNet  # noqa: E402


def synthetic_street(height: int, width: int, seed: int) -> np.ndarray:
    """A street-like picture (sky, facade, road, a car) with noise, so every repeat hashes differently."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 3), np.float32)
    image[: height // 3] = (120, 170, 230)
    image[height // 3 : 2 * height // 3] = (150, 60, 50)
    image[2 * height // 3 :] = (90, 90, 95)
    image[height // 2 : 3 * height // 4, width // 4 : width // 2] = (30, 40, 160)
    return (image + rng.normal(0, 12, image.shape)).clip(0, 255).astype(np.uint8)


def png_bytes(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def checkpoint_folder(path: str | None, workdir: Path) -> tuple[Path, str]:
    """A folder holding exactly one model as its default, and a description of that model."""
    if path is None:
        catalogue = read_catalogue(ROOT / "checkpoints")
        entry = catalogue.default_entry()
        if entry is not None:
            path = str(entry.path)
    folder = workdir / "checkpoints"
    folder.mkdir()
    if path is None:
        architecture = _recipe_architecture()
        torch.manual_seed(0)
        model = CCNet(11, **architecture).eval()
        with torch.no_grad():
            model.attention.cca.gamma.fill_(0.5)
        metadata = {
            "class_names": [f"class {k}" for k in range(11)],
            "palette": [[20 * k, 255 - 20 * k, 90] for k in range(11)],
            "mean": [123.675, 116.28, 103.53],
            "std": [58.395, 57.12, 57.375],
            "dataset": "synthetic",
            "split": "",
        }
        save_checkpoint(model, folder / "random_r2", metadata)
        write_index(folder, default="random_r2")
        shown = ", ".join(f"{key} {value}" for key, value in architecture.items())
        return folder, f"random weights, no bundled checkpoint yet; architecture of {RECIPE.name}: {shown}"
    weights = Path(path).with_suffix(".safetensors")
    for source in (weights, weights.with_suffix(".json")):
        shutil.copy(source, folder / source.name)
    write_index(folder, default=weights.stem)
    return folder, f"{weights.name}"


def family_folder(folder: Path) -> tuple[Path, str]:
    """A checkpoint folder as it is, for the per-R mode, and the models that mode shows from it."""
    catalogue = read_catalogue(folder)
    default = catalogue.comparison_default()  # what the app's per-R mode starts from
    family = catalogue.trained_per_loop_count(default) if default is not None else {}
    members = [entries[0] for _, entries in sorted(family.items()) if entries]
    if len(members) < 2:
        raise SystemExit(f"{folder} holds fewer than two end-to-end models per R: the per-R mode is not offered")
    baseline = catalogue.baseline_for(default)
    shown = ", ".join(f"{e.name} (R = {e.recurrence})" for e in [*([baseline] if baseline else []), *members])
    return folder, f"per-R mode ({TRAINED}): {shown}"


RECIPE = ROOT / "training" / "configs" / "camvid_r2.yaml"


def _recipe_architecture() -> dict:
    """The model section of the default model's training config (a small CCNet if it is not there)."""
    fallback = {"backbone": "resnet18", "recurrence": 2, "base_width": 8, "head_channels": 16}
    if not RECIPE.is_file():
        return fallback
    model = yaml.safe_load(RECIPE.read_text()).get("model", {})
    keys = ("backbone", "recurrence", "base_width", "head_channels", "aux_channels", "ccl_channels")
    return {key: model[key] for key in keys if model.get(key) is not None} or fallback


def summary(values_ms: list[float]) -> str:
    ordered = sorted(values_ms)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return f"median {statistics.median(ordered):7.1f} ms, p90 {p90:7.1f} ms, max {ordered[-1]:7.1f} ms"


def timings_from_page(app) -> dict[str, float]:
    """The app's own timings expander: {'step': ms, ..., 'total': ms}."""
    for markdown in app.markdown:
        if "**total:" in markdown.value:
            steps = {}
            for line in markdown.value.splitlines():
                name, _, value = line.strip("- *").rpartition(": ")
                steps[name] = float(value.removesuffix(" ms").strip("*"))
            return steps
    raise RuntimeError("the page showed no timings: " + "; ".join(e.value for e in app.error))


def turn_on_every_view(app) -> None:
    """The heaviest click: the reverse view, the clicked pixel's predicted segment as the query, each loop's
    own maps, and a second pixel to compare (issue 14: "a click with every view on")."""
    app.sidebar.radio(key="direction").set_value("Which pixels read from this pixel?").run()
    app.sidebar.radio(key="query").set_value("Its predicted-class segment").run()
    app.sidebar.checkbox(key="per_loop").set_value(True).run()
    app.checkbox(key="compare").set_value(True).run()


def bench_page(
    folder: Path, height: int, width: int, repeats: int, new_images: int, every_view: bool = False,
    comparison: str | None = None,
) -> dict[str, list[float]]:
    """First result for new images and clicks (with every view on, if asked), through the real page script, in
    the page's first comparison mode or in `comparison` (a label of the sidebar's "Compare")."""
    from streamlit.testing.v1 import AppTest

    os.environ.update({"CCNET_CHECKPOINTS": str(folder), "CCNET_DEVICE": os.environ.get("CCNET_DEVICE", "auto")})
    os.environ["CCNET_EXAMPLES"] = "none"  # the timed images are uploads, not the bundled examples
    app = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=300)
    app.run()
    if comparison is not None:
        app.sidebar.radio(key="comparison").set_value(comparison).run()
    results: dict[str, list[float]] = {
        "first result": [],
        "first: upload decode": [],
        "first: encode + decode": [],
        "click": [],
    }
    rng = np.random.default_rng(0)
    for index in range(new_images + 1):
        data = png_bytes(synthetic_street(height, width, seed=1000 + index))
        start = time.perf_counter()
        digest = decode_image(data).digest  # what the page does with an upload, timed here
        decode_ms = 1000 * (time.perf_counter() - start)
        app.sidebar.file_uploader(key="upload").set_value((f"street{index}.png", data, "image/png"))
        app.run()
        steps = timings_from_page(app)
        if index == 0:
            continue  # the very first run also warms up torch and the caches
        results["first result"].append(decode_ms + steps["total"])
        results["first: upload decode"].append(decode_ms)
        results["first: encode + decode"].append(steps.get(ENCODE_STEP, 0.0))
    if every_view:
        turn_on_every_view(app)
    for _ in range(repeats):
        point = {"digest": digest, "px": int(rng.integers(width)), "py": int(rng.integers(height))}
        app.session_state["point"] = point
        app.run()
        steps = timings_from_page(app)
        results["click"].append(steps.pop("total"))
        for name, value in steps.items():
            results.setdefault(f"click: {name}", []).append(value)
    return results


def bench_parts(folder: Path, height: int, width: int, repeats: int) -> dict[str, list[float]]:
    """The click path's steps one by one, for the three columns of one model unrolled R = 1, 2, 3."""
    entry = read_catalogue(folder).default_entry()
    loaded = load_model(entry.path, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    rgb = synthetic_street(height, width, seed=7)
    decoded = encode_and_decode(loaded, rgb, [1, 2, 3])
    rng = np.random.default_rng(1)
    parts: dict[str, list[float]] = {}

    @contextlib.contextmanager
    def clock(name: str):
        start = time.perf_counter()
        yield
        parts.setdefault(name, []).append(1000 * (time.perf_counter() - start))

    names = [*loaded.class_names, "?"]
    size = (height, width)
    photo = "media/0123456789abcdef0123456789abcdef.jpg"  # the app sends the photo's media URL, not the photo
    for _ in range(repeats):
        px, py = int(rng.integers(width)), int(rng.integers(height))
        with clock("influence maps"), single_threaded():
            maps = [column_maps(decoded[r], px, py, "attention", with_per_loop=False).composed for r in (1, 2, 3)]
        with clock("statistics"):
            for influence, r in zip(maps, (1, 2, 3), strict=True):
                influence_stats(influence, decoded[r].grid_classes, int(decoded[r].prediction[py, px]))
        scales = [render.ColourScale("Inferno", 0.0, float(influence.max())) for influence in maps]
        with clock("overlays + JPEG (pixel B's map, each loop's own)"):
            overlays = [render.influence_rgb(rgb, m, s, 0.65) for m, s in zip(maps, scales, strict=True)]
            [render.jpeg_bytes(overlay) for overlay in overlays]
        with clock("influence chart arguments + JSON"):
            for influence, scale, r in zip(maps, scales, (1, 2, 3), strict=True):  # what st gets per column
                grid_classes = np.minimum(decoded[r].grid_classes, len(names) - 1)
                shown = ShownMap(influence, None)
                args = chart_args(photo, size, shown, influence, grid_classes, names, scale, 0.65, False, (px, py))
                json.dumps(args)
    return parts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="a .safetensors checkpoint (default: the folder's default model)")
    parser.add_argument("--size", default="360x480", help="image height x width (default 360x480)")
    parser.add_argument("--repeats", type=int, default=20, help="clicks to time (default 20)")
    parser.add_argument("--new-images", type=int, default=5, help="new images to time (default 5)")
    parser.add_argument(
        "--every-view", action="store_true", help="time clicks with the reverse view, a segment query, each "
        "loop's maps and a second pixel all on (the first results are timed with the default views)"
    )  # fmt: skip
    parser.add_argument(
        "--per-r", action="store_true", help=f"time the mode '{TRAINED}' on the end-to-end family of --folder "
        "instead of the default model unrolled"
    )  # fmt: skip
    parser.add_argument("--folder", type=Path,
                        help="with --per-r: the checkpoint folder (default: the bundled checkpoints/)")
    args = parser.parse_args(argv)
    if args.per_r and args.checkpoint:
        parser.error("--per-r times a folder's family: give --folder, not --checkpoint")
    if args.folder and not args.per_r:
        parser.error("--folder is for --per-r; time one model with --checkpoint")
    height, width = (int(v) for v in args.size.lower().split("x"))

    with tempfile.TemporaryDirectory() as workdir:
        if args.per_r:
            folder, described = family_folder(args.folder or ROOT / "checkpoints")
        else:
            folder, described = checkpoint_folder(args.checkpoint, Path(workdir))
        device = "cuda" if torch.cuda.is_available() else "cpu"
        print(
            f"model: {described}; device: {device}; torch threads: {torch.get_num_threads()}; image {height} x {width}"
        )
        comparison = TRAINED if args.per_r else None
        page = bench_page(folder, height, width, args.repeats, args.new_images, args.every_view, comparison)
        parts = {} if args.per_r else bench_parts(folder, height, width, args.repeats)

    print("\n| measured (server side) | result | goal |\n| --- | --- | --- |")
    goals = {"first result": "< 1500 ms", "click": "< 50 ms"}
    for name, values in page.items():
        print(f"| {name} | {summary(values)} | {goals.get(name, '')} |")
    if parts:
        print("\n| click path, step by step (3 columns) | result |\n| --- | --- |")
    for name, values in parts.items():
        print(f"| {name} | {summary(values)} |")
    failed = statistics.median(page["click"]) >= 50 or statistics.median(page["first result"]) >= 1500
    print("\nmedian within the goals" if not failed else "\nmedian OUTSIDE a goal (see above)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
