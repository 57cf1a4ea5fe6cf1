"""DistributedDataParallel through torchrun: two CPU processes on the gloo backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_training_config

from ccnet.checkpoint import load_checkpoint
from training.run_folder import read_metrics
from training.state import load_training_state

REPO = Path(__file__).resolve().parents[1]


def _torchrun(config_file: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "training.train",
        "--config",
        str(config_file),
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]
    env = os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.slow
def test_two_process_gloo_training_pauses_and_resumes_exactly(camvid_factory, tmp_path):
    config = tiny_training_config(
        camvid_factory({"train": 6, "val": 3}),
        optim={"iterations": 6, "batch_size": 2},
        train={"val_every": 2, "save_every": 4, "log_every": 1, "sync_bn": True},  # sync_bn: CPU falls back
    )
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    out = tmp_path / "ddp"
    paused = _torchrun(config_file, out, "--stop-at", "3")
    assert paused.returncode == 0, paused.stderr[-3000:]
    assert "SyncBatchNorm needs CUDA" in paused.stderr and "paused at iteration 3" in paused.stdout
    state = load_training_state(out / "state.pt")
    assert state["step"] == 3 and state["world_size"] == 2 and len(state["rng"]["torch"]) == 2  # both ranks' RNG
    assert not any(key.startswith("module.") for key in state["model"])

    resumed = _torchrun(config_file, out, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((out / "run.json").read_text())["world_size"] == 2
    records = read_metrics(out)
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]  # rank 0 logs, once
    assert [r["step"] for r in records if r["kind"] == "val"] == [2, 4, 6]
    model, metadata = load_checkpoint(out / "last", device="cpu")
    assert metadata["metrics"]["step"] == 6

    straight = _torchrun(config_file, tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]
    reference = load_training_state(tmp_path / "straight" / "state.pt")["model"]
    final = load_training_state(out / "state.pt")["model"]
    assert all(torch.equal(final[key], tensor) for key, tensor in reference.items())
    assert torch.equal(model.state_dict()["head.classifier.weight"], final["head.classifier.weight"])
