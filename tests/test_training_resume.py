"""Crash safety: a training process killed with SIGKILL resumes to the same end, losing at most the
progress since its last saved state, and ends with the weights of an uninterrupted run."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_training_config

from training import train as train_module
from training.run_folder import read_metrics
from training.state import load_training_state
from training.train import train

REPO = Path(__file__).resolve().parents[1]
ITERATIONS, SAVE_EVERY = 60, 7


def _logged_steps(out: Path) -> list[int]:
    """Steps in the metrics log so far (the line being written may be incomplete: skipped)."""
    path = out / "metrics.jsonl"
    steps = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        steps += [record["step"]] if record["kind"] == "train" else []
    return steps


def _wait_for_step(out: Path, step: int, process: subprocess.Popen, timeout: float = 90.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"training exited early: {process.stderr.read().decode()}"
        logged = _logged_steps(out)
        if logged and logged[-1] >= step:
            return logged[-1]
        time.sleep(0.05)
    raise AssertionError(f"training did not reach step {step} within {timeout} s")


@pytest.mark.slow
def test_sigkill_then_resume_ends_where_an_uninterrupted_run_ends(camvid_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("CCNET_CACHE_DIR", str(tmp_path / "cache"))
    config = tiny_training_config(
        camvid_factory({"train": 5, "val": 2}),
        data={"num_workers": 1},  # worker processes, as in real runs
        optim={"iterations": ITERATIONS},
        train={"save_every": SAVE_EVERY, "val_every": 20, "log_every": 1},
    )
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "training.train", "--config", str(config_file), "--out", str(out), "--no-progress"]
    env = os.environ | {"PYTHONPATH": str(REPO)}
    process = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, start_new_session=True)
    try:
        reached = _wait_for_step(out, 3 * SAVE_EVERY + 2, process)
        os.killpg(process.pid, signal.SIGKILL)  # the trainer and its loader worker, mid-run
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
    saved = load_training_state(out / "state.pt")["step"]
    assert saved < ITERATIONS, "the run finished before it could be killed"
    assert saved % SAVE_EVERY == 0 and reached - saved <= SAVE_EVERY  # lost at most what came after the save

    code = train_module.main(["--out", str(out), "--resume", "--no-progress"])  # config from the run folder
    assert code == 0
    records = read_metrics(out)
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, ITERATIONS + 1))
    assert [r["step"] for r in records if r["kind"] == "val"] == [20, 40, 60]
    assert load_training_state(out / "state.pt")["step"] == ITERATIONS
    assert not list(out.glob(".*.tmp"))  # a save cut short by the kill was cleaned up on resume
    assert json.loads((out / "run.json").read_text())["resumed"][0]["step"] == saved

    uninterrupted = train(config, tmp_path / "uninterrupted", show_progress=False)
    assert uninterrupted.step == ITERATIONS
    resumed_weights = load_training_state(out / "state.pt")["model"]
    reference = load_training_state(tmp_path / "uninterrupted" / "state.pt")["model"]
    for key, tensor in reference.items():
        assert torch.equal(resumed_weights[key], tensor), key
