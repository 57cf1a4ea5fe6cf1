"""Metrics from hand-made predictions, and `python -m training.evaluate` end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from ccnet.checkpoint import save_checkpoint
from ccnet.classes import CAMVID
from ccnet.metrics import confusion_matrix, format_scores_table, scores_from_confusion
from ccnet.model import CCNet
from ccnet.preprocess import IMAGENET_MEAN, IMAGENET_STD
from training import evaluate


def test_exact_scores_of_hand_made_predictions():
    labels = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 1]])
    predictions = torch.tensor([[0, 1, 1, 1], [2, 0, 0, 2]])
    confusion = confusion_matrix(predictions, labels, num_classes=4)
    # (truth, prediction): (0,0) (0,1) (1,1) (1,1) (2,2) (2,0) (1,2); the ignored pixel is skipped.
    assert confusion.tolist() == [[1, 1, 0, 0], [0, 2, 1, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    scores = scores_from_confusion(confusion, ["a", "b", "c", "absent"])
    assert scores.iou[:3] == pytest.approx([1 / 3, 2 / 4, 1 / 3])
    assert math.isnan(scores.iou[3])  # in neither labels nor predictions: left out of the mean
    assert scores.mean_iou == pytest.approx(7 / 18)
    assert scores.pixel_accuracy == pytest.approx(4 / 7)
    assert scores.to_dict()["per_class_iou"]["absent"] is None
    table = format_scores_table(scores)
    assert "38.89" in table and "57.14" in table and "n/a" in table


def test_predicted_but_absent_class_counts_as_zero():
    scores = scores_from_confusion(confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 0]), 2), ["a", "b"])
    assert scores.iou == [0.5, 0.0] and scores.mean_iou == 0.25


def _constant_checkpoint(path, tiny_model_config, num_classes=11, predicted=0):
    """A CCNet whose logits are the classifier bias everywhere: it predicts one class for every pixel."""
    model = CCNet(num_classes=num_classes, **tiny_model_config)
    with torch.no_grad():
        model.head.classifier.weight.zero_()
        model.head.classifier.bias.zero_()
        model.head.classifier.bias[predicted] = 10.0
    names = list(CAMVID.names) if num_classes == 11 else [f"c{i}" for i in range(num_classes)]
    metadata = {
        "class_names": names,
        "palette": [[0, 0, 0]] * num_classes,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "dataset": "camvid",
        "split": "val",
        "input_size": [32, 48],
    }
    save_checkpoint(model, path, metadata)
    return path


def _expected_miou_of_constant(root, predicted=0):
    labels = np.stack([np.asarray(Image.open(p)) for p in sorted((root / "valannot").glob("*.png"))])
    valid = labels != 11
    present = set(np.unique(labels[valid]).tolist()) | {predicted}
    truth_predicted = (labels[valid] == predicted).sum()
    # Class `predicted`: TP = its pixels, union = every valid pixel. Others present: IoU 0.
    return truth_predicted / valid.sum() / len(present), truth_predicted / valid.sum()


def test_evaluate_cli_gives_exact_miou_and_writes_json(tmp_path, camvid_factory, tiny_model_config, capsys):
    root = camvid_factory({"val": 3})
    checkpoint = _constant_checkpoint(tmp_path / "constant", tiny_model_config, predicted=3)
    out = tmp_path / "eval.json"
    code = evaluate.main(
        [
            str(checkpoint),
            "--data-root",
            str(root),
            "--device",
            "cpu",
            "--num-workers",
            "0",
            "--json",
            str(out),
            "--recurrence",
            "1",
            "--scales",
            "1",
            "0.75",
            "--flip",
        ]
    )
    assert code == 0
    results = json.loads(out.read_text())
    expected_miou, expected_accuracy = _expected_miou_of_constant(root, predicted=3)
    assert results["mIoU"] == pytest.approx(expected_miou)
    assert results["pixel_accuracy"] == pytest.approx(expected_accuracy)
    assert results["recurrence"] == 1 and results["trained_recurrence"] == 2 and results["images"] == 3
    assert results["inference"]["flip"] and results["inference"]["scales"] == [1.0, 0.75]
    printed = capsys.readouterr().out
    assert "mIoU" in printed and "Road" in printed


def test_class_count_mismatch_is_refused(tmp_path, camvid_factory, tiny_model_config, capsys):
    root = camvid_factory({"val": 1})
    checkpoint = _constant_checkpoint(tmp_path / "nineteen", tiny_model_config, num_classes=19)
    code = evaluate.main([str(checkpoint), "--data-root", str(root), "--device", "cpu", "--num-workers", "0"])
    assert code == 2
    assert "predicts 19 classes" in capsys.readouterr().err


def test_baseline_cannot_run_loops(tmp_path, camvid_factory, tiny_model_config, capsys):
    root = camvid_factory({"val": 1})
    checkpoint = _constant_checkpoint(tmp_path / "base", tiny_model_config | {"recurrence": 0})
    code = evaluate.main([str(checkpoint), "--data-root", str(root), "--device", "cpu", "--recurrence", "2"])
    assert code == 2
    assert "baseline without attention" in capsys.readouterr().err


def test_evaluate_help_runs(capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate.parse_args(["--help"])
    assert exit_info.value.code == 0 and "--recurrence" in capsys.readouterr().out
