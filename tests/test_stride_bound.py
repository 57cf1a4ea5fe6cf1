"""The stride bound (training/stride_bound.py): what a stride-s output can draw at best."""

from __future__ import annotations

import numpy as np
import pytest

from training.stride_bound import block_majority, stride_bound


def test_a_thin_pole_is_lost_at_stride_8_and_kept_at_stride_1():
    label = np.zeros((32, 32), np.uint8)
    label[:, 10:12] = 1  # a 2 px pole
    label[0, 0] = 255  # void is not scored
    assert stride_bound([label], 1, ["road", "pole"]).iou[1] == pytest.approx(1.0)
    assert stride_bound([label], 8, ["road", "pole"]).iou[1] == 0.0  # never the majority of an 8 x 8 block
    wide = np.zeros((32, 32), np.uint8)
    wide[:, 8:16] = 1  # a cell-aligned 8 px pole survives
    assert stride_bound([wide], 8, ["road", "pole"]).iou[1] == pytest.approx(1.0)


def test_block_majority_pads_and_leaves_all_void_blocks_void():
    label = np.full((5, 9), 255, np.uint8)
    label[:4, :4] = 2
    cells = block_majority(label, 4, num_classes=3)
    assert cells.shape == (2, 3) and cells[0, 0] == 2 and cells[1, 2] == 255
