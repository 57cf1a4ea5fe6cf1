"""A newcomer's first screen: open the page on a fresh clone's settings -> maps painted, with no action.

A real Streamlit server on the bundled checkpoints and the bundled examples (CCNET_EXAMPLES unset: examples/),
Debian's Chromium driven by Playwright. Each visit is a new browser context (a new session) timed from
`page.goto` until every influence chart has painted: 3 on the explorer, T x 3 = 15 on the video page. The first
visit of each page to a fresh server is "cold" (it loads the model and oneDNN builds its kernels); the later ones
are "warm" (a new visitor to a running server). The server's part alone: the page script run in-process by
Streamlit's AppTest, on the same settings (cold: first run in this process; warm: a second AppTest).

    python benchmarks/bench_first_screen.py --visits 3     # about 2 minutes on 2 cores; pause training first
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import common
from bench_concurrency import CHROMIUM, CHROMIUM_ARGS, streamlit_server, time_visit

GOAL_BROWSER_S = 10.0  # issue 30: painted maps within 10 s of opening
GOAL_SERVER_S = 3.0  # issue 30: the server's part within 3 s
PAGES = {"explorer": ("", 3), "video": ("/video", 15)}  # page -> (URL path, charts painted on its first screen)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--visits", type=int, default=3, help="visits per page (the first is cold)")
    parser.add_argument("--checkpoints", type=Path, default=common.REPO_ROOT / "checkpoints")
    return parser.parse_args(argv)


def browser_visits(checkpoints: Path, visits: int) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    results = {name: [] for name in PAGES}
    log = Path(tempfile.mkdtemp()) / "streamlit.log"
    examples = {"CCNET_EXAMPLES": str(common.REPO_ROOT / "examples")}  # what an unset CCNET_EXAMPLES gives
    with streamlit_server(log, checkpoints, timeout=120, extra_env=examples) as server, sync_playwright() as play:
        browser = play.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for name, (path, charts) in PAGES.items():
            for index in range(visits):
                seconds, errors = time_visit(browser, server.url + path, charts)
                if errors:
                    raise RuntimeError(f"{name}: page errors {errors}")
                print(f"{name} visit {index + 1}: {seconds:.2f} s", file=sys.stderr)
                results[name].append(seconds)
        browser.close()
    return results


def server_runs(checkpoints: Path) -> dict[str, list[float]]:
    """The page script alone, twice per page in this process (cold, then warm), on the first screen's settings."""
    import os

    from streamlit.testing.v1 import AppTest

    os.environ.pop("CCNET_EXAMPLES", None)
    os.environ.update({"CCNET_CHECKPOINTS": str(checkpoints), "CCNET_DEVICE": "cpu"})
    scripts = {"explorer": "app/main.py", "video": "app/pages/video.py"}
    results = {}
    for name, script in scripts.items():
        results[name] = []
        for _ in range(2):
            app = AppTest.from_file(str(common.REPO_ROOT / script), default_timeout=300)
            start = time.perf_counter()
            app.run()
            results[name].append(time.perf_counter() - start)
            if app.exception:
                raise RuntimeError(f"{name}: {[e.value for e in app.exception]}")
    return results


def format_table(browser: dict[str, list[float]], server: dict[str, list[float]]) -> str:
    lines = [f"Machine: {common.describe_machine()}. {common.load_note()}.", "",
             "| page | server, cold | server, warm | Chromium, cold | Chromium, warm (median of the rest) | goals |",
             "| --- | ---: | ---: | ---: | ---: | --- |"]  # fmt: skip
    for name in PAGES:
        warm = browser[name][1:]
        warm_text = f"{statistics.median(warm):.2f} s" if warm else "–"
        lines.append(f"| {name} | {server[name][0]:.2f} s | {server[name][1]:.2f} s | {browser[name][0]:.2f} s | "
                     f"{warm_text} | server < {GOAL_SERVER_S:g} s, browser < {GOAL_BROWSER_S:g} s |")  # fmt: skip
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} is missing: apt-get install -y chromium")
    common.wait_until_quiet(log=lambda m: print(m, file=sys.stderr))
    server = server_runs(args.checkpoints)
    print(format_table(browser_visits(args.checkpoints, args.visits), server))


if __name__ == "__main__":
    main()
