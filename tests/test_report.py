"""`python -m training.report` on tiny synthetic checkpoints, records and CamVid, checked by recomputation."""

from __future__ import annotations

import json
import os
import statistics
import sys
from datetime import datetime
from pathlib import Path

import pytest
import torch
from conftest import write_camvid

from ccnet.checkpoint import read_index, save_checkpoint, write_index
from ccnet.classes import CAMVID
from ccnet.model import CCNet
from ccnet.preprocess import IMAGENET_MEAN, IMAGENET_STD
from training import evaluate, report

REPO = Path(__file__).resolve().parents[1]
TINY = {"backbone": "resnet18", "base_width": 8, "head_channels": 16}
MODELS = {"camvid_r0": 0, "camvid_r1": 1, "camvid_r2": 2}  # name -> trained R
SMALL_INPUTS = ((48, 64), (97, 97))  # stands in for 360x480 and 769x769: same code, seconds not minutes
CREATED = "2026-11-26T01:00:00+00:00"


def _save_model(folder: Path, name: str, loops: int) -> None:
    torch.manual_seed(loops)
    model = CCNet(num_classes=11, recurrence=loops, **TINY)
    if model.attention is not None:
        with torch.no_grad():
            model.attention.cca.gamma.fill_(1.0)  # so that the loop count changes the predictions
    metadata = {
        "class_names": list(CAMVID.names),
        "palette": [list(c) for c in CAMVID.palette],
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "dataset": "camvid",
        "split": "val",
        "input_size": [32, 48],
        "seed": 0,
    }
    save_checkpoint(model, folder / name, metadata, half=True)


def _write_run(folder: Path, seed: int, best: float) -> dict:
    """A run folder as training writes it; returns the numbers the report must read back."""
    folder.mkdir(parents=True)
    start = datetime.fromisoformat(CREATED).timestamp()
    run = {"created": CREATED, "seed": seed, "device": "cuda:0", "torch": "2.x", "command": []}
    (folder / "run.json").write_text(json.dumps(run))
    rates = [100.0 + 7 * i + seed for i in range(5)]
    records = [
        {"step": 10 * (i + 1), "kind": "train", "images_per_s": r, "time": start + 3 + i} for i, r in enumerate(rates)
    ]
    records += [
        {"step": 30, "kind": "val", "mIoU": best - 0.02, "time": start + 20.0},
        {"step": 50, "kind": "val", "mIoU": best, "time": start + 42.5},
    ]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return {"seconds": 42.5, "rate": statistics.median(rates), "best": best}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("report")
    root = write_camvid(base / "camvid", {"val": 3}, size=(40, 56), seed=3)
    checkpoints = base / "checkpoints"
    checkpoints.mkdir()
    for name, loops in MODELS.items():
        _save_model(checkpoints, name, loops)
    write_index(checkpoints, default="camvid_r2")
    records = base / "records"
    expected_runs = {}
    for index, name in enumerate(MODELS):
        for seed in (0, 1):
            expected_runs[(name, seed)] = _write_run(
                records / f"{name}_s{seed}", seed, 0.5 + 0.01 * index + 0.03 * seed
            )
    device_eval = records / "device_eval"
    device_eval.mkdir()
    for kind, checkpoint, miou in (
        ("fp32", "runs/camvid_r2_s0/best.safetensors", 0.5012),
        ("half", "/tmp/ckpt/camvid_r2.safetensors", 0.5009),
    ):
        (device_eval / f"r2_{kind}.json").write_text(json.dumps({"checkpoint": checkpoint, "mIoU": miou}))
    return {"root": root, "checkpoints": checkpoints, "records": records, "runs": expected_runs, "base": base}


@pytest.fixture(scope="module")
def made(setup):
    """The report run once on the synthetic set (small cost inputs)."""
    out, summary_path = setup["base"] / "RESULTS.md", setup["base"] / "summary.json"
    readme = setup["base"] / "README.md"
    readme.write_text(f"# top\n\n{report.README_START}\nstale\n{report.README_END}\n\nLicence note\n")
    original = report.COST_INPUTS
    report.COST_INPUTS = SMALL_INPUTS
    try:
        argv = [
            "--checkpoints", str(setup["checkpoints"]), "--records", str(setup["records"]),
            "--data-root", str(setup["root"]), "--out", str(out), "--summary", str(summary_path), "--no-progress",
            "--readme", str(readme),
        ]  # fmt: skip
        assert report.main(argv) == 0
    finally:
        report.COST_INPUTS = original
    return json.loads(summary_path.read_text()), out.read_text(), readme.read_text()


def _evaluate(setup, name: str, loops: int | None) -> dict:
    """mIoU etc. of one checkpoint by `training.evaluate` itself: the independent recomputation."""
    argv = [
        str(setup["checkpoints"] / name),
        "--data-root",
        str(setup["root"]),
        "--num-workers",
        "0",
        "--mode",
        "whole",
    ]
    if loops is not None:
        argv += ["--recurrence", str(loops)]
    return evaluate.evaluate_checkpoint(evaluate.parse_args(argv))


def test_schema_keys_and_types(made):
    summary = made[0]
    assert set(summary) == {"dataset", "split", "generated", "generated_by", "classes", "models", "seeds", "costs",
                            "paper_table2"}  # fmt: skip
    assert (summary["dataset"], summary["split"], summary["generated_by"]) == (
        "camvid",
        "val",
        "python -m training.report",
    )
    datetime.fromisoformat(summary["generated"])
    assert summary["classes"] == list(CAMVID.names)
    model_keys = {"name", "trained_recurrence", "ccl", "seed", "mIoU", "per_class_iou", "mIoU_at_recurrence", "params",
                  "train_seconds", "images_per_s", "train_device"}  # fmt: skip
    for model in summary["models"]:
        assert set(model) == model_keys
        assert isinstance(model["params"], int) and isinstance(model["ccl"], bool)
        assert 0 <= model["mIoU"] <= 1 and set(model["per_class_iou"]) <= set(CAMVID.names)
        assert all(v is None or 0 <= v <= 1 for v in model["per_class_iou"].values())
    for cost in summary["costs"]:
        assert set(cost) == {"input", "feature", "recurrence", "channels", "gflops_increment", "memory_mb_increment"}
        assert isinstance(cost["channels"], int) and isinstance(cost["gflops_increment"], float)
    for row in summary["paper_table2"]:
        assert set(row) == {"setting", "recurrence", "mIoU", "gflops_increment", "memory_mb_increment"}
    assert [s["name"] for s in summary["seeds"]] == [n for n in MODELS for _ in (0, 1)]


def test_miou_equals_training_evaluate(made, setup):
    summary = made[0]
    by_name = {m["name"]: m for m in summary["models"]}
    assert sorted(by_name) == sorted(MODELS)
    for name, loops in MODELS.items():
        model = by_name[name]
        own = _evaluate(setup, name, None)
        assert model["trained_recurrence"] == loops == own["trained_recurrence"]
        assert model["mIoU"] == pytest.approx(own["mIoU"], abs=1e-12)
        assert model["per_class_iou"] == pytest.approx(own["per_class_iou"], abs=1e-12)
        for r, value in model["mIoU_at_recurrence"].items():
            assert value == pytest.approx(_evaluate(setup, name, int(r))["mIoU"], abs=1e-12)


def test_baseline_has_no_loop_counts_and_attention_models_have_three(made):
    summary = made[0]
    by_name = {m["name"]: m for m in summary["models"]}
    assert by_name["camvid_r0"]["mIoU_at_recurrence"] == {}
    assert set(by_name["camvid_r2"]["mIoU_at_recurrence"]) == {"1", "2", "3"}
    assert by_name["camvid_r2"]["mIoU_at_recurrence"]["2"] == by_name["camvid_r2"]["mIoU"]


def test_params_and_records_read_back(made, setup):
    summary = made[0]
    for model in summary["models"]:
        built = CCNet(num_classes=11, recurrence=MODELS[model["name"]], **TINY)
        assert model["params"] == sum(p.numel() for p in built.parameters())
        run = setup["runs"][(model["name"], 0)]
        assert model["train_seconds"] == pytest.approx(run["seconds"])
        assert model["images_per_s"] == pytest.approx(run["rate"])
        assert model["train_device"] == "cuda:0" and model["seed"] == 0
    for seed in summary["seeds"]:
        assert seed["best_val_mIoU"] == pytest.approx(setup["runs"][(seed["name"], seed["seed"])]["best"])


def test_flops_grow_with_r_and_match_the_analytic_count(made):
    summary = made[0]
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_costs

    for size in SMALL_INPUTS:
        costs = sorted((c for c in summary["costs"] if c["input"] == list(size)), key=lambda c: c["recurrence"])
        assert [c["recurrence"] for c in costs] == [1, 2, 3]
        flops = [c["gflops_increment"] for c in costs]
        assert flops[0] > 0 and flops[0] < flops[1] < flops[2]
        h, w = costs[0]["feature"]
        assert costs[0]["channels"] == TINY["head_channels"]
        for cost in costs:
            analytic = bench_costs.analytic_flops(f"RCCA R={cost['recurrence']}", h, w, cost["channels"]) / 1e9
            assert cost["gflops_increment"] == pytest.approx(analytic, rel=1e-9)
        assert all(isinstance(c["memory_mb_increment"], float) for c in costs)  # tiny: noise around 0
    assert [c["feature"] for c in summary["costs"] if c["recurrence"] == 1] == [[6, 8], [13, 13]]


def test_paper_numbers_come_from_the_one_constant(made):
    summary, markdown, _ = made
    assert summary["paper_table2"] == [dict(row) for row in report.PAPER_TABLE2]
    r2 = next(r for r in summary["paper_table2"] if r["setting"] == "+ RCCA R=2 (arXiv)")
    assert (r2["mIoU"], r2["gflops_increment"], r2["memory_mb_increment"]) == (0.798, 16.5, 127.0)
    assert "| 79.8 | 16.5 | 127 |" in markdown


def test_markdown_is_marked_generated_and_carries_the_numbers(made):
    summary, markdown, _ = made
    assert markdown.startswith("# Results") and "Generated file, do not edit" in markdown
    assert "python -m training.report" in markdown
    r2 = next(m for m in summary["models"] if m["name"] == "camvid_r2")
    assert f"{100 * r2['mIoU']:.1f}" in markdown
    assert "R = 2 reaches >= 60 % val mIoU: not met" in markdown  # tiny random models are far below
    assert "-0.030" in markdown  # float16 minus float32 of the device evaluation, in points
    assert "| RCCA R = 2 | 1.000 |" in markdown  # the learned gamma column, read from the weights
    for heading in (
        "Per-class IoU",
        "Every model at R = 1, 2, 3",
        "Costs of the attention module",
        "Seeds",
        "Reproduce",
    ):
        assert heading in markdown


def test_missing_checkpoint_folder_is_a_clear_error(setup, tmp_path, capsys):
    code = report.main(["--checkpoints", str(tmp_path / "nowhere"), "--data-root", str(setup["root"]), "--no-progress"])
    assert code == 2
    error = capsys.readouterr().err
    assert "checkpoint folder" in error and "nowhere" in error and "--checkpoints" in error


def test_missing_data_root_is_a_clear_error(setup, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("CAMVID_ROOT", raising=False)
    argv = ["--checkpoints", str(setup["checkpoints"]), "--records", str(setup["records"]), "--no-progress",
            "--out", str(tmp_path / "r.md"), "--summary", str(tmp_path / "s.json")]  # fmt: skip
    assert report.main(argv) == 2
    error = capsys.readouterr().err
    assert "--data-root" in error and "CAMVID_ROOT" in error
    assert not (tmp_path / "s.json").exists()


def test_figures_draw_influence_maps_and_the_chart(made, setup, tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib comes with requirements-dev.txt")
    from training import figures

    out = tmp_path / "figures"
    argv = ["--checkpoints", str(setup["checkpoints"]), "--data-root", str(setup["root"]), "--frames", "2",
            "--summary", str(setup["base"] / "summary.json"), "--out", str(out), "--no-progress"]  # fmt: skip
    assert figures.main(argv) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["influence_frame_000.png", "influence_frame_002.png", "miou_vs_r.png"]
    assert all((out / n).stat().st_size > 1000 for n in names)


@pytest.mark.skipif(not os.environ.get("CAMVID_ROOT"), reason="CAMVID_ROOT is not set (the real CamVid dataset)")
def test_committed_summary_matches_the_bundled_checkpoints():
    summary = json.loads((REPO / "results" / "camvid" / "summary.json").read_text())
    index = read_index(REPO / "checkpoints")
    bundled = {m["name"]: m["recurrence"] for m in index["models"]}
    assert {m["name"]: m["trained_recurrence"] for m in summary["models"]} == bundled
    for model in summary["models"]:
        sidecar = next(m for m in index["models"] if m["name"] == model["name"])
        # The report's CPU evaluation of the float16 file against the GPU float32 value in the sidecar.
        assert model["mIoU"] == pytest.approx(sidecar["mIoU"], abs=0.001)
        assert (model["mIoU_at_recurrence"] == {}) == (model["trained_recurrence"] == 0)
    assert {(s["name"], s["seed"]) for s in summary["seeds"]} == {(n, s) for n in bundled for s in (0, 1)}
    for size in ([360, 480], [769, 769]):  # at full size every loop's saved tensors show in the peak
        costs = sorted((c for c in summary["costs"] if c["input"] == size), key=lambda c: c["recurrence"])
        assert [c["recurrence"] for c in costs] == [1, 2, 3]
        assert 0 < costs[0]["gflops_increment"] < costs[1]["gflops_increment"] < costs[2]["gflops_increment"]
        assert 0 < costs[0]["memory_mb_increment"] < costs[1]["memory_mb_increment"] < costs[2]["memory_mb_increment"]
    # The README's table and docs/RESULTS.md come from the same run as the summary.
    assert report.readme_block(summary) in (REPO / "README.md").read_text()
    assert summary["generated"] in (REPO / "docs" / "RESULTS.md").read_text()


def test_readme_block_is_rewritten_between_its_markers(made):
    summary, _, readme = made
    assert readme.startswith("# top\n") and readme.endswith("Licence note\n") and "stale" not in readme
    block = readme[readme.index(report.README_START) : readme.index(report.README_END)]
    r2 = next(m for m in summary["models"] if m["name"] == "camvid_r2")
    assert f"| RCCA R = 2 | {100 * r2['mIoU']:.1f} |" in block and "| 79.8 |" in block
    assert "| baseline (R = 0) |" in block and "n/a" in block


def _hand_summary(seed0: list[float], seed1: list[float]) -> dict:
    """Models r0..r3 with the given seed-0 (bundled) and seed-1 scores."""
    scores = {f"r{i}": value for i, value in enumerate(seed0)}
    seed1 = {f"r{i}": value for i, value in enumerate(seed1)}
    models = [
        {"name": name, "trained_recurrence": int(name[-1]), "ccl": False, "mIoU": value, "params": 4_000_000}
        for name, value in scores.items()
    ]
    seeds = [{"name": n, "seed": 0, "best_val_mIoU": v} for n, v in scores.items()]
    seeds += [{"name": n, "seed": 1, "best_val_mIoU": v} for n, v in seed1.items()]
    return {"models": models, "seeds": seeds}


def test_goals_are_judged_from_the_numbers():
    met = report.goals_paragraph(_hand_summary([0.50, 0.55, 0.61, 0.62], [0.5] * 4))
    assert met[0] == "## The issue's goals: met"
    assert "60 % val mIoU: met.** The bundled R = 2 model scores 61.0 % (+1.0 points" in met[2]
    assert "R3: met.** Seed 0 (bundled): 50.0 / 55.0 / 61.0 / 62.0." in met[3]
    missed = report.goals_paragraph(_hand_summary([0.585, 0.582, 0.567, 0.595], [0.582, 0.590, 0.577, 0.584]))
    text = "\n".join(missed)
    assert missed[0] == "## The issue's goals: not met"
    assert "60 % val mIoU: not met.** The bundled R = 2 model scores 56.7 % (-3.3 points" in text
    assert "R3: not met.**" in text and "Seed 1 (best val): 58.2 / 59.0 / 57.7 / 58.4 (not met)" in text
    # d = 0.3, 0.8, 1.0, 1.1: pooled sd = sqrt(mean(d^2) / 2) = 0.606; 2 SE of a 2-seed mean difference = 1.21.
    assert "differs by 0.3 to 1.1 points" in text and "standard deviation is 0.6 points" in text
    assert "by up to about 1.2 points by chance" in text and "means span 1.7 points" in text
    assert "the models differ by more than seed noise" in text
    noisy = report.goals_paragraph(_hand_summary([0.585, 0.582, 0.567, 0.595], [0.60, 0.56, 0.59, 0.57]))
    assert "within seed noise" in "\n".join(noisy)
