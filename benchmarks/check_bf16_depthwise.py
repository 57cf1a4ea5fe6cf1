"""Is torch's bfloat16 depthwise-convolution weight gradient right on this CPU? (Training refuses bfloat16
+ channels-last on the CPU only where it is wrong: training/precision.py; `ONEDNN_MAX_CPU_ISA=AVX2` moves it.)

For the dilated MobileNetV2's depthwise convolutions (3x3, groups = channels) at the bundled crop's feature
map, the weight gradient under CPU bfloat16 autocast is compared with float32, contiguous and channels-last:
the largest absolute difference over the largest float32 gradient (bfloat16 rounding alone gives about 0.4%).

    python benchmarks/check_bf16_depthwise.py
"""

from __future__ import annotations

import argparse

import torch

from training.precision import depthwise_weight_grad_error

CASES = [  # (channels, (h, w), dilation): features.7 / 14 / 15 of the dilated MobileNetV2 at 288x384, and small
    (64, (18, 24), 4),
    (576, (36, 48), 1),
    (576, (36, 48), 2),
    (576, (36, 48), 4),
    (960, (36, 48), 4),
]


def weight_grad_error(channels: int, size: tuple[int, int], dilation: int, channels_last: bool, batch: int = 2):
    """max |bfloat16 grad - float32 grad| / max |float32 grad| of a depthwise conv's weight (fixed seed)."""
    return depthwise_weight_grad_error(channels, size, dilation, channels_last, batch)


def main(argv=None) -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    print(f"torch {torch.__version__}\n")
    print("| channels | map | dilation | error, contiguous | error, channels-last |")
    print("| ---: | --- | ---: | ---: | ---: |")
    for channels, size, dilation in CASES:
        errors = [weight_grad_error(channels, size, dilation, last) for last in (False, True)]
        print(f"| {channels} | {size[0]}x{size[1]} | {dilation} | {errors[0]:.2%} | {errors[1]:.2%} |")


if __name__ == "__main__":
    main()
