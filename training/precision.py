"""Which precision and memory format to train in on this machine: detected at run time, never assumed.

Two facts about the CPU decide it, and both differ between machines of the same kind:

- **Is bfloat16 fast?** CPUs with ``avx512_bf16`` or ``amx_bf16`` run oneDNN's bfloat16 convolutions natively;
  elsewhere bfloat16 is emulated and slower than float32 (docs/BENCHMARKS.md, section 7). Read from the CPU
  flags, which is what oneDNN itself dispatches on.
- **Is the bfloat16 depthwise weight gradient right in channels-last?** On some CPUs (oneDNN's AVX-512 kernels)
  it is off by 63-71% of its largest value for the dilated MobileNetV2's depthwise convolutions, and training
  diverges (results/camvid/short_schedule/bf16_channels_last_diverged/); on others (AVX2 kernels, e.g.
  ``ONEDNN_MAX_CPU_ISA=AVX2``) it is right. Probed once per process by ``bf16_channels_last_depthwise_error``:
  one small convolution.

``resolve_precision`` turns ``train.amp`` / ``train.channels_last`` (either may be ``"auto"``) into what a
run uses, with the reason, and refuses only combinations the probe finds wrong here.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import ConfigError

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # native bfloat16 dot products
# bfloat16 rounding alone puts the probe's weight gradient about 0.4% off float32; the bug puts it 63-71% off.
DEPTHWISE_ERROR_LIMIT = 0.05
# The probe: one of the dilated MobileNetV2's depthwise convolutions at the bundled crop's feature map
# (benchmarks/check_bf16_depthwise.py measures all of them).
_PROBE_CHANNELS, _PROBE_SIZE, _PROBE_DILATION = 576, (36, 48), 2


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def describe_machine(device: torch.device | str = "cpu") -> str:
    """A short name for the machine a run trains on: the GPU's, or the CPU model with the flags that matter."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    present = cpu_flags()
    if not present:  # no /proc/cpuinfo (e.g. macOS): the flags are unknown, not absent
        return f"{model} (flags unknown)"
    flags = [flag for flag in ("avx2", "avx512f", *BF16_CPU_FLAGS) if flag in present]
    return f"{model} ({', '.join(flags) or 'no AVX2'})"


# oneDNN ISA caps below native bfloat16 (ONEDNN_MAX_CPU_ISA): under them bfloat16 is emulated whatever the CPU has.
_ONEDNN_CAPS_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}


def has_fast_bf16() -> bool:
    """Native bfloat16 convolutions here: the CPU's flags, unless oneDNN is capped below them."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "")).upper()
    if cap in _ONEDNN_CAPS_WITHOUT_BF16:
        return False
    return any(flag in cpu_flags() for flag in BF16_CPU_FLAGS)


def depthwise_weight_grad_error(
    channels: int, size: tuple[int, int], dilation: int, channels_last: bool, batch: int = 1
) -> float:
    """max |bfloat16 - float32| / max |float32| of a dilated 3x3 depthwise conv's weight gradient (fixed seed),
    on this process's kernels (so ``ONEDNN_MAX_CPU_ISA`` applies)."""
    generator = torch.Generator().manual_seed(0)
    x = 6 * torch.rand(batch, channels, *size, generator=generator)  # (B, C, h, w): ReLU6 outputs
    weight = 0.1 * torch.randn(channels, 1, 3, 3, generator=generator)  # (C, 1, 3, 3)
    upstream = torch.randn(batch, channels, *size, generator=generator)  # (B, C, h, w)
    if channels_last:
        x, upstream = (t.contiguous(memory_format=torch.channels_last) for t in (x, upstream))

    def weight_grad(bfloat16: bool) -> torch.Tensor:
        w_ = weight.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16):
            out = torch.nn.functional.conv2d(x, w_, padding=dilation, dilation=dilation, groups=channels)
        out.backward(upstream.to(out.dtype))
        return w_.grad.float()  # (C, 1, 3, 3)

    reference = weight_grad(False)
    return float((weight_grad(True) - reference).abs().max() / reference.abs().max())


@functools.cache
def bf16_channels_last_depthwise_error() -> float:
    """The probe: the error in channels-last for one of the dilated MobileNetV2's convolutions; about 50 ms, once
    per process."""
    return depthwise_weight_grad_error(_PROBE_CHANNELS, _PROBE_SIZE, _PROBE_DILATION, channels_last=True)


def bf16_channels_last_is_right() -> bool:
    return bf16_channels_last_depthwise_error() < DEPTHWISE_ERROR_LIMIT


@dataclass(frozen=True)
class Precision:
    """What a run trains in on this device, and why."""

    amp_dtype: torch.dtype | None  # the autocast dtype; None = float32
    channels_last: bool
    reason: str

    @property
    def name(self) -> str:
        return "float32" if self.amp_dtype is None else str(self.amp_dtype).removeprefix("torch.")

    def record(self) -> dict:
        """For run.json: what was chosen and why."""
        return {"amp": self.name, "channels_last": self.channels_last, "reason": self.reason}


def _explicit_amp(amp, device_type: str) -> torch.dtype | None:
    """true: float16 on CUDA, float32 on CPU (the recorded runs' meaning); "bfloat16" / "float16"; false."""
    if amp is True:
        return torch.float16 if device_type == "cuda" else None
    if amp in ("bfloat16", "float16"):
        return getattr(torch, amp)
    return None


def _auto_amp(device_type: str) -> tuple[torch.dtype | None, str]:
    if device_type == "cuda":
        return torch.float16, "amp auto: float16 autocast on CUDA"
    if device_type == "cpu" and has_fast_bf16():
        flags = ", ".join(flag for flag in BF16_CPU_FLAGS if flag in cpu_flags())
        return torch.bfloat16, f"amp auto: bfloat16 (the CPU has {flags})"
    return None, f"amp auto: float32 (no {' or '.join(BF16_CPU_FLAGS)} on this {device_type}: bfloat16 is emulated)"


def resolve_precision(amp, channels_last, device_type: str) -> Precision:
    """``train.amp`` and ``train.channels_last`` (each may be "auto") -> the Precision a run uses here.

    Raises ConfigError for bfloat16 + channels-last on a CPU whose probe finds the depthwise gradient wrong.
    """
    if amp == "auto":
        amp_dtype, reason = _auto_amp(device_type)
    else:
        amp_dtype, reason = _explicit_amp(amp, device_type), f"amp {amp!r} as configured"
    cpu_bf16 = device_type == "cpu" and amp_dtype == torch.bfloat16
    if channels_last == "auto":
        # Contiguous bfloat16 is correct everywhere and measured faster than channels-last bfloat16; float32
        # convolutions are faster channels-last (docs/BENCHMARKS.md, section 7).
        layout = not cpu_bf16
        return Precision(amp_dtype, layout, f"{reason}; channels-last auto: {'on' if layout else 'off (bfloat16)'}")
    if cpu_bf16 and channels_last:
        error = bf16_channels_last_depthwise_error()
        if error >= DEPTHWISE_ERROR_LIMIT:
            raise ConfigError(
                "train.amp bfloat16 with train.channels_last true on this CPU: its bfloat16 depthwise-convolution "
                f"weight gradient is wrong in channels-last ({100 * error:.0f}% off float32 in the probe; the "
                "dilated MobileNetV2 diverges). Set train.channels_last=false or auto (contiguous bfloat16 is "
                "correct), or train in float32"
            )
        reason += f"; bfloat16 channels-last allowed (probe: depthwise gradient {100 * error:.1f}% off float32)"
    return Precision(amp_dtype, bool(channels_last), reason)


def compile_keeps_layout(precision: Precision, device_type: str) -> bool:
    """Whether torch.compile must keep the eager memory layout: in bfloat16 on a CPU whose probe finds the
    channels-last depthwise weight gradient wrong (inductor's layout optimisation would turn it on)."""
    if device_type != "cpu" or precision.amp_dtype != torch.bfloat16 or precision.channels_last:
        return False
    return not bf16_channels_last_is_right()
