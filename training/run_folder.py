"""The run folder: what is in it, whether it may be used, and its metrics log.

RUN/config.yaml        resolved configuration
RUN/run.json           identity: id, seed, world size, code version, start and resume times
RUN/state.pt           full training state for --resume (see state.py)
RUN/metrics.jsonl      one JSON object per log / validation
RUN/tensorboard/       TensorBoard event files
RUN/best.safetensors + best.json    best-on-val checkpoint
RUN/last.safetensors + last.json    checkpoint at the last validation / end of training
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from ccnet.checkpoint import atomic_write

from .config import differing_keys, dump_config
from .errors import RunFolderError
from .state import STATE_FILE

CONFIG_FILE = "config.yaml"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
RUN_ARTEFACTS = (
    CONFIG_FILE,
    RUN_FILE,
    STATE_FILE,
    METRICS_FILE,
    TENSORBOARD_DIR,
    "best.safetensors",
    "best.json",
    "last.safetensors",
    "last.json",
)


def read_saved_config(out_dir: Path) -> dict | None:
    path = out_dir / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise RunFolderError(f"{path} is not valid YAML ({error}); fix it or start over with --overwrite") from error


def check_run_folder(out_dir: Path, config: dict, resume: bool, overwrite: bool) -> None:
    """Refuse folders that hold something else than this run (read-only: every process may call it)."""
    saved = read_saved_config(out_dir)
    if resume:
        if saved is None:
            raise RunFolderError(
                f"nothing to resume in {out_dir}: it has no {CONFIG_FILE}. Drop --resume to start a run"
            )
        changed = differing_keys(saved, config)
        if changed:
            raise RunFolderError(
                f"--resume would change the run in {out_dir}: "
                f"{', '.join(changed)} differ from its {CONFIG_FILE}. "
                "Resume with the same settings, or start a new run (--out elsewhere, or --overwrite)"
            )
        return
    if overwrite or not out_dir.exists() or not any(out_dir.iterdir()):
        return
    if saved is None:
        raise RunFolderError(
            f"{out_dir} is not empty and holds no training run: choose a new --out folder (or --overwrite)"
        )
    changed = differing_keys(saved, config, ignore=())
    what = f"a different run (differs in {', '.join(changed[:6])})" if changed else "a run with this configuration"
    raise RunFolderError(
        f"{out_dir} already holds {what}: pass --resume to continue it, --overwrite to replace it, "
        "or choose another --out folder"
    )


def clear_run_artefacts(out_dir: Path) -> None:
    """--overwrite: remove what a previous run wrote (and nothing else)."""
    for name in RUN_ARTEFACTS:
        path = out_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def remove_stale_temporaries(out_dir: Path) -> None:
    """Temporary files of saves cut short by a crash (atomic_write names them .NAME.*.tmp)."""
    for name in RUN_ARTEFACTS:
        for stale in out_dir.glob(f".{name}.*.tmp"):
            stale.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda temporary: Path(temporary).write_text(text))


def write_config(out_dir: Path, config: dict) -> None:
    write_text(out_dir / CONFIG_FILE, dump_config(config))


def update_run_record(out_dir: Path, update: dict) -> dict:
    path = out_dir / RUN_FILE
    record = json.loads(path.read_text()) if path.is_file() else {}
    for key, value in update.items():
        if isinstance(value, list) and isinstance(record.get(key), list):
            record[key] = record[key] + value
        else:
            record[key] = value
    write_text(path, json.dumps(record, indent=2) + "\n")
    return record


class MetricsLog:
    """metrics.jsonl: one JSON object per line. On resume, lines after the resumed step are dropped
    (the killed run's progress after its last save is recomputed and logged again)."""

    def __init__(self, path: Path, keep_until_step: int | None = None):
        self.path = path
        if keep_until_step is not None and path.is_file():
            kept = [line for line in path.read_text().splitlines() if self._step(line) <= keep_until_step]
            write_text(path, "".join(line + "\n" for line in kept))
        self.stream = open(path, "a")  # noqa: SIM115 - kept open for the run

    @staticmethod
    def _step(line: str) -> float:
        try:
            return json.loads(line).get("step", 0)
        except json.JSONDecodeError:
            return float("inf")  # a line torn by the kill

    def write(self, record: dict) -> None:
        self.stream.write(json.dumps(record) + "\n")
        self.stream.flush()

    def close(self) -> None:
        self.stream.close()


def read_metrics(out_dir: Path) -> list[dict]:
    path = out_dir / METRICS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
