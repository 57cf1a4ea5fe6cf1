"""No absolute path of one machine in the code or the docs: a fresh clone elsewhere must work and read true.

Paths of the operating system's interfaces (``/proc/...``, Debian's ``/usr/bin/chromium``) are not machine
paths; a line that shows an absolute path as an example says so ("example", "e.g.").
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEARCHED = ["README.md", "docs", "app", "ccnet", "training", "benchmarks", "scripts", ".ci"]
SUFFIXES = {".py", ".md", ".sh", ".yaml", ".yml", ".json", ".js", ".html", ".css", ".toml", ""}
# Folders where one machine's files live: a user's home, a workspace, a scratch disk.
MACHINE_PATH = re.compile(r"(?<![\w.~$-])/(?:work|root|home|Users|tmp|mnt|scratch|data|workspace)/[\w.-]")
EXAMPLE = re.compile(r"\b(?:example|e\.g\.)", re.IGNORECASE)


def _files() -> list[Path]:
    found = []
    for name in SEARCHED:
        path = ROOT / name
        candidates = [path] if path.is_file() else sorted(path.rglob("*"))
        found += [p for p in candidates if p.is_file() and p.suffix in SUFFIXES and "__pycache__" not in p.parts]
    return found


def machine_paths(text: str) -> list[str]:
    """Lines of ``text`` naming a machine path, unless the line says it is an example."""
    return [line.strip() for line in text.splitlines() if MACHINE_PATH.search(line) and not EXAMPLE.search(line)]


def test_the_pattern_finds_machine_paths_and_spares_the_rest():
    assert machine_paths('PAUSE = "/work/TRAINING_RUNNING"') and machine_paths("see /root/.cache/x")
    assert machine_paths("Paper: /home/alice/shared/docs/ccnet-brief.md")
    assert not machine_paths("Paper: ../shared/docs/ccnet-brief.md, runs/TRAINING_RUNNING")
    assert not machine_paths("open('/proc/self/status'); /usr/bin/chromium; /etc/ssl/ccnet.crt")
    assert not machine_paths("e.g. CAMVID_ROOT=/data/camvid")


def test_no_machine_paths_in_code_or_docs():
    files = _files()
    assert len(files) > 50  # the search saw the project
    offending = {
        str(path.relative_to(ROOT)): hits
        for path in files
        if (hits := machine_paths(path.read_text(encoding="utf-8", errors="replace")))
    }
    assert offending == {}, "absolute paths of one machine (make them relative or an environment variable)"
