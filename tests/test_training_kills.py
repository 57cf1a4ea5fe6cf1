"""Repeated crashes: one training run SIGKILLed at 5 random points (seeded) and resumed after each, ending at the
same step with the same per-step loss curve and weights as an uninterrupted run of the same seed.

Tolerance: none. On the CPU the resumed run is bit-identical (model, optimiser, every RNG and the data order
are restored from state.pt), so the logged losses and the final weights are compared with `==`.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_training_config

from tests.test_training_resume import _wait_for_step
from training import train as train_module
from training.run_folder import read_metrics
from training.state import load_training_state
from training.train import train

REPO = Path(__file__).resolve().parents[1]
ITERATIONS, SAVE_EVERY, KILLS = 48, 4, 5


def kill_points(seed: int = 7) -> list[int]:
    """KILLS distinct steps, sorted, at least SAVE_EVERY + 1 apart so every life makes progress."""
    rng = random.Random(seed)
    while True:
        points = sorted(rng.sample(range(3, ITERATIONS - 2), KILLS))
        if all(b - a > SAVE_EVERY for a, b in zip(points, points[1:], strict=False)):
            return points


def _run_until_killed(command: list[str], out: Path, step: int) -> int:
    """Start the trainer, SIGKILL its process group once the log reaches `step`; the step reached."""
    env = os.environ | {"PYTHONPATH": str(REPO)}
    process = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, start_new_session=True)
    try:
        reached = _wait_for_step(out, step, process)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
    return reached


def _losses(out: Path) -> dict[int, dict]:
    """step -> every number of its train record (losses and lr; the timing fields dropped)."""
    return {
        record["step"]: {k: v for k, v in record.items() if k not in ("time", "images_per_s")}
        for record in read_metrics(out)
        if record["kind"] == "train"
    }


@pytest.mark.slow
def test_five_kills_and_resumes_match_an_uninterrupted_run(camvid_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("CCNET_CACHE_DIR", str(tmp_path / "cache"))
    config = tiny_training_config(
        camvid_factory({"train": 5, "val": 2}),
        optim={"iterations": ITERATIONS},
        train={"save_every": SAVE_EVERY, "val_every": 16, "log_every": 1},
    )
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    out = tmp_path / "killed"
    base = [sys.executable, "-m", "training.train", "--out", str(out), "--no-progress"]

    saved_after_kill, lost_steps = [], []
    for life, point in enumerate(kill_points()):
        command = base + (["--config", str(config_file)] if life == 0 else ["--resume"])
        reached = _run_until_killed(command, out, point)
        saved = load_training_state(out / "state.pt")["step"]  # the state a kill left must load
        assert saved < ITERATIONS and saved % SAVE_EVERY == 0 and reached - saved <= SAVE_EVERY
        saved_after_kill.append(saved)
        lost_steps.append(reached - saved)
    assert saved_after_kill == sorted(saved_after_kill) and saved_after_kill[-1] > saved_after_kill[0]

    assert train_module.main(["--out", str(out), "--resume", "--no-progress"]) == 0
    resumes = json.loads((out / "run.json").read_text())["resumed"]
    assert [entry["step"] for entry in resumes] == saved_after_kill  # each life resumed from the last save
    assert load_training_state(out / "state.pt")["step"] == ITERATIONS
    assert not list(out.glob(".*.tmp"))

    reference = tmp_path / "uninterrupted"
    assert train(config, reference, show_progress=False).step == ITERATIONS
    killed_curve, reference_curve = _losses(out), _losses(reference)
    assert sorted(killed_curve) == list(range(1, ITERATIONS + 1))
    assert killed_curve == reference_curve  # every loss term of every step, bit for bit
    val = [(r["step"], r.get("mIoU")) for r in read_metrics(out) if r["kind"] == "val"]
    assert val == [(r["step"], r.get("mIoU")) for r in read_metrics(reference) if r["kind"] == "val"]
    killed_weights = load_training_state(out / "state.pt")["model"]
    for key, tensor in load_training_state(reference / "state.pt")["model"].items():
        assert torch.equal(killed_weights[key], tensor), key
    print(f"\nkill points {kill_points()}, saved steps {saved_after_kill}, steps recomputed {lost_steps}")
