"""The campaign queue's probe (training/speed_probe.py): real trainers timed per variant, the fastest chosen."""

from __future__ import annotations

import json

import yaml
from conftest import tiny_training_config

from training import speed_probe


def test_the_probe_times_real_trainers_and_names_the_fastest_with_its_settings(camvid_factory, tmp_path):
    root = camvid_factory({"train": 4, "val": 2})
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_training_config(root)))
    out = tmp_path / "probe.json"
    argv = ["--config", str(config), "--data-root", str(root), "--rounds", "2", "--steps", "1", "--warmup", "1",
            "--variants", "float32", "bfloat16 autocast", "--set", "model.recurrence=1", "--json", str(out)]
    assert speed_probe.main(argv) == 0
    result = json.loads(out.read_text())
    assert set(result["samples"]) == {"float32", "bfloat16 autocast"}
    assert all(len(times) == 2 and min(times) > 0 for times in result["samples"].values())
    medians = {name: sorted(times)[len(times) // 2] if len(times) % 2 else sum(times) / 2 for name, times in
               result["samples"].items()}  # fmt: skip
    assert result["choice"] == min(medians, key=medians.get) and result["machine"]
    assert result["settings"] == speed_probe.settings_of(result["choice"])


def test_variant_settings_and_candidates_follow_the_machine(monkeypatch):
    assert speed_probe.settings_of("bfloat16 + compile") == {"amp": "bfloat16", "channels_last": False, "compile": True}
    assert speed_probe.settings_of("float32") == {"amp": False, "channels_last": False, "compile": False}
    monkeypatch.setattr(speed_probe, "has_fast_bf16", lambda: False)  # emulated bfloat16 is never worth timing
    assert speed_probe.candidate_variants() == ["float32", "float32 + compile"]
    monkeypatch.setattr(speed_probe, "has_fast_bf16", lambda: True)
    assert "bfloat16 + compile" in speed_probe.candidate_variants()
