"""The class diagnosis (training/class_errors.py): calibration misses and misplaced pixels told apart."""

from __future__ import annotations

import json

import pytest
import torch

from tests.test_evaluate import _constant_checkpoint
from training import class_errors


def _logits(rows: list[list[float]]) -> torch.Tensor:
    """Per-pixel logits for 2 classes along one row: (1, 2, 1, W)."""
    return torch.tensor(rows, dtype=torch.float32).T[None, :, None, :]


def test_an_under_predicted_class_is_fixed_by_an_offset():
    # Class 1 is true on pixels 2 and 3; the model prefers it only on pixel 3 and narrowly misses pixel 2.
    logits = _logits([[2, 0], [2, 0], [1, 0.8], [0, 2]])
    label = torch.tensor([[[0, 0, 1, 1]]])
    offsets = [0.0, 0.5]
    report = class_errors.class_report(
        class_errors.offset_confusions(logits, label, 1, offsets), offsets, 1, ["a", "b"]
    )
    assert [row["iou"] for row in report["sweep"]] == pytest.approx([0.5, 1.0])
    assert report["sweep"][0]["predicted_over_true"] == pytest.approx(0.5)
    assert report["recall_to"] == pytest.approx({"a": 0.5, "b": 0.5})
    assert "lifts its IoU from 50.0 to 100.0" in class_errors.verdict(report)


def test_a_misplaced_class_is_not_fixed_by_any_offset():
    # Class 1 is drawn once, as often as it occurs, on the wrong pixel; the offsets do move pixels (0, 1, 2
    # predicted), but none onto the true one, where the model is sure of class 0.
    logits = _logits([[3, 0], [0, 0.5], [0.6, 0], [0, 0]])
    label = torch.tensor([[[1, 0, 0, 255]]])
    offsets = [-1.0, 0.0, 1.0]
    confusions = class_errors.offset_confusions(logits, label, 1, offsets)
    report = class_errors.class_report(confusions, offsets, 1, ["a", "b"])
    assert [row["predicted_over_true"] for row in report["sweep"]] == [0.0, 1.0, 2.0]
    assert [row["iou"] for row in report["sweep"]] == [0.0, 0.0, 0.0]
    assert report["precision_from"]["a"] == pytest.approx(1.0)  # all it predicts is truly class a
    assert "misplaced pixels" in class_errors.verdict(report)


def test_a_class_never_drawn_is_not_called_misplaced():
    logits = _logits([[3, -9], [3, -9], [3, -9]])
    label = torch.tensor([[[1, 1, 0]]])
    offsets = [0.0, 1.0]
    report = class_errors.class_report(
        class_errors.offset_confusions(logits, label, 1, offsets), offsets, 1, ["a", "b"]
    )
    text = class_errors.verdict(report)
    assert "drawn on 0.00 pixels per true one" in text and "not recognised" in text and "misplaced" not in text


def test_a_class_absent_from_the_labels_is_said_so_and_scores_are_none():
    logits = _logits([[3, 0], [3, 0]])
    label = torch.tensor([[[0, 0]]])
    offsets = [-1.0, 0.0]
    report = class_errors.class_report(
        class_errors.offset_confusions(logits, label, 1, offsets), offsets, 1, ["a", "b"]
    )
    assert [row["iou"] for row in report["sweep"]] == [None, None]
    assert json.loads(json.dumps(report, allow_nan=False))["sweep"][0]["iou"] is None
    assert class_errors.verdict(report) == "b: not in this split's labels: nothing to diagnose."
    assert "| -1 | n/a |" in class_errors.format_report(report)


def test_a_pole_drawn_two_pixels_off_is_a_near_miss():
    label = torch.zeros(8, 12, dtype=torch.int64)
    label[:, 4:6] = 1  # a 2 px pole
    label[0, 3] = 255  # void, right beside the pole: never counted
    prediction = torch.zeros(8, 12, dtype=torch.int64)
    prediction[:, 6:8] = 1  # drawn right beside it
    prediction[0, 3] = 1  # on void: not a prediction, and not near the pole for the recall side
    counts = class_errors.near_miss_counts(prediction, label, 1, [0, 1, 2])
    assert counts.tolist() == [[0, 16, 0, 16], [8, 16, 8, 16], [16, 16, 16, 16]]
    table = class_errors.near_miss_table(counts, [0, 1, 2])
    assert [(row["precision"], row["recall"]) for row in table] == [(0.0, 0.0), (0.5, 0.5), (1.0, 1.0)]
    empty = class_errors.near_miss_table(torch.zeros(1, 4, dtype=torch.int64), [0])
    assert empty == [{"pixels": 0, "precision": None, "recall": None}]


def test_offsets_without_zero_are_refused():
    with pytest.raises(ValueError, match="include 0"):
        class_errors.class_report([torch.eye(2, dtype=torch.int64)], [1.0], 1, ["a", "b"])


def test_cli_prints_the_sweep_and_writes_json(tmp_path, camvid_factory, tiny_model_config, capsys):
    root = camvid_factory({"val": 2})
    checkpoint = _constant_checkpoint(tmp_path / "model", tiny_model_config, predicted=2)
    out = tmp_path / "pole.json"
    code = class_errors.main(
        [
            str(checkpoint),
            "--data-root",
            str(root),
            "--class",
            "Pole",
            "--offsets",
            "1",
            "--json",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert [row["offset"] for row in report["sweep"]] == [0.0, 1.0] and report["images"] == 2
    assert [row["pixels"] for row in report["near_miss"]] == [0, 1, 2, 4, 8]
    exact = report["near_miss"][0]  # d = 0: plain precision and recall, as the confusion has them
    assert exact["recall"] == pytest.approx(report["recall_to"]["Pole"])
    assert exact["precision"] == pytest.approx(report["precision_from"]["Pole"])
    assert report["recall_to"]["Pole"] == 1.0  # the model calls every pixel Pole
    printed = capsys.readouterr().out
    assert "| +1 |" in printed and "| d (px) |" in printed and "Pole: drawn on" in printed


@pytest.mark.parametrize("option", [["--tolerances", "-1"], ["--max-images", "0"]])
def test_cli_refuses_nonsense_numbers(option, capsys):
    with pytest.raises(SystemExit) as exit_info:
        class_errors.parse_args(["model", "--class", "Pole", *option])
    assert exit_info.value.code == 2 and "must be" in capsys.readouterr().err


def test_cli_names_the_classes_when_the_class_is_unknown(tmp_path, camvid_factory, tiny_model_config, capsys):
    root = camvid_factory({"val": 1})
    checkpoint = _constant_checkpoint(tmp_path / "model", tiny_model_config, predicted=2)
    code = class_errors.main([str(checkpoint), "--data-root", str(root), "--class", "Lamppost", "--no-progress"])
    assert code == 2
    assert "'Lamppost' is not one of the checkpoint's classes: Sky, Building, Pole" in capsys.readouterr().err
