"""training.compare: validation records of several runs side by side, at equal steps."""

import json

import pytest

from training.compare import CompareError, comparison_table, main


def _run(folder, validations: dict[int, tuple]):
    """validations: step -> (mIoU, gamma or None[, lift])."""
    folder.mkdir()
    lines = [json.dumps({"step": 1, "kind": "train", "loss": 2.0})]
    for step, (miou, gamma, *lift) in validations.items():
        record = {"step": step, "kind": "val", "mIoU": miou}
        if gamma is not None:
            record["gamma/head.attention.cca.gamma"] = gamma
        if lift:
            record["lift"] = lift[0]
        lines.append(json.dumps(record))
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_runs_are_compared_at_equal_steps_with_gamma(tmp_path):
    old = _run(tmp_path / "old", {250: (0.40, None), 500: (0.50, None)})
    new = _run(tmp_path / "new", {250: (0.42, 0.125, 3.5), 500: (0.48, 0.25), 750: (0.55, 0.5, 4.25)})
    lines = comparison_table([old, new]).splitlines()
    assert lines[0] == "| step | old: mIoU (%) | gamma | lift | new: mIoU (%) | gamma | lift |"
    assert lines[2] == "| 250 | 40.0 | - | - | 42.0 | 0.125 | 3.50 |"
    assert lines[3] == "| 500 | 50.0 | - | - | 48.0 | 0.250 | - |"  # a validation without a lift
    assert lines[4] == "| 750 | - | - | - | 55.0 | 0.500 | 4.25 |"  # the old run never got there
    assert lines[5] == "| best | 50.0 (step 500) |  |  | 55.0 (step 750) |  |  |"
    assert comparison_table([old, new], every=500).count("\n") == 3  # header, rule, 500, best


def test_missing_run_or_no_validation_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(CompareError, match="has no metrics.jsonl"):
        comparison_table([tmp_path / "nowhere"])
    empty = _run(tmp_path / "empty", {})
    assert main([str(empty)]) == 2
    assert "no validation records" in capsys.readouterr().err


def test_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "--every" in capsys.readouterr().out
