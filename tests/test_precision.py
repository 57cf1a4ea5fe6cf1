"""Precision is decided on the machine (training/precision.py): the tests check that each decision follows the
probe or the CPU flags it reads, never what the probe finds on the machine that happens to run them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_training_config

from training import precision
from training.config import ConfigError, load_config
from training.precision import DEPTHWISE_ERROR_LIMIT, resolve_precision
from training.train import train

ROOT = Path(__file__).resolve().parents[1]

# Run in a fresh process so that the environment's kernel caps apply: the probe's error and the decision.
_DECIDE = """
import json
from training.config import ConfigError
from training.precision import bf16_channels_last_depthwise_error, resolve_precision
error = bf16_channels_last_depthwise_error()
try:
    resolve_precision("bfloat16", True, "cpu")
    refused = False
except ConfigError:
    refused = True
print(json.dumps({"error": error, "refused": refused}))
"""


def _decide_in_subprocess(**env: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", _DECIDE],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("amp,expected", [(True, None), (False, None), ("bfloat16", torch.bfloat16)])
def test_an_explicit_amp_setting_chooses_the_cpu_autocast_dtype(amp, expected):
    assert resolve_precision(amp, False, "cpu").amp_dtype == expected
    assert resolve_precision(True, False, "cuda").amp_dtype == torch.float16


def test_auto_amp_follows_the_cpu_flags(monkeypatch):
    decided = resolve_precision("auto", "auto", "cpu")
    assert decided.amp_dtype == (torch.bfloat16 if precision.has_fast_bf16() else None)
    assert decided.channels_last == (decided.amp_dtype is None)  # contiguous bfloat16, channels-last float32
    # Both paths, whatever this CPU has (and whatever oneDNN cap the suite runs under):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))
    fast = resolve_precision("auto", "auto", "cpu")
    assert (fast.amp_dtype, fast.channels_last, fast.name) == (torch.bfloat16, False, "bfloat16")
    assert "avx512_bf16" in fast.reason
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    slow = resolve_precision("auto", "auto", "cpu")
    assert (slow.amp_dtype, slow.channels_last, slow.name) == (None, True, "float32")
    assert "emulated" in slow.reason
    assert resolve_precision("auto", "auto", "cuda").amp_dtype == torch.float16


def test_bfloat16_channels_last_is_refused_exactly_when_the_probe_finds_it_wrong():
    error = precision.bf16_channels_last_depthwise_error()
    if error >= DEPTHWISE_ERROR_LIMIT:
        with pytest.raises(ConfigError, match="train.channels_last=false"):
            resolve_precision("bfloat16", True, "cpu")
    else:
        assert resolve_precision("bfloat16", True, "cpu").channels_last is True
    # Never refused where the bug cannot apply:
    assert resolve_precision("bfloat16", True, "cuda").channels_last is True
    assert resolve_precision(False, True, "cpu").channels_last is True
    assert resolve_precision("bfloat16", False, "cpu").channels_last is False


@pytest.mark.parametrize("error,refused", [(0.004, False), (0.7, True)])
def test_both_probe_answers_lead_to_their_decision(monkeypatch, error, refused):
    monkeypatch.setattr(precision, "bf16_channels_last_depthwise_error", lambda: error)
    if refused:
        with pytest.raises(ConfigError, match="70% off float32"):
            resolve_precision("bfloat16", True, "cpu")
    else:
        assert "allowed" in resolve_precision("bfloat16", True, "cpu").reason


@pytest.mark.parametrize(
    "cap",
    [
        {},
        {"ONEDNN_MAX_CPU_ISA": "AVX2"},  # oneDNN's kernels: the cap that moves the depthwise result
        {"ATEN_CPU_CAPABILITY": "default"},  # torch's own kernels: do not run the depthwise convolution
    ],
    ids=["uncapped", "onednn-avx2", "aten-default"],
)
def test_under_each_kernel_cap_the_decision_matches_that_process_probe(cap):
    decided = _decide_in_subprocess(**cap)
    assert decided["refused"] == (decided["error"] >= DEPTHWISE_ERROR_LIMIT)


def test_onednn_avx2_kernels_give_the_right_depthwise_gradient():
    """The AVX2 kernels are right on every x86 CPU seen (AVX-512 ones are wrong on some): the code path where
    bfloat16 channels-last is allowed, shown on any x86 machine."""
    if not {"avx2"} <= precision.cpu_flags():
        pytest.skip("needs an x86 CPU with AVX2")
    assert _decide_in_subprocess(ONEDNN_MAX_CPU_ISA="AVX2") == {
        "error": pytest.approx(0.0, abs=DEPTHWISE_ERROR_LIMIT),
        "refused": False,
    }


def test_contiguous_bfloat16_depthwise_gradient_is_right():
    """What "auto" relies on: contiguous bfloat16 only rounds (about 0.4%)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("check", ROOT / "benchmarks" / "check_bf16_depthwise.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    assert check.weight_grad_error(576, (36, 48), 4, channels_last=False) < 0.02


def test_a_run_records_and_prints_its_precision(camvid_factory, tmp_path, capsys):
    config = tiny_training_config(camvid_factory(), train={"amp": "auto", "channels_last": "auto"})
    train(config, tmp_path / "run", show_progress=False, stop_at=4)
    chosen = resolve_precision("auto", "auto", "cpu")
    record = json.loads((tmp_path / "run" / "run.json").read_text())["precision"]
    assert record == {"amp": chosen.name, "channels_last": chosen.channels_last, "reason": chosen.reason}
    assert f"precision: {chosen.name}" in capsys.readouterr().err
    train(config, tmp_path / "run", resume=True, show_progress=False)
    resumed = json.loads((tmp_path / "run" / "run.json").read_text())["resumed"][-1]
    assert resumed["precision"]["amp"] == chosen.name and resumed["step"] == 4


def test_bad_precision_settings_are_refused_with_the_key():
    with pytest.raises(ConfigError, match="train.amp"):
        load_config(None, [{"train": {"amp": "int8"}}])
    with pytest.raises(ConfigError, match="train.channels_last"):
        load_config(None, [{"train": {"channels_last": "sometimes"}}])


def test_a_onednn_cap_below_bfloat16_means_emulated_bfloat16(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert not precision.has_fast_bf16() and resolve_precision("auto", "auto", "cpu").amp_dtype is None
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "ALL")
    assert precision.has_fast_bf16()


def test_compile_keeps_the_eager_layout_only_for_cpu_bfloat16_where_channels_last_is_wrong(monkeypatch):
    from training import precision

    bf16 = precision.Precision(torch.bfloat16, False, "test")
    monkeypatch.setattr(precision, "bf16_channels_last_is_right", lambda: False)
    assert precision.compile_keeps_layout(bf16, "cpu")
    assert not precision.compile_keeps_layout(bf16, "cuda")
    assert not precision.compile_keeps_layout(precision.Precision(None, False, "test"), "cpu")  # float32
    monkeypatch.setattr(precision, "bf16_channels_last_is_right", lambda: True)
    assert not precision.compile_keeps_layout(bf16, "cpu")


def test_the_machines_name_carries_the_flags_that_matter_or_says_they_are_unknown(monkeypatch):
    """The name keys the queue's probes and heads every benchmark table: CPUs sharing a model name but not
    AVX-512 must get different names, and a CPU whose flags cannot be read must not be called one without AVX2."""
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"sse2", "avx2"}))
    zen3 = precision.describe_machine("cpu")
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))
    zen5 = precision.describe_machine("cpu")
    assert zen3.endswith("(avx2)") and zen5.endswith("(avx2, avx512f, avx512_bf16)")
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset())
    assert precision.describe_machine("cpu").endswith("(flags unknown)")
